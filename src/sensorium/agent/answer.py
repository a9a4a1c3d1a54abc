"""Run a plan and say what came out: one sentence, the table, a machine-readable ``value`` and a
chart spec (Vega-Lite) when a chart helps."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sensorium.agent.context import AgentContext
from sensorium.agent.plan import Plan, q, to_sql, where
from sensorium.agent.timeparse import NS, iso
from sensorium.agent.vocabulary import UNIT_LABELS, norm

AGG_WORDS = {"mean": "average", "median": "median", "max": "highest", "min": "lowest", "sum": "total", "count": "number of readings",
             "trend": "trend", "change": "change", "latest": "latest", "consumption": "consumption"}


@dataclass
class Result:
    answer: str
    value: Any
    table: pa.Table | None
    sql: str | None
    chart: dict[str, Any] | None = None
    source: str = "sql"


def _u(plan: Plan) -> str:
    lab = UNIT_LABELS.get(plan.unit or "", plan.unit or "")
    if not lab:
        return ""
    return lab if lab in ("°C", "°F", "%") else " " + lab


def show(v: Any) -> str:
    """A tag value as people say it (``living_room`` → ``living room``; device ids as they are)."""
    v = str(v)
    return v if re.fullmatch(r"[a-z]+-\d+", v) else norm(v)


def fmt(v: Any, plan: Plan, digits: int = 2) -> str:
    if v is None:
        return "no value"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if plan.field == "battery" and plan.unit in (None, "fraction"):
            return f"{v * 100:.1f}%"
        return f"{v:,.{digits}f}{_u(plan)}"
    return f"{v}{_u(plan)}"


def _what(plan: Plan) -> str:
    """"average temperature", "energy used"."""
    if plan.aggregation == "consumption":
        return f"{norm(plan.field or '')} used"
    if plan.aggregation == "count":
        return f"number of {norm(plan.field or '')} {'events' if plan.field_kind == 'boolean' else 'readings'}"
    return f"{AGG_WORDS.get(plan.aggregation, plan.aggregation)} {norm(plan.field or '')}".strip()


def _where_text(plan: Plan) -> str:
    parts = []
    for tag, vals in plan.filters.items():
        names = " and ".join(show(v) for v in vals)
        parts.append({"room": f"in the {names}", "location": f"at {names}", "device_id": f"on {names}",
                      "sensor_type": f"from {names} sensors"}[tag])
    return (" " + " ".join(parts)) if parts else ""


def _when_text(plan: Plan) -> str:
    t = plan.time
    if t.text:
        return " " + t.text.strip()
    if t.start_ns is None:
        return ""
    return " in the last 24 hours" if "last 24 hours" in t.understood else f" ({t.understood})"


def chart_for(table: pa.Table, x: str, y: str, kind: str, title: str) -> dict[str, Any]:
    xtype = "temporal" if pa.types.is_timestamp(table.schema.field(x).type) else "nominal"
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "mark": {"type": kind, "tooltip": True},
        "encoding": {"x": {"field": x, "type": xtype}, "y": {"field": y, "type": "quantitative"}},
        "data": {"name": "table"},
    }


def _num(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def run(ctx: AgentContext, plan: Plan, is_bool: bool = False) -> Result:
    if plan.kind == "alerts":
        return _alerts(ctx, plan)
    if plan.kind == "forecast":
        return _forecast(ctx, plan)
    sql = to_sql(plan, is_bool)
    table = ctx.query(sql)
    rows = table.to_pylist()
    what = _what(plan)
    scope = _where_text(plan) + _when_text(plan)
    fieldname = norm(plan.field or "")
    if plan.kind == "devices":
        if plan.aggregation == "count_devices":
            n = int(rows[0]["devices"]) if rows else 0
            return Result(f"There {'is' if n == 1 else 'are'} {n} device{'s' if n != 1 else ''}{_where_text(plan)}.", n, table, sql)
        if plan.group_by:
            g = plan.group_by[0]
            vals = sorted({r[g] for r in rows if r[g]})
            sql2 = f"SELECT DISTINCT {q(g)} FROM ({sql}) WHERE {q(g)} IS NOT NULL ORDER BY 1"
            t2 = ctx.query(sql2)
            return Result(f"{len(vals)} {g.replace('_id', '')}s{_where_text(plan)}: {', '.join(norm(v) for v in vals)}.", vals, t2, sql2)
        ids = [r["device_id"] for r in rows]
        listed = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
        return Result(f"{len(ids)} device{'s' if len(ids) != 1 else ''}{_where_text(plan)}: {listed}.", ids, table, sql)
    if plan.kind == "anomalies":
        if plan.group_by:
            g = plan.group_by[0]
            if not rows:
                return Result(f"No anomalies (score ≥ {plan.anomaly_score}){scope}.", None, table, sql)
            top = rows[0]
            if plan.top_k == 1:
                return Result(f"{show(top[g])} had the most anomalies{scope}: {top['anomalies']}.", top[g], table, sql,
                              chart_for(table, g, "anomalies", "bar", "anomalies"))
            return Result(f"Anomalies{scope} by {g.replace('_id', '')}: " + ", ".join(
                f"{show(r[g])} {r['anomalies']}" for r in rows) + ".", [[r[g], r["anomalies"]] for r in rows], table, sql,
                chart_for(table, g, "anomalies", "bar", "anomalies"))
        if plan.aggregation == "count":
            n = int(rows[0]["anomalies"]) if rows else 0
            return Result(f"{n} anomal{'y' if n == 1 else 'ies'} (score ≥ {plan.anomaly_score}){scope}.", n, table, sql)
        n = len(rows)
        if not n:
            return Result(f"No anomalies (score ≥ {plan.anomaly_score}){scope}.", 0, table, sql)
        r0 = rows[0]
        return Result(f"{n} anomal{'y' if n == 1 else 'ies'} (score ≥ {plan.anomaly_score}){scope}"
                      + (" (the 20 strongest shown)" if n == (plan.top_k or 20) else "")
                      + f"; the strongest: {r0['field']} = {r0['value']:.2f} on {r0['device_id']} at {iso(_ns(r0['time']))} "
                      f"(score {r0['score']:.2f}).", n, table, sql)
    if plan.kind == "threshold":
        th = plan.threshold
        assert th is not None
        n = sum(int(r["readings"]) for r in rows)
        cond = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}[th.op]
        gu = {"degC": "°C", "degF": "°F"}.get(th.given_unit or "", UNIT_LABELS.get(plan.stored_unit or "", "")
                                                 or UNIT_LABELS.get(th.given_unit or "", ""))
        lim = f"{th.given:g}{gu if gu in ('°C', '°F', '%') else (' ' + gu if gu else '')}"
        if plan.field == "motion":
            subject, state = "motion", "detected"
        else:
            subject, state = fieldname, f"{cond} {lim}"
        if plan.aggregation == "how_long":
            secs = float(sum(r["seconds"] for r in rows))
            k = len([r for r in rows if r["readings"]])
            per = "" if k <= 1 else f" (summed over {k} devices)"
            return Result(f"{subject.capitalize()} was {state}{scope} for {_dur(secs)}{per}.", secs, table, sql)
        if plan.aggregation == "count":
            return Result(f"{subject.capitalize()} was {state} in {n} reading{'s' if n != 1 else ''}{scope}.", n, table, sql)
        if plan.aggregation == "which" and plan.group_by:
            g = plan.group_by[0]
            names = sorted({r[g] for r in rows if r["readings"] and r.get(g) is not None})
            noun = g.replace("_id", "")
            if not names:
                return Result(f"No {noun} had {subject} {state}{scope}.", [], table, sql)
            return Result(f"{len(names)} {noun}{'s' if len(names) != 1 else ''} had {subject} {state}{scope}: "
                          + ", ".join(show(x) for x in names) + ".", names, table, sql)
        if plan.aggregation == "ever":
            return Result(("Yes" if n else "No") + f": {subject} was {'' if n else 'never '}{state}{scope}"
                          + (f" ({n} readings)." if n else "."), bool(n), table, sql)
        if not n:
            return Result(f"{subject.capitalize()} was never {state}{scope}.", None, table, sql)
        first = min(_ns(r["first_time"]) for r in rows if r["first_time"] is not None)
        last = max(_ns(r["last_time"]) for r in rows if r["last_time"] is not None)
        if plan.field == "motion" and "last" in plan.time.understood + " ":
            pass
        return Result(f"{subject.capitalize()} was {state}{scope} in {n} reading{'s' if n != 1 else ''}, "
                      f"first at {iso(first)}, last at {iso(last)}.", [iso(first), iso(last)], table, sql)
    if plan.kind == "latest":
        good = [r for r in rows if r["value"] is not None]
        if not good:
            return Result(f"There are no {fieldname} readings{scope}.", None, table, sql)
        if len(good) == 1:
            r = good[0]
            return Result(f"The latest {fieldname}{scope} is {fmt(_num(r['value']), plan)} ({r['device_id']}, at "
                          f"{iso(_ns(r['time']))}).", _num(r["value"]), table, sql)
        latest = {r["device_id"]: _num(r["value"]) for r in good}
        listed = ", ".join(f"{k} {fmt(v, plan)}" for k, v in latest.items())
        return Result(f"The latest {fieldname} readings{scope}: {listed}.", latest, table, sql)
    if plan.kind == "topk":
        g = plan.group_by[0]
        good = [r for r in rows if r["value"] is not None]
        if not good:
            return Result(f"There are no {fieldname} readings{scope}.", None, table, sql)
        def ranked(r: dict[str, Any]) -> Any:  # a time bucket ("which day was warmest") as its ISO start
            return iso(_ns(r[g])) if g in ("hour", "day", "week") else r[g]

        def label(r: dict[str, Any]) -> str:
            return str(ranked(r)) if g in ("hour", "day", "week") else show(r[g])

        names = [ranked(r) for r in good]
        crit = _what(plan)
        adj = "highest" if plan.order == "desc" else "lowest"
        if plan.top_k == 1:
            r = good[0]
            return Result(f"{label(r)} had the {adj} {crit}{scope}: {fmt(_num(r['value']), plan)}.", ranked(r), table, sql)
        listed = ", ".join(f"{label(r)} ({fmt(_num(r['value']), plan)})" for r in good)
        return Result(f"{len(good)} {g.replace('_id', '')}s with the {adj} {crit}{scope}: {listed}.", names, table, sql,
                      chart_for(table, g, "value", "bar", crit))
    # aggregate
    if plan.group_by:
        good = [r for r in rows if r["value"] is not None]
        if not good:
            return Result(f"There are no {fieldname} readings{scope}.", None, table, sql)
        gcols = list(plan.group_by)
        value = [[*(r[g] if g in ("device_id", "room", "location", "sensor_type") else iso(_ns(r[g])) for g in gcols),
                  _num(r["value"])] for r in good]
        if len(gcols) == 1 and gcols[0] in ("room", "location", "device_id", "sensor_type"):
            g = gcols[0]
            listed = ", ".join(f"{show(r[g])} {fmt(_num(r['value']), plan)}" for r in good)
            extra = ""
            if len(good) == 2 and plan.aggregation in ("mean", "max", "min", "latest"):
                a, b = good
                diff = a["value"] - b["value"]
                if diff != 0:
                    hi, lo = (a, b) if diff > 0 else (b, a)
                    word = "warmer" if plan.field == "temperature" else "higher"
                    extra = f"; {show(hi[g])} was {fmt(abs(diff), plan)} {word}"
            chart = chart_for(table, g, "value", "bar", what)
            return Result(f"The {what}{scope} by {g.replace('_id', '')}: {listed}{extra}.",
                          {r[g]: _num(r["value"]) for r in good}, table, sql, chart)
        tcol = next((g for g in gcols if g in ("hour", "day", "week")), None)
        vals = [r["value"] for r in good]
        hi = max(good, key=lambda r: r["value"])
        lo = min(good, key=lambda r: r["value"])
        key = tcol or gcols[0]
        series_chart = chart_for(table, key, "value", "line", what) if tcol else None
        hk = iso(_ns(hi[key])) if tcol else hi[key]
        lk = iso(_ns(lo[key])) if tcol else lo[key]
        return Result(f"The {what}{scope} by {', '.join(gcols)}: {len(vals)} values, from {fmt(_num(lo['value']), plan)} "
                      f"({lk}) to {fmt(_num(hi['value']), plan)} ({hk}).", value, table, sql, series_chart)
    r = rows[0] if rows else {"value": None, "readings": 0}
    v = _num(r.get("value"))
    if v is None or (plan.aggregation != "consumption" and not r.get("readings")):
        return Result(f"There are no {fieldname} readings{scope}.", None, table, sql)
    if plan.aggregation == "trend":
        direction = "rising" if v > 0 else "falling" if v < 0 else "flat"
        return Result(f"The {fieldname}{scope} was {direction}: {fmt(v, plan, 3)} per hour (least-squares slope).", v, table, sql)
    if plan.aggregation == "change":
        return Result(f"The {fieldname}{scope} changed by {'+' if v > 0 else ''}{fmt(v, plan)} (last reading − first).", v, table, sql)
    if plan.aggregation == "consumption":
        return Result(f"{fieldname.capitalize()} used{scope}: {fmt(v, plan, 3)} (last − first meter reading, summed over devices).",
                      v, table, sql)
    if plan.aggregation == "count":
        n = int(v)
        noun = "motion events" if plan.field == "motion" else f"{fieldname} readings"
        return Result(f"{n} {noun}{scope}.", n, table, sql)
    return Result(f"The {what}{scope} was {fmt(v, plan)}.", v, table, sql)


def _ns(v: Any) -> int:
    """A timestamp from a result row as UTC ns (pyarrow gives pandas Timestamps for ns
    timestamps when pandas is installed, datetimes otherwise)."""
    import datetime as dt

    if isinstance(v, int):
        return v
    ns = getattr(v, "value", None)  # pandas.Timestamp
    if isinstance(ns, int):
        return ns
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return int(v.timestamp()) * NS + int(v.microsecond) * 1000
    raise TypeError(f"not a timestamp: {v!r}")


def _dur(secs: float) -> str:
    m = round(secs / 60)
    h, mm = divmod(m, 60)
    if h and mm:
        return f"{h} h {mm} min"
    if h:
        return f"{h} h"
    return f"{mm} min"


def _alerts(ctx: AgentContext, plan: Plan) -> Result:
    t = plan.time
    alerts = ctx.alerts(since_ns=t.start_ns)
    keep = []
    for a in alerts:
        f = int(a.get("fired_at_ns") or 0)
        if t.start_ns is not None and f < t.start_ns:
            continue
        if t.end_ns is not None and f >= t.end_ns:
            continue
        tags = a.get("tags") or {}
        if isinstance(tags, str):
            import orjson

            tags = orjson.loads(tags)
        if any(tags.get(k) not in v for k, v in plan.filters.items()):
            continue
        keep.append(a)
    keep.sort(key=lambda a: (a["fired_at_ns"], a["alert_id"]))
    table = pa.table({
        "fired_at": pa.array([a["fired_at_ns"] for a in keep], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "rule": [a["rule"] for a in keep], "severity": [a["severity"] for a in keep],
        "series": [a["series"] for a in keep], "state": [a["state"] for a in keep],
        "message": [a["message"] for a in keep],
    })
    scope = _where_text(plan) + _when_text(plan)
    n = len(keep)
    if plan.aggregation == "count":
        return Result(f"{n} alert{'s' if n != 1 else ''} fired{scope}.", n, table, None, source="alerts")
    if not n:
        return Result(f"No alerts fired{scope}.", None if plan.aggregation == "latest" else [], table, None, source="alerts")
    if plan.aggregation == "latest":
        a = keep[-1]
        at = iso(int(a["fired_at_ns"]))
        return Result(f"The last alert{scope} fired at {at}: {a['rule']} ({a['severity']}) on {a['series']}.", at, table,
                      None, source="alerts")
    rules: dict[str, int] = {}
    for a in keep:
        rules[a["rule"]] = rules.get(a["rule"], 0) + 1
    listed = ", ".join(f"{r} ({c})" for r, c in sorted(rules.items()))
    return Result(f"{n} alert{'s' if n != 1 else ''} fired{scope}: {listed}.", sorted(rules), table, None, source="alerts")


def _forecast(ctx: AgentContext, plan: Plan) -> Result:
    import pyarrow.compute as pc

    t = plan.time
    assert t.start_ns is not None and t.end_ns is not None and plan.field
    tags = {k: v[0] for k, v in plan.filters.items() if k != "sensor_type"}
    hours = max(1, math.ceil((t.end_ns - ctx.now()) / (3600 * NS)))
    fc = ctx.forecast(plan.measurements[0], plan.field, tags, f"{hours + 24}h")
    times = pc.cast(fc["time"], pa.int64()) if not pa.types.is_integer(fc["time"].type) else fc["time"]
    mask = pc.and_(pc.greater_equal(times, t.start_ns), pc.less(times, t.end_ns))
    sub = fc.filter(mask)
    if sub.num_rows == 0:
        return Result("The forecast does not reach that time.", None, sub, None, source="forecast")
    vals = sub["forecast"]
    v = float({"max": pc.max, "min": pc.min}.get(plan.aggregation, pc.mean)(vals).as_py())
    from sensorium.agent.plan import convert

    shown = convert(v, plan.stored_unit, plan.unit)
    lo = float(pc.min(sub["lower"]).as_py())
    hi = float(pc.max(sub["upper"]).as_py())
    word = {"max": "highest", "min": "lowest"}.get(plan.aggregation, "average")
    from sensorium.detect.forecast import forecast_meta

    meta = forecast_meta(fc)
    chart = chart_for(sub, "time", "forecast", "line", f"forecast {plan.field}")
    return Result(
        f"Forecast ({meta.get('model', 'ets')}): the {word} {norm(plan.field)}{_where_text(plan)}{_when_text(plan)} "
        f"should be about {fmt(shown, plan, 1)} (95% interval {fmt(convert(lo, plan.stored_unit, plan.unit), plan, 1)} "
        f"to {fmt(convert(hi, plan.stored_unit, plan.unit), plan, 1)}).", shown, sub, None, chart, source="forecast")


__all__ = ["Result", "run", "where"]
