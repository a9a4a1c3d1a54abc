"""Tree-ensemble detectors: a multivariate IsolationForest per device, refit periodically
(scikit-learn), and Half-Space Trees (Tan, Ting & Liu 2011; River's ``HalfSpaceTrees``),
an online ensemble with constant memory per series.

Both loop over the series of a batch (and, within a series, over refit/window boundaries), never
over records: the records between two boundaries are scored in one vectorised call.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import polars as pl

from sensorium.detect.base import Detector, Layout, register

_SEP = "|"


def device_and_field(keys: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Split ``"<device>|<field>"`` keys at the last ``|`` (no ``|``: the key is the device and
    the field is empty)."""
    df = pl.DataFrame({"k": keys})
    has = pl.col("k").str.contains(_SEP, literal=True)
    parts = df.select(
        pl.when(has).then(pl.col("k").str.replace(r"\|[^|]*$", "")).otherwise(pl.col("k")).alias("device"),
        pl.when(has).then(pl.col("k").str.extract(r"\|([^|]*)$", 1)).otherwise(pl.lit("")).alias("field"),
    )
    return parts.get_column("device"), parts.get_column("field")


@register("isolation_forest")
class IsolationForestDetector(Detector):
    """Multivariate IsolationForest per device. Each record (one field of one device) is scored as
    the device's vector of its latest value of every field (forward-filled), by the forest last
    fitted on the device's previous ``buffer`` vectors; the forest is refit every ``refit_every``
    records (as the pipeline seed does). Score: the forest's anomaly score ``2^(-E[h]/c)``
    rescaled so that 0.5 (an ordinary point) → 0 and 1 → 1.

    Series keys are ``"<device>|<field>"`` (the stream's keys). Deterministic under ``seed``.
    Cold start: 0 until the first fit, after ``min_points`` records of the device.
    """

    split_by_length = False  # a device's fields are several series: keep the batch whole

    def __init__(self, n_estimators: int = 30, buffer: int = 1024, refit_every: int = 1000, min_points: int = 64,
                 seed: int = 42) -> None:
        self.n_estimators, self.buffer, self.refit_every = n_estimators, buffer, refit_every
        self.min_points, self.seed = min_points, seed
        self.devices: dict[str, dict[str, Any]] = {}
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "buffer": self.buffer, "refit_every": self.refit_every,
                "min_points": self.min_points, "seed": self.seed}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {}

    def _extra_state(self) -> dict[str, Any]:
        return {"devices": copy.deepcopy(self.devices)}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        self.devices = copy.deepcopy(extra.get("devices", {}))

    def _fit(self, dev: dict[str, Any]) -> None:
        from sklearn.ensemble import IsolationForest

        data = dev["buf"][-self.buffer :]
        model = IsolationForest(
            n_estimators=self.n_estimators, max_samples=min(256, len(data)), random_state=self.seed
        )
        model.fit(data)
        dev["model"] = model
        dev["model_fields"] = len(dev["fields"])
        dev["since_fit"] = 0

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        keys = pl.Series(np.asarray(lay.keys, dtype=object)[lay.seg], dtype=pl.Utf8)
        device, field = device_and_field(keys)
        # arrival order of this batch (layout order groups series; a device spans several series)
        arrival = lay.order
        back = np.argsort(arrival, kind="stable")
        dev_a = device.gather(back)
        fld_a = field.gather(back).to_numpy()
        val_a = value[back]
        scores_a = np.zeros(len(value))
        frame = pl.DataFrame({"d": dev_a, "i": np.arange(len(value))})
        for (name,), grp in frame.group_by("d", maintain_order=True):
            rows = grp.get_column("i").to_numpy()
            scores_a[rows] = self._device(str(name), fld_a[rows], val_a[rows])
        return scores_a[arrival] if len(arrival) else scores_a

    def _device(self, name: str, fields: np.ndarray, values: np.ndarray) -> np.ndarray:
        dev = self.devices.setdefault(
            name, {"fields": [], "last": [], "buf": np.zeros((0, 0)), "model": None, "since_fit": 0, "n": 0}
        )
        for f in dict.fromkeys(fields.tolist()):
            if f not in dev["fields"]:
                dev["fields"].append(f)
                dev["last"].append(np.nan)
                buf = dev["buf"]
                dev["buf"] = np.hstack([buf, np.full((buf.shape[0], 1), np.nan)]) if buf.size else np.zeros((0, len(dev["fields"])))
        col = {f: i for i, f in enumerate(dev["fields"])}
        k = len(values)
        vec = np.full((k, len(dev["fields"])), np.nan)
        names, inv = np.unique(fields, return_inverse=True)  # one lookup per field, not per record
        vec[np.arange(k), np.array([col[f] for f in names.tolist()], dtype=np.int64)[inv]] = values
        # forward fill each field, seeded by the device's last values
        seeded = np.vstack([np.asarray(dev["last"], dtype=np.float64)[None, :], vec])
        idx = np.where(~np.isnan(seeded), np.arange(k + 1)[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = seeded[idx, np.arange(seeded.shape[1])[None, :]][1:]
        dev["last"] = list(filled[-1])
        out = np.zeros(k)
        start = 0
        while start < k:
            if dev["model"] is None:
                need = max(self.min_points - dev["n"], 1)
            else:
                need = max(self.refit_every - dev["since_fit"], 1)
            stop = min(k, start + need)
            chunk = filled[start:stop]
            model = dev["model"]
            if model is not None:
                X = np.nan_to_num(chunk[:, : dev["model_fields"]], nan=0.0)
                s = -model.score_samples(X)
                out[start:stop] = np.clip(2.0 * (s - 0.5), 0.0, 1.0)
            dev["buf"] = np.vstack([dev["buf"], chunk])[-self.buffer :]
            dev["n"] += stop - start
            dev["since_fit"] += stop - start
            if (model is None and dev["n"] >= self.min_points) or (model is not None and dev["since_fit"] >= self.refit_every):
                dev["buf"] = np.nan_to_num(dev["buf"], nan=0.0)
                self._fit(dev)
            start = stop
        return out


@register("hst")
class HalfSpaceTrees(Detector):
    """Half-Space Trees on the features (value, change from the previous value), each scaled to
    [0, 1] by the range of the series' first window (values outside are clipped). Mass is counted
    in a *latest* window while scores read the *reference* window (the previous one); every
    ``window`` points the latest becomes the reference. Anomaly score ``1 - mass/max_mass``.
    State per series: two mass arrays ``[n_trees, 2^(height+1) - 1]``. Deterministic under
    ``seed``. Cold start: 0 for the first window (it sets the scaling and the first reference).
    """

    def __init__(self, n_trees: int = 10, height: int = 8, window: int = 250, seed: int = 42) -> None:
        self.n_trees, self.height, self.window, self.seed = n_trees, height, window, seed
        self.min_points = window
        self.n_nodes = 2 ** (height + 1) - 1
        rng = np.random.default_rng(seed)
        d = 2
        self.feat = rng.integers(0, d, size=(n_trees, self.n_nodes))
        self.thr = np.zeros((n_trees, self.n_nodes))
        for t in range(n_trees):  # split points from random working ranges (as in the paper)
            s = rng.uniform(0, 1, d)
            r = 2 * np.maximum(s, 1 - s)
            lo = np.tile(s - r, (self.n_nodes, 1))
            hi = np.tile(s + r, (self.n_nodes, 1))
            for node in range(2 ** height - 1):
                q = self.feat[t, node]
                mid = (lo[node, q] + hi[node, q]) / 2
                self.thr[t, node] = mid
                for child, (a, b) in ((2 * node + 1, (lo[node, q], mid)), (2 * node + 2, (mid, hi[node, q]))):
                    lo[child], hi[child] = lo[node], hi[node]
                    lo[child, q], hi[child, q] = a, b
        self.depth = np.floor(np.log2(np.arange(self.n_nodes) + 1)).astype(np.int64)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees, "height": self.height, "window": self.window, "seed": self.seed}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        shape = (self.n_trees, self.n_nodes)
        return {"n": ((), 0.0), "prev": ((), np.nan), "lo": ((2,), np.nan), "hi": ((2,), np.nan),
                "first": ((self.window, 2), np.nan), "r": (shape, 0.0), "l": (shape, 0.0)}

    def _paths(self, x: np.ndarray) -> np.ndarray:
        """Node index per (row, tree, depth 0..height)."""
        rows = x.shape[0]
        trees = np.arange(self.n_trees)[None, :]
        node = np.zeros((rows, self.n_trees), dtype=np.int64)
        out = np.empty((rows, self.n_trees, self.height + 1), dtype=np.int64)
        out[:, :, 0] = 0
        for k in range(self.height):
            f = self.feat[trees, node]
            v = np.take_along_axis(x, f, axis=1) if x.shape[1] > 1 else x[:, :1]
            go_right = v >= self.thr[trees, node]
            node = 2 * node + 1 + go_right
            out[:, :, k + 1] = node
        return out

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        st, w = self.table, self.window
        out = np.zeros(len(value))
        starts = np.r_[0, np.cumsum(lay.lengths)[:-1]]
        max_score = self.n_trees * w * (2.0 ** (self.height + 1) - 1)
        limit = 0.1 * w
        weights = 2.0 ** np.arange(self.height + 1)
        for seg, sid in enumerate(ids):
            v = value[starts[seg] : starts[seg] + lay.lengths[seg]]
            prev = st["prev"][sid]
            diff = np.diff(np.r_[v[0] if np.isnan(prev) else prev, v])
            feats = np.column_stack([v, diff])
            st["prev"][sid] = v[-1]
            pos = 0
            while pos < len(v):
                n = int(st["n"][sid])
                stop = min(len(v), pos + (w - n % w))
                chunk = feats[pos:stop]
                if n < w:  # first window: remember raw features, set the scaling at its end
                    st["first"][sid][n : n + len(chunk)] = chunk
                    if n + len(chunk) == w:
                        first = st["first"][sid]
                        lo, hi = first.min(axis=0), first.max(axis=0)
                        pad = np.maximum((hi - lo) * 0.5, 1e-9 + 1e-6 * np.abs(hi))
                        st["lo"][sid], st["hi"][sid] = lo - pad, hi + pad
                        scaled = np.clip((first - st["lo"][sid]) / (st["hi"][sid] - st["lo"][sid]), 0, 1)
                        self._learn(sid, self._paths(scaled))
                else:
                    scaled = np.clip((chunk - st["lo"][sid]) / (st["hi"][sid] - st["lo"][sid]), 0, 1)
                    paths = self._paths(scaled)
                    if True:  # the reference window exists from the second window on
                        trees = np.arange(self.n_trees)[None, :, None]
                        mass = st["r"][sid][trees, paths]  # [rows, trees, depth]
                        alive = np.cumprod(np.r_["2", np.ones(mass.shape[:2] + (1,)), mass[:, :, :-1] >= limit], axis=2)
                        score = (mass * weights[None, None, :] * alive).sum(axis=(1, 2))
                        out[starts[seg] + pos : starts[seg] + stop] = 1.0 - score / max_score
                    self._learn(sid, paths)
                st["n"][sid] = n + len(chunk)
                if (n + len(chunk)) % w == 0:
                    st["r"][sid] = st["l"][sid]
                    st["l"][sid] = 0.0
                pos = stop
        return out

    def _learn(self, sid: int, paths: np.ndarray) -> None:
        trees = np.broadcast_to(np.arange(self.n_trees)[None, :, None], paths.shape)
        np.add.at(self.table["l"][sid], (trees.ravel(), paths.ravel()), 1.0)
