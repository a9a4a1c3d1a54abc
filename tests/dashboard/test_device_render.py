"""How fast a heavy device page renders: 24 h of 1-minute data for 20 series (fields) of one
device, written with explicit timestamps under a fake clock, then the device page loaded in
Chromium and timed from navigation start to every chart drawn (`performance.measure` marks set by
the page): the median of N loads in a fresh browser context ("cold": nothing cached) and of N
reloads ("warm"; N = $SENSORIUM_BENCH_RUNS, default 3), the cold load split into "data"
(navigation start → chart data in) and "draw" (→ every chart drawn). Printed as one JSON line — recorded in docs/benchmarks.md — never
asserted as a timing; what is asserted is that all 20 charts draw, downsampled to their width.

    SENSORIUM_BENCH_RUNS=5 .venv/bin/pytest -q -s -p no:cacheprovider tests/dashboard/test_device_render.py
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sensorium.platform import Sensorium
from tests.conftest import FakeClock, free_port, make_settings
from tests.dashboard.conftest import open_tab

SERIES = 20
MINUTES = 24 * 60
MIN_NS = 60 * 10**9
END = 1_767_225_600_000_000_000 + 2 * 86400 * 10**9  # 2026-01-03T00:00:00Z
DEVICE = "bench-01"
RUNS = int(os.environ.get("SENSORIUM_BENCH_RUNS", "3"))  # 5 for the numbers in docs/benchmarks.md


def bench_lines() -> str:
    rng = np.random.default_rng(7)
    t = END - MINUTES * MIN_NS + np.arange(MINUTES, dtype=np.int64) * MIN_NS
    day = np.sin(np.linspace(0, 2 * np.pi, MINUTES))[:, None]
    vals = 20 + 5 * day + np.cumsum(rng.normal(0, 0.05, (MINUTES, SERIES)), axis=0) + np.arange(SERIES)
    cols = np.array([f"s{j + 1:02d}" for j in range(SERIES)])
    fields = [",".join(f"{c}={v:.3f}" for c, v in zip(cols, row, strict=True)) for row in vals]
    return "\n".join(f"plant,device_id={DEVICE},location=bench-lab,room=rack {f} {ts}"
                     for f, ts in zip(fields, t.tolist(), strict=True))


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    from sensorium.api.app import create_app

    clock = FakeClock(END + 30 * 10**9)
    data = tmp_path_factory.mktemp("render") / "data"
    platform = Sensorium(make_settings(data), clock=clock, background=False)
    res = platform.write(bench_lines())
    assert res.accepted_rows == MINUTES and not res.rejects
    platform.process_stream(clock())  # rollups and anomaly scores, as the running stream makes them
    platform.flush(force=True)  # the data in the lake, not in memory
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(platform), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)
    platform.close()


def render_once(browser: Any, base: str, resolution: str) -> tuple[float, float, list[int], str, float, float]:
    """(cold ms in a fresh context, warm ms on reload, points per chart, source line, and of the
    cold load: ms until the chart data was in, ms drawing the charts)."""
    ctx, tab = open_tab(browser, base)
    try:
        page = tab.page
        times = []
        phases: list[float] = []
        for _ in range(2):
            if times:
                page.reload()
            else:
                tab.go(f"devices/{DEVICE}?range=24h&res={resolution}&live=0")
            page.wait_for_function("() => performance.getEntriesByName('sensorium:device-render').length > 0",
                                   timeout=30_000)
            times.append(page.evaluate("performance.getEntriesByName('sensorium:device-render')[0].duration"))
            if not phases:
                phases = page.evaluate("['sensorium:device-data', 'sensorium:device-draw']"
                                       ".map((n) => performance.getEntriesByName(n)[0].duration)")
        points = [int(p) for p in page.eval_on_selector_all("[data-chart]", "els => els.map(e => e.dataset.points)")]
        source = page.inner_text("#chart-source")
        tab.assert_clean()
        return times[0], times[1], points, source, phases[0], phases[1]
    finally:
        ctx.close()


def test_device_page_with_20_series_of_24h_renders(browser: Any, bench_server: str) -> None:
    results = {}
    for resolution in ("auto", "raw"):
        runs = [render_once(browser, bench_server, resolution) for _ in range(RUNS)]
        points = runs[-1][2]
        assert len(points) == SERIES  # every series charted...
        assert all(100 <= p <= 1000 for p in points), points  # ...downsampled to the chart width
        source = runs[-1][3]
        assert ("plant_1m" in source) == (resolution == "auto"), source
        results[resolution] = {
            "cold_ms": round(statistics.median(r[0] for r in runs), 1),
            "cold_data_ms": round(statistics.median(r[4] for r in runs), 1),
            "cold_draw_ms": round(statistics.median(r[5] for r in runs), 1),
            "cold_min_ms": round(min(r[0] for r in runs), 1),
            "cold_max_ms": round(max(r[0] for r in runs), 1),
            "warm_ms": round(statistics.median(r[1] for r in runs), 1),
            "points_per_series": points[0],
            "source": source.split(",")[0].removeprefix("Read from "),
        }
    line = json.dumps({"bench": "dashboard_device_render", "series": SERIES, "raw_points_per_series": MINUTES,
                       "viewport": "1280x860", "runs": RUNS, "loadavg_1m": round(os.getloadavg()[0], 2),
                       **results})
    print(line)
    out = os.environ.get("SENSORIUM_BENCH_OUT")
    if out:
        with Path(out).open("a") as f:
            f.write(line + "\n")
