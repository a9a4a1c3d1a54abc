"""Detectors built from detectors: an ensemble, and a refractory wrapper."""

from __future__ import annotations

from typing import Any

import bottleneck as bn
import numpy as np

from sensorium.detect.base import Detector, Layout, make, register


@register("ensemble")
class Ensemble(Detector):
    """Combines member detectors (registry names, default parameters unless ``params`` names them;
    default: the default detector and Half-Space Trees, averaged)
    scoring the same rows: ``combine="max"`` (any member alarmed) or ``"mean"``. Each member keeps
    its own state; cold start is that of the members."""

    def __init__(self, members: tuple[str, ...] | list[str] = ("default", "hst"),
                 combine: str = "mean", params: dict[str, dict[str, Any]] | None = None) -> None:
        if combine not in ("max", "mean"):
            raise ValueError(f"combine must be 'max' or 'mean', got {combine!r}")
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members_names = tuple(members)
        self.combine = combine
        self.member_params = dict(params or {})
        self.members = [make(m, **self.member_params.get(m, {})) for m in self.members_names]
        self.min_points = min(m.min_points for m in self.members)
        self.split_by_length = all(m.split_by_length for m in self.members)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"members": list(self.members_names), "combine": self.combine, "params": self.member_params}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {}

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        scores = np.vstack([np.clip(np.nan_to_num(m._run(lay, m.table.ids(lay.keys), time, value)), 0, 1)
                            for m in self.members])
        return scores.max(axis=0) if self.combine == "max" else scores.mean(axis=0)

    def _extra_state(self) -> dict[str, Any]:
        return {"members": [m.state() for m in self.members]}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        for m, s in zip(self.members, extra.get("members", []), strict=False):
            m.restore(s)


@register("refractory")
class Refractory(Detector):
    """Wraps a detector so that an alarm is reported once, not for every point after it: a score
    not above the highest of the series' previous ``points`` scores is multiplied by ``factor``.
    Needs no threshold (a level shift scores high at its onset, then its echoes are damped).
    State per series: the last ``points`` inner scores."""

    def __init__(self, inner: str = "ewma", points: int = 50, factor: float = 0.5,
                 inner_params: dict[str, Any] | None = None) -> None:
        self.inner_name, self.points, self.factor = inner, points, factor
        self.inner_params = dict(inner_params or {})
        self.inner = make(inner, **self.inner_params)
        self.min_points = self.inner.min_points
        self.split_by_length = self.inner.split_by_length
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"inner": self.inner_name, "points": self.points, "factor": self.factor,
                "inner_params": self.inner_params}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"last": ((self.points,), np.nan)}

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        raw = np.clip(np.nan_to_num(self.inner._run(lay, self.inner.table.ids(lay.keys), time, value)), 0, 1)
        p = self.points
        m = lay.pad(raw, np.nan, lead=self.table["last"][ids])
        prev_max = bn.move_max(m, p, min_count=1, axis=1)[:, p - 1 : -1]
        cur = m[:, p:]
        out = np.where(np.isnan(prev_max) | (cur > prev_max), cur, cur * self.factor)
        self.table["last"][ids] = lay.tail(m, p, lead=p)
        return lay.unpad(out)

    def _extra_state(self) -> dict[str, Any]:
        return {"inner": self.inner.state()}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        if "inner" in extra:
            self.inner.restore(extra["inner"])
