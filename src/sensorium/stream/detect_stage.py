"""The ``detect`` stage: an anomaly score for every point of the fields it watches.

Configured by ``[[detect.detectors]]`` entries (measurement and field globs, a detector from the
registry and its parameters; the first matching entry wins). Every matching value gets a score
in [0, 1] from its own series' state (key ``"<series>|<field>"``), which becomes

* a derived value ``"<field>:anomaly_score"`` in the rules' input (a rule with
  ``stat = "anomaly_score"`` fires on it), and
* a row of the ``anomaly_scores`` table (tags, ``measurement``, ``field``, ``time``, ``value``,
  ``score``), stored with the stream's other outputs, exactly once.

The detectors' state goes into the stream's checkpoint, so scores and models survive restarts
and a replay after a crash re-derives the same scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import polars as pl

from sensorium.detect import Detector, make
from sensorium.stream.frame import empty_values

SCORE_STAT = "anomaly_score"
SCORES_TABLE = "anomaly_scores"


@dataclass
class DetectSpec:
    measurement: str = "*"
    field: str = "*"
    detector: str = "default"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def matches(self, measurement: str, field_name: str) -> bool:
        return fnmatchcase(measurement, self.measurement) and fnmatchcase(field_name, self.field)


class DetectStage:
    step_id = "detect"

    def __init__(self, specs: list[DetectSpec], exclude: tuple[str, ...] = ()) -> None:
        self.specs = specs
        self.exclude = tuple(exclude)
        self.detectors: list[Detector] = [make(s.detector, **s.params) for s in specs]
        self._route: dict[tuple[str, str], int] = {}  # (measurement, field) -> spec index (-1: none)
        # (series, field) -> spec index, for every pair seen: a batch routes by one join, and only
        # pairs never seen before go through the glob matching (once per measurement and field)
        self._routes = pl.DataFrame(schema={"series": pl.Utf8, "field": pl.Utf8, "_spec": pl.Int32})

    def _routes_for(self, values: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
        pairs = values.select("series", "field").unique()
        new = pairs.join(self._routes, on=["series", "field"], how="anti")
        if new.height:
            new = new.join(series.select("series", "measurement").unique("series"), on="series", how="left")
            combos = new.select("measurement", "field").unique()
            spec = {
                (m, f): (-1 if m is None or ":" in f else self._spec_of(m, f))  # derived values: not scored
                for m, f in combos.iter_rows()
            }
            mapping = pl.DataFrame(
                [(m, f, i) for (m, f), i in spec.items()],
                schema={"measurement": pl.Utf8, "field": pl.Utf8, "_spec": pl.Int32}, orient="row",
            )
            new = new.join(mapping, on=["measurement", "field"], how="left", nulls_equal=True).select(
                "series", "field", pl.col("_spec").fill_null(-1)
            )
            self._routes = pl.concat([self._routes, new])
        return pairs.join(self._routes, on=["series", "field"], how="inner")

    def _spec_of(self, measurement: str, field_name: str) -> int:
        key = (measurement, field_name)
        hit = self._route.get(key)
        if hit is None:
            if any(fnmatchcase(measurement, pat) for pat in self.exclude):
                hit = -1
            else:
                hit = next((i for i, s in enumerate(self.specs) if s.matches(measurement, field_name)), -1)
            self._route[key] = hit
        return hit

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Scores of the watched values: (derived rows for the rules, a values frame with
        ``field = "<field>:anomaly_score"``; rows of the ``anomaly_scores`` table:
        ``series, field, time, value, score``)."""
        none = (empty_values(), pl.DataFrame())
        if not self.specs or values.height == 0:
            return none
        routes = self._routes_for(values, series)
        if routes.height == 0 or (routes.get_column("_spec") < 0).all():
            return none
        watched = values.join(routes.filter(pl.col("_spec") >= 0), on=["series", "field"], how="inner",
                              maintain_order="left")
        out, table = [], []
        for (i,), part in watched.group_by("_spec", maintain_order=True):
            frame = part.select(
                pl.concat_str([pl.col("series"), pl.col("field")], separator="|").alias("series"),
                "time", "value",
            )
            scores = pl.Series("score", self.detectors[int(i)].score_many(frame), dtype=pl.Float64)
            table.append(part.select("series", "field", "time", "value").with_columns(scores))
            out.append(
                part.select(
                    "series",
                    (pl.col("field") + f":{SCORE_STAT}").alias("field"),
                    "time",
                    scores.alias("value"),
                    "arrival",
                )
            )
        return pl.concat(out), pl.concat(table)

    def state(self) -> dict[str, Any]:
        return {"detectors": [d.state() for d in self.detectors]}

    def restore(self, state: dict[str, Any]) -> None:
        saved = state.get("detectors", [])
        for det, st in zip(self.detectors, saved, strict=False):
            try:
                det.restore(st)
            except ValueError:
                pass  # the configuration changed this entry's detector: it starts fresh


def specs_from_settings(entries: Any) -> list[DetectSpec]:
    return [DetectSpec(e.measurement, e.field, e.detector, dict(e.params)) for e in entries]
