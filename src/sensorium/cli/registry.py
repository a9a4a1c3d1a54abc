"""`sensorium registry` and `sensorium graph`: the device registry and its relationship graph, on
the data directory's registry (or a running server with ``--url``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import (
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    UrlOpt,
    console,
    err,
    http,
    settings,
)
from sensorium.errors import BadRequest

registry_app = typer.Typer(
    help="The device registry: users, locations, rooms, devices, sensors, actuators, AI models, "
    "services and their relations.",
    no_args_is_help=True,
)
graph_app = typer.Typer(
    help="The registry as a graph: a user's places and things, impact analysis, PageRank, "
    "communities, shortest paths by latency.",
    no_args_is_help=True,
)
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="A field: key=value (attributes.KEY=value for an attribute); repeatable.")]
KindArg = Annotated[str, typer.Argument(help="users, locations, rooms, devices, sensors, actuators, ai_models, services (or relations).")]


@contextmanager
def _store(config: Path | None, data_dir: Path | None, *, read_only: bool = False) -> Iterator[Any]:
    from sensorium.registry import open_registry

    s = settings(config, data_dir=data_dir)
    store = open_registry(s.registry, Path(s.data_dir), read_only=read_only)
    if store is None:
        yield None
        return
    try:
        yield store
    finally:
        store.close()


def _kind(segment: str) -> str:
    from sensorium.registry.rules import PLURAL, kind_of_path

    kind = kind_of_path(segment) or (segment if segment in PLURAL else None)
    if kind is None:
        raise typer.BadParameter(f"unknown kind {segment!r}: one of {', '.join(PLURAL.values())}")
    return kind


def _pairs(items: list[str] | None) -> dict[str, Any]:
    """``["a=1", "attributes.x=y"]`` → ``{"a": "1", "attributes": {"x": "y"}}``."""
    from sensorium.registry.importer import _scalar

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set {item!r}: use key=value")
        if key.startswith(("attributes.", "properties.")):
            nested, _, sub = key.partition(".")
            out.setdefault(nested, {})[sub] = _scalar(value)
        elif key == "capabilities":
            out[key] = [c.strip() for c in value.split(";") if c.strip()]
        else:
            out[key] = value if value != "" else None
    return out


def _dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def _table(title: str, rows: list[dict[str, Any]], cols: list[str] | None = None) -> None:
    cols = cols or (list(rows[0]) if rows else ["id"])
    t = Table(title=title, min_width=len(title) + 4)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[_cell(r.get(c)) for c in cols])
    console.print(t)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v) if v else ""
    return str(v)


def _check_fmt(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")


# -- registry ----------------------------------------------------------------------------------
@registry_app.command("list")
def registry_list(
    kind: KindArg,
    where: Annotated[list[str] | None, typer.Option("--where", "-w", help="Filter: column=value (empty value: null); repeatable.")] = None,
    q: Annotated[str | None, typer.Option("--q", help="Case-insensitive substring of id, name, text columns.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many.")] = 0,
    sort: Annotated[str | None, typer.Option(help="Sort column; -column for descending.")] = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List entities of a kind (or relations), filtered and paged."""
    _check_fmt(fmt)
    filters = {k: ("" if v is None else str(v)) for k, v in _pairs(where).items()}
    rels = kind in ("relations", "relation")
    if url:
        path = "/api/v1/registry/relations" if rels else f"/api/v1/registry/{_plural(_kind(kind))}"
        params: dict[str, Any] = {**filters, "limit": limit, "offset": offset}
        if q and not rels:
            params["q"] = q
        if sort and not rels:
            params["sort"] = sort
        data = http(url, "GET", path, params=params).json()
        total, items = data["total"], data["items"]
    else:
        with _store(config, data_dir, read_only=True) as store:
            if store is None:
                total, items = 0, []
            elif rels:
                unknown = sorted(set(filters) - {"src", "dst", "rel", "entity"})
                if unknown:
                    raise BadRequest(f"relations filter by src, dst, rel or entity; not {', '.join(unknown)}")
                total, items = store.relations(**filters, limit=limit, offset=offset)
            else:
                total, items = store.entities(_kind(kind), filters, q=q, limit=limit, offset=offset, sort=sort)
    if fmt == "json":
        _dump({"total": total, "items": items})
        return
    if rels:
        _table(f"relations ({total} in all)", items, ["id", "src", "rel", "dst", "properties"])
    else:
        cols = [c for c in (items[0] if items else {"id": 1}) if c not in ("kind", "created_at", "updated_at")]
        _table(f"{kind} ({total} in all)", items, cols)


