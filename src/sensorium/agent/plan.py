"""The structured query plan (what a question was understood as) and the SQL it becomes.

A :class:`Plan` is plain data, validated (pydantic): the embedded parser builds one, an LLM tool
call is checked against the same model, and :func:`to_sql` turns it into one read-only SELECT
with every name quoted and every value a literal — a plan cannot express anything but a read.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sensorium.query.sql import ident as q
from sensorium.query.sql import literal as lit

Kind = Literal["aggregate", "topk", "threshold", "latest", "alerts", "anomalies", "forecast", "devices"]
Aggregation = Literal["mean", "median", "max", "min", "sum", "count", "latest", "trend", "change", "consumption",
                      "when", "how_long", "ever", "which", "list", "count_devices"]
Group = Literal["hour", "day", "week", "device_id", "room", "location", "sensor_type"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\- ]{0,127}$")
NS = 1_000_000_000


class TimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_ns: int | None = None
    end_ns: int | None = None
    text: str = ""
    understood: str = "all data"
    span: str | None = None


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal[">", ">=", "<", "<="]
    value: float = Field(description="In the stored unit.")
    given: float = Field(description="As asked.")
    given_unit: str | None = None


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    measurements: tuple[str, ...] = ()
    field: str | None = None
    aggregation: Aggregation = "mean"
    time: TimeSpec = TimeSpec()
    filters: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    group_by: tuple[Group, ...] = ()
    top_k: int | None = Field(None, ge=1, le=100)
    order: Literal["desc", "asc"] = "desc"
    threshold: Threshold | None = None
    unit: str | None = Field(None, description="Unit of the answer (°F when asked for).")
    stored_unit: str | None = None
    anomaly_score: float = 0.6
    field_kind: Literal["boolean"] | None = Field(None, description="'boolean': counts count the true readings.")

    @field_validator("measurements")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            if not _IDENT.match(m):
                raise ValueError(f"not a measurement name: {m!r}")
        return v

    @field_validator("field")
    @classmethod
    def _field(cls, v: str | None) -> str | None:
        if v is not None and not _IDENT.match(v):
            raise ValueError(f"not a field name: {v!r}")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for k in v:
            if k not in ("room", "location", "device_id", "sensor_type"):
                raise ValueError(f"filters may name room, location, device_id or sensor_type; not {k!r}")
        return v

    def public(self) -> dict[str, Any]:
        """The plan as the API shows it."""
        from sensorium.agent.timeparse import iso

        t = self.time
        out: dict[str, Any] = {
            "kind": self.kind,
            "measurement": self.measurements[0] if len(self.measurements) == 1 else list(self.measurements) or None,
            "field": self.field,
            "aggregation": self.aggregation,
            "time_range": {"start": iso(t.start_ns), "end": iso(t.end_ns), "text": t.text, "understood": t.understood},
            "filters": {k: list(v) for k, v in self.filters.items()},
            "group_by": list(self.group_by),
            "top_k": self.top_k,
            "order": self.order if self.top_k else None,
            "threshold": self.threshold.model_dump() if self.threshold else None,
            "unit": self.unit,
        }
        return out


# -- units ------------------------------------------------------------------------------------------
def convert(value: float, src: str | None, dst: str | None) -> float:
    """Temperature conversions between degC and degF (other units pass through)."""
    if src == dst or src is None or dst is None:
        return value
    if (src, dst) == ("degF", "degC"):
        return (value - 32.0) * 5.0 / 9.0
    if (src, dst) == ("degC", "degF"):
        return value * 9.0 / 5.0 + 32.0
    return value


def _display(expr: str, plan: Plan, difference: bool = False) -> str:
    if plan.unit == "degF" and plan.stored_unit == "degC":
        return f"({expr}) * 9.0 / 5.0" if difference else f"({expr}) * 9.0 / 5.0 + 32.0"
    return expr


# -- SQL --------------------------------------------------------------------------------------------
TAGS = ("device_id", "room", "location", "sensor_type")


def source(plan: Plan, columns: list[str]) -> str:
    """The table (or union of tables) a plan reads, with only the columns it needs."""
    if len(plan.measurements) == 1:
        return q(plan.measurements[0])
    sel = ", ".join(q(c) for c in columns)
    return "(" + " UNION ALL BY NAME ".join(f"SELECT {sel} FROM {q(m)}" for m in plan.measurements) + ")"


def where(plan: Plan, extra: list[str] | None = None) -> str:
    w: list[str] = []
    if plan.field:
        w.append(f"{q(plan.field)} IS NOT NULL")
    if plan.time.start_ns is not None:
        w.append(f"time >= make_timestamp_ns({int(plan.time.start_ns)})")
    if plan.time.end_ns is not None:
        w.append(f"time < make_timestamp_ns({int(plan.time.end_ns)})")
    for k, vals in sorted(plan.filters.items()):
        w.append(f"{q(k)} IN ({', '.join(lit(v) for v in vals)})")
    w += extra or []
    return " AND ".join(w) if w else "true"


def _group_exprs(plan: Plan) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for g in plan.group_by:
        if g in ("hour", "day", "week"):
            out.append((f"time_bucket(INTERVAL '1 {g}', time)", g))
        else:
            out.append((q(g), g))
    return out


def value_expr(plan: Plan, is_bool: bool) -> str:
    f = q(plan.field or "")
    agg = plan.aggregation
    if is_bool:
        return {"count": f"count_if({f})", "latest": f"arg_max({f}, time)"}.get(agg, f"avg(CAST({f} AS DOUBLE))")
    if agg == "trend":  # slope per hour
        return _display(f"regr_slope({f}, epoch(time)) * 3600", plan, difference=True)
    if agg == "change":
        return _display(f"arg_max({f}, time) - arg_min({f}, time)", plan, difference=True)
    if agg == "count":
        return f"count({f})"
    base = {"mean": f"avg({f})", "median": f"median({f})", "max": f"max({f})", "min": f"min({f})", "sum": f"sum({f})",
            "latest": f"arg_max({f}, time)"}[agg]
    return _display(base, plan)


def to_sql(plan: Plan, is_bool: bool = False) -> str:
    """One read-only SELECT answering ``plan`` (kinds aggregate, topk, threshold, latest,
    anomalies, devices)."""
    is_bool = is_bool or plan.field_kind == "boolean"
    groups = _group_exprs(plan)
    tag_cols = [g for g in plan.group_by if g in TAGS]
    need = sorted({"time", "device_id", *(plan.filters), *tag_cols, *([plan.field] if plan.field else [])})
    if plan.kind == "devices":
        cols = [c for c in TAGS if c in plan.filters or c in ("device_id", "room", "location", "sensor_type")]
        src = "(" + " UNION ALL BY NAME ".join(
            f"SELECT DISTINCT {', '.join(q(c) for c in cols)}, {lit(m)} AS measurement FROM {q(m)}" for m in plan.measurements) + ")"
        w = where(plan.model_copy(update={"field": None}))
        if plan.aggregation == "count_devices":
            return f"SELECT count(DISTINCT device_id) AS devices FROM {src} WHERE {w}"
        return f"SELECT device_id, room, location, sensor_type FROM {src} WHERE {w} GROUP BY ALL ORDER BY device_id"
    if plan.kind == "anomalies":
        w = where(plan.model_copy(update={"field": None}),
                  [f"score >= {float(plan.anomaly_score)}"] + ([f"field = {lit(plan.field)}"] if plan.field else []))
        if plan.aggregation == "count" and not plan.group_by:
            return f"SELECT count(*) AS anomalies FROM anomaly_scores WHERE {w}"
        if plan.group_by:
            sel = ", ".join(f"{e} AS {q(a)}" for e, a in groups)
            order = "anomalies DESC, " + ", ".join(q(a) for _, a in groups)
            limit = f" LIMIT {int(plan.top_k)}" if plan.top_k else ""
            return f"SELECT {sel}, count(*) AS anomalies FROM anomaly_scores WHERE {w} GROUP BY ALL ORDER BY {order}{limit}"
        return (f"SELECT time, device_id, room, measurement, field, value, score FROM anomaly_scores "
                f"WHERE {w} ORDER BY score DESC, time LIMIT {int(plan.top_k or 20)}")
    src = source(plan, need)
    if plan.kind == "threshold":
        th = plan.threshold
        assert th is not None and plan.field
        f = q(plan.field)
        cond = f"CAST({f} AS DOUBLE) {th.op} {float(th.value)!r}"
        part = ", ".join(q(t) for t in ("device_id",))
        keys = "".join(f", {q(t)}" for t in tag_cols if t != "device_id")  # "which rooms were above 25"
        inner = (f"SELECT device_id{keys}, time, {f}, lead(time) OVER (PARTITION BY {part} ORDER BY time) AS next_time "
                 f"FROM {src} WHERE {where(plan)}")
        return (f"WITH s AS ({inner}) SELECT device_id{keys}, count_if({cond}) AS readings, "
                f"min(time) FILTER (WHERE {cond}) AS first_time, max(time) FILTER (WHERE {cond}) AS last_time, "
                f"coalesce(sum(epoch_ns(next_time) - epoch_ns(time)) FILTER (WHERE {cond} AND next_time IS NOT NULL), 0) / 1e9 AS seconds "
                f"FROM s GROUP BY ALL ORDER BY device_id")
    if plan.kind == "latest":
        if len(plan.measurements) > 1:  # a union: the columns shown must be read from each table
            src = source(plan, sorted({*need, "room", "location"}))
        f = q(plan.field or "")
        val = _display(f"arg_max({f}, time)", plan) if not is_bool else f"arg_max({f}, time)"
        return (f"SELECT device_id, room, location, {val} AS value, max(time) AS time FROM {src} "
                f"WHERE {where(plan)} GROUP BY ALL ORDER BY device_id")
    if plan.aggregation == "consumption":  # a meter: last − first per series (and bucket), then summed
        f = q(plan.field or "")
        others = [g for g in tag_cols if g != "device_id"]
        inner_sel = ", ".join(q(c) for c in ["device_id", *others])
        inner_sel += "".join(f", {e} AS {q(a)}" for e, a in groups if a in ("hour", "day", "week"))
        inner = (f"SELECT {inner_sel}, arg_max({f}, time) - arg_min({f}, time) AS used "
                 f"FROM {src} WHERE {where(plan)} GROUP BY ALL")
        outer = ", ".join(q(a) for _, a in groups)
        if plan.top_k:
            direction = "DESC" if plan.order == "desc" else "ASC"
            return (f"SELECT {outer}, sum(used) AS value FROM ({inner}) GROUP BY ALL "
                    f"ORDER BY value {direction}, {outer} LIMIT {int(plan.top_k)}")
        if outer:
            return f"SELECT {outer}, sum(used) AS value FROM ({inner}) GROUP BY ALL ORDER BY {outer}"
        return f"SELECT sum(used) AS value FROM ({inner})"
    val = value_expr(plan, is_bool)
    if plan.kind == "topk":
        expr, alias = groups[0]
        direction = "DESC" if plan.order == "desc" else "ASC"
        return (f"SELECT {expr} AS {q(alias)}, {val} AS value FROM {src} WHERE {where(plan)} "
                f"GROUP BY ALL ORDER BY value {direction}, {q(alias)} LIMIT {int(plan.top_k or 1)}")
    if groups:
        sel = ", ".join(f"{e} AS {q(a)}" for e, a in groups)
        return (f"SELECT {sel}, {val} AS value FROM {src} WHERE {where(plan)} "
                f"GROUP BY ALL ORDER BY {', '.join(q(a) for _, a in groups)}")
    return f"SELECT {val} AS value, count(*) AS readings FROM {src} WHERE {where(plan)}"


__all__ = ["Plan", "Threshold", "TimeSpec", "convert", "to_sql"]
