"""Per-device sampling-rate advice from the variability of what each device sends.

For every series (device and field) and every interval ``Δ`` of a ladder (1 s, 5 s, 10 s, 30 s,
1 min, 5 min, 15 min) longer than the series' current interval, the series is subsampled (the
first point of each ``Δ``-wide time bucket, plus the last point) and linearly interpolated back
at every original time stamp; the error statistic (``p99`` of the absolute error by default, or
``max``) is compared with the tolerance. The advised interval is the longest ladder step such
that it and every shorter step stay within tolerance; when none does, the advice is the current
interval. A device's advice is the shortest over its fields.

Tolerance: an absolute number in the field's unit, or ``"N%"``: N percent of the series' robust
range (1st to 99th percentile) over the window analysed.

White measurement noise is not signal: sampling faster only records more of it, and no interval
reconstructs it. With ``noise=True`` (default) each series' tolerance is widened by what its own
white noise alone makes the statistic reach, ``z sqrt(2) sigma`` (``z`` = 2.576 for ``p99``,
``sqrt(2 ln n)`` for ``max``), with ``sigma^2 = R`` the measurement-noise variance of the Kalman
filter's local-level model fitted to the series (:func:`sensorium.detect.fusion.estimate_noise`;
near zero for smooth or autocorrelated variation). So a noisy but slow series gets a long interval, a series
with fast real dynamics a short one. ``noise=False`` holds every series to the bare tolerance.

Vectorised: each ladder step is one pass over all series at once (a boolean "kept" mask from
bucket boundaries, the interpolation of :mod:`sensorium.detect.compression`, one group-by for
the statistic), so the work is ``O(points x ladder steps)`` with no per-row Python loop.

Publishing: :func:`publish_config` sends the advice to the device as configuration, a retained
QoS-1 MQTT message on ``sensorium/devices/{device_id}/config`` with JSON
``{"device_id", "sampling_interval_s", "fields": {field: interval_s}, "tolerance", "advised_at"}``
on the broker of ``settings.alerts.mqtt`` (else 127.0.0.1:1883). A broker that cannot be reached
raises :class:`BrokerUnavailable` (HTTP 503).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from sensorium.detect.compression import _reconstruct_flat, series_order
from sensorium.errors import BadRequest, NotFound, SensoriumError
from sensorium.query.sql import ident as _q
from sensorium.query.sql import literal as _lit

if TYPE_CHECKING:
    from sensorium.config import Settings
    from sensorium.platform import Sensorium

NS = 1_000_000_000
LADDER_S: tuple[float, ...] = (1, 5, 10, 30, 60, 300, 900)
TOPIC = "sensorium/devices/{device_id}/config"
_NUMERIC = ("float", "integer", "unsigned")
_TOPIC_UNSAFE = re.compile(r"[+#/\x00]")
MAX_HOURS = 24 * 31


class BrokerUnavailable(SensoriumError):
    """The MQTT broker for device configuration cannot be reached."""

    status = 503
    code = "broker_unavailable"


def parse_tolerance(text: str | float) -> tuple[float, bool]:
    """``"0.5"`` → (0.5, absolute); ``"2%"`` → (0.02, relative to the robust range)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        val, rel = float(text), False
    else:
        s = str(text).strip()
        rel = s.endswith("%")
        try:
            val = float(s[:-1] if rel else s)
        except ValueError:
            raise BadRequest(f"bad tolerance {text!r}: use a number (field units) or a percentage like 1%") from None
        if rel:
            val /= 100.0
    if not (np.isfinite(val) and val >= 0):
        raise BadRequest(f"tolerance must be a finite number >= 0; got {text!r}")
    return val, rel


