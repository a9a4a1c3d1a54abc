"""Generate ``docs/configuration.md`` from the settings model, so the page cannot drift from code.

``python -m sensorium.cli.docs > docs/configuration.md`` (a test compares the two).
"""

from __future__ import annotations

from pydantic import BaseModel

from sensorium.config import (
    CommandSinkSettings,
    DetectorSettings,
    MqttSinkSettings,
    MqttSourceSettings,
    MqttTopicSettings,
    RuleSettings,
    Settings,
    WebhookSinkSettings,
)

HEADER = """# Configuration

Sensorium reads its settings, lowest priority first, from: built-in defaults → a TOML file →
`SENSORIUM_*` environment variables → command-line options (`--data-dir`, `--host`, `--port`).

The TOML file is the one given by `--config FILE`, else `$SENSORIUM_CONFIG`, else `./sensorium.toml`
if it exists. Nested settings are TOML tables (`[wal]`, `[store]`, `[quality]`, ...) and, in the
environment, use a double underscore: `SENSORIUM_WAL__FSYNC=interval`,
`SENSORIUM_STORE__FLUSH_ROWS=100000`. Unknown keys are an error (a typo never passes silently).

`sensorium config show` prints the effective configuration, with secrets masked.

This page is generated from the code: `python -m sensorium.cli.docs > docs/configuration.md`.

```toml
# sensorium.toml — example
data_dir = "/var/lib/sensorium"
port = 7400
auth_token = "change-me"          # then clients send `Authorization: Token change-me`

[wal]
fsync = "always"                  # always | interval | never

[store]
flush_rows = 500000
flush_interval_s = 5.0

[quality]
future_tolerance_s = 300
retention_days = 0                # 0 = keep forever; else reject older points

[quality.rules.co2]               # a rule for field `co2`
min = 300
max = 5000
action = "flag"                   # keep the row, lower its quality score

[stream]
rollups = ["1m", "1h", "1d"]      # tables climate_1m, climate_1h, climate_1d
rules_file = "rules.toml"         # `sensorium rules check rules.toml` validates it

[[alerts.webhooks]]
url = "http://127.0.0.1:9000/hooks/sensorium"

[[detect.detectors]]              # anomaly scores (table anomaly_scores, rules: stat = "anomaly_score")
measurement = "*"
field = "*"
detector = "default"

[detect.quality]                  # stuck values, spikes, dropouts, drift → table quality_findings
peer_tags = ["location"]
```
"""

FOOTER = """
Built-in rules (disable all with `quality.use_default_rules = false`): temperature −50..100 °C,
humidity 0..100 %, pressure 800..1200 hPa, voltage 0..50 V, battery 0..1 (a `unit=%` value is
converted to a fraction), rssi / signal_strength −120..0 dBm. See [quality.md](quality.md).
"""


def _table(model: type[BaseModel], prefix: str, env: str | None) -> list[str]:
    out = ["| setting | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            continue
        shown = "(none)" if default is None else default
        env_name = f"`{env}{name.upper()}`" if env is not None else "—"
        out.append(f"| `{prefix}{name}` | {env_name} | `{shown}` | {f.description or ''} |")
    return out


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every nested settings table (a field whose default is a model), in declaration order,
    depth first: ``wal``, ``store``, ..., ``detect``, ``detect.quality``, ... — so a new section
    is documented without anyone remembering to list it."""
    out: list[tuple[str, type[BaseModel]]] = []
    for name, f in model.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            out.append((f"{prefix}{name}", type(default)))
            out += _sections(type(default), f"{prefix}{name}.")
    return out


def render() -> str:
    lines = [HEADER, "## Top level", ""]
    lines += _table(Settings, "", "SENSORIUM_")
    for sec, model in _sections(Settings):
        lines += ["", f"## `[{sec}]`", ""]
        lines += _table(model, f"{sec}.", f"SENSORIUM_{sec.upper().replace('.', '__')}__")
    lines += [
        "",
        "## Quality rules (`[quality.rules.<field>]`)",
        "",
        "A rule applies to every field with that name (or only in `measurement`, when given). A",
        "user rule replaces the built-in rule for the same field.",
        "",
    ]
    lines += _table(RuleSettings, "rules.<field>.", None)
    lines += [
        "",
        "## Alert sinks",
        "",
        "Each `[[alerts.webhooks]]` table adds a webhook; `[alerts.mqtt]` publishes alerts to MQTT.",
        "Deliveries are durable and retried with exponential backoff; after `max_attempts` they",
        "become dead letters (`GET /api/v1/alerts/deliveries?state=dead`).",
        "",
        "### `[[alerts.webhooks]]`",
        "",
    ]
    lines += _table(WebhookSinkSettings, "webhooks[].", None)
    lines += ["", "### `[alerts.mqtt]`", ""]
    lines += _table(MqttSinkSettings, "mqtt.", None)
    lines += ["", "### `[[alerts.commands]]` (a device command when a rule fires; broker: `[commands]`)", ""]
    lines += _table(CommandSinkSettings, "commands[].", None)
    lines += [
        "",
        "## Anomaly detectors (`[[detect.detectors]]`)",
        "",
        "Each entry picks the fields (measurement and field globs) scored by one detector; the first",
        "matching entry wins; the default is one entry scoring every numeric field with the `default`",
        "detector. See [detection.md](detection.md).",
        "",
    ]
    lines += _table(DetectorSettings, "detectors[].", None)
    lines += [
        "",
        "## MQTT sources (`[[mqtt_sources]]`)",
        "",
        "Each `[[mqtt_sources]]` table is one broker connection, started by `sensorium up`; its",
        "`[[mqtt_sources.topics]]` are the subscriptions. See [mqtt.md](mqtt.md).",
        "",
    ]
    lines += _table(MqttSourceSettings, "mqtt_sources[].", None)
    lines += ["", "### `[[mqtt_sources.topics]]`", ""]
    lines += _table(MqttTopicSettings, "topics[].", None)
    lines.append(FOOTER)
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
