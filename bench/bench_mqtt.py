"""MQTT (QoS 1 through Mosquitto) to stored: points/s through the MQTT source.

--publishers paho-mqtt clients publish at QoS 1 to the broker (127.0.0.1:1883 unless --port);
one Sensorium MQTT source (in process, fsync=always WAL) subscribes, writes each batch with one
WAL append and acknowledges after it. Two payload shapes:

* ``lp``: line-protocol messages of --lines points each (a gateway forwarding a batch);
* ``json``: one JSON reading per message (a sensor publishing each reading).

points/s = points / (first publish → last point accepted, i.e. queryable); the stored count is
checked by SQL at the end (``lost`` reports any shortfall: e.g. a broker dropping messages for a
slow subscriber past its ``max_queued_messages``).

    python bench/bench_mqtt.py                  # 200k points as lp (100 / message) + 40k JSON readings
    python bench/bench_mqtt.py --json           # one JSON object on stdout
    python bench/bench_mqtt.py --quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sensorium.config import MqttSourceSettings, MqttTopicSettings, load_settings  # noqa: E402
from sensorium.ingest.mqtt import MqttSource  # noqa: E402
from sensorium.platform import Sensorium  # noqa: E402

T0 = 1_767_225_600_000_000_000


def payloads(shape: str, pub: int, points: int, lines: int) -> list[bytes]:
    """Messages of publisher ``pub``: ``points`` points, unique times per device."""
    out: list[bytes] = []
    if shape == "lp":
        for start in range(0, points, lines):
            n = min(lines, points - start)
            out.append("\n".join(
                f"climate,room=r{(start + i) % 10} temperature={20 + (start + i) % 50 / 10},"
                f"humidity={40 + (start + i) % 30} {T0 + (start + i) * 1_000_000_000}"
                for i in range(n)
            ).encode())
    else:
        for i in range(points):
            out.append(json.dumps({
                "sensor_type": "climate", "measurement_type": "temperature",
                "value": 20 + i % 50 / 10, "timestamp": (T0 + i * 1_000_000_000) // 1000,
            }).encode())
    return out


def publish_all(c: Any, topic: str, msgs: list[bytes]) -> None:
    infos = [c.publish(topic, m, qos=1) for m in msgs]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def publish_many(host: str, port: int, prefix: str, msgs: list[list[bytes]], inflight: int,
                 ready: Any, go: Any) -> None:
    from paho.mqtt.client import CallbackAPIVersion, Client

    clients = []
    for _ in msgs:
        c = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
        c.max_inflight_messages_set(inflight)
        c.connect(host, port)
        c.loop_start()
        clients.append(c)
    ready.set()
    go.wait()
    threads = [
        threading.Thread(target=publish_all, args=(c, f"{prefix}/dev-{k}", m))
        for k, (c, m) in enumerate(zip(clients, msgs, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(shape: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    points = args.points if shape == "lp" else args.json_points
    per = points // args.publishers
    prefix = f"bench-mqtt/{uuid.uuid4().hex[:8]}"
    fmt = "lp" if shape == "lp" else "json"
    settings = load_settings(
        None, data_dir=tmp / shape, stream={"enabled": args.stream}, parse_workers=0,
        store={"flush_rows": 10_000_000, "flush_interval_s": 3600.0},
    )
    p = Sensorium(settings)
    src = MqttSource(p, MqttSourceSettings(
        name="bench", host=args.host, port=args.port, client_id=f"bench-{uuid.uuid4().hex[:8]}",
        topics=(MqttTopicSettings(topic=f"{prefix}/{{device_id}}", format=fmt),),
        batch_max_messages=args.batch, batch_max_ms=args.batch_ms, receive_maximum=args.receive_maximum,
        session_expiry_s=0,
    ))
    src.start()
    assert src.connected.wait(10), src.last_error
    msgs = [payloads(shape, k, per, args.lines) for k in range(args.publishers)]
    total = per * args.publishers
    counter = p.metrics.mqtt_points.labels("bench")
    log(f"{shape}: {total:,} points in {sum(map(len, msgs)):,} messages from {args.publishers} publishers")
    # the publishers run in another process (devices are not in the server's process)
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=publish_many, args=(args.host, args.port, prefix, msgs, args.inflight, ready, go))
    proc.start()
    ready.wait(60)
    t0 = time.perf_counter()
    go.set()
    threads = [proc]
    deadline = t0 + args.timeout
    last, last_change = -1.0, t0
    while time.perf_counter() < deadline:
        got = counter._value.get()
        if got >= total:
            break
        if got != last:
            last, last_change = got, time.perf_counter()
        elif time.perf_counter() - last_change > 5 and not any(t.is_alive() for t in threads):
            break  # published everything, nothing more arrives
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    proc.join()
    stored = int(p.query("SELECT count(*) AS n FROM climate")["n"][0].as_py())
    src.stop()
    p.close()
    return {
        "shape": shape, "points": total, "messages": sum(map(len, msgs)),
        "points_per_message": args.lines if shape == "lp" else 1,
        "publishers": args.publishers, "stored": stored, "lost": total - stored,
        "seconds": round(elapsed, 3), "points_per_s": round(stored / elapsed),
        "messages_per_s": round(sum(map(len, msgs)) * stored / max(total, 1) / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--points", type=int, default=200_000, help="lp points")
    ap.add_argument("--lines", type=int, default=100, help="points per lp message")
    ap.add_argument("--json-points", type=int, default=40_000, help="JSON readings (one per message)")
    ap.add_argument("--batch", type=int, default=1000, help="source batch_max_messages")
    ap.add_argument("--batch-ms", type=float, default=50.0, help="source batch_max_ms")
    ap.add_argument("--receive-maximum", type=int, default=65535)
    ap.add_argument("--inflight", type=int, default=100, help="publisher in-flight window")
    ap.add_argument("--stream", action="store_true", help="also run the stream processor")
    ap.add_argument("--shapes", default="lp,json")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.points, args.json_points = 20_000, 5_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    try:
        results = [run(s, args, tmp) for s in args.shapes.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"benchmark": "mqtt", "machine": machine_info(), "results": results,
           "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    if args.json:
        print(json.dumps(out))
    else:
        for r in results:
            print(f"{r['shape']:5s} {r['points']:>8,} points ({r['messages']:,} msgs): "
                  f"{r['points_per_s']:>9,} points/s, {r['messages_per_s']:,} msgs/s, lost {r['lost']}")


if __name__ == "__main__":
    main()
