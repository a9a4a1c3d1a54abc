"""Stream processing: the runner, windows, rollups, rolling statistics, user pipelines.

The public face for users who extend the stream::

    from sensorium.stream import Pipeline, Tumbling, Hopping, Session
"""

from sensorium.stream.pipeline import Pipeline
from sensorium.stream.windows import Hopping, Session, Tumbling, parse_duration

__all__ = ["Hopping", "Pipeline", "Session", "Tumbling", "parse_duration"]
