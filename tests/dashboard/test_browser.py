"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real
`sensorium up --simulate`: every page loads without console errors and without leaving the
server, live simulator data appears, an alert is acknowledged from the UI, a dead letter is
replayed, a SQL query shows a table and a chart; keyboard, labels, contrast and phone width.
Screenshots of every page go to docs/dashboard/."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, make_settings
from tests.dashboard.conftest import PHONE, Tab, open_tab

DEVICES = 12  # two simulated homes (one location per 8 devices, rounded)


def write_history(data: Path, hours: float = 1.0) -> None:
    """The last hour of the same simulated fleet (a reading every 10 s), so that charts have a
    past, rollups exist and faults have fired alerts before the live simulator takes over."""
    from sensorium.ingest.simulator import SimConfig, Simulator
    from sensorium.platform import Sensorium

    seconds = hours * 3600
    sim = Simulator(SimConfig(devices=DEVICES, rate=0.1, duration_s=seconds, start_ns=now_ns() - int(seconds * 1e9)))
    with Sensorium(make_settings(data), background=False) as p:
        for chunk in sim.chunks(600.0):
            p.write(chunk.lines)
        p.process_stream()
        p.flush(force=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("dashboard") / "data"
    write_history(data)
    srv = ServerProcess(data, args=["--simulate", "--devices", str(DEVICES), "--rate", "1"]).start()
    yield srv
    srv.stop()


@pytest.fixture
def tab(browser: Any, server: ServerProcess) -> Iterator[Tab]:
    ctx, t = open_tab(browser, server.url)
    yield t
    ctx.close()


def number(text: str) -> float:
    m = re.search(r"-?[\d,]+(?:\.\d+)?", text)
    assert m, text
    return float(m.group(0).replace(",", ""))


def now_ns() -> int:
    return time.time_ns()


# JS: every visible text's contrast against the background it is drawn on (WCAG 2 formula).
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] >= 0.99) return c; } return [255, 255, 255, 1]; };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (["SCRIPT", "STYLE", "OPTION", "CANVAS"].includes(el.tagName)) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || el.closest("[hidden], dialog:not([open])") || el.closest(":disabled")) continue;
    const fg = parse(st.color); const bg = bgOf(el);
    const mix = fg.slice(0, 3).map((v, i) => v * fg[3] + bg[i] * (1 - fg[3]));
    const [a, b] = [lum(mix), lum(bg)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize); const bold = parseInt(st.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return bad;
}
"""

# JS: form controls without an accessible name.
UNLABELLED_JS = """
() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((e) => e.getClientRects().length && !e.closest("dialog:not([open])"))
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !(e.tagName === "BUTTON" && e.textContent.trim()))
  .map((e) => e.outerHTML.slice(0, 80))
