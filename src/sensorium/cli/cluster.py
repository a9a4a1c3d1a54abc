"""Scale-out processes on the NATS log: ``sensorium ingest``, ``sensorium worker``, ``sensorium api``
(docs/deployment.md)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from sensorium.cli.common import ConfigOpt, DataDirOpt, apply_process_settings, http_server
from sensorium.cli.common import settings as _settings

console = Console()
err = Console(stderr=True)
NodeOpt = Annotated[
    str | None,
    typer.Option("--node-id", help="This process's name in the deployment (default: host name, plus the pid for workers)."),
]
HostOpt = Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help="Listen port (default 7400).")]


def _serve(platform: Any, host: str, port: int, what: str) -> None:
    url = f"http://{host}:{port}"
    console.print(f"[bold green]Sensorium {what}[/] {platform.node_id} listening on {url} · data in {platform.dir.resolve()}")
    server = http_server(platform, host, port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run()
    finally:
        platform.close()
        console.print("[green]stopped cleanly[/]")


def ingest(
    data_dir: DataDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
    node_id: NodeOpt = None,
) -> None:
    """An ingest node: HTTP writes (InfluxDB line protocol, JSON readings) and MQTT sources (mqtt_sources),
    validated and appended to the NATS log, acknowledged once JetStream has them; workers store
    and process them. Needs log_backend = "nats"."""
    from sensorium.ingest.mqtt import start_sources
    from sensorium.platform import Sensorium

    s = _settings(config, data_dir=data_dir, host=host, port=port)
    apply_process_settings(s)
    platform = Sensorium(s, role="ingest", node_id=node_id)
    sources = start_sources(platform)
    try:
        _serve(platform, s.host, s.port, "ingest node")
    finally:
        for src in sources:
            src.stop()


def api(
    data_dir: DataDirOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    config: ConfigOpt = None,
) -> None:
    """An api node: SQL, latest values, alerts (and acknowledging them) over what the workers
    stored, read-only otherwise. Any number of them may run beside the workers."""
    from sensorium.platform import Sensorium

    s = _settings(config, data_dir=data_dir, host=host, port=port)
    apply_process_settings(s)
    _serve(Sensorium(s, role="api"), s.host, s.port, "api node")


def worker(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    node_id: NodeOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (127.0.0.1 unless --metrics-host).")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> None:
    """A stream worker: takes its share of the log's partitions (by device), stores them,
    runs rollups, detectors and alert rules on them, and hands partitions over when workers
    join or leave. SIGTERM/Ctrl-C hands its partitions over cleanly."""
    import logging

    from sensorium.scale.worker import Worker

    # partition hand-overs, lease losses, type clashes: one line each on stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("sensorium.worker").setLevel(logging.INFO)
    s = _settings(config, data_dir=data_dir)
    apply_process_settings(s)
    w = Worker(s, node_id=node_id)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, metrics_host, registry=w.metrics.registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print(
        f"[bold green]Sensorium worker[/] {w.node} · log {s.nats_url} stream {s.nats_stream} "
        f"({s.nats_partitions} partitions) · data in {s.data_dir.resolve()}"
    )

    def status_loop() -> None:
        last = 0
        while not stop.wait(5.0):
            st = w.status()
            console.print(
                f"[dim]{time.strftime('%H:%M:%S')}[/] partitions {st['partitions']} · records "
                f"{st['records']} (+{st['records'] - last}) · rows stored {st['rows_stored']}"
            )
            last = st["records"]

    threading.Thread(target=status_loop, daemon=True, name="status").start()
    try:
        w.run(stop)
    finally:
        console.print("handing partitions over…")
        w.close()
        console.print("[green]stopped cleanly[/]")
