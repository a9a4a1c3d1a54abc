"""`sensorium search "…"`: devices, agent interactions and device logs ranked by meaning, or
`--similar DEVICE` for the devices most like one (docs/agent.md#semantic-search). Against a data
directory (the index lives in it: search.lance) or a running server (`--url`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import ConfigOpt, DataDirOpt, FormatOpt, UrlOpt, console, http, settings
from sensorium.errors import BadRequest


def search(
    query: Annotated[str | None, typer.Argument(help="What to look for, e.g. \"cold storage\".")] = None,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only device, interaction or log.")] = None,
    similar: Annotated[str | None, typer.Option("--similar", help="Devices similar to this device id (no query).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many results (1-100).")] = 10,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Semantic search over devices, agent interactions and device logs (needs the agent extra)."""
    from sensorium.agent.search import check_kind, check_limit, check_query

    if fmt not in ("table", "json"):
        raise BadRequest(f"--format must be table or json; got {fmt!r}")
    if similar and query:
        raise BadRequest("give a query or --similar DEVICE, not both")
    if similar and kind not in (None, "device"):
        raise BadRequest("--similar finds devices: leave out --kind")
    if not similar:
        check_query(query)
    check_kind(kind)
    check_limit(limit)
    out: dict[str, Any]
    if url:
        if similar:
            out = http(url, "GET", "/api/v1/search/similar", params={"device_id": similar, "limit": limit}).json()
        else:
            params: dict[str, Any] = {"q": query, "limit": limit}
            if kind:
                params["kind"] = kind
            out = http(url, "GET", "/api/v1/search", params=params).json()
    else:
        from sensorium.agent.search import SearchIndex
        from sensorium.platform import Sensorium

        s = settings(config, data_dir=data_dir)
        with Sensorium(s, read_only=True, background=False) as platform:
            index = SearchIndex(platform)
            out = index.similar(similar, limit=limit) if similar else index.search(query, kind=kind, limit=limit)
    if fmt == "json":
        print(json.dumps(out, default=str))
        return
    if similar:
        console.print(f"[bold]like {similar}[/]: {out.get('text', '')}")
    t = Table("score", "kind", "id", "text")
    for r in out["results"]:
        t.add_row(f"{r['score']:.3f}", r["kind"], r["id"], r["text"])
    console.print(t)
    if out.get("note"):
        console.print(f"[dim]{out['note']}[/]")