"""

ROUTES = {
    "overview": "overview",
    "devices": "devices",
    "device": "devices/dev-00001?range=15m",
    "alerts": "alerts",
    "quality": "quality",
    "query": "query",
    "registry": "registry",
}
READY = {
    "overview": "#ingest-chart canvas",
    "devices": "#devices-table tbody tr",
    "device": "[data-chart] canvas",
    "alerts": "#alert-counts .value",
    "quality": "#issues-table, #dead-letters-table, .empty",
    "query": "#tables-list button",
    "registry": "details.location",
}


def test_overview_shows_live_simulator_data(tab: Tab) -> None:
    tab.go("overview")
    page = tab.page
    page.wait_for_function(
        "() => { const v = document.querySelector(\"[data-kpi='devices-online']\"); return v && parseInt(v.textContent) > 0; }")
    page.wait_for_function(
        "() => { const v = document.querySelector(\"[data-kpi='ingest-rate']\"); return v && parseFloat(v.textContent) > 0; }")
    assert number(page.inner_text("[data-kpi='devices-online']")) == DEVICES
    first = number(page.inner_text("[data-kpi-sub='ingest-rate']"))  # "N points accepted"
    # live: the counters move without a reload (server-sent events)
    page.wait_for_function(
        f"() => parseInt(document.querySelector(\"[data-kpi-sub='ingest-rate']\").textContent.replace(/,/g, '')) > {first}")
    assert page.inner_text("#live-text") == "Live"
    assert number(page.inner_text("[data-kpi='quality-rate']")) > 50
    assert "B" in page.inner_text("[data-kpi='storage']")
    page.wait_for_selector("#ingest-chart canvas")
    tab.assert_clean()


def test_devices_page_searches_and_links_to_a_device(tab: Tab) -> None:
    tab.go("devices")
    page = tab.page
    page.wait_for_function(f"() => document.querySelectorAll('#devices-table tbody tr').length === {DEVICES}")
    assert page.locator("#devices-table tbody tr .badge.ok").count() == DEVICES  # all online
    first = page.locator("#devices-table tbody tr").first
    assert "home-" in first.inner_text() and first.locator(".values b").count() >= 3  # location, last values
    tab.shot("devices")
    page.get_by_label("Search devices").fill("dev-00003")
    page.wait_for_function("() => document.querySelectorAll('#devices-table tbody tr').length === 1")
    assert "q=dev-00003" in page.url
    page.get_by_role("link", name="dev-00003").click()
    page.wait_for_selector("[data-chart] canvas")
    assert page.url.endswith("#/devices/dev-00003")
    assert page.inner_text("#page-title") == "dev-00003"
    tab.assert_clean()


def test_device_page_draws_live_charts_and_switches_resolution(tab: Tab) -> None:
    tab.go(ROUTES["device"])
    page = tab.page
    page.wait_for_function(
        "() => { const c = document.querySelector(\"[data-chart='climate/temperature']\"); return c && +c.dataset.points > 0; }")
    assert page.locator("[data-chart]").count() == 5  # battery, humidity, pressure, rssi, temperature
    assert page.locator("[data-chart] .u-legend").count() == 5
    page.locator("#last-values [data-field='temperature']").wait_for()  # from the device's event stream
    last = float(page.get_attribute("[data-chart='climate/temperature']", "data-last") or 0)
    # live: new buckets arrive without a reload
    page.wait_for_function(
        f"() => +document.querySelector(\"[data-chart='climate/temperature']\").dataset.last > {last}", timeout=20_000)
    source = page.inner_text("#chart-source")
    assert "points a series" in source and "px" in source
    render_ms = page.evaluate("() => performance.getEntriesByName('sensorium:device-render')[0].duration")
    assert render_ms > 0
    # the last hour: the history written before the server started, and the live data
    page.get_by_label("Time range").select_option("1h")
    page.wait_for_function("() => /10s buckets/.test(document.querySelector('#chart-source').textContent)")
    assert "range=1h" in page.url
    points = int(page.get_attribute("[data-chart='climate/temperature']", "data-points") or 0)
    # an hour of 10 s buckets (<= 360 + edges), no more than the chart's pixels; fewer when a slow
    # start left a gap between the history written before the server and the live data
    assert 200 <= points <= 372
    tab.shot("device")
    source = page.inner_text("#chart-source")
    page.get_by_label("Resolution").select_option("1m")
    page.wait_for_function(f"() => document.querySelector('#chart-source').textContent !== {json.dumps(source)}")
    assert "climate_1m" in page.inner_text("#chart-source") and "(1m buckets" in page.inner_text("#chart-source")
    assert "res=1m" in page.url
    tab.assert_clean()


def test_an_alert_is_acknowledged_from_the_ui(tab: Tab, server: ServerProcess) -> None:
    tab.go("alerts?state=firing")
    page = tab.page
    page.wait_for_selector("#alert-counts .value")
    page.wait_for_function("() => document.body.textContent.includes('Live: changes appear')")
    # a reading over the built-in temperature rule's critical level arrives...
    line = f"climate,device_id=dev-ui-alert,location=home-1,room=kitchen,sensor_type=climate temperature=75 {now_ns()}"
    assert httpx.post(server.url + "/api/v2/write", content=line, timeout=10).status_code == 204
    # ...and its alert appears without a reload (server-sent events)
    row = page.locator("tr[data-alert]", has_text="dev-ui-alert").filter(has_text="temperature-range")
    row.wait_for()
    alert_id = row.get_attribute("data-alert")
    assert row.get_attribute("data-state") == "firing"
    row.get_by_role("button", name=re.compile("Acknowledge temperature-range on dev-ui-alert")).click()
    page.locator(f"tr[data-alert='{alert_id}'][data-state='acknowledged']").wait_for()
    assert "by dashboard" in page.locator(f"tr[data-alert='{alert_id}']").inner_text()
    stored = httpx.get(f"{server.url}/api/v1/alerts/{alert_id}", timeout=10).json()
    assert stored["acknowledged"] and stored["acked_by"] == "dashboard"
    tab.go("alerts")
    page.locator(f"tr[data-alert='{alert_id}'][data-state='acknowledged']").wait_for()
    tab.shot("alerts")
    tab.assert_clean()


def test_dead_letters_are_listed_and_replayed(tab: Tab, server: ServerProcess) -> None:
    bad = f"climate,device_id=dev-ui-bad,location=home-1,room=kitchen humidity=130 {now_ns()}"
    assert httpx.post(server.url + "/api/v2/write", content=bad, timeout=10).status_code == 400
    tab.go("quality")
    page = tab.page
    page.wait_for_selector("#issues-table")
    page.wait_for_selector("#dead-letters-table tbody tr")
    tab.shot("quality")
    page.get_by_label("Device", exact=True).fill("dev-ui-bad")
    page.wait_for_function("() => document.querySelectorAll('#dead-letters-table tbody tr').length === 1")
    row = page.locator("#dead-letters-table tbody tr")
    assert "humidity=130" in row.inner_text() and "above maximum" in row.inner_text()
    assert "device_id=dev-ui-bad" in page.url
    page.get_by_role("button", name="Replay matching dead letters").click()
    page.wait_for_function("() => /Replayed 1: 0 now stored, 1 still rejected/.test(document.querySelector('#replay-result').textContent)")
    tab.assert_clean()


def test_a_query_shows_a_table_a_chart_and_downloads_csv(tab: Tab) -> None:
    tab.go("query")
    page = tab.page
    page.wait_for_selector("#tables-list button")
    sql = ("SELECT time_bucket(INTERVAL '5 seconds', time) AS time, avg(temperature) AS temperature, "
           "avg(humidity) AS humidity FROM climate GROUP BY 1 ORDER BY 1")
    page.get_by_role("textbox", name=re.compile("^SQL")).fill(sql)
    page.get_by_role("button", name="Run query").click()
    page.wait_for_selector("#results-table tbody tr")
    assert page.locator("#results-table thead th").all_inner_texts() == ["TIME", "TEMPERATURE", "HUMIDITY"]
    assert page.locator("#results-table tbody tr").count() >= 2
    page.wait_for_selector("#query-chart canvas")
    assert page.locator("#query-chart .u-legend .u-series").count() == 3  # time + 2 series
    assert re.search(r"\d+ rows · 3 columns", page.inner_text("#query-status"))
    href = page.get_attribute("#csv", "href") or ""
    assert "format=csv" in href
    csv = page.request.get(href)
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    assert csv.text().splitlines()[0].replace('"', "") == "time,temperature,humidity"
    # one series per device when the result has a text column and one number
    page.get_by_role("textbox", name=re.compile("^SQL")).fill(
        "SELECT time_bucket(INTERVAL '10 seconds', time) AS time, device_id, avg(power) AS power FROM energy GROUP BY ALL ORDER BY 1")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => document.querySelector('#query-chart .u-legend').textContent.includes('power · dev-')")
    tab.shot("query")
    tab.assert_clean()
    # a bad query is a readable error, not a broken page
    tab.allowed_errors = ("status of 400",)
    page.get_by_role("textbox", name=re.compile("^SQL")).fill("SELECT nope FROM climate")
    page.get_by_role("button", name="Run query").click()
    page.wait_for_selector(".error-box")
    assert "nope" in page.inner_text(".error-box")
    tab.assert_clean()


def test_registry_groups_devices_by_location_and_room(tab: Tab) -> None:
    tab.go("registry")
    page = tab.page
    page.wait_for_selector("details.location[data-location='home-2']")
    assert page.locator("details.location").count() == 2
    assert "No device has a room or location in the device registry" in page.inner_text("#registry-note")
    assert page.locator("details.location .room li a").count() >= DEVICES
    tab.shot("registry")
    tab.assert_clean()


@pytest.mark.parametrize("name", list(ROUTES))
def test_each_page_has_labels_and_contrast(tab: Tab, name: str) -> None:
    tab.go(ROUTES[name])
    tab.page.wait_for_selector(READY[name])
    tab.page.wait_for_timeout(300)  # let the first live update land, then judge what is shown
    assert tab.page.evaluate(UNLABELLED_JS) == []
    assert tab.page.evaluate(CONTRAST_JS) == []
    tab.assert_clean()


def test_keyboard_navigation(tab: Tab) -> None:
    tab.go("overview")
    page = tab.page
    page.wait_for_selector("[data-kpi='devices-online']")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.locator("[data-nav='overview']").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.nav") == "devices"
    page.keyboard.press("Enter")
    page.wait_for_selector("#devices-table tbody tr")
    assert page.locator("[data-nav='devices']").get_attribute("aria-current") == "page"
    # the search box, then a device link, by keyboard alone
    page.get_by_label("Search devices").focus()
    page.keyboard.type("dev-00002")
    page.wait_for_function("() => document.querySelectorAll('#devices-table tbody tr').length === 1")
    page.locator("#devices-table a").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-chart] canvas")
    tab.assert_clean()


def test_phone_width(browser: Any, server: ServerProcess) -> None:
    ctx, tab = open_tab(browser, server.url, viewport=PHONE)
    try:
        page = tab.page
        for name, route in ROUTES.items():
            tab.go(route)
            page.wait_for_selector(READY[name])
            page.wait_for_timeout(200)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name} is {width}px wide"
            if name in ("overview", "device"):
                tab.shot(f"{name}-phone")
        # the menu opens from the keyboard and navigates
        assert not page.locator("#nav").is_visible()
        page.locator("#menu-toggle").focus()
        page.keyboard.press("Enter")
        assert page.locator("#menu-toggle").get_attribute("aria-expanded") == "true"
        page.locator("[data-nav='alerts']").click()
        page.wait_for_selector("#alert-counts .value")
        assert not page.locator("#nav").is_visible()
        tab.assert_clean()
    finally:
        ctx.close()


def test_events_stream_sends_overview_and_device_updates(server: ServerProcess) -> None:
    seen: dict[str, Any] = {}
    url = server.url + "/api/v1/dashboard/events"
    with httpx.stream("GET", url, params={"device_id": "dev-00001", "interval": 0.5}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                seen[event] = json.loads(line[6:])
            if {"overview", "device"} <= set(seen):
                break
    assert seen["overview"]["devices"]["online"] >= DEVICES
    assert seen["device"]["device_id"] == "dev-00001" and "temperature" in seen["device"]["fields"]
    bad = httpx.get(url, params={"interval": 0}, timeout=10)
    assert bad.status_code == 400
    # the stream ends by itself (a stopping server must not wait on it) and relays alert changes
    t0 = time.monotonic()
    kinds = []
    with httpx.stream("GET", url, params={"alerts": "true", "interval": 60}, timeout=20) as r:
        for ln in r.iter_lines():
            if ln == ": connected":  # subscribed: now an alert
                line = f"climate,device_id=dev-sse-alert,location=home-1,room=hall temperature=-30 {now_ns()}"
                assert httpx.post(server.url + "/api/v2/write", content=line, timeout=10).status_code == 204
            elif ln.startswith("event: "):
                kinds.append(ln[7:])
    assert time.monotonic() - t0 < 15
    assert kinds[0] == "overview" and "alert" in kinds


def test_overview_after_a_minute_of_activity(tab: Tab) -> None:
    """The overview once the tests above have made alerts and dead letters (its screenshot)."""
    tab.go("overview")
    page = tab.page
    page.wait_for_selector("[data-kpi='alerts-firing']")
    page.wait_for_function("() => parseInt(document.querySelector(\"[data-kpi='alerts-firing']\").textContent) >= 1")
    page.get_by_role("region", name="Firing alerts").locator("tbody tr").first.wait_for()
    page.get_by_role("region", name="Top data-quality issues").locator("tbody tr").first.wait_for()
    page.wait_for_function("() => !document.querySelector(\"[data-kpi='storage']\").textContent.startsWith('0 B')")
    tab.shot("overview")
    tab.assert_clean()


def test_screenshots_are_referenced_in_the_docs() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "dashboard.md").read_text()
    for name in ("overview", "devices", "device", "alerts", "quality", "query", "registry",
                 "overview-phone", "device-phone"):
        assert f"dashboard/{name}.png" in doc, name
        assert (root / "docs" / "dashboard" / f"{name}.png").is_file(), name
