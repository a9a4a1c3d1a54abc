"""`sensorium forecast`: forecast a stored series (seasonal naive, ETS, Prophet) from a data
directory or a running server, optionally storing it as ``<measurement>_forecast``."""

from __future__ import annotations

import json
import sys
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
from sensorium.errors import BadRequest


def _tags(tag: list[str] | None, device_id: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in tag or []:
        k, sep, v = t.partition("=")
        if not sep or not k.strip():
            raise BadRequest(f"--tag takes key=value; got {t!r}")
        out[k.strip()] = v
    if device_id is not None:
        out["device_id"] = device_id
    return out


def forecast(
    measurement: Annotated[str, typer.Argument(help="Measurement, e.g. climate.")],
    field: Annotated[str, typer.Argument(help="Numeric field, e.g. temperature.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Series filter key=value (repeatable).")] = None,
    device_id: Annotated[str | None, typer.Option("--device-id", help="Shorthand for --tag device_id=ID.")] = None,
    horizon: Annotated[str, typer.Option("--horizon", "-h", help="Steps ahead, or a duration (1d, 6h).")] = "1d",
    model: Annotated[str, typer.Option("--model", "-m", help="ets, naive or prophet.")] = "ets",
    start: Annotated[str | None, typer.Option(help="History start (RFC 3339, ns, now-14d).")] = None,
    end: Annotated[str | None, typer.Option(help="History end (default: after the latest point).")] = None,
    history: Annotated[str | None, typer.Option(help="History before the latest point (default 28d).")] = None,
    every: Annotated[str | None, typer.Option(help="Grid width, e.g. 15m (default: inferred).")] = None,
    level: Annotated[float, typer.Option(help="Prediction-interval coverage.")] = 0.95,
    season_length: Annotated[int | None, typer.Option("--season-length", help="Samples per season (default: detected).")] = None,
    store: Annotated[bool, typer.Option("--store", help="Store it as <measurement>_forecast.")] = False,
    fmt: FormatOpt = "table",
    bucket: BucketOpt = None,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Forecast one series with a prediction interval (ETS with automatic seasonality by default)."""
    if fmt not in ("table", "json"):
        raise BadRequest(f"--format must be table or json; got {fmt!r}")
    tags = _tags(tag, device_id)
    steps: int | str = int(horizon) if horizon.strip().isdigit() else horizon
    if url:
        body: dict[str, Any] = {
            "measurement": measurement, "field": field, "tags": tags, "bucket": bucket, "start": start,
            "end": end, "history": history, "every": every, "horizon": steps, "model": model,
            "level": level, "season_length": season_length, "store": store,
        }
        data = http(url, "POST", "/api/v1/forecast", json={k: v for k, v in body.items() if v is not None}).json()
        meta = {k: v for k, v in data.items() if k not in ("columns", "types", "rows")}
        rows = [dict(zip(data["columns"], r, strict=True)) for r in data["rows"]]
    else:
        from sensorium.api.app import table_to_json
        from sensorium.detect.forecast import forecast_meta, forecast_series
        from sensorium.platform import Sensorium

        s = settings(config, data_dir=data_dir)
        with Sensorium(s, read_only=not store, background=False) as platform:
            table = forecast_series(
                platform, measurement, field, tags=tags, bucket=bucket, start=start, end=end,
                history=history, every=every, horizon=steps, model=model, level=level,
                season_length=season_length, store=store,
            )
        meta = forecast_meta(table)
        data = table_to_json(table)
        rows = [dict(zip(data["columns"], r, strict=True)) for r in data["rows"]]
    if fmt == "json":
        sys.stdout.write(json.dumps({**meta, "forecast": rows}, default=str) + "\n")
        return
    sel = ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "all series"
    t = Table(title=f"{measurement}.{field} ({sel}) · {meta.get('model')} · season {meta.get('season_length')} "
                    f"× {meta.get('every')} · {round(100 * float(meta.get('level', level)))} % interval")
    for c in ("time (UTC)", "forecast", "lower", "upper"):
        t.add_column(c, justify="right" if c != "time (UTC)" else "left")
    for r in rows:
        t.add_row(str(r["time"]), f"{r['forecast']:.4g}", f"{r['lower']:.4g}", f"{r['upper']:.4g}")
    console.print(t)
    hist = meta.get("history") or {}
    err.print(f"{len(rows)} steps · history {hist.get('start')} .. {hist.get('end')} "
              f"({meta.get('history_points')} points)" + (f" · stored {meta.get('stored')} rows in {meta.get('stored_as')}" if store else ""))
