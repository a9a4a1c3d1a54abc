"""`sensorium command DEVICE COMMAND [--param k=v ...]`: send a command to a device over MQTT,
through a running server (``--url``) or straight to the broker of ``[commands]``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import orjson
import typer

from sensorium.cli.common import ConfigOpt, DataDirOpt, FormatOpt, UrlOpt, console, http, settings
from sensorium.errors import BadRequest


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``k=v`` pairs; a value that is JSON (``60``, ``true``, ``[1,2]``, ``"x"``) is taken as
    JSON, anything else as text."""
    out: dict[str, Any] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise BadRequest(f"--param takes key=value; got {item!r}")
        try:
            out[k.strip()] = orjson.loads(v)
        except orjson.JSONDecodeError:
            out[k.strip()] = v
    return out


def command(
    device: Annotated[str, typer.Argument(help="Device id, e.g. dev-00042.")],
    name: Annotated[str, typer.Argument(metavar="COMMAND", help="Command, e.g. set, reboot.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Parameter key=value (JSON values allowed; repeatable).")] = None,
    fmt: FormatOpt = "table",
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send a command to a device (QoS 1 MQTT on sensorium/devices/DEVICE/commands); it is
    recorded with its outcome (GET /api/v1/devices/DEVICE/commands)."""
    params = parse_params(param)
    if url:
        rec = http(url, "POST", f"/api/v1/devices/{device}/commands",
                   json={"command": name, "params": params}).json()
    else:
        from sensorium.devices.commands import publisher_for

        s = settings(config, data_dir=data_dir)
        rec = publisher_for(s.data_dir, s.commands, time.time_ns).send_sync(device, name, params)
    if fmt == "json":
        print(json.dumps(rec))
        return
    console.print(
        f"[green]{rec['status']}[/] {rec['command']} → {rec['device_id']} on {rec['topic']} "
        f"(id {rec['command_id']}, {rec['issued_at']})"
    )
