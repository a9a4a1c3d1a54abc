"""Dense integer ids for series, fields and (series, field) keys, so that the engine's state is
numpy arrays indexed by id and a batch maps to ids with two hash lookups (no string joins).

Ids are assigned in the order names are first seen, which is a function of the log: replaying the
same log assigns the same ids. Only the names are persisted; hashes are recomputed on restore.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import polars as pl

from sensorium.keyindex import NameIndex, append_rows
from sensorium.rules.model import is_glob


def parse_series_key(key: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, measurement, tags) of a series key made by :mod:`sensorium.stream.frame` (used
    only for series missing from the series frame)."""
    head, _, rest = key.partition(",")
    bucket, sep, measurement = head.partition(":")
    if not sep:
        bucket, measurement = "default", head
    tags: dict[str, str] = {}
    if rest:
        for part in rest.split(","):
            k, _, v = part.partition("=")
            tags[k] = v
    return bucket, measurement, tags


class SeriesTable:
    """Series ids with their bucket, measurement and tags.

    Kept as columns (one Polars frame, new series appended as they come): at 100 k series,
    per-series Python lists and tag dicts cost ~60 MB more. A single series' bucket, measurement
    or tags is read as one row (when an alert needs its subject)."""

    def __init__(self) -> None:
        self.index = NameIndex(seed=0x5E750)
        # series, bucket, measurement, tag columns; by sid
        self._table = pl.DataFrame(schema={"series": pl.Utf8, "bucket": pl.Utf8, "measurement": pl.Utf8})

    def __len__(self) -> int:
        return len(self.index)

    def register(self, series: pl.DataFrame) -> pl.DataFrame:
        """Add the series of a series frame not yet known; returns their rows with a ``sid``."""
        if series.height == 0:
            return series.with_columns(pl.lit(0, dtype=pl.Int32).alias("sid")).head(0)
        known = self.index.lookup(series.get_column("series"))
        if (known >= 0).all():
            return series.head(0).with_columns(pl.lit(0, dtype=pl.Int32).alias("sid"))
        fresh = series.filter(pl.Series(known < 0)).unique(subset="series", keep="last", maintain_order=True)
        for col in ("bucket", "measurement"):
            if col not in fresh.columns:
                fresh = fresh.with_columns(pl.lit(None, dtype=pl.Utf8).alias(col))
        tag_cols = [c for c in fresh.columns if c not in ("series", "bucket", "measurement")]
        part = fresh.select(
            pl.col("series").cast(pl.Utf8), pl.col("bucket").cast(pl.Utf8), pl.col("measurement").cast(pl.Utf8),
            *(pl.col(c).cast(pl.Utf8) for c in tag_cols),
        )
        need = part.select((pl.col("bucket").is_null() | pl.col("measurement").is_null()).alias("n")).to_series()
        if not tag_cols or need.any():  # parse the keys only where they must be
            part = _parsed(part, need if tag_cols else pl.Series([True] * part.height), bool(tag_cols))
        sids = self.index.add(part.get_column("series").to_list())
        self._table = append_rows(self._table, part)
        return fresh.with_columns(
            pl.Series("sid", sids), part.get_column("bucket"), part.get_column("measurement")
        )

    def register_keys(self, names: list[str]) -> pl.DataFrame:
        """Add series known only by their key (parsed); returns their series-frame rows."""
        rows: list[dict[str, Any]] = []
        for name in names:
            b, m, tags = parse_series_key(name)
            rows.append({"series": name, "bucket": b, "measurement": m, **tags})
        return self.register(pl.DataFrame(rows, infer_schema_length=None))

    def _rows(self) -> pl.DataFrame:
        return self._table

    def name(self, sid: int) -> str:
        return str(self.index.column()[int(sid)])

    def describe(self, sid: int) -> tuple[str, str, dict[str, str]]:
        """(bucket, measurement, tags) of one series."""
        return self.describe_many([int(sid)])[0]

    def describe_many(self, sids: list[int]) -> list[tuple[str, str, dict[str, str]]]:
        """:meth:`describe` of several series, with one read of the table (an alert burst
        touches thousands of series: one row read each cost ~30 µs)."""
        rows = self._rows()[sids].to_dicts()
        return [
            (
                row["bucket"],
                row["measurement"],
                {k: v for k, v in row.items() if k not in ("series", "bucket", "measurement") and v is not None},
            )
            for row in rows
        ]

    def frame(self) -> pl.DataFrame:
        """Every known series as a series frame (with ``sid``)."""
        rows = self._rows()
        return rows.with_columns(pl.Series("sid", np.arange(rows.height, dtype=np.int32)))

    def state(self) -> dict[str, Any]:
        # an Arrow table: pickled as its buffers (a Polars frame pickles as a serialised copy)
        return {"rows": self._rows().to_arrow()}

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> SeriesTable:
        out = cls()
        if "rows" in st:
            rows = pl.DataFrame(pl.from_arrow(st["rows"]))
        else:  # before the columnar table: lists by sid
            rows = pl.DataFrame(
                [
                    {"series": s, "bucket": b, "measurement": m, **t}
                    for s, b, m, t in zip(st["series"], st["bucket"], st["measurement"], st["tags"], strict=True)
                ],
                schema_overrides={"series": pl.Utf8, "bucket": pl.Utf8, "measurement": pl.Utf8},
                infer_schema_length=None,
            )
        if rows.height:
            out.index.add(rows.get_column("series").to_list())
            out._table = rows
        return out