def advise(
    df: pl.DataFrame,
    *,
    by: Sequence[str] = ("device_id", "field"),
    device: str = "device_id",
    time: str = "time",
    value: str = "value",
    tolerance: str | float = "1%",
    ladder: Sequence[float] = LADDER_S,
    stat: str = "p99",
    noise: bool = True,
) -> pl.DataFrame:
    """Advice per series of a long frame (``by`` columns, ``time`` ns, ``value``).

    Returns the ``by`` columns, ``points``, ``current_interval_s`` (median spacing),
    ``advised_interval_s``, ``expected_error`` (the statistic at the advised interval),
    ``tolerance`` (absolute, noise allowance included), ``noise_std`` (estimated white noise)
    and ``device_interval_s`` (shortest advice of the device)."""
    by = list(by)
    if device not in by:
        raise BadRequest(f"by must include the device column {device!r}")
    if stat not in ("p99", "max"):
        raise BadRequest(f"stat must be p99 or max; got {stat!r}")
    steps = sorted({float(s) for s in ladder})
    if not steps or steps[0] <= 0:
        raise BadRequest("the ladder needs positive intervals")
    tol_val, rel = parse_tolerance(tolerance)
    f = (
        df.select([*by, time, value])
        .with_columns(pl.col(value).cast(pl.Float64))
        .filter(pl.col(value).is_not_null() & pl.col(value).is_finite())
    )
    schema: dict[str, Any] = {
        **{c: df.schema[c] for c in by}, "points": pl.Int64, "current_interval_s": pl.Float64,
        "advised_interval_s": pl.Float64, "expected_error": pl.Float64, "tolerance": pl.Float64,
        "noise_std": pl.Float64, "device_interval_s": pl.Float64,
    }
    if f.height == 0:
        return pl.DataFrame(schema=schema)
    if f.schema[time] != pl.Int64:
        f = f.with_columns(pl.col(time).cast(pl.Int64))
    f, sid, starts, ends = series_order(f, by, time)
    # one value per series and time stamp (the last sent)
    dup = np.zeros(f.height, dtype=bool)
    tt = f[time].to_numpy()
    dup[:-1] = (sid[1:] == sid[:-1]) & (tt[1:] == tt[:-1])
    if dup.any():
        f, sid, starts, ends = series_order(f.filter(pl.Series(~dup)), by, time)
    f = f.with_columns(pl.Series("_sid", sid))
    n_series = starts.size
    counts = ends - starts
    t = f[time].to_numpy().astype(np.int64)
    x = f[value].to_numpy()
    per = f.group_by("_sid").agg(
        *[pl.col(c).first() for c in by],
        pl.len().cast(pl.Int64).alias("points"),
        (pl.col(time).diff().median() / NS).round(3).alias("current_interval_s"),
        (pl.col(value).quantile(0.99) - pl.col(value).quantile(0.01)).alias("_range"),
    ).sort("_sid")
    current = per["current_interval_s"].fill_null(0.0).to_numpy()
    tol = per["_range"].to_numpy() * tol_val if rel else np.full(n_series, tol_val)
    sigma = np.zeros(n_series)
    if noise:
        from sensorium.detect.fusion import estimate_noise

        mat = np.full((n_series, int(counts.max())), np.nan)
        mat[sid, np.arange(t.size) - starts[sid]] = x
        sigma = np.sqrt(estimate_noise(mat)[1])
        z = 2.5758293035489 if stat == "p99" else np.sqrt(2 * np.log(np.maximum(counts, 2)))
        tol = tol + z * np.sqrt(2.0) * sigma
    first_of_series = np.zeros(t.size, dtype=bool)
    first_of_series[starts] = True
    last_of_series = np.zeros(t.size, dtype=bool)
    last_of_series[ends - 1] = True
    advised = current.copy()
    expected = np.zeros(n_series)
    still = np.ones(n_series, dtype=bool)  # every shorter candidate passed so far
    for step in steps:  # ladder steps, each one pass over every series
        cand = step > current * 1.5
        width = round(step * NS)
        bucket = np.floor_divide(t, width)
        new_bucket = first_of_series | np.concatenate([[True], bucket[1:] != bucket[:-1]])
        kept = new_bucket | last_of_series
        err = np.abs(x - _reconstruct_flat(t, x, kept, "sdt"))
        e = _series_stat(err, sid, n_series, stat)
        ok = e <= tol
        take = cand & still & ok
        advised = np.where(take, step, advised)
        expected = np.where(take, e, expected)
        still &= ~cand | ok
    out = per.drop("_range", "_sid").with_columns(
        pl.Series("advised_interval_s", advised),
        pl.Series("expected_error", expected),
        pl.Series("tolerance", tol),
        pl.Series("noise_std", sigma),
    )
    return out.with_columns(pl.col("advised_interval_s").min().over(device).alias("device_interval_s"))


def _series_stat(err: np.ndarray, sid: np.ndarray, n: int, stat: str) -> np.ndarray:
    if stat == "max":
        out = np.zeros(n)
        np.maximum.at(out, sid, err)
        return out
    q = (
        pl.DataFrame({"s": sid, "e": err})
        .group_by("s")
        .agg(pl.col("e").quantile(0.99, "higher"))
        .sort("s")
    )
    res = np.zeros(n)
    res[q["s"].to_numpy()] = q["e"].to_numpy()
    return res


# --------------------------------------------------------------------------- platform


