"""`sensorium alerts` and `sensorium rules`: list and acknowledge alerts, check rule files."""

from __future__ import annotations

import json
import sys
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

alerts_app = typer.Typer(
    help="List alerts (firing, resolved, acknowledged) and acknowledge them.",
    invoke_without_command=True,
)
rules_app = typer.Typer(help="Check and list alert rules.", no_args_is_help=True)


def _ts(ns: Any) -> str:
    if not ns:
        return ""
    return datetime.fromtimestamp(int(ns) / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _open_store(config: Path | None, data_dir: Path | None) -> Any:
    from sensorium.rules.alerts import AlertStore

    s = settings(config, data_dir=data_dir)
    path = Path(s.data_dir) / "alerts.sqlite"
    if not path.exists():
        from sensorium.errors import NotFound

        raise NotFound(f"no alerts yet in {s.data_dir} (no {path.name}); is this the right --data-dir?")
    import time

    return AlertStore(path, clock=time.time_ns)


@alerts_app.callback()
def alerts_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="firing, resolved, acknowledged or unacknowledged.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    severity: Annotated[str | None, typer.Option(help="Only this severity (warning, critical, ...).")] = None,
    limit: LimitOpt = 50,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List alerts, newest first (the default when no sub-command is given)."""
    if ctx.invoked_subcommand is not None:
        return
    params = {k: v for k, v in {"state": state, "rule": rule, "severity": severity, "limit": limit}.items() if v is not None}
    if url:
        items = http(url, "GET", "/api/v1/alerts", params=params).json()["alerts"]
    else:
        if state not in (None, "firing", "resolved", "acknowledged", "unacknowledged"):
            raise typer.BadParameter("state must be firing, resolved, acknowledged or unacknowledged")
        store = _open_store(config, data_dir)
        try:
            items = store.list(state=state, rule=rule, severity=severity, limit=limit)
        finally:
            store.close()
    if fmt == "json":
        sys.stdout.write(json.dumps({"alerts": items}, default=str) + "\n")
        return
    t = Table(title=f"alerts ({len(items)} shown)")
    for c in ("id", "state", "severity", "rule", "series", "value", "fired at (UTC)", "ack", "message"):
        t.add_column(c, overflow="fold")
    colour = {"critical": "bold red", "warning": "yellow"}
    for a in items:
        sev = str(a.get("severity") or "")
        t.add_row(
            str(a["alert_id"]), str(a["state"]), f"[{colour.get(sev, 'white')}]{sev}[/]", str(a["rule"]),
            str(a["series"]), "" if a.get("value") is None else f"{a['value']:.4g}", _ts(a.get("fired_at_ns")),
            "yes" if a.get("acknowledged") else "", str(a.get("message", "")),
        )
    console.print(t)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(help="The alert id (first column of `sensorium alerts`).")],
    by: Annotated[str, typer.Option(help="Who acknowledges.")] = "cli",
    note: Annotated[str | None, typer.Option(help="A note kept with the acknowledgement.")] = None,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Acknowledge an alert (it stays open until it resolves; notifications are not repeated)."""
    if url:
        out = http(url, "POST", f"/api/v1/alerts/{alert_id}/ack", json={"by": by, "note": note}).json()
    else:
        store = _open_store(config, data_dir)
        try:
            out = store.ack(alert_id, by, note)
        finally:
            store.close()
    console.print(f"acknowledged [bold]{out['alert_id']}[/] ({out['rule']} on {out['series']}) by {by}")


@rules_app.command("check")
def rules_check(
    file: Annotated[Path, typer.Argument(help="A rules file (.toml, .yaml or .yml).")],
) -> None:
    """Validate a rules file; every problem is printed with its line number (exit 1 if any)."""
    from sensorium.rules.loader import check_file

    if not file.exists():
        err.print(f"[bold red]error:[/] no such file: {file}")
        raise typer.Exit(2)
    problems = check_file(file)
    if not problems:
        from sensorium.rules.loader import load_rules

        rs = load_rules(file)
        console.print(f"[green]ok[/]: {file} — {len(rs.rules)} rules")
        return
    for p in problems:
        err.print(f"{file}:{p.line}: {p.message}")
    err.print(f"[bold red]{len(problems)} problem(s)[/] in {file}")
    raise typer.Exit(1)


@rules_app.command("list")
def rules_list(
    file: Annotated[Path | None, typer.Argument(help="A rules file (default: stream.rules_file or the built-in rules).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Show the rules that would run."""
    from sensorium.rules.loader import load_rules

    s = settings(config)
    rs = load_rules(file or s.stream.rules_file)
    t = Table(title=f"{len(rs.rules)} rules")
    for c in ("name", "kind", "selects", "definition"):
        t.add_column(c, overflow="fold")
    for r in rs.rules:
        d = r.model_dump(mode="json", exclude_none=True)
        sel = " ".join(f"{k}={d.pop(k)}" for k in ("measurement", "field", "stat") if k in d)
        name = d.pop("name", "")
        kind = d.pop("kind", "")
        t.add_row(name, str(kind), sel, json.dumps(d, default=str))
    console.print(t)