def _parsed(part: pl.DataFrame, need: pl.Series, have_tags: bool) -> pl.DataFrame:
    """``part`` with bucket and measurement (and, without tag columns, the tags) of the rows
    ``need`` taken from their parsed series keys."""
    idx = np.flatnonzero(need.to_numpy())
    names = part.get_column("series").gather(idx).to_list()
    parsed = [parse_series_key(n) for n in names]
    bucket = part.get_column("bucket").to_list()
    meas = part.get_column("measurement").to_list()
    for i, (pb, pm, _t) in zip(idx.tolist(), parsed, strict=True):
        bucket[i] = pb if bucket[i] is None else bucket[i]
        meas[i] = pm if meas[i] is None else meas[i]
    out = part.with_columns(pl.Series("bucket", bucket, dtype=pl.Utf8), pl.Series("measurement", meas, dtype=pl.Utf8))
    if have_tags:
        return out
    tags = pl.DataFrame([t for _b, _m, t in parsed], infer_schema_length=None)
    if tags.width == 0:
        return out
    return pl.concat([out, tags.select(pl.all().cast(pl.Utf8))], how="horizontal")


class KeyTable:
    """(series id, watched field id) → key id, assigned in order of first sight; each key also
    has a local id among the keys of its field (``lid``: 0, 1, ... per field)."""

    def __init__(self) -> None:
        self.table = np.full((0, 0), -1, dtype=np.int32)
        self.sid = np.zeros(0, dtype=np.int32)  # per key
        self.rf = np.zeros(0, dtype=np.int32)
        self.lid = np.zeros(0, dtype=np.int32)
        self.per_field: list[int] = []  # keys of each watched field

    def __len__(self) -> int:
        return len(self.sid)

    def ids(
        self, sid: np.ndarray, rf: np.ndarray, n_series: int, n_fields: int, first: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Key ids of distinct (series, field) pairs, and the ids of those that are new. New
        pairs get ids in the order of ``first`` (where each pair is first seen), or as given."""
        if self.table.shape[0] < n_series or self.table.shape[1] < n_fields:
            grown = np.full(
                (max(n_series, 2 * self.table.shape[0], 64), max(n_fields, self.table.shape[1] + 4)),
                -1,
                dtype=np.int32,
            )
            grown[: self.table.shape[0], : self.table.shape[1]] = self.table
            self.table = grown
        kid = self.table[sid, rf]
        new = np.flatnonzero(kid < 0)
        if not len(new):
            return kid, new.astype(np.int32)
        if first is not None:
            new = new[np.argsort(first[new], kind="stable")]
        ps, pf = sid[new], rf[new]
        start = len(self.sid)
        fresh = np.arange(start, start + len(new), dtype=np.int32)
        kid[new] = self.table[ps, pf] = fresh
        self.sid = np.concatenate([self.sid, ps])
        self.rf = np.concatenate([self.rf, pf])
        lid = np.empty(len(pf), dtype=np.int32)
        self.per_field += [0] * (n_fields - len(self.per_field))
        for f in np.unique(pf).tolist():
            mine = pf == f
            k = int(np.count_nonzero(mine))
            lid[mine] = np.arange(self.per_field[f], self.per_field[f] + k, dtype=np.int32)
            self.per_field[f] += k
        self.lid = np.concatenate([self.lid, lid])
        return kid, fresh


def grow(a: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """``a`` with at least ``n`` rows (capacity doubles), new rows set to ``fill``."""
    if a.shape[0] >= n:
        return a
    cap = max(n, 2 * a.shape[0], 64)
    out = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def glob_regex(pattern: str) -> str:
    """A shell glob as an anchored regex (``*``, ``?``, ``[...]``, ``[!...]``)."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return "".join(out)


def _match(col: str, pattern: str) -> pl.Expr:
    if is_glob(pattern):
        return pl.col(col).str.contains(glob_regex(pattern))
    return pl.col(col) == pattern


def _selector(rule: Any, columns: Collection[str]) -> pl.Expr | None:
    """A rule's bucket/measurement/tag selectors as one boolean expression over a series frame
    with ``columns``; None when a tag it selects on is not a column (no series matches)."""
    expr = pl.lit(True)
    for col, pattern in (("bucket", rule.bucket), ("measurement", rule.measurement)):
        if pattern is not None:
            expr = expr & _match(col, pattern)
    for tag, pattern in rule.tags.items():
        if tag not in columns:
            return None
        expr = expr & _match(tag, pattern)
    return expr.fill_null(False)


def series_masks(rules: Sequence[Any], frame: pl.DataFrame) -> list[np.ndarray]:
    """Which series (rows of a series frame) each rule's bucket/measurement/tag selectors accept:
    every rule in one select (new series arrive a few per step, where a Polars call's fixed cost,
    not the rows, is the price)."""
    exprs = {f"m{i}": e for i, r in enumerate(rules) if (e := _selector(r, frame.columns)) is not None}
    got = frame.select(*(e.alias(k) for k, e in exprs.items())) if exprs else None
    out = []
    for i in range(len(rules)):
        if got is None or f"m{i}" not in exprs:
            out.append(np.zeros(frame.height, dtype=bool))
            continue
        m = got.get_column(f"m{i}").to_numpy().astype(bool)
        out.append(np.broadcast_to(m, (frame.height,)).copy() if len(m) != frame.height else m)
    return out


def series_mask(rule: Any, frame: pl.DataFrame) -> np.ndarray:
    """Which series (rows of a series frame) a rule's bucket/measurement/tag selectors accept."""
    return series_masks([rule], frame)[0]
