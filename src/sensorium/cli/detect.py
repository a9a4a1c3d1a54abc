"""`sensorium detect`: sampling-rate advice, sensor fusion and historian compression."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import (
    BucketOpt,
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    UrlOpt,
    console,
    err,
    http,
    settings,
)
from sensorium.query.sql import ident as q

detect_app = typer.Typer(
    help="Sampling-rate advice, sensor fusion and historian compression.", no_args_is_help=True
)

NS = 1_000_000_000


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")


def _out_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def _fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _platform(config: Path | None, data_dir: Path | None, *, write: bool = False) -> Any:
    from sensorium.platform import Sensorium

    return Sensorium(settings(config, data_dir=data_dir), read_only=not write, background=False)


# -- sampling ------------------------------------------------------------------------------------
@detect_app.command("sampling")
def sampling_cmd(
    device: Annotated[str, typer.Argument(help="The device_id.")],
    hours: Annotated[float, typer.Option(help="Window analysed, ending now (hours).")] = 24.0,
    tolerance: Annotated[str, typer.Option(help="Absolute (field units) or N% of each field's p1-p99 range.")] = "1%",
    stat: Annotated[str, typer.Option(help="Error statistic: p99 or max.")] = "p99",
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Widen each tolerance by what the series' own white noise causes.")] = True,
    publish: Annotated[bool, typer.Option("--publish", help="Also publish it as device configuration (retained MQTT message).")] = False,
    bucket: BucketOpt = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Advise a sampling interval per field of DEVICE (the longest interval whose linear
    interpolation stays within tolerance); the device's advice is the shortest of them."""
    _check_format(fmt)
    params: dict[str, Any] = {"hours": hours, "tolerance": tolerance, "stat": stat,
                              "noise": str(noise).lower()}
    if bucket:
        params["bucket"] = bucket
    published: dict[str, Any] | None = None
    if url:
        if publish:
            published = http(url, "POST", f"/api/v1/devices/{device}/sampling/publish", params=params).json()
        advice = http(url, "GET", f"/api/v1/devices/{device}/sampling", params=params).json()
    else:
        from sensorium.detect import sampling

        with _platform(config, data_dir) as platform:
            advice = sampling.device_advice(
                platform, device, hours=hours, tolerance=tolerance, bucket=bucket, stat=stat,
                noise=noise,
            )
            if publish:
                payload = sampling.config_payload(advice)
                host, port = sampling.broker_of(platform.settings)
                topic = sampling.publish_config_sync(host, port, device, payload)
                published = {"published": True, "topic": topic, "broker": f"{host}:{port}", "config": payload}
    if fmt == "json":
        _out_json({**advice, **({"publish": published} if published else {})})
        return
    t = Table(title=f"sampling advice for {device} (last {hours:g} h, tolerance {tolerance}, {stat})")
    for c in ("measurement", "field", "points", "current (s)", "advised (s)", "expected error", "tolerance", "noise std"):
        t.add_column(c)
    for r in advice["fields"]:
        t.add_row(
            str(r["measurement"]), str(r["field"]), f"{r['points']:,}", _fmt_num(r["current_interval_s"]),
            _fmt_num(r["advised_interval_s"]), _fmt_num(r["expected_error"]), _fmt_num(r["tolerance"]),
            _fmt_num(r["noise_std"]),
        )
    console.print(t)
    console.print(f"device interval: [bold]{advice['sampling_interval_s']:g} s[/]")
    if published:
        console.print(f"published to {published['topic']} on {published['broker']} (retained, QoS 1)")


