"""The docs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from sensorium.cli.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_page_is_generated_from_the_settings() -> None:
    assert (ROOT / "docs/configuration.md").read_text() == render(), (
        "regenerate: python -m sensorium.cli.docs > docs/configuration.md"
    )


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    cmds = [ln for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(cmds) == 2
    assert "sensorium up --simulate" in cmds[0]
    ci = (ROOT / ".ci/run").read_text()
    assert cmds[1].strip() in ci


def test_every_cli_command_is_in_the_readme() -> None:
    from typer.main import get_command

    from sensorium.cli.main import app

    readme = (ROOT / "README.md").read_text()
    for name in get_command(app).commands:  # type: ignore[attr-defined]
        assert re.search(rf"sensorium {name}\b", readme), name


def test_http_api_page_lists_every_route() -> None:
    from sensorium.api.app import create_app

    page = (ROOT / "docs/http-api.md").read_text()
    import importlib
    import inspect
    import pkgutil

    import sensorium.api

    routes = [  # every routes module (stream_routes, device_config_routes, ...)
        importlib.import_module(f"sensorium.api.{m.name}")
        for m in pkgutil.iter_modules(sensorium.api.__path__)
        if m.name.endswith("_routes")
    ]
    assert any(r.__name__.endswith("stream_routes") for r in routes)
    src = inspect.getsource(create_app) + "".join(inspect.getsource(r) for r in routes)
    for path in re.findall(r'@app\.(?:get|post|head)\("([^"]+)"', src):
        assert path in page, path
