"""The automation stage of the stream runner (``step_id = "automations"``).

* **telemetry** triggers fire on the rising edge of their test (``above``/``below``/``equals``)
  per series and field, in event-time order; **state** triggers on a change of value (optionally
  ``from``/``to``). Both are evaluated on whole batches with Polars (filter, per-group shift);
  only the few rows that fire are looked at one by one (cooldown, time conditions, actions).
* **alert** triggers see the rule engine's transitions (:meth:`AutomationStage.on_transitions`).
* **schedule** triggers fire on :meth:`AutomationStage.tick` from the injected clock: cron times in
  ``(last tick, now]`` in the automation's time zone; several missed times (the process was down)
  coalesce into one run, at the latest.

Every run becomes an :class:`~sensorium.automations.actions.Execution` with a deterministic key,
handed to ``emit`` (the action outbox ignores keys it holds), so a replay after a crash runs
nothing twice. Edge state, cooldowns and schedule marks are stage state, checkpointed with the rest
of the stream. Definitions are re-read when the automation store changes (API edits).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl
from croniter import croniter

from sensorium.automations.actions import Execution
from sensorium.automations.model import (
    NS,
    AlertTrigger,
    Automation,
    ScheduleTrigger,
    StateTrigger,
    TelemetryTrigger,
)
from sensorium.automations.store import AutomationStore
from sensorium.rules.types import Transition

log = logging.getLogger("sensorium.automations")
_RANK = {"info": 1, "warning": 2, "critical": 3}
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _glob(col: str, pattern: str) -> pl.Expr:
    if not any(ch in pattern for ch in "*?["):
        return pl.col(col) == pattern
    return pl.col(col).str.contains(fnmatch.translate(pattern))


def render(text: str, ctx: dict[str, Any]) -> str:
    """``{name}`` placeholders from ``ctx``; :class:`KeyError` naming a missing one."""
    def sub(m: re.Match[str]) -> str:
        k = m.group(1)
        if k not in ctx or ctx[k] is None:
            raise KeyError(k)
        return str(ctx[k])

    return _FIELD.sub(sub, text)


def _render_action(action: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return render(v, ctx)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    try:
        return {k: (v if k in ("kind", "url") else walk(v)) for k, v in action.items()}
    except KeyError as exc:
        return {**action, "error": f"nothing to fill in {{{exc.args[0]}}} for this trigger"}


_EMPTY_EDGE = pl.DataFrame(schema={"series": pl.Utf8, "field": pl.Utf8, "start": pl.Float64})


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).isoformat().replace("+00:00", "Z")


class AutomationStage:
    step_id = "automations"

    def __init__(
        self,
        store: AutomationStore,
        emit: Callable[[Any], Any],
        *,
        schedules: bool = True,
    ) -> None:
        self.store = store
        self.emit = emit
        self.schedules = schedules
        self._version: int | None = None
        self._autos: list[Automation] = []
        # automation -> frame (series, field, start): the last test result / value per series
        self.edge: dict[str, pl.DataFrame] = {}
        self.last_run: dict[tuple[str, str], int] = {}  # (automation, series) -> time of last run
        self.sched: dict[str, int] = {}  # automation -> last tick considered
        self.runs = 0

    # -- definitions ---------------------------------------------------------------------------
    def automations(self) -> list[Automation]:
        v = self.store.data_version()
        if v != self._version:
            try:
                self._autos = [a for a in self.store.automations() if a.enabled]
            except Exception:  # a bad row never stops the stream: keep the previous set
                log.exception("could not load automations; keeping the previous set")
            self._version = v
        return self._autos

    # -- telemetry and state -------------------------------------------------------------------
    def needs_values(self) -> bool:
        """Whether :meth:`process` would read a batch: only with automations on telemetry or
        state (the stream then skips it, and makes no series names for it)."""
        return any(isinstance(a.trigger, TelemetryTrigger | StateTrigger) for a in self.automations())

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        autos = [a for a in self.automations() if isinstance(a.trigger, TelemetryTrigger | StateTrigger)]
        if not autos or not values.height:
            return {}
        out: list[Execution] = []
        for a in autos:
            out.extend(self._telemetry(a, values, series))
        if out:
            self._emit(out)
        return {}

    def _telemetry(self, a: Automation, values: pl.DataFrame, series: pl.DataFrame) -> list[Execution]:
        tr = a.trigger
        assert isinstance(tr, TelemetryTrigger | StateTrigger)
        sel = series.filter(_glob("measurement", tr.measurement))
        for k, pat in tr.tags.items():
            sel = sel.filter(_glob(k, pat)) if k in sel.columns else sel.clear()
        if not sel.height:
            return []
        v = values.join(sel.select("series"), on="series", how="semi").filter(_glob("field", tr.field))
        if not v.height:
            return []
        v = v.select("series", "field", "time", "value").sort(["series", "field", "time"], maintain_order=True)
        if isinstance(tr, TelemetryTrigger):
            test = (
                pl.col("value") > tr.above if tr.above is not None
                else pl.col("value") < tr.below if tr.below is not None
                else pl.col("value") == tr.equals
            )
            v = v.with_columns(cur=test.cast(pl.Float64))
        else:
            v = v.with_columns(cur=pl.col("value"))
        prev_state = self.edge.get(a.name, _EMPTY_EDGE)
        v = v.join(prev_state, on=["series", "field"], how="left")
        v = v.with_columns(prev=pl.col("cur").shift(1).over(["series", "field"]))
        v = v.with_columns(prev=pl.coalesce("prev", "start"))
        last = v.group_by(["series", "field"]).agg(start=pl.col("cur").last())
        self.edge[a.name] = pl.concat(
            [prev_state.join(last, on=["series", "field"], how="anti"), last], how="vertical"
        )
        if isinstance(tr, TelemetryTrigger):
            fired = v.filter((pl.col("cur") == 1.0) & (pl.col("prev").is_null() | (pl.col("prev") == 0.0)))
        else:
            fired = v.filter(pl.col("prev").is_not_null() & (pl.col("cur") != pl.col("prev")))
            if tr.from_ is not None:
                fired = fired.filter(pl.col("prev") == float(tr.from_))
            if tr.to is not None:
                fired = fired.filter(pl.col("cur") == float(tr.to))
        if not fired.height:
            return []
        tags = sel.drop("bucket").join(fired.select("series").unique(), on="series", how="semi").to_dicts()
        by_series = {t["series"]: {k: x for k, x in t.items() if x is not None} for t in tags}
        out = []
        for s, f, t, val in fired.sort("time").select("series", "field", "time", "value").iter_rows():
            ctx = {**by_series.get(s, {}), "field": f, "value": val, "series": s}
            e = self._run(a, s, t, ctx, f"{s}|{f}|{t}", "telemetry" if isinstance(tr, TelemetryTrigger) else "state")
            if e is not None:
                out.append(e)
        return out

    # -- alerts --------------------------------------------------------------------------------
    def on_transitions(self, transitions: Sequence[Transition]) -> None:
        autos = [a for a in self.automations() if isinstance(a.trigger, AlertTrigger)]
        if not autos:
            return
        out = []
        for t in transitions:
            if t.flapping:
                continue
            for a in autos:
                tr = a.trigger
                assert isinstance(tr, AlertTrigger)
                if t.state != tr.state or not fnmatch.fnmatchcase(t.rule, tr.rule):
                    continue
                if tr.severity and _RANK.get(t.severity, 0) < _RANK[tr.severity]:
                    continue
                ctx = {**t.tags, "rule": t.rule, "state": t.state, "severity": t.severity,
                       "message": t.message, "value": t.value, "field": t.field,
                       "measurement": t.measurement, "alert_id": t.alert_id, "series": t.series}
                e = self._run(a, t.series, t.event_time_ns, ctx, t.key, "alert")
                if e is not None:
                    out.append(e)
        if out:
            self._emit(out)

    # -- schedules -----------------------------------------------------------------------------
    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]:
        if not self.schedules:
            return {}
        out = []
        for a in self.automations():
            if not isinstance(a.trigger, ScheduleTrigger):
                continue
            last = self.sched.get(a.name)
            self.sched[a.name] = now_ns
            if last is None or now_ns <= last:
                continue  # first sight: schedules start now, never in the past
            it = croniter(a.trigger.cron, datetime.fromtimestamp(last / NS, a.zone))
            due = None
            while True:
                nxt = it.get_next(datetime)
                ns = int(nxt.timestamp()) * NS
                if ns > now_ns:
                    break
                due = ns  # missed times coalesce: run once, at the latest
            if due is not None:
                e = self._run(a, "", due, {}, str(due), "schedule")
                if e is not None:
                    out.append(e)
        if out:
            self._emit(out)
        return {}

    # -- runs ----------------------------------------------------------------------------------
    def _run(self, a: Automation, series: str, t_ns: int, ctx: dict[str, Any], ident: str,
             kind: str) -> Execution | None:
        if not a.conditions_hold(t_ns):
            return None
        last = self.last_run.get((a.name, series))
        if last is not None and a.cooldown_ns and t_ns - last < a.cooldown_ns:
            return None
        self.last_run[(a.name, series)] = t_ns
        ctx = {**ctx, "automation": a.name, "time": _iso(t_ns), "time_ns": t_ns}
        trigger = {"kind": kind, **{k: v for k, v in ctx.items() if isinstance(v, str | int | float)}}
        actions = [_render_action(x.model_dump(mode="json", by_alias=True), ctx) for x in a.actions]
        self.runs += 1
        return Execution(key=f"{a.name}:{ident}", automation=a.name, seq=t_ns, trigger=trigger, actions=actions)

    def _emit(self, runs: list[Execution]) -> None:
        self.emit(runs)

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"edge": dict(self.edge), "last_run": dict(self.last_run), "sched": dict(self.sched)}

    def restore(self, state: dict[str, Any]) -> None:
        edge = state.get("edge", {})
        self.edge = {k: v for k, v in edge.items() if isinstance(v, pl.DataFrame)}  # older form: start afresh
        self.last_run = dict(state.get("last_run", {}))
        self.sched = dict(state.get("sched", {}))
