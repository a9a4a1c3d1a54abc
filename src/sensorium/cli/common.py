"""What every CLI command shares: consoles, common options, settings, HTTP helper."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sensorium.config import Settings, load_settings
from sensorium.errors import SensoriumError

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", "-d", help="Data directory (default ./sensorium-data).")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Talk to a running server instead of the data directory, e.g. http://127.0.0.1:7400")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table or json.")]
BucketOpt = Annotated[str | None, typer.Option("--bucket", "-b", help="Bucket (default: `default`).")]
LimitOpt = Annotated[int, typer.Option(help="At most this many.")]
#: the token `--url` commands send (``Authorization: Token ...``) to a server with auth on
TOKEN_ENV = "SENSORIUM_TOKEN"
#: seconds a stopping server waits for open requests (a dashboard's live alert stream never ends
#: by itself) before it closes them
SHUTDOWN_GRACE_S = 3


def http_server(platform: Any, host: str, port: int) -> Any:
    """The uvicorn server of ``sensorium up`` / ``ingest`` / ``api``: the app's endless responses
    (the live alert stream) end when the server stops, which waits at most SHUTDOWN_GRACE_S."""
    import uvicorn

    from sensorium.api.app import create_app

    app = create_app(platform)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    app.state.stopping = lambda: server.should_exit
    return server


def settings(config: Path | None, **overrides: Any) -> Settings:
    from sensorium import pii

    s = load_settings(config, **overrides)
    pii.configure(s.pii.key_file)  # a registry opened by the command may hold encrypted personal data
    return s


def apply_process_settings(s: Settings) -> None:
    """Process-wide settings of a long-running server command (``up``, ``ingest``, ``api``,
    ``worker``): the thread switch interval (``switch_interval_ms``)."""
    sys.setswitchinterval(s.switch_interval_ms / 1000.0)


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '1d' → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not m:
        raise typer.BadParameter(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 1d")
    mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    return float(m.group(1)) * mult


def http(url: str, method: str, path: str, **kw: Any) -> Any:
    import httpx

    token = os.environ.get(TOKEN_ENV)
    if token and "headers" not in kw:  # a server with authentication on (docs/security.md)
        kw["headers"] = {"Authorization": f"Token {token}"}
    try:
        r = httpx.request(method, url.rstrip("/") + path, timeout=60, **kw)
    except httpx.HTTPError as exc:
        raise SensoriumError(f"cannot reach {url}: {exc}") from None
    if r.status_code >= 400:
        try:
            msg = r.json().get("message", r.text)
        except ValueError:
            msg = r.text
        raise SensoriumError(f"server answered {r.status_code}: {msg}")
    return r
