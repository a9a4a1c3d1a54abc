"""User-defined stream stages: a named chain of filter / map / window / aggregate over batches.

::

    from sensorium.stream import Pipeline

    comfort = (
        Pipeline("comfort")
        .filter(measurement="climate", field="temperature")
        .map(lambda df: df.with_columns(value=pl.col("value") * 9 / 5 + 32))   # °C → °F
        .window("15m")                       # tumbling; or hop="5m", or session="10m"
        .aggregate("mean", "max", "p95")
        .to_table("comfort_15m")             # queryable: SELECT * FROM comfort_15m
    )
    Sensorium(settings, pipelines=[comfort])

Every step works on a whole batch (a Polars values frame: ``series, field, time, value``), never
on one record. The window step is stateful; its state is checkpointed with the rest of the
stream under the step id ``"<pipeline>.window"``, so finished windows land in the output table
exactly once, even across crashes. Rows later than the allowed lateness go to ``late_data``.
``sink(fn)`` callbacks see finished windows *at least once* (a replay after a crash calls them
again for what the last checkpoint did not cover); use the table when exactly once matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from sensorium.stream.windows import Hopping, Session, Tumbling, parse_duration

_NS = 1_000_000_000


@dataclass(frozen=True)
class _Step:
    kind: str  # "filter" | "map"
    fn: Callable[..., Any]


class Pipeline:
    """A named chain of steps; give it to :class:`~sensorium.platform.Sensorium` (``pipelines=``)."""

    def __init__(self, step_id: str, *, lateness: str = "10s", idle_timeout: str = "60s") -> None:
        if not step_id or not step_id.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"pipeline name {step_id!r}: use letters, digits, '-' and '_'")
        self.step_id = step_id
        self._before: list[_Step] = []
        self._after: list[_Step] = []
        self._windower: Any = None
        self._op: Any = None
        self._table: str | None = None
        self._sinks: list[Callable[[pl.DataFrame], None]] = []
        self._series = pl.DataFrame({"series": []}, schema={"series": pl.Utf8})
        self._lateness = parse_duration(lateness)
        self._idle = parse_duration(idle_timeout)

    # -- building ------------------------------------------------------------------------------
    def _steps(self) -> list[_Step]:
        return self._after if self._op is not None else self._before

    def filter(
        self,
        predicate: pl.Expr | Callable[[pl.DataFrame], pl.Series] | None = None,
        *,
        measurement: str | None = None,
        field: str | Sequence[str] | None = None,
        **tags: str,
    ) -> Pipeline:
        """Keep rows matching a Polars expression and/or measurement, field and tag values."""
        def run(df: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
            if measurement is not None or tags:
                sel = series
                if measurement is not None:
                    sel = sel.filter(pl.col("measurement") == measurement)
                for k, v in tags.items():
                    sel = sel.filter(pl.col(k) == v) if k in sel.columns else sel.clear()
                df = df.filter(pl.col("series").is_in(sel.get_column("series").implode()))
            if field is not None:
                fields = [field] if isinstance(field, str) else list(field)
                df = df.filter(pl.col("field").is_in(fields))
            if predicate is not None:
                df = df.filter(predicate if isinstance(predicate, pl.Expr) else predicate(df))
            return df

        self._steps().append(_Step("filter", run))
        return self

    def map(self, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Pipeline:
        """Transform the batch (must keep ``series``, ``field``, ``time``, ``value``)."""
        self._steps().append(_Step("map", fn))
        return self

    def window(self, size: str | None = None, *, hop: str | None = None, session: str | None = None) -> Pipeline:
        """Tumbling windows of ``size``; hopping windows of ``size`` every ``hop``; or session
        windows closed by a gap of ``session``."""
        if self._windower is not None:
            raise ValueError(f"pipeline {self.step_id!r} has a window already")
        if session is not None:
            self._windower = Session(parse_duration(session))
        elif size is None:
            raise ValueError("window needs a size (e.g. '5m') or session='10m'")
        elif hop is not None:
            self._windower = Hopping(parse_duration(size), parse_duration(hop))
        else:
            self._windower = Tumbling(parse_duration(size))
        return self

    def aggregate(self, *aggregations: str) -> Pipeline:
        """Aggregate each window: count sum mean min max stddev first last pNN rate integral."""
        from sensorium.stream.window_op import WindowOperator

        if self._windower is None:
            raise ValueError("aggregate() follows window()")
        self._op = WindowOperator(
            f"{self.step_id}.window", self._windower, list(aggregations) or ["mean"],
            lateness_ns=self._lateness, idle_timeout_ns=self._idle,
        )
        return self

    def to_table(self, name: str) -> Pipeline:
        """Store finished windows in a queryable table ``name`` (exactly once)."""
        self._table = name
        return self

    def sink(self, fn: Callable[[pl.DataFrame], None]) -> Pipeline:
        """Call ``fn`` with each batch of finished windows (at least once)."""
        self._sinks.append(fn)
        return self

    # -- the stage protocol (used by the runner) ---------------------------------------------
    def _finish(self, rows: pl.DataFrame, late: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        for st in self._after:
            rows = st.fn(rows, series) if st.kind == "filter" else st.fn(rows)
        out: dict[str, pl.DataFrame] = {}
        if rows.height:
            rows = rows.rename({"start": "time"}) if "start" in rows.columns else rows
            for fn in self._sinks:
                fn(rows)
            if self._table is not None:
                out[self._table] = rows
        if late.height:
            out["late"] = late
        return out

    def _ready(self) -> None:
        if self._windower is not None and self._op is None:  # window() without aggregate()
            self.aggregate("count", "mean", "min", "max")

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        self._ready()
        self._series = series
        df = values
        for st in self._before:
            df = st.fn(df, series) if st.kind == "filter" else st.fn(df)
        if self._op is None:
            out: dict[str, pl.DataFrame] = {}
            if df.height:
                for fn in self._sinks:
                    fn(df)
                if self._table is not None:
                    out[self._table] = df
            return out
        res = self._op.process(df)
        return self._finish(res.finalized, res.late, series)

    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]:
        self._ready()
        if self._op is None:
            return {}
        res = self._op.tick(now_ns)
        return self._finish(res.finalized, res.late, self._series)

    def state(self) -> dict[str, Any]:
        self._ready()
        return {} if self._op is None else {"window": self._op.state()}

    def restore(self, state: dict[str, Any]) -> None:
        self._ready()
        if self._op is not None and "window" in state:
            self._op.restore(state["window"])
