"""Browser fixtures: Playwright for Python driving Debian's Chromium (never a downloaded browser),
one per test session; a `Tab` per test that records console errors, uncaught exceptions and any
request that leaves the server (the dashboard must work offline)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_missing

CHROMIUM = os.environ.get("SENSORIUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
WIDE = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")  # not wider: Playwright keeps an event loop running in the main thread
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        service_missing(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("Playwright for Python is missing: pip install -e '.[test]'")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Tab:
    """A page and what went wrong on it."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    allowed_errors: tuple[str, ...] = ()

    def go(self, route: str) -> None:
        self.page.goto(f"{self.base}/#/{route}")

    def assert_clean(self) -> None:
        errors = [e for e in self.errors if not any(a in e for a in self.allowed_errors)]
        assert not errors, f"console errors: {errors}"
        assert not self.foreign, f"requests that left the server: {self.foreign}"

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_tab(browser: Any, base: str, viewport: dict[str, int] = WIDE) -> tuple[Any, Tab]:
    ctx = browser.new_context(viewport=viewport, reduced_motion="reduce", locale="en-GB", timezone_id="UTC")
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    tab = Tab(page, base)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: tab.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else tab.foreign.append(r.url))
    return ctx, tab
