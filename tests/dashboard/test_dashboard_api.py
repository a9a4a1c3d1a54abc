"""The dashboard's server side, in process: the page and its packaged assets, the loopback-only
rule, and the JSON it reads (overview, devices, registry, chart data downsampled to pixels)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sensorium.api.app import create_app
from sensorium.api.dashboard import (
    LADDER_NS,
    STATIC_DIR,
    Overview,
    format_interval,
    is_loopback,
    pick_interval,
)
from sensorium.platform import Sensorium
from tests.conftest import FakeClock, make_settings

S = 10**9
MIN = 60 * S
H = 60 * MIN


@pytest.fixture
def fleet(platform: Sensorium, clock: FakeClock) -> Sensorium:
    """dev-a: climate every 10 s over the last hour (kitchen of home-1); dev-b: energy, last
    heard of 2 h ago; dev-c: no location tags."""
    now = clock()
    lines = [
        f"climate,device_id=dev-a,location=home-1,room=kitchen,sensor_type=climate "
        f"temperature={20 + (i % 30) / 10},humidity={40 + i % 7}i,motion={'true' if i % 2 else 'false'} "
        f"{now - H + i * 10 * S}"
        for i in range(360)
    ]
    lines += [f"energy,device_id=dev-b,location=home-2,room=garage power={100 + i} {now - 3 * H + i * MIN}"
              for i in range(60)]
    lines += [f"climate,device_id=dev-c temperature=19.5,humidity=50i {now - 30 * S}"]
    res = platform.write("\n".join(lines))
    assert not res.rejects, res.summary()
    platform.process_stream(now)
    return platform


# -- the page and its assets ------------------------------------------------------------------

def test_the_page_and_every_asset_it_names_are_served(client: Any) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', r.text)
    assert "/dashboard/static/vendor/uplot/uPlot.iife.min.js" in assets
    assert "/dashboard/static/js/app.js" in assets
    for path in assets:
        a = client.get(path)
        assert a.status_code == 200, path
        assert a.content, path
    assert client.get("/dashboard/static/js/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/static/app.css").headers["content-type"].startswith("text/css")
    lic = client.get("/dashboard/static/vendor/uplot/LICENSE")
    assert lic.status_code == 200 and "MIT" in lic.text


def test_every_module_import_resolves_to_a_packaged_file() -> None:
    """No build step: each `import ... from "./x.js"` must name a file that ships."""
    js = sorted((STATIC_DIR / "js").rglob("*.js"))
    assert len(js) >= 9
    for f in js:
        for target in re.findall(r'from\s+"(\.{1,2}/[^"]+)"', f.read_text()):
            assert (f.parent / target).resolve().is_file(), f"{f.name} imports missing {target}"


def test_assets_have_etags_and_unknown_or_escaping_paths_are_404(client: Any) -> None:
    r = client.get("/dashboard/static/app.css")
    etag = r.headers["etag"]
    again = client.get("/dashboard/static/app.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    for bad in ("nope.js", "../dashboard_routes.py", "..%2F..%2Fapp.py", "/etc/passwd", "__init__.py",
                "js/../../_static.py"):
        r = client.get(f"/dashboard/static/{bad}")
        assert r.status_code == 404, bad
        assert r.json()["code"] == "not_found"


def test_packaged_files_include_the_vendored_chart_library() -> None:
    names = {p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert {"vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css", "vendor/uplot/LICENSE"} <= names
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "api/dashboard/static/**/*" in pyproject  # ships in the wheel


# -- loopback only -------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_a_non_loopback_bind_answers_403_on_every_dashboard_route(tmp_path: Path, clock: FakeClock) -> None:
    # authentication explicitly off (it is on by default off loopback: tests/auth)
    p = Sensorium(make_settings(tmp_path / "d", host="0.0.0.0", auth={"enabled": False}), clock=clock,
                  background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            page = c.get("/")
            assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
            assert "loopback only" in page.text and "0.0.0.0" in page.text
            for path in ("/dashboard/static/app.css", "/api/v1/dashboard/overview", "/api/v1/dashboard/devices",
                         "/api/v1/dashboard/registry", "/api/v1/dashboard/devices/x/charts",
                         "/api/v1/dashboard/events"):
                r = c.get(path)
                assert r.status_code == 403, path
                assert r.json()["code"] == "dashboard_loopback_only"
                assert "--host 127.0.0.1" in r.json()["message"]
            # the API itself is untouched
            assert c.get("/api/v1/measurements").status_code == 200
    finally:
        p.close()


def test_dashboard_data_needs_the_token_when_one_is_set(tmp_path: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(tmp_path / "d", auth_token="s3cret"), clock=clock, background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            assert c.get("/").status_code == 200  # the page asks for the token itself
            assert c.get("/dashboard/static/js/app.js").status_code == 200
            assert c.get("/api/v1/dashboard/overview").status_code == 401
            ok = c.get("/api/v1/dashboard/overview", headers={"Authorization": "Token s3cret"})
            assert ok.status_code == 200
            assert c.get("/api/v1/dashboard/overview", params={"p": "s3cret"}).status_code == 200  # EventSource
    finally:
        p.close()


# -- overview, devices, registry --------------------------------------------------------------------

def test_overview_counts_devices_alerts_quality_and_storage(client: Any, fleet: Sensorium) -> None:
    ov = client.get("/api/v1/dashboard/overview").json()
    assert ov["devices"] == {"total": 3, "online": 2, "offline": 1, "offline_after_s": 300.0}
    assert ov["ingest"]["points_total"] == 360 + 60 + 1
    assert ov["quality"]["valid_rate"] == 1.0 and ov["quality"]["rejected"] == 0
    assert ov["storage"]["bytes"] >= ov["storage"]["wal_bytes"] > 0
    assert ov["alerts"]["firing"] == 0
    assert ov["stream"]["enabled"] is True
    # a longer offline threshold brings dev-b back online
    ov = client.get("/api/v1/dashboard/overview", params={"offline_after": "4h"}).json()
    assert ov["devices"]["online"] == 3
    bad = client.get("/api/v1/dashboard/overview", params={"offline_after": "soon"})
    assert bad.status_code == 400 and "offline_after" in bad.json()["message"]


def test_ingest_rate_comes_from_the_accepted_points_counter(platform: Sensorium, clock: FakeClock) -> None:
    mono = [100.0]
    ov = Overview(platform, min_interval_s=0.0, monotonic=lambda: mono[0])
    first = ov.get("default", 300 * S)
    assert first["ingest"]["rate"] is None and first["ingest"]["history"] == []
    platform.write("\n".join(f"m,device_id=d v={i} {clock() - i * S}" for i in range(50)))
    mono[0] += 2.0
    second = ov.get("default", 300 * S)
    assert second["ingest"]["rate"] == pytest.approx(25.0)
    assert [r for _, r in second["ingest"]["history"]] == [pytest.approx(25.0)]
    mono[0] += 20.0  # the first sample has left the 10 s window: no rate from one sample
    assert ov.get("default", 300 * S)["ingest"]["rate"] is None


def test_overview_is_shared_within_its_interval(platform: Sensorium) -> None:
    mono = [0.0]
    ov = Overview(platform, min_interval_s=1.0, monotonic=lambda: mono[0])
    a = ov.get("default", 300 * S)
    assert ov.get("default", 300 * S) is a
    mono[0] += 1.5
    assert ov.get("default", 300 * S) is not a


def test_devices_list_search_and_status(client: Any, fleet: Sensorium) -> None:
    r = client.get("/api/v1/dashboard/devices").json()
    assert [d["device_id"] for d in r["devices"]] == ["dev-a", "dev-b", "dev-c"]
    a = r["devices"][0]
    assert (a["location"], a["room"], a["sensor_type"], a["status"]) == ("home-1", "kitchen", "climate", "online")
    assert a["measurements"] == ["climate"]
    assert set(a["fields"]) == {"temperature", "humidity", "motion"}
    assert a["fields"]["humidity"] == 40 + 359 % 7  # the newest value
    assert r["now"] - a["last_seen"] == pytest.approx(10.0)
    q = client.get("/api/v1/dashboard/devices", params={"q": "KITCHEN"}).json()
    assert [d["device_id"] for d in q["devices"]] == ["dev-a"] and q["total"] == 3
    off = client.get("/api/v1/dashboard/devices", params={"status": "offline"}).json()
    assert [d["device_id"] for d in off["devices"]] == ["dev-b"]
    assert client.get("/api/v1/dashboard/devices", params={"status": "sleeping"}).status_code == 400


def test_registry_is_derived_from_tags(client: Any, fleet: Sensorium) -> None:
    r = client.get("/api/v1/dashboard/registry").json()
    assert "telemetry tags" in r["source"]
    assert [loc["location"] for loc in r["locations"]] == ["home-1", "home-2", "(no location)"]
    home1 = r["locations"][0]
    assert home1["rooms"][0]["room"] == "kitchen"
    assert [d["device_id"] for d in home1["rooms"][0]["devices"]] == ["dev-a"]
    assert r["locations"][1]["online"] == 0
    assert r["locations"][2]["rooms"][0]["room"] == "(no room)"


def test_registry_places_registered_devices_and_lists_those_without_data(client: Any, fleet: Sensorium) -> None:
    store = fleet.registry_store
    assert store is not None
    store.create("location", {"id": "flat", "name": "The Flat"})
    store.create("room", {"id": "study", "name": "Study", "location_id": "flat"})
    store.patch("device", "dev-c", {"name": "Desk sensor", "room_id": "study"})  # auto-registered; no tags
    store.create("device", {"id": "dev-z", "name": "Spare", "room_id": "study"})  # never sent anything
    r = client.get("/api/v1/dashboard/registry").json()
    assert r["placed"] == 2 and r["registered"] == 4 and "device registry (2 placed" in r["source"]
    flat = next(loc for loc in r["locations"] if loc["location"] == "The Flat")
    assert [room["room"] for room in flat["rooms"]] == ["Study"]
    devs = {d["device_id"]: d for d in flat["rooms"][0]["devices"]}
    assert set(devs) == {"dev-c", "dev-z"}
    assert devs["dev-c"]["name"] == "Desk sensor" and devs["dev-c"]["status"] == "online"
    assert devs["dev-z"]["status"] == "no data" and devs["dev-z"]["last_seen"] is None
    assert "(no location)" not in [loc["location"] for loc in r["locations"]]  # dev-c found its place
    # unregistered devices keep their tags
    assert any(loc["location"] == "home-1" for loc in r["locations"])


def test_no_data_yet_is_empty_not_an_error(client: Any) -> None:
    assert client.get("/api/v1/dashboard/devices").json()["devices"] == []
    assert client.get("/api/v1/dashboard/registry").json()["locations"] == []
    assert client.get("/api/v1/dashboard/overview").json()["devices"]["total"] == 0


# -- chart data ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("span", "width", "floor", "want"),
    [(24 * H, 800, 0, 2 * MIN), (H, 1000, 0, 5 * S), (H, 1000, MIN, MIN), (15 * MIN, 300, 0, 5 * S),
     (30 * 86400 * S, 400, 0, 2 * H), (H, 3600, 0, S), (S, 100, 0, 100 * 10**6)],
)
def test_pick_interval(span: int, width: int, floor: int, want: int) -> None:
    assert pick_interval(span, width, floor) == want


def test_pick_interval_never_gives_more_buckets_than_pixels() -> None:
    for span in (10 * S, 7 * MIN, 3 * H, 25 * H, 9 * 86400 * S, 400 * 86400 * S, 3650 * 86400 * S):
        for width in (16, 97, 390, 800, 1920, 4096):
            iv = pick_interval(span, width)
            assert math.ceil(span / iv) <= width
            assert iv in LADDER_NS or iv % (86400 * S) == 0
            assert pick_interval(span, width, MIN) % MIN == 0


def test_format_interval() -> None:
    assert [format_interval(x) for x in (100 * 10**6, 5 * S, 2 * MIN, 3 * H, 86400 * S)] == ["100ms", "5s", "2m", "3h", "1d"]


def charts(client: Any, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/dashboard/devices/dev-a/charts", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_charts_are_downsampled_to_the_pixel_width_from_the_rollup(client: Any, fleet: Sensorium) -> None:
    out = charts(client, start="now-1h", width=60)
    (m,) = out["measurements"]
    assert m["measurement"] == "climate" and m["interval"] == "1m"
    assert m["source"].startswith("climate_1m")  # closed windows from the rollup, the rest raw
    assert 55 <= m["points"] <= 61 and len(m["time"]) == m["points"]
    fields = {f["field"]: f for f in m["fields"]}
    assert set(fields) == {"temperature", "humidity", "motion"}
    t = fields["temperature"]
    assert len(t["mean"]) == len(t["min"]) == len(t["max"]) == m["points"]
    assert all(lo <= mu <= hi for lo, mu, hi in zip(t["min"], t["mean"], t["max"], strict=True) if mu is not None)
    # the same means as raw SQL over the same minute
    t0 = int(m["time"][10] * 1e9)
    raw = fleet.query(f"SELECT avg(temperature) FROM climate WHERE device_id = 'dev-a' AND "
                      f"time >= make_timestamp_ns({t0}) AND time < make_timestamp_ns({t0 + MIN})")[0][0].as_py()
    assert t["mean"][10] == pytest.approx(raw)
    motion = fields["motion"]  # booleans chart as 0..1
    assert motion["type"] == "boolean" and 0.0 <= motion["mean"][10] <= 1.0
    assert out["end"] - out["start"] == pytest.approx(3600.0)


def test_raw_resolution_and_a_finer_width_read_raw_data(client: Any, fleet: Sensorium) -> None:
    raw = charts(client, start="now-1h", width=60, resolution="raw")["measurements"][0]
    assert raw["source"] == "climate" and raw["interval"] == "1m"
    fine = charts(client, start="now-1h", width=1000)["measurements"][0]
    assert fine["source"] == "climate" and fine["interval"] == "5s"
    assert fine["points"] == 360  # one point per 10 s: fewer points than pixels, so every point
    hourly = charts(client, start="now-1h", width=1000, resolution="1h")["measurements"][0]
    assert hourly["interval"] == "1h" and hourly["source"].startswith("climate_1h")
    assert hourly["points"] <= 2


def test_anomaly_scores_and_alerts_are_overlaid(client: Any, fleet: Sensorium, clock: FakeClock) -> None:
    now = clock()
    fleet.write(f"climate,device_id=dev-a,location=home-1,room=kitchen,sensor_type=climate temperature=75 {now - S}")
    fleet.process_stream(now)
    out = charts(client, start="now-1h", width=120)
    (alert,) = [a for a in out["alerts"] if a["rule"] == "temperature-range"]
    assert alert["field"] == "temperature" and alert["measurement"] == "climate"
    assert alert["state"] == "firing" and alert["resolved_at"] is None
    assert out["start"] <= alert["fired_at"] <= out["end"]
    temp = next(f for f in out["measurements"][0]["fields"] if f["field"] == "temperature")
    assert temp["score"] is not None and len(temp["score"]) == len(temp["mean"])
    assert max(s for s in temp["score"] if s is not None) > 0.5  # 75 °C after a day of ~20
    assert max(v for v in temp["max"] if v is not None) == 75.0  # the spike stays visible


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [({"width": 5}, 400, "width"), ({"width": 99999}, 400, "width"), ({"width": "wide"}, 400, "width"),
     ({"resolution": "5m"}, 400, "resolution"), ({"start": "yesterday"}, 400, "bad time"),
     ({"start": "now-1h", "end": "now-2h"}, 400, "end must be after start"),
     ({"start": "now-1h", "bucket": "nope"}, 404, "no device")],
)
def test_bad_chart_requests_are_4xx(client: Any, fleet: Sensorium, params: dict[str, Any], status: int, text: str) -> None:
    r = client.get("/api/v1/dashboard/devices/dev-a/charts", params=params)
    assert r.status_code == status, r.text
    assert text in r.json()["message"]


def test_an_unknown_device_is_404(client: Any, fleet: Sensorium) -> None:
    r = client.get("/api/v1/dashboard/devices/nobody/charts")
    assert r.status_code == 404 and "nobody" in r.json()["message"]


def test_query_results_with_binary_columns_are_json(client: Any, fleet: Sensorium) -> None:
    """SELECT * over a rollup (its `_sketch` column is binary) from the query page: base64, not a 500."""
    r = client.post("/api/v1/query", json={"sql": "SELECT * FROM climate_1m LIMIT 3"})
    assert r.status_code == 200, r.text
    body = r.json()
    i = body["columns"].index("_sketch")
    assert body["types"][i] == "binary" and isinstance(body["rows"][0][i], str)


def test_without_the_stream_processor_charts_read_raw_data_and_alerts_are_absent(tmp_path: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(tmp_path / "d", stream={"enabled": False}), clock=clock, background=False)
    try:
        now = clock()
        p.write("\n".join(f"climate,device_id=dev-a temperature={20 + i % 5} {now - i * MIN}" for i in range(120)))
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            out = c.get("/api/v1/dashboard/devices/dev-a/charts", params={"start": "now-2h", "width": 60}).json()
            (m,) = out["measurements"]
            assert m["source"] == "climate" and m["interval"] == "2m" and m["points"] == 60
            assert m["fields"][0]["score"] is None and out["alerts"] == []
            bad = c.get("/api/v1/dashboard/devices/dev-a/charts", params={"resolution": "1m"})
            assert bad.status_code == 400 and "auto, raw" in bad.json()["message"]
            assert c.get("/api/v1/dashboard/overview").json()["alerts"] is None
    finally:
        p.close()