def _plural(kind: str) -> str:
    from sensorium.registry.rules import PLURAL

    return PLURAL[kind]


@registry_app.command("show")
def registry_show(
    kind: KindArg,
    entity_id: Annotated[str, typer.Argument(help="The entity's id.")],
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """One entity with every field and its relations."""
    _check_fmt(fmt)
    k = _kind(kind)
    if url:
        ent = http(url, "GET", f"/api/v1/registry/{_plural(k)}/{entity_id}").json()
        rels = http(url, "GET", "/api/v1/registry/relations", params={"entity": entity_id, "limit": 1000}).json()["items"]
    else:
        from sensorium.errors import NotFound

        with _store(config, data_dir, read_only=True) as store:
            if store is None:
                raise NotFound(f"no {k} {entity_id!r} (no registry in this data directory yet)")
            ent = store.get(entity_id, k)
            rels = store.relations(entity=entity_id, limit=1000)[1]
    if fmt == "json":
        _dump({**ent, "relations": rels})
        return
    t = Table(title=f"{ent['kind']} {ent['id']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for key, v in ent.items():
        t.add_row(key, _cell(v))
    console.print(t)
    if rels:
        _table("relations", rels, ["id", "src", "rel", "dst", "properties"])


@registry_app.command("add")
def registry_add(
    kind: KindArg,
    entity_id: Annotated[str | None, typer.Option("--id", help="The id (default: made from the name).")] = None,
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    fields: SetOpt = None,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add an entity, e.g. `sensorium registry add devices --id dev-1 --set room_id=kitchen --set type=thermostat`."""
    k = _kind(kind)
    body = _pairs(fields)
    if entity_id is not None:
        body["id"] = entity_id
    if name is not None:
        body["name"] = name
    if url:
        out = http(url, "POST", f"/api/v1/registry/{_plural(k)}", json=body).json()
    else:
        with _store(config, data_dir) as store:
            out = store.create(k, body)
    console.print(f"added {out['kind']} [bold]{out['id']}[/]")


@registry_app.command("remove")
def registry_remove(
    kind: KindArg,
    entity_id: Annotated[str, typer.Argument(help="The entity's id.")],
    cascade: Annotated[bool, typer.Option("--cascade", help="Also remove a device's sensors and actuators; detach rooms and devices of a location or room.")] = False,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove an entity and its relations."""
    k = _kind(kind)
    if url:
        http(url, "DELETE", f"/api/v1/registry/{_plural(k)}/{entity_id}", params={"cascade": str(cascade).lower()})
    else:
        with _store(config, data_dir) as store:
            store.delete(entity_id, k, cascade=cascade)
    console.print(f"removed {k} [bold]{entity_id}[/]")


@registry_app.command("relate")
def registry_relate(
    src: Annotated[str, typer.Argument(help="Source entity id.")],
    rel: Annotated[str, typer.Argument(help="OWNS, HAS_ACCESS, LOCATED_IN, PART_OF, ATTACHED_TO, USES, COMMUNICATES_WITH, INTERACTS_WITH, PROCESSES_DATA_FROM or CONTROLS.")],
    dst: Annotated[str, typer.Argument(help="Destination entity id.")],
    props: Annotated[list[str] | None, typer.Option("--set", "-s", help="A property: key=value (e.g. latency_ms=12); repeatable.")] = None,
    upsert: Annotated[bool, typer.Option("--upsert", help="Replace the properties of an existing relation.")] = False,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a relation `SRC REL DST`."""
    from sensorium.registry.importer import _scalar

    properties = {k: _scalar(v) for k, v in (p.partition("=")[::2] for p in props or [])}
    body = {"src": src, "rel": rel, "dst": dst, "properties": properties}
    if url:
        out = http(url, "POST", "/api/v1/registry/relations", json=body, params={"upsert": str(upsert).lower()}).json()
    else:
        with _store(config, data_dir) as store:
            out = store.relate(body, upsert=upsert)[0]
    console.print(f"relation {out['id']}: {out['src']} {out['rel']} {out['dst']}")


@registry_app.command("unrelate")
def registry_unrelate(
    relation_id: Annotated[int, typer.Argument(help="The relation's id (see `sensorium registry list relations`).")],
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a relation."""
    if url:
        out = http(url, "DELETE", f"/api/v1/registry/relations/{relation_id}").json()["deleted"]
    else:
        with _store(config, data_dir) as store:
            out = store.unrelate(relation_id)
    console.print(f"removed relation {out['id']}: {out['src']} {out['rel']} {out['dst']}")


@registry_app.command("import")
def registry_import(
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml (any kinds and relations) or .csv (one kind) file.", exists=True, dir_okay=False)],
    kind: Annotated[str | None, typer.Option(help="CSV: the kind of every row (or a `kind` column).")] = None,
    mode: Annotated[str, typer.Option(help="upsert (create or replace by id) or create (existing ids are errors).")] = "upsert",
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bulk import; bad rows are listed with their line numbers, the good ones stored (exit 1
    when any row was rejected)."""
    from sensorium.registry.importer import import_text

    _check_fmt(fmt)
    ext = file.suffix.lower().lstrip(".")
    form = {"yml": "yaml", "yaml": "yaml", "csv": "csv"}.get(ext)
    if form is None:
        raise typer.BadParameter(f"{file}: use a .yaml, .yml or .csv file")
    if mode not in ("upsert", "create"):
        raise typer.BadParameter("--mode must be upsert or create")
    text = file.read_text(encoding="utf-8-sig")
    if url:
        import httpx

        try:
            r = httpx.post(url.rstrip("/") + "/api/v1/registry/import", content=text.encode(), timeout=300,
                           params={"format": form, "mode": mode, **({"kind": kind} if kind else {})})
        except httpx.HTTPError as exc:
            raise BadRequest(f"cannot reach {url}: {exc}") from None
        out = r.json()
        if r.status_code >= 400 and "rows" not in out:
            err.print(f"[bold red]error:[/] {out.get('message', r.text)}")
            raise typer.Exit(2)
    else:
        with _store(config, data_dir) as store:
            out = import_text(store, text, form, kind=kind, mode=mode).to_dict()  # type: ignore[arg-type]
    if fmt == "json":
        _dump(out)
    else:
        console.print(
            f"{out['rows']} rows: {out['created']} created, {out['updated']} updated, "
            f"{out['relations_created']} relations created, {out['relations_updated']} updated, "
            f"[{'red' if out['rejected'] else 'green'}]{out['rejected']} rejected[/]"
        )
        for e in out["errors"]:
            err.print(f"{file}:{e['line']}: {e['message']}")
    if out["rejected"]:
        raise typer.Exit(1)


@registry_app.command("export")
def registry_export(
    export_fmt: Annotated[str, typer.Option("--format", "-f", help="yaml (everything) or csv (one kind).")] = "yaml",
    kind: Annotated[str | None, typer.Option(help="CSV: the kind (devices, ..., relations).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file (default: standard output).")] = None,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export the registry in the import format."""
    from sensorium.registry.importer import export_csv, export_yaml

    if export_fmt not in ("yaml", "csv"):
        raise typer.BadParameter("--format must be yaml or csv")
    if export_fmt == "csv" and kind is None:
        raise typer.BadParameter("--format csv exports one kind: add --kind (e.g. --kind devices)")
    if url:
        params = {"format": export_fmt, **({"kind": kind} if kind else {})}
        text = http(url, "GET", "/api/v1/registry/export", params=params).text
    else:
        with _store(config, data_dir, read_only=True) as store:
            if store is None:
                text = "" if export_fmt == "csv" else "{}\n"
            else:
                text = export_yaml(store) if export_fmt == "yaml" else export_csv(store, kind or "")
    if out is not None:
        out.write_text(text, encoding="utf-8")
        err.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


# -- graph -------------------------------------------------------------------------------------
def _graph_call(
    url: str | None, path: str, params: dict[str, Any], config: Path | None, data_dir: Path | None,
    local: Callable[[Any], Any],
) -> Any:
    if url:
        return http(url, "GET", path, params={k: v for k, v in params.items() if v is not None}).json()
    from sensorium.registry.graph import build_graph

    with _store(config, data_dir, read_only=True) as store:
        if store is None:
            raise BadRequest("no registry in this data directory yet (add entities with `sensorium registry add`)")
        return local(store.cached("graph", build_graph))


@graph_app.command("user")
def graph_user(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A user's locations, rooms, devices (and their sensors ...): what they OWN or HAVE ACCESS to."""
    from sensorium.registry.graph import user_view

    _check_fmt(fmt)
    data = _graph_call(url, f"/api/v1/graph/users/{user_id}", {}, config, data_dir, lambda g: user_view(g, user_id))
    if fmt == "json":
        _dump(data)
        return
    rows = [i for k in ("locations", "rooms", "devices", "sensors", "actuators", "ai_models", "services") for i in data[k]]
    _table(f"user {user_id}: {data['count']} entities", rows, ["kind", "id", "name", "grant", "via", "depth"])


@graph_app.command("impact")
def graph_impact(
    entity_id: Annotated[str, typer.Argument(help="The entity (e.g. a gateway).")],
    relations: Annotated[str | None, typer.Option(help="Comma-separated relation types to follow.")] = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Everything that depends on an entity: what fails when it fails."""
    from sensorium.registry.graph import impact

    _check_fmt(fmt)
    rels = relations.split(",") if relations else None
    data = _graph_call(url, f"/api/v1/graph/impact/{entity_id}", {"relations": relations}, config, data_dir,
                       lambda g: impact(g, entity_id, rels))
    if fmt == "json":
        _dump(data)
        return
    rows = [{**i, "path": " → ".join(i["path"])} for i in data["impacted"]]
    _table(f"{data['count']} depend on {entity_id}", rows, ["depth", "kind", "id", "name", "relation", "path"])


@graph_app.command("pagerank")
def graph_pagerank(
    top: Annotated[int, typer.Option(help="Show the N highest.")] = 20,
    kind: Annotated[str | None, typer.Option(help="Only this kind (device, location, ...).")] = None,
    alpha: Annotated[float, typer.Option(help="Damping factor.")] = 0.85,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The most central entities (PageRank over the relations)."""
    from sensorium.registry.graph import pagerank

    _check_fmt(fmt)
    data = _graph_call(url, "/api/v1/graph/pagerank", {"top": top, "kind": kind, "alpha": alpha}, config, data_dir,
                       lambda g: {"alpha": alpha, "ranks": pagerank(g, alpha=alpha, kind=kind, top=top)})
    if fmt == "json":
        _dump(data)
        return
    rows = [{**r, "score": f"{r['score']:.4f}"} for r in data["ranks"]]
    _table("PageRank", rows, ["id", "kind", "name", "score"])


@graph_app.command("communities")
def graph_communities(
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    resolution: Annotated[float, typer.Option(help="Higher: smaller communities.")] = 1.0,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Louvain communities of the registry graph."""
    from sensorium.registry.graph import communities

    _check_fmt(fmt)
    data = _graph_call(url, "/api/v1/graph/communities", {"seed": seed, "resolution": resolution}, config, data_dir,
                       lambda g: communities(g, seed=seed, resolution=resolution))
    if fmt == "json":
        _dump(data)
        return
    rows = [{"#": i + 1, "size": c["size"], "members": ", ".join(m["id"] for m in c["members"])}
            for i, c in enumerate(data["communities"])]
    mod = data["modularity"]
    _table(f"{len(rows)} communities (modularity {'n/a' if mod is None else f'{mod:.3f}'})", rows, ["#", "size", "members"])


@graph_app.command("path")
def graph_path(
    src: Annotated[str, typer.Argument(help="Start entity.")],
    dst: Annotated[str, typer.Argument(help="End entity.")],
    relations: Annotated[str | None, typer.Option(help="Comma-separated relation types usable as links.")] = None,
    default_latency_ms: Annotated[float, typer.Option(help="Cost of a link without latency_ms.")] = 0.0,
    directed: Annotated[bool, typer.Option("--directed", help="Follow relations only forwards.")] = False,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The path of least total latency between two entities."""
    from sensorium.registry.graph import shortest_path

    _check_fmt(fmt)
    rels = relations.split(",") if relations else None
    params = {"src": src, "dst": dst, "relations": relations, "default_latency_ms": default_latency_ms,
              "directed": str(directed).lower()}
    data = _graph_call(url, "/api/v1/graph/path", params, config, data_dir, lambda g: shortest_path(
        g, src, dst, relations=rels, default_latency_ms=default_latency_ms, directed=directed))
    if fmt == "json":
        _dump(data)
        return
    _table(f"{src} → {dst}: {data['latency_ms']:g} ms in {data['hops']} hops", data["edges"],
           ["src", "rel", "dst", "latency_ms", "implied"])


__all__ = ["graph_app", "registry_app"]
