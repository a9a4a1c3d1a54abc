"""`sensorium` — the command line. Thin: parse arguments, call the library, translate errors.

Every :class:`SensoriumError` becomes a red one-line message and exit code 2 (1 for a command
that ran but found problems); nothing prints a traceback to the user.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from sensorium.cli import cluster as cluster_cli
from sensorium.cli.alerts import alerts_app, rules_app
from sensorium.cli.ask import ask as ask_command
from sensorium.cli.automations import automations_app, notifications_app
from sensorium.cli.command import command as device_command
from sensorium.cli.common import (
    BucketOpt,
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    UrlOpt,
    apply_process_settings,
    console,
    err,
    http_server,
    parse_duration,
)
from sensorium.cli.common import http as _http
from sensorium.cli.common import settings as _settings
from sensorium.cli.detect import detect_app
from sensorium.cli.forecast import forecast as forecast_command
from sensorium.cli.registry import graph_app, registry_app
from sensorium.cli.search import search as search_command
from sensorium.cli.users import audit as audit_command
from sensorium.cli.users import pii_app, tokens_app, users_app
from sensorium.errors import SensoriumError

app = typer.Typer(
    name="sensorium",
    help="Sensorium — IoT telemetry: ingest, clean, store (Delta Lake) and query (SQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show the configuration.", no_args_is_help=True)
dl_app = typer.Typer(help="List and replay dead letters (rejected input, with reasons).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dl_app, name="dead-letters")
app.add_typer(alerts_app, name="alerts")
app.add_typer(rules_app, name="rules")
app.command("forecast")(forecast_command)
app.command("ask")(ask_command)
app.command("search")(search_command)
app.command("command")(device_command)
app.add_typer(detect_app, name="detect")
app.add_typer(registry_app, name="registry")
app.add_typer(graph_app, name="graph")
app.add_typer(automations_app, name="automations")
app.add_typer(notifications_app, name="notifications")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(pii_app, name="pii")
app.command("audit")(audit_command)
app.command("ingest")(cluster_cli.ingest)
app.command("worker")(cluster_cli.worker)
app.command("api")(cluster_cli.api)



@app.command()
def up(
    simulate: Annotated[bool, typer.Option("--simulate", help="Also run the device simulator against this server.")] = False,
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 7400).")] = None,
    config: ConfigOpt = None,
    devices: Annotated[int | None, typer.Option(help="Simulated devices (with --simulate).")] = None,
    rate: Annotated[float | None, typer.Option(help="Readings/s per simulated device.")] = None,
    duration: Annotated[str | None, typer.Option(help="Stop after this long (e.g. 30s); default: run until Ctrl-C.")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Alert rules file (default: stream.rules_file, else the built-in rules).")] = None,
) -> None:
    """Start the server (HTTP ingest, SQL, stream: rollups + alert rules) on embedded defaults;
    Ctrl-C stops it cleanly."""
    from sensorium.platform import Sensorium

    s = _settings(config, data_dir=data_dir, host=host, port=port)
    if rules is not None:
        from sensorium.rules.loader import check_file

        problems = check_file(rules)
        if problems:
            for p in problems:
                err.print(f"{rules}:{p.line}: {p.message}")
            raise typer.Exit(2)
        s = s.model_copy(update={"stream": s.stream.model_copy(update={"rules_file": rules})})
    from sensorium.auth.service import auth_enabled

    secure = auth_enabled(s)
    configured_token = s.auth_token is not None
    if simulate and secure and s.auth_token is None:  # the simulator's own admin token, never shown
        import secrets

        from pydantic import SecretStr

        s = s.model_copy(update={"auth_token": SecretStr(secrets.token_urlsafe(32))})
    apply_process_settings(s)
    platform = Sensorium(s)
    url = f"http://{s.host}:{s.port}"
    console.print(f"[bold green]Sensorium[/] listening on [link={url}]{url}[/] · data in {s.data_dir.resolve()}")
    if secure:
        from sensorium.auth.service import Auth

        admins = Auth(s, platform.registry_store).admins() if platform.registry_store is not None else 0
        console.print("authentication is on: every request needs a token (docs/security.md)"
                      + ("" if admins or configured_token else
                         " — there is no admin with a password yet: `sensorium users add ID --role admin`"))
    if platform.replayed:
        console.print(f"replayed {platform.replayed} log records after an unclean stop")
    server = http_server(platform, s.host, s.port)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def status_loop() -> None:
        last = 0.0
        while not stop.wait(2.0):
            acc = platform.metrics.points_accepted.labels(s.default_bucket)._value.get()
            rows = platform.hot.rows()
            rate_now = (acc - last) / 2.0
            last = acc
            firing = platform.alerts.counts().get("firing", 0) if platform.alerts is not None else 0
            console.print(
                f"[dim]{time.strftime('%H:%M:%S')}[/] points accepted: [bold]{int(acc)}[/] "
                f"({rate_now:,.0f}/s) · hot rows: {rows} · dead letters: {platform.deadletters.count()}"
                f" · alerts firing: [bold]{firing}[/]"
            )

    if simulate:
        from sensorium.ingest.simulator import SimConfig, Simulator, post

        sim = Simulator(
            SimConfig(
                devices=devices or s.simulator.devices,
                rate=rate or s.simulator.rate,
                duration_s=parse_duration(duration) if duration else 10 * 365 * 86400.0,
                seed=s.simulator.seed,
                fault_rate=s.simulator.fault_rate,
                start_ns=time.time_ns(),
            )
        )

        def run_sim() -> None:
            while not server.started and not stop.is_set():
                time.sleep(0.05)
            try:
                post(sim, url, realtime=True, stop_event=stop, token=s.auth_token.get_secret_value() if s.auth_token else None)
            except Exception as exc:  # reported, never silent (unless we are shutting down)
                if not (stop.is_set() or server.should_exit):
                    err.print(f"[red]simulator stopped:[/] {exc}")

        threads.append(threading.Thread(target=run_sim, daemon=True, name="simulator"))
        console.print(f"simulating {sim.config.devices} devices at {sim.config.rate}/s each")
    threads.append(threading.Thread(target=status_loop, daemon=True, name="status"))
    if duration:
        def stopper() -> None:
            if not stop.wait(parse_duration(duration)):
                stop.set()
                server.should_exit = True
        threads.append(threading.Thread(target=stopper, daemon=True))
    from sensorium.ingest.mqtt import start_sources

    mqtt_sources = start_sources(platform)  # [[mqtt_sources]]: each in its own thread and loop
    for src in mqtt_sources:
        console.print(f"MQTT source {src.name}: {src.settings.host}:{src.settings.port} "
                      f"{', '.join(t.filter for _, t in src.subs)}")
    for t in threads:
        t.start()
    import signal

    # uvicorn re-raises SIGTERM after its own shutdown; make that a clean exit so the
    # hot buffer is flushed below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    finally:
        stop.set()
        for src in mqtt_sources:  # write and acknowledge what they hold, before the platform closes
            src.stop()
        console.print("shutting down: flushing the hot buffer to the lake…")
        platform.close()
        console.print("[green]stopped cleanly[/]")


# -- simulate ----------------------------------------------------------------------------------
@app.command()
def simulate(
    devices: Annotated[int, typer.Option(help="Number of devices.")] = 20,
    rate: Annotated[float, typer.Option(help="Readings per second per device.")] = 1.0,
    duration: Annotated[str, typer.Option(help="Simulated time span, e.g. 10m, 1h, 1d.")] = "10m",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file (.lp, .jsonl, .csv, .parquet); labels go to <out>.labels.csv.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="POST to a running server instead.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed → same data).")] = 42,
    faults: Annotated[bool, typer.Option("--faults/--no-faults", help="Inject faults (spikes, stuck, drift, dropouts, °F, duplicates, late...).")] = True,
    realtime: Annotated[bool, typer.Option(help="With --url: send at wall-clock pace with current timestamps.")] = False,
    start: Annotated[str | None, typer.Option(help="Start time (ISO 8601, UTC); default 2026-01-01.")] = None,
) -> None:
    """Generate realistic device data with injected faults and ground-truth labels."""
    from sensorium.ingest.simulator import SimConfig, Simulator, post

    if (out is None) == (url is None):
        raise typer.BadParameter("give exactly one of --out FILE or --url URL")
    start_ns = None
    if start:
        from datetime import UTC, datetime

        dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
        start_ns = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1e9)
    if realtime:
        start_ns = time.time_ns()
    cfg = SimConfig(devices=devices, rate=rate, duration_s=parse_duration(duration), seed=seed, faults=faults, start_ns=start_ns)
    sim = Simulator(cfg)
    with Progress(TextColumn("[bold]simulate"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} s simulated"), TimeRemainingColumn(), console=err) as prog:
        task = prog.add_task("sim", total=cfg.duration_s)

        def progress(done: float, total: float) -> None:
            prog.update(task, completed=done, total=total)

        if out is not None:
            summary = sim.write(out, progress=progress)
        else:
            assert url is not None
            summary = post(sim, url, realtime=realtime, progress=progress)
    console.print_json(json.dumps(_summary_dict(summary)))


def _summary_dict(summary: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    d = asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else dict(summary)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# -- load --------------------------------------------------------------------------------------
@app.command()
def load(
    file: Annotated[Path, typer.Argument(help="File to load: .lp/.txt, .jsonl/.json, .csv, .parquet (optionally .gz).", exists=True, dir_okay=False)],
    bucket: BucketOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    precision: Annotated[str, typer.Option(help="Timestamp precision of line protocol: ns, us, ms, s.")] = "ns",
    tags: Annotated[str | None, typer.Option(help="CSV/Parquet: comma-separated columns to treat as tags.")] = None,
) -> None:
    """Bulk-load a file into the data directory (in process), with a progress bar."""
    from sensorium.platform import Sensorium

    s = _settings(config, data_dir=data_dir)
    size = file.stat().st_size
    t0 = time.perf_counter()
    with Sensorium(s, background=False) as platform, Progress(
        TextColumn("[bold]load"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=err
    ) as prog:
        task = prog.add_task("load", total=size)
        res = platform.load_file(
            file,
            bucket=bucket,
            precision=precision,
            tags=tags.split(",") if tags else None,
            progress=lambda n: prog.update(task, completed=n),
        )
        prog.update(task, completed=size)
    dt = time.perf_counter() - t0
    console.print(
        f"loaded [bold]{res.accepted_rows:,}[/] points ({res.accepted_values:,} values) in {dt:.1f}s "
        f"= {res.accepted_values / dt:,.0f} values/s · rejected {res.rejected:,} · duplicates {res.duplicates:,}"
    )
    if res.rejects:
        for r in res.rejects[:5]:
            err.print(f"[yellow]line {r.line}[/]: {r.reason}")
        err.print("see `sensorium dead-letters list` for all rejected lines")
        raise typer.Exit(1)  # the good lines are stored; the exit code says not all were


# -- query -------------------------------------------------------------------------------------
@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="A SELECT statement over this bucket's measurements.")],
    bucket: BucketOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run SQL (DuckDB) over hot + lake data and print the result."""
    import pyarrow as pa

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    if url:
        r = _http(url, "GET", "/api/v1/query", params={"sql": sql, "bucket": bucket or "", "format": "arrow"})
        table = pa.ipc.open_stream(r.content).read_all()
    else:
        from sensorium.platform import Sensorium

        s = _settings(config, data_dir=data_dir)
        with Sensorium(s, read_only=True, background=False) as platform:
            table = platform.query(sql, bucket)
    _print_table(table, fmt)


