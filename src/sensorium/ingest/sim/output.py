"""Output formats: line protocol, JSONL, wide CSV / Parquet rows, and the labels CSV."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import ConfigError
from sensorium.ingest.sim.fleet import ALL_FIELDS, KIND_FIELDS, KINDS, UNITS, _Fleet

_FORMATS = {
    ".lp": "lp",
    ".txt": "lp",
    ".line": "lp",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _count_faults(counts: dict[str, int], labels: pa.Table) -> None:
    if not labels.num_rows:
        return
    for row in pc.value_counts(labels["fault"]).to_pylist():
        counts[row["values"]] = counts.get(row["values"], 0) + int(row["counts"])


def _format_for(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        f = {"ndjson": "jsonl", "json": "jsonl", "txt": "lp", "line": "lp", "pq": "parquet"}.get(
            f, f
        )
        if f not in ("lp", "jsonl", "csv", "parquet"):
            raise ConfigError(f"unknown output format {fmt!r}: use lp, jsonl, csv or parquet")
        return f
    ext = out.suffix.lower()
    if ext not in _FORMATS:
        raise ConfigError(
            f"cannot tell the format of {out.name!r}: use .lp/.txt, .jsonl/.ndjson, .csv or .parquet"
        )
    return _FORMATS[ext]


# --------------------------------------------------------------------------- formatting


def _value_str(f: str) -> pl.Expr:
    c = pl.col(f)
    if f == "rssi":
        return c.cast(pl.Utf8) + pl.lit("i")
    return c.cast(pl.Utf8)


def _by_kind(
    frame: pl.DataFrame, fleet: _Fleet, build: Callable[[str, pl.DataFrame], pl.Series]
) -> pl.Series:
    """``build(kind, rows of that kind)`` for each kind, put back in the order of ``frame``."""
    kinds = fleet.kind[frame["dev"].to_numpy()]
    perms: list[np.ndarray] = []
    outs: list[pl.Series] = []
    for ki, kind in enumerate(KINDS):
        idx = np.flatnonzero(kinds == ki)
        if idx.size:
            perms.append(idx)
            outs.append(build(kind, frame[idx] if idx.size < frame.height else frame))
    if len(outs) == 1:
        return outs[0]
    perm = np.concatenate(perms)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return pl.concat(outs).gather(inv)


def _lp_series(frame: pl.DataFrame, fleet: _Fleet) -> pl.Series:
    """Line protocol for every row of ``frame``."""

    def build(kind: str, sub: pl.DataFrame) -> pl.Series:
        pieces: list[Any] = [fleet.s_prefix.gather(sub["dev"].cast(pl.UInt32)).alias("p")]
        if kind == "climate":
            pieces.append(
                pl.when(pl.col("unit_f")).then(pl.lit(",unit=degF")).otherwise(pl.lit(""))
            )
        for i, f in enumerate(KIND_FIELDS[kind]):
            pieces += [pl.lit((" " if i == 0 else ",") + f + "="), _value_str(f)]
        pieces += [pl.lit(" "), pl.col("time").cast(pl.Utf8)]
        return sub.select(pl.concat_str(pieces).alias("line")).to_series()

    return _by_kind(frame, fleet, build)


def _iso(col: str = "time") -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ns", "UTC")).dt.strftime("%Y-%m-%dT%H:%M:%S%.9fZ")


def _write_jsonl(fh: BinaryIO, frame: pl.DataFrame, fleet: _Fleet) -> int:
    """One JSON reading per field value, in row order then field order; returns readings."""
    if not frame.height:
        return 0

    def build(kind: str, sub: pl.DataFrame) -> pl.Series:
        dev = sub["dev"].cast(pl.UInt32)
        df = sub.with_columns(
            fleet.s_json_head.gather(dev).alias("_h"),
            fleet.s_json_mid.gather(dev).alias("_m"),
            fleet.s_json_tail.gather(dev).alias("_t"),
            _iso().alias("_ts"),
        )
        parts = []
        for f in KIND_FIELDS[kind]:
            unit = UNITS[f]
            if f == "temperature":
                u = pl.when(pl.col("unit_f")).then(pl.lit('"degF"')).otherwise(pl.lit('"degC"'))
            else:
                u = pl.lit("null" if unit is None else f'"{unit}"')
            parts.append(
                pl.concat_str(
                    [
                        pl.col("_h"),
                        pl.col("_ts"),
                        pl.col("_m"),
                        pl.lit(f + '","value":'),
                        pl.col(f).cast(pl.Utf8),
                        pl.lit(',"unit":'),
                        u,
                        pl.col("_t"),
                    ]
                )
            )
        return df.select(pl.concat_str(parts, separator="\n").alias("j")).to_series()

    _write_raw(fh, _by_kind(frame, fleet, build))
    return int(fleet.n_fields[frame["dev"].to_numpy()].sum())


def _write_raw(fh: BinaryIO, text: pl.Series) -> None:
    """Write each string of ``text`` followed by a newline, unquoted."""
    text.to_frame().write_csv(fh, include_header=False, quote_style="never")


def _wide(frame: pl.DataFrame, fleet: _Fleet, iso: bool) -> pl.DataFrame:
    """Rows as ``time, measurement, device_id, location, room, sensor_type, unit, <fields>``."""
    dev = frame["dev"].cast(pl.UInt32)
    kind = fleet.s_kind.gather(dev)
    cols: list[Any] = [
        _iso().alias("time") if iso else pl.col("time"),
        kind.alias("measurement"),
        fleet.s_device.gather(dev).alias("device_id"),
        fleet.s_location.gather(dev).alias("location"),
        fleet.s_room.gather(dev).alias("room"),
        kind.alias("sensor_type"),
        pl.when(pl.col("unit_f"))
        .then(pl.lit("degF"))
        .otherwise(pl.lit(None, pl.Utf8))
        .alias("unit"),
        *[pl.col(f) for f in ALL_FIELDS],
    ]
    return frame.select(cols)


_WIDE_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("ns", tz="UTC")),
        ("measurement", pa.string()),
        ("device_id", pa.string()),
        ("location", pa.string()),
        ("room", pa.string()),
        ("sensor_type", pa.string()),
        ("unit", pa.string()),
        *[
            (f, pa.int64() if f == "rssi" else pa.bool_() if f == "motion" else pa.float64())
            for f in ALL_FIELDS
        ],
    ]
)


def _wide_arrow(frame: pl.DataFrame, fleet: _Fleet) -> pa.Table:
    tbl = _wide(frame, fleet, iso=False).to_arrow()
    arrays = []
    for f in _WIDE_SCHEMA:
        col = tbl[f.name]
        if f.name == "time":
            col = col.cast(pa.int64()).cast(f.type)
        arrays.append(col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=_WIDE_SCHEMA)


def _write_labels(fh: BinaryIO, labels: pa.Table) -> None:
    if not labels.num_rows:
        return
    df = pl.from_arrow(labels)
    assert isinstance(df, pl.DataFrame)
    buf = io.BytesIO()
    df.write_csv(buf, include_header=False)
    fh.write(buf.getvalue())