# -- fuse ----------------------------------------------------------------------------------------
@detect_app.command("fuse")
def fuse_cmd(
    measurement: Annotated[str, typer.Argument(help="Measurement, e.g. climate.")],
    field: Annotated[str, typer.Argument(help="Field, e.g. temperature.")],
    by: Annotated[str, typer.Option(help="Comma-separated tags grouping co-located sensors.")] = "location,room",
    sensor: Annotated[str, typer.Option(help="Tag naming the sensor.")] = "device_id",
    start: Annotated[str, typer.Option(help="RFC 3339, ns or now-<duration>.")] = "now-24h",
    end: Annotated[str | None, typer.Option(help="Default: now.")] = None,
    every: Annotated[str, typer.Option("--every", help="Time bucket width, e.g. 1m.")] = "1m",
    halflife: Annotated[str, typer.Option(help="Half-life of the variance estimates.")] = "1d",
    store: Annotated[bool, typer.Option("--store", help="Write <measurement>_fused through the normal write path.")] = False,
    bucket: BucketOpt = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Fuse co-located sensors (inverse-variance weighted) per group and time bucket."""
    import polars as pl

    from sensorium.detect.fusion import fuse, fuse_and_store, to_line_protocol

    _check_format(fmt)
    tags = [b.strip() for b in by.split(",") if b.strip()]
    if not tags:
        raise typer.BadParameter("--by needs at least one tag")
    opts: dict[str, Any] = {"halflife": halflife}
    if url:
        params = {"measurement": measurement, "field": field, "start": start, "every": every,
                  "agg": "mean", "by": ",".join([*tags, sensor])}
        if end:
            params["end"] = end
        if bucket:
            params["bucket"] = bucket
        data = http(url, "GET", "/api/v1/series", params=params).json()
        raw = pl.DataFrame(data["rows"], schema=data["columns"], orient="row")
        raw = raw.with_columns(
            pl.col("time").str.to_datetime(time_zone="UTC", time_unit="ns").dt.epoch("ns")
        )
        fused = fuse(raw, bucket=every, by=tags, sensor=sensor, value="mean", **opts)
        summary: dict[str, Any] = {"measurement": f"{measurement}_fused", "source": data.get("source"),
                                   "rows": fused.height, "stored": 0}
        if store and fused.height:
            body = to_line_protocol(fused, f"{measurement}_fused", tags, field)
            http(url, "POST", "/api/v2/write", params={"bucket": bucket or "", "precision": "ns"},
                 content=body.encode())
            summary["stored"] = fused.height
    else:
        with _platform(config, data_dir, write=store) as platform:
            fused, summary = fuse_and_store(
                platform, measurement, field, by=tags, start=start, end=end, bucket=every,
                sensor=sensor, data_bucket=bucket, store=store, **opts,
            )
    groups = (
        fused.group_by(tags, maintain_order=True)
        .agg(
            pl.len().alias("buckets"),
            pl.col("sensors").mean().alias("mean_sensors"),
            pl.col("std").median().alias("median_std"),
            pl.col("value").last().alias("last_value"),
        )
        .sort(tags)
    )
    if fmt == "json":
        _out_json({"summary": summary, "groups": groups.to_dicts()})
        return
    t = Table(title=f"{measurement}.{field} fused by {', '.join(tags)} ({every} buckets)")
    for c in (*tags, "buckets", "sensors (mean)", "std (median)", "last value"):
        t.add_column(c)
    for r in groups.to_dicts():
        t.add_row(*[str(r[c]) for c in tags], f"{r['buckets']:,}", _fmt_num(r["mean_sensors"], 3),
                  _fmt_num(r["median_std"]), _fmt_num(r["last_value"], 6))
    console.print(t)
    if store:
        console.print(f"stored {summary['stored']:,} rows in {summary['measurement']}")


# -- compress ------------------------------------------------------------------------------------
@detect_app.command("compress")
def compress_cmd(
    measurement: Annotated[str, typer.Argument(help="Measurement, e.g. climate.")],
    field: Annotated[str, typer.Argument(help="Field, e.g. temperature.")],
    error: Annotated[str, typer.Option("--error", "-e", help="Largest reconstruction error: absolute, or N% of each series' p1-p99 range.")],
    method: Annotated[str, typer.Option(help="sdt (swinging door, linear) or deadband (step).")] = "sdt",
    start: Annotated[str, typer.Option(help="RFC 3339, ns or now-<duration>.")] = "now-24h",
    end: Annotated[str | None, typer.Option(help="Default: now.")] = None,
    max_gap: Annotated[str | None, typer.Option("--max-gap", help="Heartbeat: keep a point at least this often, e.g. 15m.")] = None,
    bucket: BucketOpt = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """What deadband / swinging-door compression would keep of a field, per series (ratio and
    the largest reconstruction error, which never exceeds --error)."""
    import polars as pl

    from sensorium.cli.common import parse_duration
    from sensorium.detect.compression import METHODS, compress_frame
    from sensorium.detect.sampling import parse_tolerance
    from sensorium.errors import BadRequest, NotFound
    from sensorium.query.downsample import parse_time

    _check_format(fmt)
    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(METHODS)}")
    err_val, rel = parse_tolerance(error)
    gap_ns = round(parse_duration(max_gap) * NS) if max_gap else None

    def sql_for(tags: list[str], now: int) -> str:
        t0 = parse_time(start, now)
        t1 = parse_time(end, now) if end else now + 1
        if t1 <= t0:
            raise BadRequest("end must be after start")
        sel = ", ".join([*(q(t) for t in tags), q(field)])
        return (f"SELECT epoch_ns(time) AS time, {sel} FROM {q(measurement)} WHERE {q(field)} IS NOT NULL "
                f"AND time >= make_timestamp_ns({t0}) AND time < make_timestamp_ns({t1})")

    def tags_of(columns: dict[str, str]) -> list[str]:
        if field not in columns or columns[field] not in ("float", "integer", "unsigned"):
            raise BadRequest(f"{measurement!r} has no numeric field {field!r}")
        return [c for c, role in columns.items() if role == "tag"]

    if url:
        import time as _time

        import pyarrow as pa

        ms = http(url, "GET", "/api/v1/measurements", params={"bucket": bucket or ""}).json()["measurements"]
        cols = next((m["columns"] for m in ms if m["name"] == measurement), None)
        if cols is None:
            raise NotFound(f"no measurement {measurement!r}")
        tags = tags_of(cols)
        r = http(url, "GET", "/api/v1/query", params={"sql": sql_for(tags, _time.time_ns()),
                                                       "bucket": bucket or "", "format": "arrow"})
        table = pa.ipc.open_stream(r.content).read_all()
    else:
        with _platform(config, data_dir) as platform:
            b = bucket or platform.settings.default_bucket
            if measurement not in platform.measurements(b):
                raise NotFound(f"no measurement {measurement!r} in bucket {b!r}")
            tags = tags_of(platform.registry.columns(b, measurement))
            table = platform.query(sql_for(tags, platform.clock()), b)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns(*[pl.col(t).cast(pl.Utf8) for t in tags], pl.col(field).cast(pl.Float64).alias("value"))
    if rel:
        spread = pl.col("value").quantile(0.99) - pl.col("value").quantile(0.01)
        df = df.with_columns(((spread.over(tags) if tags else spread) * err_val).alias("_err"))
    frame, res = compress_frame(
        df, None if rel else err_val, method=method,  # type: ignore[arg-type]
        by=tags, error_col="_err" if rel else None, max_gap=gap_ns,
    )
    per = (
        frame.group_by(tags, maintain_order=True)
        .agg(pl.len().alias("points"), pl.col("kept").sum().alias("kept"),
             *([pl.col("_err").first().alias("error")] if rel else [pl.lit(err_val).alias("error")]))
        .with_columns((pl.col("points") / pl.col("kept")).alias("ratio"))
        .sort(tags)
    ) if frame.height else pl.DataFrame()
    totals = {"measurement": measurement, "field": field, "method": method, "error": error,
              "points": res.points, "kept": res.kept, "ratio": round(res.ratio, 3),
              "max_error": res.max_error, "series": per.height}
    if fmt == "json":
        _out_json({"totals": totals, "series": per.to_dicts() if per.height else []})
        return
    t = Table(title=f"{method} compression of {measurement}.{field} (error {error})")
    for c in (*tags, "points", "kept", "ratio", "error bound"):
        t.add_column(c)
    for r in per.to_dicts() if per.height else []:
        t.add_row(*[str(r[c]) for c in tags], f"{r['points']:,}", f"{r['kept']:,}",
                  f"{r['ratio']:.2f}", _fmt_num(r["error"]))
    console.print(t)
    console.print(
        f"total {res.points:,} points -> {res.kept:,} kept: ratio [bold]{res.ratio:.2f}[/], "
        f"largest reconstruction error {res.max_error:.4g}"
    )
    if res.points == 0:
        err.print("no data in the window")
