"""Anomaly detection, data-quality checks, forecasting, sensor fusion, compression.

Detectors share one interface (:class:`~sensorium.detect.base.Detector`): per-series state,
``score_many`` / ``learn_many`` on Polars batches, scores in [0, 1], checkpointable state.
``make(name, **params)`` builds one from the registry; ``names()`` lists them; ``"default"`` is
the detector tuned on NAB (see docs/detection.md). The built-in detectors register on first use.
"""

from sensorium.detect.base import Detector, Layout, StateTable, make, names, score_frame, squash

__all__ = ["Detector", "Layout", "StateTable", "make", "names", "score_frame", "squash"]
