"""The simulator proper: chunked, deterministic generation (:class:`Simulator`, :class:`SimChunk`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.errors import ConfigError
from sensorium.ingest.sim.config import NS, SimConfig, SimSummary
from sensorium.ingest.sim.faults import FAULTS, _LabelParts, _line_faults
from sensorium.ingest.sim.fleet import ALL_FIELDS, KINDS, _Fleet, _seed
from sensorium.ingest.sim.output import (
    _count_faults,
    _format_for,
    _lp_series,
    _wide,
    _wide_arrow,
    _write_jsonl,
    _write_labels,
    _write_raw,
)
from sensorium.ingest.sim.signals import _Group

_TARGET_POINTS_PER_CHUNK = 200_000


@dataclass(frozen=True)
class SimChunk:
    """One chunk of simulated time, in emission order.

    ``frame`` holds the emitted rows (``time`` ns, ``dev`` index, ``unit_f``, field columns);
    ``lines`` renders them as line protocol (``"\\n"``-joined, with a trailing newline; ``""`` when
    the chunk is empty). ``points``/``values`` count distinct points and their values (duplicate
    copies excluded); ``n_lines`` counts rows including duplicates. ``labels`` follows
    :data:`LABEL_SCHEMA`. ``seconds_done``/``seconds_total`` give the simulated time covered so
    far and in all (``inf`` for an endless stream).
    """

    index: int
    start_ns: int
    end_ns: int
    frame: pl.DataFrame = dc_field(repr=False)
    labels: pa.Table = dc_field(repr=False)
    points: int
    values: int
    seconds_done: float
    seconds_total: float
    _fleet: _Fleet = dc_field(repr=False, compare=False)

    @property
    def n_lines(self) -> int:
        """Rows (line-protocol lines) in the chunk, duplicates included."""
        return self.frame.height

    @cached_property
    def line_list(self) -> list[str]:
        """The lines, without newlines."""
        return _lp_series(self.frame, self._fleet).to_list() if self.frame.height else []

    @cached_property
    def lines(self) -> str:
        """Line protocol, ``"\\n"``-joined with a trailing newline."""
        if not self.frame.height:
            return ""
        joined = _lp_series(self.frame, self._fleet).str.join("\n").item()
        return str(joined) + "\n"

    @property
    def max_time(self) -> int | None:
        """Latest point time in the chunk."""
        if not self.frame.height:
            return None
        return int(self.frame["time"].max())  # type: ignore[arg-type]


class _Run:
    """State of one pass over the simulation (a fresh one per :meth:`Simulator.chunks` call)."""

    def __init__(self, sim: Simulator) -> None:
        cfg = sim.config
        fleet = sim.fleet
        self.fleet = fleet
        self.cfg = cfg
        self.groups = [_Group(kind, fleet, cfg) for kind in KINDS]
        self.pending: pl.DataFrame | None = None  # late rows not emitted yet (+ emit_at)
        self.max_emitted = np.iinfo(np.int64).min


def _empty_frame() -> pl.DataFrame:
    schema: dict[str, Any] = {"time": pl.Int64, "dev": pl.Int32, "unit_f": pl.Boolean}
    for f in ALL_FIELDS:
        schema[f] = pl.Int64 if f == "rssi" else pl.Boolean if f == "motion" else pl.Float64
    return pl.DataFrame(schema=schema)


_CANON = ["time", "dev", "unit_f", *ALL_FIELDS]


class Simulator:
    """Deterministic generator of a simulated fleet's telemetry. See the module docs."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.fleet = _Fleet(self.config)

    @property
    def default_chunk_seconds(self) -> float:
        """Chunk length used by :meth:`write`: about 200k points per chunk."""
        cfg = self.config
        return max(1.0 / cfg.rate, _TARGET_POINTS_PER_CHUNK / (cfg.devices * cfg.rate))

    @property
    def device_ids(self) -> list[str]:
        return list(self.fleet.device_ids)

    def devices(self) -> pa.Table:
        """The fleet: ``device_id``, ``kind``, ``location``, ``room``."""
        f = self.fleet
        return pa.table(
            {"device_id": f.device_ids, "kind": f.kinds, "location": f.locations, "room": f.rooms}
        )

    def chunks(self, chunk_seconds: float = 60.0) -> Iterator[SimChunk]:
        """Stream the simulation, ``chunk_seconds`` of simulated time at a time (lazily).

        Output is deterministic for a given config and ``chunk_seconds``. Chunks may be empty
        (e.g. when every device is in a dropout).
        """
        if not chunk_seconds > 0:
            raise ConfigError("chunk_seconds must be > 0", chunk_seconds=chunk_seconds)
        cfg = self.config
        run = _Run(self)
        per = max(1, round(chunk_seconds * cfg.rate))
        total = cfg.readings
        seed = _seed(cfg.seed)
        c = 0
        while True:
            k0 = c * per
            k1 = k0 + per if total is None else min(total, k0 + per)
            final = total is not None and k1 >= total
            yield self._chunk(run, c, np.arange(k0, k1, dtype=np.int64), final, seed)
            if final:
                return
            c += 1

    def _chunk(self, run: _Run, c: int, k: np.ndarray, final: bool, seed: int) -> SimChunk:
        cfg = self.config
        fleet = run.fleet
        rng_v = np.random.default_rng([seed, 1, c])
        rng_f = np.random.default_rng([seed, 2, c])
        rng_l = np.random.default_rng([seed, 3, c])
        labels = _LabelParts()
        stepped = [g.step(rng_v, rng_f, k, final, labels) for g in run.groups]
        frames = [f for f in stepped if f is not None and f.height]
        df = pl.concat(frames, how="diagonal") if frames else _empty_frame()
        if df.height:
            df = df[np.lexsort((df["dev"].to_numpy(), df["time"].to_numpy()))]
        out, points, values = _line_faults(cfg, run, df, rng_l, final, labels)
        schema = _empty_frame().schema
        missing = [pl.lit(None, schema[c]).alias(c) for c in _CANON if c not in out.columns]
        if missing:
            out = out.with_columns(missing)
        out = out.select(_CANON)
        start = cfg.start + round(int(k[0]) * NS / cfg.rate) if len(k) else cfg.start
        end = cfg.start + round((int(k[-1]) + 1) * NS / cfg.rate) if len(k) else cfg.start
        return SimChunk(
            index=c,
            start_ns=start,
            end_ns=end,
            frame=out,
            labels=labels.table(fleet),
            points=points,
            values=values,
            seconds_done=min(cfg.duration_s, (int(k[-1]) + 1) / cfg.rate) if len(k) else 0.0,
            seconds_total=cfg.duration_s,
            _fleet=fleet,
        )

    # ---- output

    def write(
        self,
        out: Path | str,
        fmt: str | None = None,
        progress: Callable[[float, float], None] | None = None,
        chunk_seconds: float | None = None,
    ) -> SimSummary:
        """Write the whole simulation to ``out`` and its labels to ``<out>.labels.csv``.

        ``fmt`` (default: from the extension): ``lp`` (.lp/.txt), ``jsonl`` (.jsonl/.ndjson: one
        reading per field value), ``csv`` or ``parquet`` (wide: time, measurement, tags, fields).
        ``progress(simulated_seconds_done, simulated_seconds_total)`` is called after every chunk.
        """
        out = Path(out)
        if self.config.readings is None:
            raise ConfigError("cannot write an endless simulation (duration_s=inf) to a file")
        fmt = _format_for(out, fmt)
        labels_path = out.with_name(out.name + ".labels.csv")
        cs = chunk_seconds or self.default_chunk_seconds
        counts = dict.fromkeys(FAULTS, 0)
        points = values = lines = 0
        t0 = time.perf_counter()
        pq_writer = None
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh, open(labels_path, "wb") as lfh:
            lfh.write(b"time,device_id,measurement,field,fault,end_time\n")
            first = True
            for ch in self.chunks(cs):
                points += ch.points
                values += ch.values
                if fmt == "lp":
                    if ch.frame.height:
                        _write_raw(fh, _lp_series(ch.frame, self.fleet))
                    lines += ch.n_lines
                elif fmt == "jsonl":
                    lines += _write_jsonl(fh, ch.frame, self.fleet)
                elif fmt == "csv":
                    wide = _wide(ch.frame, self.fleet, iso=True)
                    wide.write_csv(fh, include_header=first)
                    lines += wide.height
                else:
                    tbl = _wide_arrow(ch.frame, self.fleet)
                    if pq_writer is None:
                        import pyarrow.parquet as pq

                        pq_writer = pq.ParquetWriter(fh, tbl.schema, compression="zstd")
                    if tbl.num_rows:
                        pq_writer.write_table(tbl)
                    lines += tbl.num_rows
                first = False
                _write_labels(lfh, ch.labels)
                _count_faults(counts, ch.labels)
                if progress is not None:
                    progress(ch.seconds_done, ch.seconds_total)
            if pq_writer is not None:
                pq_writer.close()
        return SimSummary(
            points=points,
            values=values,
            lines=lines,
            faults=counts,
            path=out,
            labels_path=labels_path,
            seconds=time.perf_counter() - t0,
        )
