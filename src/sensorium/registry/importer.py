"""Bulk import and export of the registry: YAML (every kind and the relations in one file) and
CSV (one kind per file). A bad row is reported with its line number and reason; the good rows
are stored (each row in its own transaction). Rows are applied kind by kind in dependency order
(users, locations, rooms, devices, sensors, actuators, AI models, services, then relations), so a
file may list a device before the room it is in.

YAML::

    locations:
      - {id: home, name: Home, timezone: Europe/Berlin}
    rooms:
      - {id: kitchen, location_id: home}
    devices:
      - {id: dev-1, type: thermostat, room_id: kitchen}
    relations:
      - {src: alice, rel: OWNS, dst: home}

CSV: a header of column names — ``id``, ``name``, the kind's columns, ``attributes`` (a JSON
object) or ``attributes.KEY`` columns; for relations ``src``, ``rel``, ``dst``, ``properties`` or
``properties.KEY``. The kind is given by the caller (``--kind``, ``?kind=``) or a ``kind`` column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import yaml

from sensorium.errors import BadRequest, SensoriumError
from sensorium.registry.rules import BY_PLURAL, KINDS, PLURAL
from sensorium.registry.schemas import READ_ONLY
from sensorium.registry.store import RegistryStore

REL = "relation"
ORDER = (*KINDS, REL)
Mode = Literal["upsert", "create"]


@dataclass
class Row:
    line: int
    kind: str  # a kind, or "relation"
    data: dict[str, Any]


@dataclass
class ImportResult:
    rows: int = 0
    created: int = 0
    updated: int = 0
    relations_created: int = 0
    relations_updated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "created": self.created, "updated": self.updated,
                "relations_created": self.relations_created, "relations_updated": self.relations_updated,
                "rejected": self.rejected, "errors": sorted(self.errors, key=lambda e: e["line"])}


def _kind_name(name: Any) -> str | None:
    """``devices`` / ``device`` → ``device``; ``relations`` / ``relation`` → ``relation``."""
    if not isinstance(name, str):
        return None
    n = name.strip().lower()
    if n in ("relation", "relations"):
        return REL
    return n if n in KINDS else BY_PLURAL.get(n)


def _err(line: int, kind: str | None, data: Any, message: str) -> dict[str, Any]:
    ident = None
    if isinstance(data, dict):
        ident = data.get("id") or (
            f"{data.get('src')} {data.get('rel')} {data.get('dst')}" if "src" in data else None
        )
    return {"line": line, "kind": kind, "id": ident, "message": message}


# -- reading -------------------------------------------------------------------------------------
def read_yaml(text: str) -> tuple[list[Row], list[dict[str, Any]]]:
    """Rows of a YAML document (a mapping of kinds to lists, or a list of items with ``kind``),
    with their line numbers; and the errors found while reading."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise BadRequest(f"not valid YAML (line {line}): {getattr(exc, 'problem', exc)}", line=line) from None
    if root is None:
        return [], []
    loader = yaml.SafeLoader("")
    rows: list[Row] = []
    errors: list[dict[str, Any]] = []

    def item(node: Any, kind: str | None) -> None:
        line = node.start_mark.line + 1
        try:
            data = loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            errors.append(_err(line, kind, None, f"cannot read: {exc}"))
            return
        if not isinstance(data, dict):
            errors.append(_err(line, kind, None, f"an item must be a mapping; got {type(data).__name__}"))
            return
        if kind is None:
            kind = _kind_name(data.pop("kind", None))
            if kind is None:
                errors.append(_err(line, None, data, f"`kind` must be one of {', '.join(ORDER)}"))
                return
        rows.append(Row(line, kind, data))

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            kname = _kind_name(key.value if isinstance(key, yaml.ScalarNode) else None)
            line = key.start_mark.line + 1
            if kname is None:
                known = ", ".join([*PLURAL.values(), "relations"])
                errors.append({"line": line, "kind": None, "id": None,
                               "message": f"unknown section {key.value!r} (one of {known})"})
                continue
            if isinstance(value, yaml.ScalarNode) and value.value in ("", "~", "null"):
                continue
            if not isinstance(value, yaml.SequenceNode):
                errors.append({"line": line, "kind": kname, "id": None,
                               "message": f"section {key.value!r} must be a list"})
                continue
            for node in value.value:
                item(node, kname)
    elif isinstance(root, yaml.SequenceNode):
        for node in root.value:
            item(node, None)
    else:
        raise BadRequest("a registry YAML file is a mapping of kinds to lists (devices: [...]) or a list of items with `kind`")
    return rows, errors


def _scalar(text: str) -> Any:
    """A CSV cell of a free-form column: JSON numbers, true/false/null; else the text."""
    try:
        v = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return v if isinstance(v, int | float | bool) or v is None else text