def _print_table(table: Any, fmt: str) -> None:
    from sensorium.api.app import table_to_json

    data = table_to_json(table)
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(data["columns"], r, strict=True)) for r in data["rows"]], default=str) + "\n")
    elif fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        sys.stdout.write(buf.getvalue().decode())
    else:
        t = Table(show_lines=False)
        for c in data["columns"]:
            t.add_column(c)
        for row in data["rows"]:
            t.add_row(*["" if v is None else str(v) for v in row])
        console.print(t)
        err.print(f"{len(data['rows'])} rows")


# -- config ------------------------------------------------------------------------------------
@config_app.command("show")
def config_show(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print the effective configuration (defaults < file < SENSORIUM_* env), secrets masked."""
    s = _settings(config, data_dir=data_dir)
    console.print_json(json.dumps(s.masked()))


# -- dead letters ------------------------------------------------------------------------------
@dl_app.command("list")
def dl_list(
    bucket: BucketOpt = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule (e.g. parse, range, unit).")] = None,
    device_id: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List rejected input with its reason, source and time."""
    if url:
        data = _http(url, "GET", "/api/v1/dead-letters", params={k: v for k, v in {"bucket": bucket, "rule": rule, "device_id": device_id, "limit": limit}.items() if v is not None}).json()
        items, total = data["items"], data["total"]
    else:
        from sensorium.quality.deadletters import DeadLetterStore

        s = _settings(config, data_dir=data_dir)
        store = DeadLetterStore(Path(s.data_dir) / "deadletters.sqlite")
        try:
            items = store.list(bucket=bucket, rule=rule, device_id=device_id, limit=limit)
            total = store.count(bucket=bucket, rule=rule, device_id=device_id)
        finally:
            store.close()
    if fmt == "json":
        sys.stdout.write(json.dumps({"total": total, "items": items}, default=str) + "\n")
        return
    t = Table(title=f"dead letters ({total} in all)")
    for c in ("id", "bucket", "line", "rule", "reason", "raw"):
        t.add_column(c, overflow="fold")
    for it in items:
        t.add_row(str(it["id"]), str(it["bucket"]), str(it["line"]), str(it["rule"]), str(it["reason"]), str(it["raw"])[:80])
    console.print(t)


@dl_app.command("replay")
def dl_replay(
    bucket: BucketOpt = None,
    rule: Annotated[str | None, typer.Option(help="Only dead letters of this rule.")] = None,
    device_id: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Re-run dead letters through the current rules (e.g. after a rule change); store those that pass."""
    if url:
        out = _http(url, "POST", "/api/v1/dead-letters/replay", params={k: v for k, v in {"bucket": bucket, "rule": rule, "device_id": device_id}.items() if v is not None}).json()
    else:
        from sensorium.platform import Sensorium

        s = _settings(config, data_dir=data_dir)
        with Sensorium(s, background=False) as platform:
            out = platform.replay_dead_letters(bucket=bucket, rule=rule, device_id=device_id)
    console.print(f"replayed {out['replayed']} dead letters: {out['stored']} stored, {out['still_rejected']} still rejected")


# -- quality -----------------------------------------------------------------------------------
@app.command()
def quality(
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    top: Annotated[int, typer.Option(help="How many top issues / devices to show.")] = 10,
) -> None:
    """Data-quality report: totals, valid rate, top issues, per-device rates, and the stream's
    findings (stuck values, spikes, dropouts, drift)."""
    from sensorium.quality.report import quality_report, render_report

    if url:
        rep = _http(url, "GET", "/api/v1/quality", params={"top": top}).json()
    else:
        from sensorium.quality.deadletters import DeadLetterStore
        from sensorium.store.lake import Lake
        from sensorium.stream.outputs import stream_store

        s = _settings(config, data_dir=data_dir)
        # the dead-letter store and the stream's stored findings: no log replay needed
        stream_lake = Path(s.data_dir) / "stream" / "lake"
        findings = None
        outputs: Any = stream_store(s) or (Lake(stream_lake, s.store) if stream_lake.is_dir() else None)
        if outputs is not None:
            if (s.default_bucket, "quality_findings") in outputs.tables():
                findings = outputs.read(s.default_bucket, "quality_findings")
            if not isinstance(outputs, Lake):
                outputs.close()
        store = DeadLetterStore(Path(s.data_dir) / "deadletters.sqlite")
        try:
            rep = quality_report(store, top=top, findings=findings)
        finally:
            store.close()
    if fmt == "json":
        sys.stdout.write(json.dumps(rep, default=str) + "\n")
        return
    out = render_report(rep)
    for r in out if isinstance(out, list) else [out]:
        console.print(r)


# -- storage -----------------------------------------------------------------------------------
@app.command()
def storage(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    compact: Annotated[bool, typer.Option("--compact", help="Compact and vacuum first (needs the data dir to be free).")] = False,
) -> None:
    """Tables, files, values and bytes on disk per stored value."""
    from sensorium.platform import Sensorium

    s = _settings(config, data_dir=data_dir)
    with Sensorium(s, read_only=not compact, background=False) as platform:
        if compact:
            platform.maintain(vacuum_hours=0, min_files=2)
        st = platform.storage_stats()
    t = Table(title="storage")
    for c in ("bucket", "measurement", "files", "rows", "values", "bytes", "bytes/value"):
        t.add_column(c)
    for r in st["tables"]:
        t.add_row(r["bucket"], r["measurement"], str(r["files"]), f"{r['rows']:,}", f"{r['values']:,}", f"{r['bytes']:,}", str(r["bytes_per_value"]))
    console.print(t)
    console.print(f"total {st['bytes']:,} bytes for {st['values']:,} values = {st['bytes_per_value']} B/value")


def main() -> None:
    try:
        app()
    except SensoriumError as exc:
        err.print(f"[bold red]error:[/] {exc.message}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
