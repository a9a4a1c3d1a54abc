"""Semantic search (issue #8, item 6): devices, agent interactions and device logs embedded with
all-MiniLM-L6-v2 (the ``agent`` extra, loaded offline: see :mod:`sensorium.agent.matcher`) in a
local LanceDB vector index at ``data_dir/search.lance``.

What is indexed, one row per item (``kind``, ``id``, ``text``):

``device``       id, name, type, room and location names, attributes (registry)
``interaction``  the question or command text (``data_dir/agent.sqlite``)
``log``          device logs: documents of kind ``device_log`` (:mod:`sensorium.documents`), their
                 device and ``data`` — never their ``pii``

The index is rebuilt incrementally: each row keeps a hash of its text, and a refresh embeds only
the items that are new or whose text changed and deletes the ones that went away. A query
refreshes first when the registry revision, the number of interactions or of device logs
changed since the last refresh of this process (the first query of a process always compares).
Results a restricted principal may not see (other devices, other users' interactions) are
dropped.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sensorium.agent.matcher import EXTRA_HINT, EmbeddingMatcher, EmbeddingsUnavailable
from sensorium.errors import BadRequest, NotFound, SensoriumError
from sensorium.query.sql import literal

if TYPE_CHECKING:
    from sensorium.auth.principal import Principal
    from sensorium.platform import Sensorium

log = logging.getLogger("sensorium.agent.search")

KINDS = ("device", "interaction", "log")
MAX_QUERY = 512  # characters
MAX_LIMIT = 100
DIM = 384  # all-MiniLM-L6-v2
MODEL_TAG = "all-MiniLM-L6-v2"
PAGE = 1000  # registry and document pages
TABLE = "items"


class SearchUnavailable(SensoriumError):
    """Semantic search needs the ``agent`` extra (sentence-transformers, the model, LanceDB)."""

    status = 503
    code = "search_unavailable"


@dataclass(frozen=True)
class Item:
    kind: str
    id: str
    text: str
    device_id: str | None = None  # whose device (access)
    principal: str | None = None  # whose interaction (access)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{MODEL_TAG}\n{self.text}".encode()).hexdigest()[:32]


def available() -> str | None:
    """None when search can run, else what to install."""
    import importlib.util

    if not EmbeddingMatcher.available():
        return f"semantic search needs sentence embeddings: {EXTRA_HINT}"
    if importlib.util.find_spec("lancedb") is None:
        return f"semantic search needs LanceDB: {EXTRA_HINT}"
    return None


def check_query(q: str | None) -> str:
    text = (q or "").strip()
    if not text:
        raise BadRequest("q is empty: give some words to search for, e.g. q=cold storage")
    if len(text) > MAX_QUERY:
        raise BadRequest(f"q is {len(text)} characters; at most {MAX_QUERY}")
    return text


def check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be within 1..{MAX_LIMIT}; got {limit}")
    return limit


def _default_embed(texts: Sequence[str]) -> Any:
    return EmbeddingMatcher.model().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)


class SearchIndex:
    """The vector index of one data directory. Thread-safe; open one per process."""

    def __init__(self, platform: Sensorium, *, embed: Callable[[Sequence[str]], Any] | None = None,
                 path: Path | None = None) -> None:
        missing = available()
        if missing:
            raise SearchUnavailable(missing)
        import lancedb

        self.platform = platform
        self.path = Path(path) if path is not None else Path(platform.dir) / "search.lance"
        self._embed = embed or _default_embed
        self._lock = threading.Lock()
        self._db = lancedb.connect(str(self.path))
        self._table: Any = None
        self._state: tuple[Any, ...] | None = None
        self.embedded = 0  # items embedded by the last refresh
        self.logs_note: str | None = None  # why logs are not indexed, when they are not

    # -- sources ---------------------------------------------------------------------------------
    def _devices(self) -> list[Item]:
        reg = self.platform.registry_store
        if reg is None:
            return []
        names: dict[str, str] = {}
        loc_of_room: dict[str, str | None] = {}
        for kind in ("location", "room"):
            for e in _all(reg, kind):
                names[e["id"]] = e.get("name") or e["id"]
                if kind == "room":
                    loc_of_room[e["id"]] = e.get("location_id")
        out = []
        for d in _all(reg, "device"):
            room = d.get("room_id")
            loc = d.get("location_id") or (loc_of_room.get(room) if room else None)
            parts = [str(d.get("name") or d["id"]), f"id {d['id']}"]
            if d.get("type"):
                parts.append(f"type {d['type']}")
            if room:
                parts.append(f"room {names.get(room, room)}")
            if loc:
                parts.append(f"location {names.get(loc, loc)}")
            parts += [f"{k} {_flat(v)}" for k, v in sorted((d.get("attributes") or {}).items())]
            out.append(Item("device", d["id"], "; ".join(parts), device_id=d["id"]))
        return out

    def _interactions(self) -> list[Item]:
        path = Path(self.platform.dir) / "agent.sqlite"
        if not path.exists():
            return []
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("SELECT id, text, principal FROM interactions ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # no table yet
            return []
        finally:
            con.close()
        return [Item("interaction", str(i), str(t), principal=p) for i, t, p in rows if t]

    def _doc_store(self) -> Any:
        if self.platform.registry_store is None:
            self.logs_note = "device logs are not indexed: there is no registry (documents live in it)"
            return None
        try:
            from sensorium.documents.store import DocumentStore
        except ImportError as exc:
            self.logs_note = f"device logs are not indexed: the document store is not available ({exc})"
            return None
        self.logs_note = None
        return DocumentStore(self.platform.registry_store)

    def _logs(self, store: Any) -> list[Item]:
        from sensorium.auth.principal import LOCAL

        out: list[Item] = []
        offset = 0
        while True:
            total, page = store.list(LOCAL, kind="device_log", order="asc", limit=PAGE, offset=offset)
            for d in page:
                data = d.get("data") or {}
                parts = [f"device {d['device_id']}"] if d.get("device_id") else []
                parts += [f"{k} {_flat(v)}" for k, v in sorted(data.items())]
                out.append(Item("log", str(d["id"]), "; ".join(parts) or "(empty)", device_id=d.get("device_id")))
            offset += len(page)
            if not page or offset >= total:
                return out

    def _state_now(self, docs: Any) -> tuple[Any, ...]:
        reg = self.platform.registry_store
        rev = reg.revision() if reg is not None else None
        path = Path(self.platform.dir) / "agent.sqlite"
        n_inter: Any = None
        if path.exists():
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                n_inter = con.execute("SELECT count(*), max(id), max(updated_ns) FROM interactions").fetchone()
            except sqlite3.OperationalError:
                n_inter = None
            finally:
                con.close()
        n_logs = None
        if docs is not None:
            from sensorium.auth.principal import LOCAL

            total, last = docs.list(LOCAL, kind="device_log", limit=1)
            n_logs = (total, last[0]["id"] if last else None)
        return rev, n_inter, n_logs

    # -- the index -------------------------------------------------------------------------------
    def _open(self) -> Any:
        if self._table is None:
            import pyarrow as pa

            schema = pa.schema([
                pa.field("key", pa.string()), pa.field("kind", pa.string()), pa.field("id", pa.string()),
                pa.field("text", pa.string()), pa.field("hash", pa.string()),
                pa.field("device_id", pa.string()), pa.field("principal", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), DIM)),
            ])
            self._table = self._db.create_table(TABLE, schema=schema, exist_ok=True)
        return self._table

    def refresh(self, force: bool = False) -> dict[str, int]:
        """Bring the index up to date; embeds only new and changed items. Returns the counts."""
        with self._lock:
            return self._refresh(force)

    def _refresh(self, force: bool) -> dict[str, int]:
        docs = self._doc_store()
        state = self._state_now(docs)
        if not force and state == self._state:
            self.embedded = 0
            return {"embedded": 0, "deleted": 0}
        items = self._devices() + self._interactions() + (self._logs(docs) if docs is not None else [])
        want = {it.key: it for it in items}
        table = self._open()
        have = {r["key"]: r["hash"] for r in table.to_arrow().select(["key", "hash"]).to_pylist()}
        stale = [k for k, h in have.items() if k not in want or want[k].hash != h]
        new = [it for k, it in want.items() if have.get(k) != it.hash]
        if stale:
            for i in range(0, len(stale), 500):
                table.delete("key IN (" + ", ".join(literal(k) for k in stale[i:i + 500]) + ")")
        if new:
            try:
                vecs = self._embed([it.text for it in new])
            except EmbeddingsUnavailable as exc:
                raise SearchUnavailable(str(exc)) from None
            table.add([{"key": it.key, "kind": it.kind, "id": it.id, "text": it.text, "hash": it.hash,
                        "device_id": it.device_id, "principal": it.principal,
                        "vector": [float(x) for x in v]} for it, v in zip(new, vecs, strict=True)])
        self._state = state
        self.embedded = len(new)
        deleted = len([k for k in stale if k not in want])
        if new or stale:
            log.info("search index: %d embedded, %d removed, %d items", len(new), deleted, len(want))
        return {"embedded": len(new), "deleted": deleted}

    def search(self, q: str | None, *, kind: str | None = None, limit: int = 10,
               principal: Principal | None = None) -> dict[str, Any]:
        text = check_query(q)
        check_kind(kind)
        check_limit(limit)
        with self._lock:
            self._refresh(False)
            try:
                vec = self._embed([text])[0]
            except EmbeddingsUnavailable as exc:
                raise SearchUnavailable(str(exc)) from None
            rows = self._nearest(vec, kind, limit, principal)
        out: dict[str, Any] = {"query": text, "results": rows}
        if self.logs_note and kind in (None, "log"):
            out["note"] = self.logs_note
        return out

    def similar(self, device_id: str, *, limit: int = 5, principal: Principal | None = None) -> dict[str, Any]:
        """Devices whose description is closest to ``device_id``'s."""
        check_limit(limit)
        if principal is not None and not principal.allows_device(device_id):
            raise NotFound(f"no device {device_id!r}")
        with self._lock:
            self._refresh(False)
            table = self._open()
            got = table.search().where(f"key = {literal('device:' + device_id)}").limit(1).to_list()
            if not got:
                raise NotFound(f"no device {device_id!r} in the registry")
            rows = self._nearest(got[0]["vector"], "device", limit + 1, principal)
        rows = [r for r in rows if r["id"] != device_id][:limit]
        return {"device_id": device_id, "text": got[0]["text"], "results": rows}

    def _nearest(self, vec: Any, kind: str | None, limit: int, principal: Principal | None) -> list[dict[str, Any]]:
        table = self._open()
        restricted = principal is not None and principal.restricted
        n = table.count_rows() if restricted else limit
        if n == 0:
            return []
        query = table.search([float(x) for x in vec]).metric("cosine").limit(n)
        if kind is not None:
            query = query.where(f"kind = {literal(kind)}", prefilter=True)
        out = []
        for r in query.to_list():
            if restricted and not _visible(r, principal):
                continue
            out.append({"kind": r["kind"], "id": r["id"], "text": r["text"],
                        "score": round(1.0 - float(r["_distance"]), 4)})
            if len(out) >= limit:
                break
        return out


def _visible(row: dict[str, Any], p: Principal | None) -> bool:
    if p is None or p.scope is None:
        return True
    if row["kind"] == "interaction":
        return row["principal"] is not None and row["principal"] in (p.user_id, p.id)
    return p.allows_device(row["device_id"])


def _all(reg: Any, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        total, page = reg.entities(kind, limit=PAGE, offset=len(out), sort="id")
        out += page
        if not page or len(out) >= total:
            return out


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_flat(x)}" for k, x in sorted(v.items()))
    if isinstance(v, list | tuple):
        return ", ".join(_flat(x) for x in v)
    return str(v).replace("_", " ")




__all__ = ["KINDS", "Item", "SearchIndex", "SearchUnavailable", "available", "check_kind", "check_limit", "check_query"]