def read_csv(text: str, kind: str | None = None) -> tuple[list[Row], list[dict[str, Any]]]:
    """Rows of a CSV file (header first) of ``kind`` (or a ``kind`` column), with line numbers."""
    given = _kind_name(kind) if kind is not None else None
    if kind is not None and given is None:
        raise BadRequest(f"unknown kind {kind!r} (one of {', '.join(ORDER)})")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        raise BadRequest(f"not valid CSV (line 1): {exc}") from None
    header = [h.strip() for h in header]
    if given is None and "kind" not in header:
        raise BadRequest("a CSV file needs its kind: pass kind (e.g. ?kind=devices) or add a `kind` column")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise BadRequest(f"CSV header repeats column(s) {', '.join(dupes)}")
    rows: list[Row] = []
    errors: list[dict[str, Any]] = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append({"line": start, "kind": given, "id": None, "message": f"not valid CSV: {exc}"})
            break
        end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            errors.append({"line": start, "kind": given, "id": None,
                           "message": f"{len(cells)} cells but the header has {len(header)} columns"})
            continue
        data: dict[str, Any] = {}
        bad = None
        for name, cell in zip(header, cells, strict=True):
            cell = cell.strip()
            if cell == "":
                continue
            for nested in ("attributes", "properties"):
                if name == nested:
                    try:
                        obj = orjson.loads(cell)
                    except orjson.JSONDecodeError:
                        obj = None
                    if not isinstance(obj, dict):
                        bad = f"column {name}: a JSON object; got {cell!r}"
                    else:
                        data.setdefault(nested, {}).update(obj)
                    break
                if name.startswith(nested + "."):
                    data.setdefault(nested, {})[name.split(".", 1)[1]] = _scalar(cell)
                    break
            else:
                if name == "capabilities":
                    data[name] = orjson.loads(cell) if cell.startswith("[") and _is_json(cell) else [
                        c.strip() for c in cell.split(";") if c.strip()]
                else:
                    data[name] = cell
        row_kind = given
        if "kind" in data:
            row_kind = _kind_name(data.pop("kind"))
            if row_kind is None or (given is not None and row_kind != given):
                bad = f"kind must be {given or 'one of ' + ', '.join(ORDER)}"
        if bad is not None or row_kind is None:
            errors.append(_err(start, row_kind, data, bad or "no kind"))
            continue
        rows.append(Row(start, row_kind, data))
    return rows, errors


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def read(text: str, fmt: str, kind: str | None = None) -> tuple[list[Row], list[dict[str, Any]]]:
    if fmt in ("yaml", "yml"):
        if kind is not None:
            raise BadRequest("kind applies to CSV only (a YAML file names its kinds)")
        return read_yaml(text)
    if fmt == "csv":
        return read_csv(text, kind)
    raise BadRequest(f"unknown import format {fmt!r} (yaml or csv)")


# -- applying ------------------------------------------------------------------------------------
def apply(store: RegistryStore, rows: list[Row], errors: list[dict[str, Any]], mode: Mode = "upsert") -> ImportResult:
    """Store ``rows`` (kinds in dependency order, each row on its own); ``upsert`` replaces an
    entity or relation that exists, ``create`` reports it as an error."""
    if mode not in ("upsert", "create"):
        raise BadRequest(f"mode must be upsert or create; got {mode!r}")
    res = ImportResult(rows=len(rows) + len(errors), errors=list(errors))
    rank = {k: i for i, k in enumerate(ORDER)}
    for row in sorted(rows, key=lambda r: (rank[r.kind], r.line)):
        try:
            if row.kind == REL:
                _, created = store.relate(row.data, upsert=mode == "upsert")
                if created:
                    res.relations_created += 1
                else:
                    res.relations_updated += 1
                continue
            eid = row.data.get("id")
            if mode == "upsert" and isinstance(eid, str) and eid:
                _, created = store.replace(row.kind, eid, row.data)
                if created:
                    res.created += 1
                else:
                    res.updated += 1
            else:
                store.create(row.kind, row.data)
                res.created += 1
        except SensoriumError as exc:
            if exc.status >= 500:
                raise
            res.errors.append(_err(row.line, row.kind, row.data, exc.message))
    return res


def import_text(store: RegistryStore, text: str, fmt: str, *, kind: str | None = None,
                mode: Mode = "upsert") -> ImportResult:
    rows, errors = read(text, fmt, kind)
    return apply(store, rows, errors, mode)


# -- exporting -----------------------------------------------------------------------------------
def _clean(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k not in READ_ONLY and v is not None and v != {} and v != []}


def export_data(store: RegistryStore) -> dict[str, list[dict[str, Any]]]:
    """Everything, in the YAML import shape (round-trips through :func:`import_text`)."""
    snap = store.snapshot()
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        rows = [_clean(e) for e in snap.entities[kind]]
        if rows:
            out[PLURAL[kind]] = rows
    rels = [{"src": r["src"], "rel": r["rel"], "dst": r["dst"],
             **({"properties": r["properties"]} if r["properties"] else {})} for r in snap.relations]
    if rels:
        out["relations"] = rels
    return out


def export_yaml(store: RegistryStore) -> str:
    return str(yaml.safe_dump(export_data(store), sort_keys=False, allow_unicode=True))


def export_csv(store: RegistryStore, kind: str) -> str:
    """One kind (or ``relations``) as CSV: ``attributes`` / ``properties`` as JSON columns."""
    k = _kind_name(kind)
    if k is None:
        raise BadRequest(f"unknown kind {kind!r} (one of {', '.join(ORDER)})")
    snap = store.snapshot()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if k == REL:
        w.writerow(["src", "rel", "dst", "properties"])
        for r in snap.relations:
            w.writerow([r["src"], r["rel"], r["dst"], orjson.dumps(r["properties"]).decode() if r["properties"] else ""])
        return buf.getvalue()
    from sensorium.registry.schemas import FIELDS

    cols = ["id", "name", *FIELDS[k], "attributes"]
    w.writerow(cols)
    for e in snap.entities[k]:
        out = []
        for c in cols:
            v = e.get(c)
            if c in ("attributes", "capabilities"):
                out.append(orjson.dumps(v).decode() if v else "")
            elif isinstance(v, bool):
                out.append("true" if v else "false")
            else:
                out.append("" if v is None else str(v))
        w.writerow(out)
    return buf.getvalue()


__all__ = ["ImportResult", "Row", "apply", "export_csv", "export_data", "export_yaml", "import_text",
           "read", "read_csv", "read_yaml"]
