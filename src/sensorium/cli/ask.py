"""`sensorium ask "…"`: a question, command or automation in plain language, against a data
directory or a running server (`--url`). Follow-ups need `--session` (and, locally, the same
process: use `--url` for a conversation)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import ConfigOpt, DataDirOpt, FormatOpt, UrlOpt, console, http, settings
from sensorium.errors import BadRequest


def ask(
    question: Annotated[str | None, typer.Argument(help="The question, e.g. \"average temperature in the kitchen yesterday\".")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Session id: follow-ups refer to its last question.")] = None,
    confirm: Annotated[str | None, typer.Option("--confirm", help="Run what a confirm_token confirms.")] = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask in plain language: an answer, the query plan, the SQL and the data (no LLM needed)."""
    if fmt not in ("table", "json"):
        raise BadRequest(f"--format must be table or json; got {fmt!r}")
    if not question and not confirm:
        raise BadRequest("give a question (or --confirm TOKEN)")
    out: dict[str, Any]
    if url:
        body = {k: v for k, v in {"question": question, "session_id": session, "confirm": confirm}.items() if v}
        out = http(url, "POST", "/api/v1/ask", json=body).json()
    else:
        from sensorium.agent import Agent
        from sensorium.platform import Sensorium

        s = settings(config, data_dir=data_dir)
        with Sensorium(s, read_only=True, background=False) as platform:
            agent = Agent(platform)
            try:
                out = agent.ask(question, session_id=session, confirm=confirm)
            finally:
                agent.close()
    if fmt == "json":
        print(json.dumps(out, default=str))
        return
    console.print(f"[bold]{out['answer']}[/]")
    if out.get("confirm_token"):
        console.print(f"confirm with: sensorium ask --confirm {out['confirm_token']}")
    tab = out.get("table")
    if tab and tab.get("rows"):
        t = Table(*tab["columns"])
        for r in tab["rows"][:50]:
            t.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
        console.print(t)
        if len(tab["rows"]) > 50:
            console.print(f"[dim]… {len(tab['rows']) - 50} more rows (--format json for all)[/]")
    if out.get("sql"):
        console.print(f"[dim]SQL: {out['sql']}[/]")
    console.print(f"[dim]confidence {out.get('confidence')} · understood: "
                  + "; ".join(out.get("understood", {}).get("notes", [])) + "[/]")