def device_frame(
    platform: Sensorium, device_id: str, *, hours: float, bucket: str | None = None
) -> pl.DataFrame:
    """The device's numeric values over the last ``hours`` (platform clock), long form:
    ``measurement``, ``field``, ``time`` (ns), ``value``. Raises :class:`NotFound` for a device
    never seen (in any measurement with a ``device_id`` tag)."""
    if not (np.isfinite(hours) and 0 < hours <= MAX_HOURS):
        raise BadRequest(f"hours must be within (0, {MAX_HOURS}]; got {hours}")
    if not device_id or "\x00" in device_id:
        raise BadRequest("device_id must be a non-empty string")
    bucket = bucket or platform.settings.default_bucket
    platform.process_pending()
    now = platform.clock()
    start = now - round(hours * 3600 * NS)
    frames: list[pl.DataFrame] = []
    seen = False
    for m in platform.measurements(bucket):
        cols = platform.registry.columns(bucket, m)
        if cols.get("device_id") != "tag":
            continue
        fields = [c for c, role in cols.items() if role in _NUMERIC]
        if not fields:
            continue
        where = f"device_id = {_lit(device_id)}"
        if not seen:
            hit = platform.query(f"SELECT 1 FROM {_q(m)} WHERE {where} LIMIT 1", bucket)
            seen = hit.num_rows > 0
        sql = (
            f"SELECT epoch_ns(time) AS time, {', '.join(_q(c) for c in fields)} FROM {_q(m)} "
            f"WHERE {where} AND time >= make_timestamp_ns({start}) "
            f"AND time < make_timestamp_ns({now + 1}) ORDER BY time"
        )
        tbl = platform.query(sql, bucket)
        if tbl.num_rows == 0:
            continue
        wide = pl.from_arrow(tbl)
        assert isinstance(wide, pl.DataFrame)
        long = wide.with_columns(pl.col(c).cast(pl.Float64) for c in fields).unpivot(
            index="time", on=fields, variable_name="field", value_name="value"
        )
        frames.append(long.with_columns(pl.lit(m).alias("measurement")))
    if not seen:
        raise NotFound(f"no device {device_id!r} in bucket {bucket!r}")
    if not frames:
        raise NotFound(f"device {device_id!r} sent no numeric values in the last {hours:g} h")
    return pl.concat(frames).with_columns(
        pl.lit(device_id).alias("device_id"), pl.col("time").cast(pl.Int64)
    )


def device_advice(
    platform: Sensorium,
    device_id: str,
    *,
    hours: float = 24.0,
    tolerance: str | float = "1%",
    bucket: str | None = None,
    stat: str = "p99",
    noise: bool = True,
) -> dict[str, Any]:
    """Sampling advice for one device: ``{"device_id", "sampling_interval_s", "hours",
    "tolerance", "fields": [...rows...], "advised_at"}`` (times from the platform clock)."""
    parse_tolerance(tolerance)
    df = device_frame(platform, device_id, hours=hours, bucket=bucket)
    table = advise(
        df, by=("device_id", "measurement", "field"), tolerance=tolerance, stat=stat, noise=noise
    )
    rows = table.drop("device_interval_s").to_dicts()
    return {
        "device_id": device_id,
        "sampling_interval_s": float(table["device_interval_s"].min()),  # type: ignore[arg-type]
        "hours": hours,
        "tolerance": str(tolerance),
        "stat": stat,
        "noise": noise,
        "fields": rows,
        "advised_at": rfc3339(platform.clock()),
    }


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_payload(advice: dict[str, Any]) -> dict[str, Any]:
    """The device-configuration message for an advice from :func:`device_advice`."""
    rows = advice["fields"]
    names = [r["field"] for r in rows]
    fields = {
        (r["field"] if names.count(r["field"]) == 1 else f"{r['measurement']}.{r['field']}"): r[
            "advised_interval_s"
        ]
        for r in rows
    }
    return {
        "device_id": advice["device_id"],
        "sampling_interval_s": advice["sampling_interval_s"],
        "fields": fields,
        "tolerance": advice["tolerance"],
        "advised_at": advice["advised_at"],
    }


def broker_of(settings: Settings) -> tuple[str, int]:
    """Host and port of the broker: the MQTT alert sink's when configured, else 127.0.0.1:1883."""
    m = settings.alerts.mqtt
    return (m.host, m.port) if m is not None else ("127.0.0.1", 1883)


def config_topic(device_id: str) -> str:
    if not device_id or _TOPIC_UNSAFE.search(device_id):
        raise BadRequest(
            f"device_id {device_id!r} cannot be used in an MQTT topic (no '+', '#', '/', NUL)"
        )
    return TOPIC.format(device_id=device_id)


async def publish_config(
    host: str, port: int, device_id: str, payload: dict[str, Any], *, timeout_s: float = 5.0
) -> str:
    """Publish ``payload`` (JSON) retained at QoS 1 to the device's config topic; returns the
    topic. Raises :class:`BrokerUnavailable` when the broker cannot be reached."""
    import aiomqtt

    topic = config_topic(device_id)
    try:
        async with asyncio.timeout(timeout_s * 2):
            async with aiomqtt.Client(host, port, timeout=timeout_s) as client:
                await client.publish(topic, orjson.dumps(payload), qos=1, retain=True)
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"cannot publish the device configuration: no MQTT broker reachable at "
            f"{host}:{port} ({exc or type(exc).__name__})",
            topic=topic,
        ) from None
    return topic


def publish_config_sync(host: str, port: int, device_id: str, payload: dict[str, Any]) -> str:
    """:func:`publish_config` from synchronous code (the CLI)."""
    from sensorium.devices.commands import run_sync

    return run_sync(publish_config(host, port, device_id, payload))


__all__ = [
    "LADDER_S",
    "BrokerUnavailable",
    "advise",
    "broker_of",
    "config_payload",
    "config_topic",
    "device_advice",
    "device_frame",
    "parse_tolerance",
    "publish_config",
    "publish_config_sync",
]
