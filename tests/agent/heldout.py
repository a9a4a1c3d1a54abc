"""A held-out evaluation set for the agent's embedded parser: questions and commands written
WITHOUT reading the parser (nor the question texts of :func:`tests.agent.cases.cases`), from the
user-facing promise in docs/agent.md and the dataset's own tag values only — so it measures how
the agent does on phrasings nobody tuned it for.

Same dataset (:mod:`tests.agent.dataset`), same scoring (:func:`tests.agent.cases.evaluate`: right
1, declined 0, wrong −1). Expected values are computed independently from the stored rows with
Polars (plus the alert store and the forecast library), never by asking the agent. Conventions
the expectations rely on (all from docs/agent.md):

- ranges are half-open, in UTC; "between/from date A to date B" includes the whole of day B
  (as in ``RANGES``); "last week" is the previous calendar week (Monday to Monday), "the last
  7 days" / "past N days/hours" are rolling windows ending now; "on Monday" / "last Thursday" is the
  most recent such day; "the weekend" is the most recent Saturday 00:00 → Monday 00:00;
- no aggregation word is left to guess; values are in the stored unit (°C, battery as a
  fraction) unless the question asks for Fahrenheit;
- means pool every reading in the filter (a room with two devices is one pool); energy is a
  meter: consumption is last − first per device, summed; trend is the least-squares slope per
  hour, change is last reading − first (asked only of single-device series);
- thresholds answer ``[first, last]`` times, a reading count, a yes/no, or (how long) seconds,
  each reading above counting until the device's next reading;
- top-k ranks by the mean (energy: by consumption); comparisons and "per room/device/home" are a
  dict; "by hour/day" a list of ``[bucket start, value]``;
- commands go to the devices of the room that report the field (the dataset has no registered
  actuators): a bare "degrees" ≤ 40 is °C, and °F is converted to °C rounded to 0.1.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl

from tests.agent.cases import DAY, DECLINE, HOUR, Case, Data, agg, close, day, iso, sel
from tests.agent.dataset import NOW_NS

NOW = NOW_NS  # 2026-03-10T12:00Z, a Tuesday
D0 = day(2026, 3, 10)  # today 00:00
TODAY = (D0, NOW)
YDAY = (D0 - DAY, D0)  # Monday 2026-03-09
DBY = (D0 - 2 * DAY, D0 - DAY)  # Sunday 2026-03-08
LAST_WEEK = (day(2026, 3, 2), day(2026, 3, 9))  # the previous calendar week
THIS_WEEK = (day(2026, 3, 9), NOW)
THIS_MONTH = (day(2026, 3, 1), NOW)
FEBRUARY = (day(2026, 2, 1), day(2026, 3, 1))
WEEKEND = (day(2026, 3, 7), day(2026, 3, 9))
SINCE_MON_8 = (day(2026, 3, 9, 8), NOW)
SINCE_YDAY_6PM = (day(2026, 3, 9, 18), NOW)


def last(hours: float) -> tuple[int, int]:
    return (NOW - int(hours * HOUR), NOW)


def on(m: int, dd: int) -> tuple[int, int]:
    """The whole day 2026-m-dd."""
    return (day(2026, m, dd), day(2026, m, dd) + DAY)


def f_of_c(c: float) -> float:
    return c * 9 / 5 + 32


def c_of_f(f: float) -> float:
    return (f - 32) * 5 / 9


class Expect:
    """An expected value that :func:`tests.agent.cases.close` compares without raising when the
    agent's value has another type (``close`` calls ``float()`` on both sides as soon as one is a
    float, so a list or a name against a number raised ``TypeError`` and stopped the whole
    evaluation): ``close(got, Expect(v))`` falls through to ``got == Expect(v)``, which is
    ``close(got, v)`` with a type mismatch read as a wrong answer."""

    __slots__ = ("v",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, v: Any) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        try:
            return close(other, self.v)
        except (TypeError, ValueError):
            return False

    def __float__(self) -> float:  # reached only when the agent's value is a float
        v = self.v
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan

    def __repr__(self) -> str:
        return repr(self.v)


def heldout_cases(d: Data) -> list[Case]:
    out: list[Case] = []

    def add(category: str, question: str, expected: Any, session: list[str] | None = None, check: str = "value") -> None:
        if check == "value" and expected is not DECLINE:
            expected = Expect(expected)
        out.append(Case(category, question, expected, list(session or []), check))

    # -- helpers: one Polars expression each ----------------------------------------------------
    def a(m: str, f: str, rng: tuple[int, int], how: str, **tags: Any) -> Any:
        return agg(sel(d, m, f, rng, **tags), f, how)

    def by(m: str, f: str, rng: tuple[int, int], how: str, key: str, **tags: Any) -> dict[str, Any]:
        df = sel(d, m, f, rng, **tags)
        fn = {"mean": pl.col(f).mean(), "max": pl.col(f).max(), "min": pl.col(f).min()}[how]
        return {r[key]: r["v"] for r in df.group_by(key).agg(fn.alias("v")).to_dicts()}

    def series(m: str, f: str, rng: tuple[int, int], how: str, every: int, **tags: Any) -> list[list[Any]]:
        df = sel(d, m, f, rng, **tags).with_columns(((pl.col("t") // every) * every).alias("b"))
        fn = {"mean": pl.col(f).mean(), "max": pl.col(f).max(), "min": pl.col(f).min()}[how]
        g = df.group_by("b").agg(fn.alias("v")).sort("b")
        return [[iso(r["b"]), r["v"]] for r in g.to_dicts()]

    def rank(m: str, f: str, rng: tuple[int, int], key: str, k: int, desc: bool, how: str = "mean", **tags: Any) -> Any:
        vals = by(m, f, rng, how, key, **tags)
        names = sorted(vals, key=lambda n: vals[n], reverse=desc)[:k]
        return names[0] if k == 1 else names

    def used(rng: tuple[int, int], **tags: Any) -> float:
        df = sel(d, "energy", "energy", rng, **tags).sort("t")
        g = df.group_by("device_id").agg((pl.col("energy").last() - pl.col("energy").first()).alias("u"))
        return float(g["u"].sum())

    def used_by(rng: tuple[int, int], key: str, **tags: Any) -> dict[str, float]:
        df = sel(d, "energy", "energy", rng, **tags).sort("t")
        g = df.group_by(sorted({"device_id", key})).agg((pl.col("energy").last() - pl.col("energy").first()).alias("u"))
        return {r[key]: r["u"] for r in g.group_by(key).agg(pl.col("u").sum()).to_dicts()}

    def slope(m: str, f: str, rng: tuple[int, int], **tags: Any) -> float:
        df = sel(d, m, f, rng, **tags)
        x = (df["t"] - df["t"].min()).cast(pl.Float64) / HOUR
        y = df[f].cast(pl.Float64)
        xm, ym = x.mean(), y.mean()
        return float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())  # type: ignore[operator]

    def change(m: str, f: str, rng: tuple[int, int], **tags: Any) -> float:
        df = sel(d, m, f, rng, **tags).sort("t")
        return float(df[f][-1] - df[f][0])

    def hits(m: str, f: str, rng: tuple[int, int], cond: pl.Expr, **tags: Any) -> pl.DataFrame:
        return sel(d, m, f, rng, **tags).filter(cond)

    def when(m: str, f: str, rng: tuple[int, int], cond: pl.Expr, **tags: Any) -> list[str] | None:
        h = hits(m, f, rng, cond, **tags)
        return None if h.height == 0 else [iso(int(h["t"].min())), iso(int(h["t"].max()))]  # type: ignore[arg-type]

    def how_long(m: str, f: str, rng: tuple[int, int], cond: pl.Expr, **tags: Any) -> float:
        df = (sel(d, m, f, rng, **tags).sort("t")
              .with_columns((pl.col("t").shift(-1).over("device_id") - pl.col("t")).alias("dt"), cond.alias("hit")))
        return float(df.filter(pl.col("hit") & pl.col("dt").is_not_null())["dt"].sum()) / 1e9

    def latest(m: str, f: str, **tags: Any) -> Any:
        df = sel(d, m, f, None, **tags).sort("t")
        per = df.group_by("device_id").agg(pl.col(f).last().alias("v"))
        vals = {r["device_id"]: r["v"] for r in per.to_dicts()}
        return next(iter(vals.values())) if len(vals) == 1 else vals

    def alerts(rng: tuple[int, int] | None, **tags: str) -> list[dict[str, Any]]:
        res = []
        for al in d.alerts:
            t = int(al["fired_at_ns"])
            if rng is not None and not rng[0] <= t < rng[1]:
                continue
            tg = json.loads(al["tags"]) if isinstance(al["tags"], str) else (al["tags"] or {})
            if any(tg.get(k) != v for k, v in tags.items()):
                continue
            res.append(al)
        return res

    def rules(rng: tuple[int, int] | None, **tags: str) -> list[str]:
        return sorted({al["rule"] for al in alerts(rng, **tags)})

    def anomalies(rng: tuple[int, int], **tags: str) -> pl.DataFrame:
        df = d.anomalies.filter((pl.col("score") >= 0.6) & (pl.col("t") >= rng[0]) & (pl.col("t") < rng[1]))
        for k, v in tags.items():
            df = df.filter(pl.col(k) == v)
        return df

    def devices(**tags: str) -> list[str]:
        ids: set[str] = set()
        for fr in d.frames.values():
            for k, v in tags.items():
                fr = fr.filter(pl.col(k) == v)
            ids |= set(fr["device_id"].unique().to_list())
        return sorted(ids)

    def forecast(field: str, rng: tuple[int, int], how: str, **tags: str) -> float:
        import pyarrow as pa
        import pyarrow.compute as pc

        from sensorium.detect.forecast import forecast_series

        # ETS is fitted for the horizon asked (multi-step estimation), so use the one the agent
        # asks for (answer.py: the hours from now to the range's end, plus 24)
        hours = max(1, -(-(rng[1] - NOW) // HOUR))
        fc = forecast_series(d.platform, "climate", field, tags=tags, horizon=f"{hours + 24}h", model="ets")
        t = pc.cast(fc["time"], pa.int64())
        sub = fc.filter(pc.and_(pc.greater_equal(t, rng[0]), pc.less(t, rng[1])))
        return float({"max": pc.max, "min": pc.min, "mean": pc.mean}[how](sub["forecast"]).as_py())

    T, H, P, B = "temperature", "humidity", "pressure", "battery"
    temp, hum = pl.col(T), pl.col(H)

    # -- aggregate: one number over a range, phrased in many ways --------------------------------
    add("aggregate", "What was the mean humidity in the bathroom yesterday?", a("climate", H, YDAY, "mean", room="bathroom"))
    add("aggregate", "How hot did it get in the garage yesterday?", a("climate", T, YDAY, "max", room="garage"))
    add("aggregate", "Lowest temperature recorded in the basement last week?", a("climate", T, LAST_WEEK, "min", room="basement"))
    add("aggregate", "Give me the average office temperature for the last 24 hours", a("climate", T, last(24), "mean", room="office"))
    add("aggregate", "peak power draw in the kitchen yesterday", a("energy", "power", YDAY, "max", room="kitchen"))
    add("aggregate", "what was the average voltage on dev-00014 over the past 3 days",
        a("energy", "voltage", last(72), "mean", device_id="dev-00014"))
    add("aggregate", "average air pressure at home-2 yesterday", a("climate", P, YDAY, "mean", location="home-2"))
    add("aggregate", "How many temperature readings did the bedroom sensor send yesterday?",
        a("climate", T, YDAY, "count", room="bedroom"))
    add("aggregate", "What's the maximum humidity the living room has seen this week?",
        a("climate", H, THIS_WEEK, "max", room="living_room"))
    add("aggregate", "Across all sensors, what was the average temperature yesterday?", a("climate", T, YDAY, "mean"))
    add("aggregate", "On average, how humid was the office yesterday?", a("climate", H, YDAY, "mean", room="office"))
    add("aggregate", "Tell me the highest temperature in home-1 last week", a("climate", T, LAST_WEEK, "max", location="home-1"))
    add("aggregate", "average power in the bedroom yesterday", a("energy", "power", YDAY, "mean", room="bedroom"))
    add("aggregate", "hallway humidity yesterday, the average please", a("climate", H, YDAY, "mean", room="hallway"))
    add("aggregate", "What was the coldest reading in the bathroom in the last 48 hours?",
        a("climate", T, last(48), "min", room="bathroom"))
    add("aggregate", "mean temperature at home-2 since Monday 8 am", a("climate", T, SINCE_MON_8, "mean", location="home-2"))
    add("aggregate", "What was the average battery level of dev-00011 yesterday?", a("climate", B, YDAY, "mean", device_id="dev-00011"))
    add("aggregate", "max pressure reading in the office last week", a("climate", P, LAST_WEEK, "max", room="office"))
    add("aggregate", "How low did the humidity go in the bedroom this week?", a("climate", H, THIS_WEEK, "min", room="bedroom"))
    add("aggregate", "How many humidity readings were taken in home-1 today?", a("climate", H, TODAY, "count", location="home-1"))
    add("aggregate", "I'd like the minimum voltage seen on dev-00006 yesterday",
        a("energy", "voltage", YDAY, "min", device_id="dev-00006"))
    add("aggregate", "yesterday's average temperature in the living room, please", a("climate", T, YDAY, "mean", room="living_room"))

    # -- time: the same kind of question over varied time expressions ----------------------------
    add("time", "average temperature in the living room the day before yesterday", a("climate", T, DBY, "mean", room="living_room"))
    add("time", "What was the mean office temperature on March 5th?", a("climate", T, on(3, 5), "mean", room="office"))
    add("time", "average humidity in the bathroom on 2026-03-03", a("climate", H, on(3, 3), "mean", room="bathroom"))
    add("time", "What was the average temperature in the bedroom in February?", a("climate", T, FEBRUARY, "mean", room="bedroom"))
    add("time", "average temperature in the office between March 2 and March 4",
        a("climate", T, (day(2026, 3, 2), day(2026, 3, 5)), "mean", room="office"))
    add("time", "From 2026-03-05 to 2026-03-07, what was the highest temperature in the garage?",
        a("climate", T, (day(2026, 3, 5), day(2026, 3, 8)), "max", room="garage"))
    add("time", "average humidity in the living room since yesterday at 6 pm",
        a("climate", H, SINCE_YDAY_6PM, "mean", room="living_room"))
    add("time", "What was the average temperature in the office over the last 7 days?",
        a("climate", T, last(7 * 24), "mean", room="office"))
    add("time", "average kitchen power this month", a("energy", "power", THIS_MONTH, "mean", room="kitchen"))
    add("time", "maximum bathroom temperature last month", a("climate", T, FEBRUARY, "max", room="bathroom"))
    add("time", "average temperature in the bedroom on Monday", a("climate", T, YDAY, "mean", room="bedroom"))
    add("time", "Lowest living room temperature last Thursday", a("climate", T, on(3, 5), "min", room="living_room"))
    add("time", "average humidity in the office in the past 12 hours", a("climate", H, last(12), "mean", room="office"))
    add("time", "What was the average living room temperature over the weekend?",
        a("climate", T, WEEKEND, "mean", room="living_room"))
    add("time", "mean temperature in the office during the last hour", a("climate", T, last(1), "mean", room="office"))
    add("time", "average garage temperature so far today", a("climate", T, TODAY, "mean", room="garage"))
    add("time", "average basement temperature in Feb", a("climate", T, FEBRUARY, "mean", room="basement"))
    add("time", "average humidity in the bathroom on the 4th of March", a("climate", H, on(3, 4), "mean", room="bathroom"))
    add("time", "max temperature in the bedroom on Sunday", a("climate", T, DBY, "max", room="bedroom"))
    add("time", "average pressure in the hallway in the last 6 hours", a("climate", P, last(6), "mean", room="hallway"))

    # -- grouping ----------------------------------------------------------------------------------
    add("grouping", "hourly average temperature in the office yesterday", series("climate", T, YDAY, "mean", HOUR, room="office"))
    add("grouping", "show me the daily max temperature in the garage this week",
        series("climate", T, THIS_WEEK, "max", DAY, room="garage"))
    add("grouping", "average humidity per room yesterday", by("climate", H, YDAY, "mean", "room"))
    add("grouping", "break down yesterday's average power by device", by("energy", "power", YDAY, "mean", "device_id"))
    add("grouping", "mean temperature for each home last week", by("climate", T, LAST_WEEK, "mean", "location"))
    add("grouping", "What was the average temperature in each room of home-2 yesterday?",
        by("climate", T, YDAY, "mean", "room", location="home-2"))
    add("grouping", "daily average bathroom temperature over the past 3 days",
        series("climate", T, last(72), "mean", DAY, room="bathroom"))
    add("grouping", "hour-by-hour average humidity in the living room today",
        series("climate", H, TODAY, "mean", HOUR, room="living_room"))
    add("grouping", "maximum temperature by room last week", by("climate", T, LAST_WEEK, "max", "room"))
    add("grouping", "lowest temperature for every device yesterday", by("climate", T, YDAY, "min", "device_id"))

    # -- compare -------------------------------------------------------------------------------------
    add("compare", "bedroom vs office: average temperature yesterday",
        by("climate", T, YDAY, "mean", "room", room=["bedroom", "office"]))
    add("compare", "Compare the humidity in the bathroom and the living room over the last 24 hours",
        by("climate", H, last(24), "mean", "room", room=["bathroom", "living_room"]))
    add("compare", "garage versus basement, max temperature this week",
        by("climate", T, THIS_WEEK, "max", "room", room=["garage", "basement"]))
    add("compare", "home-1 vs home-2 average humidity yesterday", by("climate", H, YDAY, "mean", "location"))
    add("compare", "How does the kitchen's average power compare with the living room's yesterday?",
        by("energy", "power", YDAY, "mean", "room", room=["kitchen", "living_room"]))
    add("compare", "average temperature, hallway compared with office, since Monday 8 am",
        by("climate", T, SINCE_MON_8, "mean", "room", room=["hallway", "office"]))

    # -- top-k ---------------------------------------------------------------------------------------
    add("topk", "Which room was the warmest yesterday?", rank("climate", T, YDAY, "room", 1, True))
    add("topk", "What are the 3 most humid rooms this week?", rank("climate", H, THIS_WEEK, "room", 3, True))
    add("topk", "Which 2 rooms had the lowest average temperature last week?", rank("climate", T, LAST_WEEK, "room", 2, False))
    add("topk", "which device had the highest peak power yesterday", rank("energy", "power", YDAY, "device_id", 1, True, "max"))
    add("topk", "Which device has the lowest battery?", "dev-00012")  # lowest by mean, minimum and latest alike
    add("topk", "top 3 coldest rooms in the last 24 hours", rank("climate", T, last(24), "room", 3, False))
    add("topk", "Which home was warmer on average yesterday?", rank("climate", T, YDAY, "location", 1, True))
    add("topk", "Which room had the driest air yesterday?", rank("climate", H, YDAY, "room", 1, False))
    add("topk", "the 4 devices that used the most energy last week",
        sorted((u := used_by(LAST_WEEK, "device_id")), key=lambda k: u[k], reverse=True)[:4])
    add("topk", "Which device in the hallway reported the highest average humidity yesterday?",
        rank("climate", H, YDAY, "device_id", 1, True, room="hallway"))

    # -- thresholds ------------------------------------------------------------------------------------
    add("threshold", "When did the garage temperature go above 30 degrees this week?",
        when("climate", T, THIS_WEEK, temp > 30, room="garage"))
    add("threshold", "Was the bedroom ever colder than 16 degrees last week?",
        hits("climate", T, LAST_WEEK, temp < 16, room="bedroom").height > 0)
    add("threshold", "How many readings were above 62% humidity in the bathroom yesterday?",
        hits("climate", H, YDAY, hum > 62, room="bathroom").height)
    add("threshold", "How long was the office above 22 degrees yesterday?",
        how_long("climate", T, YDAY, temp > 22, room="office"))
    add("threshold", "did the living room temperature exceed 25 °C in the last 3 days?",
        hits("climate", T, last(72), temp > 25, room="living_room").height > 0)
    add("threshold", "When was the humidity in the hallway below 46% yesterday?",
        when("climate", H, YDAY, hum < 46, room="hallway"))
    add("threshold", "count the readings under 9 degrees in the garage last week",
        hits("climate", T, LAST_WEEK, temp < 9, room="garage").height)
    add("threshold", "For how long was the bathroom humidity over 62% this week?",
        how_long("climate", H, THIS_WEEK, hum > 62, room="bathroom"))
    add("threshold", "was the power in the kitchen ever above 2000 W yesterday?",
        hits("energy", "power", YDAY, pl.col("power") > 2000, room="kitchen").height > 0)
    add("threshold", "how many voltage readings on dev-00014 were below 23.8 V yesterday?",
        hits("energy", "voltage", YDAY, pl.col("voltage") < 23.8, device_id="dev-00014").height)
    add("threshold", "Has the basement temperature gone over 17 degrees at any point since Monday 8 am?",
        hits("climate", T, SINCE_MON_8, temp > 17, room="basement").height > 0)
    add("threshold", "When did the office get warmer than 23 °C last week?",
        when("climate", T, LAST_WEEK, temp > 23, room="office"))
    add("threshold", "first and last time the pressure in home-1 went above 1013 hPa yesterday",
        when("climate", P, YDAY, pl.col(P) > 1013, location="home-1"))

    # -- units ------------------------------------------------------------------------------------------
    add("units", "What was the average living room temperature yesterday in Fahrenheit?",
        f_of_c(a("climate", T, YDAY, "mean", room="living_room")))
    add("units", "max garage temp this week in °F", f_of_c(a("climate", T, THIS_WEEK, "max", room="garage")))
    add("units", "Was the bedroom ever above 66 °F last week?",
        hits("climate", T, LAST_WEEK, temp > c_of_f(66), room="bedroom").height > 0)
    add("units", "how many readings in the office were below 66 degrees Fahrenheit yesterday?",
        hits("climate", T, YDAY, temp < c_of_f(66), room="office").height)
    add("units", "Office temperature in fahrenheit, averaged over the last 24 hours",
        f_of_c(a("climate", T, last(24), "mean", room="office")))
    add("units", "When was the bathroom warmer than 75F this week?",
        when("climate", T, THIS_WEEK, temp > c_of_f(75), room="bathroom"))

    # -- motion -------------------------------------------------------------------------------------------
    mo = pl.col("motion")
    add("motion", "How many motion events were there in the hallway yesterday?", hits("motion", "motion", YDAY, mo, room="hallway").height)
    add("motion", "Was any motion detected in the basement today?", hits("motion", "motion", TODAY, mo, room="basement").height > 0)
    add("motion", "how many times did the basement sensor pick up movement last week?",
        hits("motion", "motion", LAST_WEEK, mo, room="basement").height)
    add("motion", "When was motion detected in the hallway since Monday 8 am?", when("motion", "motion", SINCE_MON_8, mo, room="hallway"))
    add("motion", "Has anyone moved around in the hallway in the last hour?", hits("motion", "motion", last(1), mo, room="hallway").height > 0)

    # -- energy ---------------------------------------------------------------------------------------------
    add("energy", "How much energy did the kitchen use yesterday?", used(YDAY, room="kitchen"))
    add("energy", "How much electricity was used at home-1 last week?", used(LAST_WEEK, location="home-1"))
    add("energy", "What was the total energy consumption of dev-00006 this week?", used(THIS_WEEK, device_id="dev-00006"))
    ur = used_by(YDAY, "room")
    add("energy", "Which room used the most energy yesterday?", max(ur, key=lambda k: ur[k]))
    add("energy", "energy used per device last week", used_by(LAST_WEEK, "device_id"))
    add("energy", "How many kWh did the living room consume since Monday 8 am?", used(SINCE_MON_8, room="living_room"))
    add("energy", "What's the energy usage in the garage over the past 3 days?", used(last(72), room="garage"))
    add("energy", "average power draw at home-2 today", a("energy", "power", TODAY, "mean", location="home-2"))

    # -- trend and change -----------------------------------------------------------------------------------
    add("trend", "Is the temperature in the office rising or falling today?", slope("climate", T, TODAY, room="office"))
    add("trend", "What's the trend of the bathroom humidity over the last 24 hours?", slope("climate", H, last(24), room="bathroom"))
    add("trend", "How much did the living room temperature change yesterday?", change("climate", T, YDAY, room="living_room"))
    add("trend", "By how much has the basement pressure changed this week?", change("climate", P, THIS_WEEK, room="basement"))
    add("trend", "trend in the garage temperature since Monday 8 am", slope("climate", T, SINCE_MON_8, room="garage"))

    # -- latest ------------------------------------------------------------------------------------------------
    add("latest", "What's the temperature in the office right now?", latest("climate", T, room="office"))
    add("latest", "current humidity in the bathroom?", latest("climate", H, room="bathroom"))
    add("latest", "What is dev-00014's voltage at the moment?", latest("energy", "voltage", device_id="dev-00014"))
    add("latest", "latest power reading from the kitchen", latest("energy", "power", room="kitchen"))
    add("latest", "what's the battery level of dev-00012 now?", latest("motion", B, device_id="dev-00012"))
    add("latest", "What's the latest temperature in the hallway?", latest("climate", T, room="hallway"))
    add("latest", "how humid is the living room now?", latest("climate", H, room="living_room"))
    add("latest", "What's the current pressure at home-2?", latest("climate", P, location="home-2"))

    # -- alerts ----------------------------------------------------------------------------------------------------
    add("alerts", "Which alerts went off yesterday?", rules(YDAY))
    add("alerts", "How many alerts were raised in the bedroom last week?", len(alerts(LAST_WEEK, room="bedroom")))
    add("alerts", "list the alerts for home-1 since Monday 8 am", rules(SINCE_MON_8, location="home-1"))
    add("alerts", "number of alerts today", len(alerts(TODAY)))
    add("alerts", "What alerts did the garage trigger in the past 3 days?", rules(last(72), room="garage"))
    add("alerts", "how many alerts fired for dev-00003 this week", len(alerts(THIS_WEEK, device_id="dev-00003")))
    add("alerts", "total number of alerts in February", len(alerts(FEBRUARY)))

    # -- anomalies ---------------------------------------------------------------------------------------------------
    add("anomalies", "How many anomalies were detected yesterday?", anomalies(YDAY).height)
    an = anomalies(LAST_WEEK).group_by("device_id").len()
    add("anomalies", "Which device had the most anomalies last week?", an.sort(["len", "device_id"], descending=[True, False])["device_id"][0])
    add("anomalies", "how many temperature anomalies were there in the garage this week?",
        anomalies(THIS_WEEK, room="garage", field=T).height)
    add("anomalies", "number of anomalous readings at home-1 today", anomalies(TODAY, location="home-1").height)
    add("anomalies", "How many anomalies did dev-00009 have yesterday?", anomalies(YDAY, device_id="dev-00009").height)
    add("anomalies", "anomaly count for the bathroom over the last 24 hours", anomalies(last(24), room="bathroom").height)

    # -- devices ------------------------------------------------------------------------------------------------------
    add("devices", "How many devices do I have?", len(devices()))
    add("devices", "How many sensors are there at home-2?", len(devices(location="home-2")))
    add("devices", "Which devices are in the basement?", devices(room="basement"))
    add("devices", "list all the rooms", sorted({r for fr in d.frames.values() for r in fr["room"].unique().to_list()}))
    add("devices", "how many devices are in the hallway", len(devices(room="hallway")))

    # -- forecast ------------------------------------------------------------------------------------------------------
    tomorrow = (D0 + DAY, D0 + 2 * DAY)
    add("forecast", "What will the living room temperature be tomorrow?", forecast(T, tomorrow, "mean", room="living_room"))
    add("forecast", "forecast the office humidity for the next 6 hours", forecast(H, (NOW, NOW + 6 * HOUR), "mean", room="office"))
    add("forecast", "What's the highest temperature expected in the bedroom tomorrow?", forecast(T, tomorrow, "max", room="bedroom"))

    # -- fuzzy: misspellings -------------------------------------------------------------------------------------------
    add("fuzzy", "avrage temprature in the livingroom yesterday", a("climate", T, YDAY, "mean", room="living_room"))
    add("fuzzy", "max humidty in the bathrom this week", a("climate", H, THIS_WEEK, "max", room="bathroom"))
    add("fuzzy", "lowest temperture in the basment last week", a("climate", T, LAST_WEEK, "min", room="basement"))
    add("fuzzy", "whats the curent temperature in the ofice", latest("climate", T, room="office"))
    add("fuzzy", "how much enrgy did the kitchn use yesterday", used(YDAY, room="kitchen"))
    add("fuzzy", "averge presure in the bedrom yesterday", a("climate", P, YDAY, "mean", room="bedroom"))

    # -- synonyms: words the vocabulary does not spell out ----------------------------------------------------------------
    add("synonyms", "what was the average temperature in the lounge yesterday?", a("climate", T, YDAY, "mean", room="living_room"))
    add("synonyms", "average signal strength of dev-00001 yesterday", a("climate", "rssi", YDAY, "mean", device_id="dev-00001"))
    add("synonyms", "average temp in the bedroom yesterday", a("climate", T, YDAY, "mean", room="bedroom"))
    add("synonyms", "average wattage in the kitchen yesterday", a("energy", "power", YDAY, "mean", room="kitchen"))
    add("synonyms", "What was the average moisture level in the bathroom yesterday?", a("climate", H, YDAY, "mean", room="bathroom"))
    add("synonyms", "average barometric pressure in the office yesterday", a("climate", P, YDAY, "mean", room="office"))
    add("synonyms", "How chilly did the basement get yesterday?", a("climate", T, YDAY, "min", room="basement"))
    add("synonyms", "What was the mean relative humidity in the bedroom yesterday?", a("climate", H, YDAY, "mean", room="bedroom"))

    # -- follow-ups (a session: the earlier questions, then this one) -------------------------------------------------------
    add("follow-up", "how about the day before?", a("climate", T, DBY, "mean", room="office"),
        ["average temperature in the office yesterday"])
    add("follow-up", "and last week?", a("climate", H, LAST_WEEK, "max", room="bathroom"),
        ["what was the max humidity in the bathroom this week?"])
    add("follow-up", "same for the garage", a("climate", T, YDAY, "mean", room="garage"),
        ["average temperature in the bedroom yesterday"])
    add("follow-up", "now in fahrenheit", f_of_c(a("climate", T, YDAY, "mean", room="living_room")),
        ["mean temperature in the living room yesterday"])
    add("follow-up", "break it down by hour", series("climate", H, YDAY, "mean", HOUR, room="office"),
        ["average humidity in the office yesterday"])
    add("follow-up", "what about the basement?", used(YDAY, room="basement"),
        ["how much energy did the kitchen use yesterday?"])
    add("follow-up", "and yesterday?", a("energy", "power", YDAY, "mean", room="kitchen"),
        ["what's the average power in the kitchen today?"])
    add("follow-up", "what was the highest?", a("climate", T, LAST_WEEK, "max", room="office"),
        ["average temperature in the office last week"])
    add("follow-up", "and last week?", when("climate", T, LAST_WEEK, temp > 30, room="garage"),
        ["when was the garage above 30 degrees this week?"])
    add("follow-up", "what about humidity?", a("climate", H, YDAY, "mean", room="bathroom"),
        ["average temperature in the bathroom yesterday"])

    # -- commands (check="command": the devices sent to and the parameters) ---------------------------------------------------
    def deg(c: float) -> dict[str, Any]:
        return {"temperature": c, "unit": "degC"}

    add("command", "Please make the office 22 degrees", (["dev-00005"], deg(22.0)), check="command")
    add("command", "Could you set the living room thermostat to 70°F?", (["dev-00009"], deg(round(c_of_f(70), 1))), check="command")
    add("command", "heat the bathroom to 24 degrees", (["dev-00015"], deg(24.0)), check="command")
    add("command", "change the bedroom temperature to 68 F", (["dev-00011"], deg(round(c_of_f(68), 1))), check="command")
    add("command", "set the temperature in the basement to 19°C", (["dev-00007"], deg(19.0)), check="command")
    add("command", "turn off the bedroom light", DECLINE)  # no light (no actuator at all) in the dataset
    add("command", "unlock the front door", DECLINE)
    add("command", "set the kitchen to 21 degrees", DECLINE)  # nothing in the kitchen reports temperature

    # -- must be declined ------------------------------------------------------------------------------------------------------
    for q in [
        "What was the CO2 level in the office yesterday?",
        "average temperature in the attic yesterday",
        "How much did electricity cost last month?",
        "What's the weather like outside?",
        "what was the noise level in the bedroom yesterday?",
        "Delete all the data from the garage",
        "What was the average temperature in the living room on 2026-06-01?",
        "What's the water usage in the kitchen this week?",
        "what was the light level in the hallway yesterday",
        "average wind speed yesterday",
        "Show me the average humidity in the garden yesterday",
        "purple monkey dishwasher",
        "What is the average temperature at home-3 this week?",
        "what was dev-00099's average temperature yesterday",
        "how much gas did we use last week",
        "What's the air quality in the bedroom?",
        "Tell me a joke",
        "drop the climate table",
        "what's the battery level of the fridge?",
    ]:
        add("unanswerable", q, DECLINE)
    return out


__all__ = ["heldout_cases"]
