"""The official influxdb-client (v2 API) writes to Sensorium unchanged; points read back by SQL."""

from __future__ import annotations

from datetime import UTC, datetime

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteOptions

from tests.conftest import ServerProcess


def test_influxdb_client_v2_write_and_sql_readback(server: ServerProcess) -> None:
    with InfluxDBClient(url=server.url, token="my-token", org="my-org", enable_gzip=True) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        p1 = (
            Point("climate")
            .tag("device_id", "dev-1")
            .tag("room", "living room")
            .field("temperature", 21.5)
            .field("humidity", 40.0)
            .field("label", 'say "hi", ok')
            .field("on", True)
            .field("count", 7)
            .time(datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), WritePrecision.US)
        )
        p2 = "climate,device_id=dev-2,room=kitchen temperature=19.25,humidity=55.5 1767268800000000001"
        write.write(bucket="home", record=[p1])
        write.write(bucket="home", record=p2, write_precision=WritePrecision.NS)
    res = server.query(
        "SELECT device_id, room, temperature, humidity, label, \"on\", count, epoch_ns(time) AS ns "
        "FROM climate ORDER BY device_id",
        bucket="home",
    )
    rows = [dict(zip(res["columns"], r, strict=True)) for r in res["rows"]]
    assert rows[0] == {
        "device_id": "dev-1", "room": "living room", "temperature": 21.5, "humidity": 40.0,
        "label": 'say "hi", ok', "on": True, "count": 7, "ns": 1767268800123456000,
    }
    assert rows[1]["device_id"] == "dev-2" and rows[1]["ns"] == 1767268800000000001
    assert rows[1]["temperature"] == 19.25 and rows[1]["label"] is None


def test_influxdb_client_batching_write_api(server: ServerProcess) -> None:
    with InfluxDBClient(url=server.url, token="t", org="o") as client:
        with client.write_api(write_options=WriteOptions(batch_size=500, flush_interval=200)) as w:
            w.write(
                bucket="batch",
                record=[f"m,device_id=d{i % 7} v={i}i {1767225600000000000 + i}" for i in range(2000)],
            )
    res = server.query("SELECT count(*), count(DISTINCT v) FROM m", bucket="batch")
    assert res["rows"][0] == [2000, 2000]
