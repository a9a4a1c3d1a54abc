"""`sensorium automations` and `sensorium notifications`."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import (
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    LimitOpt,
    UrlOpt,
    console,
    err,
    http,
    settings,
)

automations_app = typer.Typer(help="List and check automations; see their runs.", no_args_is_help=True)
notifications_app = typer.Typer(
    help="Notifications from automations (`notify` actions).", invoke_without_command=True
)


def _ts(ns: Any) -> str:
    return datetime.fromtimestamp(int(ns) / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if ns else ""


def _store(config: Path | None, data_dir: Path | None) -> Any:
    from sensorium.automations.store import AutomationStore

    s = settings(config, data_dir=data_dir)
    return AutomationStore(Path(s.data_dir) / "automations.sqlite", clock=time.time_ns)


def _out(data: Any, fmt: str) -> bool:
    if fmt == "json":
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return True
    return False


@automations_app.command("list")
def list_(fmt: FormatOpt = "table", url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Every automation with its trigger and actions."""
    if url:
        items = http(url, "GET", "/api/v1/automations").json()["automations"]
    else:
        st = _store(config, data_dir)
        try:
            items = st.list()
        finally:
            st.close()
    if _out({"automations": items}, fmt):
        return
    t = Table("name", "enabled", "trigger", "actions", "source", title=f"{len(items)} automations")
    for a in items:
        d = a["definition"]
        trig = d["trigger"]
        what = {k: v for k, v in trig.items() if k != "kind" and v not in (None, {}, "")}
        t.add_row(a["name"], "yes" if d.get("enabled", True) else "no", f"{trig['kind']} {what}",
                  ", ".join(x["kind"] for x in d["actions"]), a["source"])
    console.print(t)


@automations_app.command("check")
def check(path: Annotated[Path, typer.Argument(help="Automations file (.toml, .yaml).")]) -> None:
    """Validate an automations file; every problem with its line number (exit 2 if any)."""
    from sensorium.automations.loader import check_file

    autos, problems = check_file(path)
    for p in problems:
        err.print(str(p))
    if problems:
        raise typer.Exit(2)
    console.print(f"[green]{path}: {len(autos)} automations, no problems[/]")


@automations_app.command("runs")
def runs(
    automation: Annotated[str | None, typer.Option(help="Only this automation.")] = None,
    limit: LimitOpt = 50,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Automation runs, newest first, with their outcome."""
    from sensorium.automations.actions import executions

    if url:
        params: dict[str, Any] = {"limit": limit, **({"automation": automation} if automation else {})}
        items = http(url, "GET", "/api/v1/automations/runs", params=params).json()["runs"]
    else:
        s = settings(config, data_dir=data_dir)
        d = Path(s.data_dir)
        paths = [d / "automation-deliveries.sqlite", *sorted(d.glob("partitions/*/automation-deliveries.sqlite"))]
        items = sorted((r for p in paths for r in executions(p, automation=automation, limit=limit)),
                       key=lambda r: r["created_ns"], reverse=True)[:limit]
    if _out({"runs": items}, fmt):
        return
    t = Table("time", "automation", "trigger", "actions", "status", "error", title=f"{len(items)} runs")
    for r in items:
        errors = "; ".join(x["error"] for x in r["deliveries"].values() if x.get("error"))
        colour = {"ok": "green", "failed": "red"}.get(r["status"], "yellow")
        t.add_row(_ts(r["time_ns"]), r["automation"], str(r["trigger"].get("kind")),
                  ", ".join(a["kind"] for a in r["actions"]), f"[{colour}]{r['status']}[/]", errors)
    console.print(t)


@notifications_app.callback()
def notifications(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's (and those to everyone).")] = None,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread ones.")] = False,
    limit: LimitOpt = 50,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List notifications, newest first (the default when no sub-command is given)."""
    if ctx.invoked_subcommand is not None:
        return
    if url:
        params: dict[str, Any] = {"limit": limit, "unread": unread, **({"user": user} if user else {})}
        data = http(url, "GET", "/api/v1/notifications", params=params).json()
    else:
        st = _store(config, data_dir)
        try:
            data = st.notifications(user=user, unread=unread, limit=limit)
        finally:
            st.close()
    if _out(data, fmt):
        return
    t = Table("id", "time", "user", "automation", "title", "message", "read",
              title=f"{data['total']} notifications, {data['unread']} unread")
    for n in data["notifications"]:
        t.add_row(str(n["id"]), _ts(n["created_ns"]), n["user"], n["automation"], n["title"], n["message"],
                  "yes" if n["read"] else "")
    console.print(t)


@notifications_app.command("read")
def read(
    ids: Annotated[list[int], typer.Argument(help="Notification ids.")],
    unread: Annotated[bool, typer.Option("--unread", help="Mark them unread instead.")] = False,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Mark notifications read (or unread)."""
    if url:
        n = http(url, "POST", "/api/v1/notifications/read", json={"ids": ids, "read": not unread}).json()["updated"]
    else:
        st = _store(config, data_dir)
        try:
            n = st.mark_read(ids, not unread)
        finally:
            st.close()
    console.print(f"{n} notifications marked {'unread' if unread else 'read'}")
