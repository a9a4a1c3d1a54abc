"""Typed, frozen settings: defaults < TOML file < ``SENSORIUM_*`` environment < keyword arguments.

Nested settings use a double underscore in the environment, e.g. ``SENSORIUM_WAL__FSYNC=interval``.
Every setting and its default is listed in ``docs/configuration.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("./sensorium-data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7400
DEFAULT_CONFIG_FILE = Path("sensorium.toml")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WALSettings(_Frozen):
    fsync: Literal["always", "interval", "never"] = Field(
        "always",
        description="always: fsync before every acknowledgement (safe). interval: at most every "
        "fsync_interval_ms (a crash may lose that window). never: leave it to the OS.",
    )
    fsync_interval_ms: int = Field(100, ge=1, description="Group-commit period for fsync=interval.")
    segment_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Roll to a new segment file past this size.")


class StoreSettings(_Frozen):
    flush_rows: int = Field(500_000, ge=1, description="Flush a table's hot buffer to Delta Lake at this many rows.")
    flush_interval_s: float = Field(5.0, gt=0, description="... or when its oldest unflushed row is this old.")
    compact_min_files: int = Field(8, ge=2, description="Compact a day partition once it holds this many small files.")
    compact_max_rows: int = Field(
        500_000, ge=2, description="Rows one compaction merges at a time (its memory bound); files of half "
        "as many rows or more are left as they are."
    )
    maintenance_interval_s: float = Field(60.0, gt=0, description="How often compaction and vacuum run.")
    settle_s: float = Field(
        300.0, gt=0, description="Also compact a partition with 2+ files once none is younger than this."
    )
    compression_level: int = Field(9, ge=1, le=22, description="zstd level for Parquet files.")
    background_nice: int = Field(
        5, ge=0, le=19, description="Niceness added to the flusher and maintenance threads (Linux): on a busy machine "
        "acknowledgements and the stream (alerts) get the CPU first, while the data waits in memory and in the "
        "WAL a little longer. 0: the same priority as the rest."
    )


class RuleSettings(_Frozen):
    """A data-quality rule for one field (optionally only in one measurement)."""

    measurement: str | None = Field(None, description="Apply only to this measurement (default: any).")
    min: float | None = None
    max: float | None = None
    unit: str | None = Field(None, description="Canonical unit; values in other units are converted (pint).")
    required_tags: tuple[str, ...] = ()
    allowed_values: tuple[str | float | int | bool, ...] | None = None
    action: Literal["reject", "flag"] = "reject"


class QualitySettings(_Frozen):
    future_tolerance_s: float = Field(300.0, ge=0, description="Reject points more than this far in the future.")
    retention_days: float = Field(0.0, ge=0, description="Reject points older than this (0: keep forever).")
    non_finite: Literal["reject", "flag"] = Field("reject", description="Action for NaN/inf float values.")
    timestamp_action: Literal["reject", "flag"] = Field("reject", description="Action for future/too-old points.")
    dedup: bool = Field(True, description="Keep one point per series and time; count the rest.")
    use_default_rules: bool = Field(True, description="Include the built-in domain rules (temperature, humidity, ...).")
    rules: dict[str, RuleSettings] = Field(default_factory=dict, description="Extra or overriding rules, keyed by field name.")


class SimulatorSettings(_Frozen):
    devices: int = Field(20, ge=1, description="Devices simulated by `sensorium up --simulate`.")
    rate: float = Field(1.0, gt=0, description="Readings per second per device.")
    seed: int = 42
    fault_rate: float = Field(
        0.02, ge=0, le=0.2,
        description="Chance of each fault class per point in `up --simulate` (spikes, stuck, drift, "
        "dropouts, unit mix-ups, out of range, duplicates, late data): enough to see alerts in a minute.",
    )


class StreamSettings(_Frozen):
    enabled: bool = Field(True, description="Run the stream processor (rollups, rolling statistics, rules).")
    lateness_s: float = Field(
        10.0, ge=0, description="Allowed lateness: a series' watermark is its latest event time minus this."
    )
    idle_timeout_s: float = Field(
        60.0, gt=0, description="A series silent this long (processing time) has its watermark advanced by the clock."
    )
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="Stage state, log offset and finished outputs are checkpointed this often."
    )
    batch_max_rows: int = Field(500_000, ge=1, description="Largest micro-batch (rows of the log) per step.")
    close_max_rows: int = Field(
        1_000_000, ge=1, description="Most buffered values one step aggregates for the finest rollup's windows "
        "that close; when more close at once (a minute of 100 k points/s holds ~12 M), the rest close over the "
        "next steps, so rules and alerts never wait for a whole minute's aggregation. Results are unchanged."
    )
    side_lag_rows: int = Field(
        2_000_000, ge=1, description="Most values the side thread's queued work (rollups, quality checks, "
        "compression) may hold while the stream's own thread goes on with the next steps' rules and alerts; "
        "past it a step waits for the oldest (a single step of more values always runs beside the next)."
    )
    side_interval_s: float = Field(
        1.0, ge=0, description="The quality checks and historian compression (outputs no rule reads) run on what "
        "arrived at most this often, and before every tick and checkpoint, instead of on every micro-batch: "
        "their cost per run grows with the number of series, not with the new points (0: every step)."
    )
    parallel_stages: bool = Field(
        True, description="Run the rollups and the built-in quality and compression stages on a second thread, "
        "behind rolling statistics, detection and rules (alerts never wait for a window's close; NumPy and Polars "
        "release the GIL; their outputs are stored in step order, before every checkpoint). Once the process is lean (`SENSORIUM_MALLOC_TUNE=mmap`, or "
        "resident memory past `SENSORIUM_MALLOC_LEAN_MB`; see docs/stream.md) they run one after the other."
    )
    tick_interval_s: float = Field(1.0, gt=0, description="Processing-time tick (idle watermarks, absence rules).")
    rollups: tuple[str, ...] = Field(
        ("1m", "1h", "1d"),
        description="Continuous aggregates of every numeric field, stored as `<measurement>_<interval>`.",
    )
    rollup_percentiles: tuple[float, ...] = Field(
        (50.0, 95.0, 99.0), description="Percentiles kept in rollups (columns p50, p95, ...)."
    )
    rolling_window: int = Field(10, ge=2, description="Points in the rolling per-series statistics (avg_N, std_N, ...).")
    rules_file: Path | None = Field(
        None, description="Alert rules (TOML or YAML). Unset: the built-in example rules."
    )


class DetectorSettings(_Frozen):
    measurement: str = Field("*", description="Measurement name or glob pattern.")
    field: str = Field("*", description="Field name or glob pattern.")
    detector: str = Field(
        "default",
        description="Detector from the registry: default, ewma, holt, robust_z, seasonal, "
        "isolation_forest, hst, ensemble, refractory.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Detector parameters (see docs/detection.md).")


class QualityCheckSettings(_Frozen):
    enabled: bool = Field(
        True, description="Run the stream's `quality` stage: stuck values, spikes, dropouts, drift against peers."
    )
    peer_tags: tuple[str, ...] = Field(
        ("location",),
        description="Tags that make sensors of the same field peers (for drift); a series lacking one has no peers.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Check parameters (see docs/data-quality-detectors.md)."
    )


class CompressionSettings(_Frozen):
    enabled: bool = Field(False, description="Run the stream's `compress` stage: kept points → table `historian`.")
    method: Literal["sdt", "deadband"] = Field("sdt", description="Swinging-door trending or deadband.")
    error: float = Field(0.0, ge=0, description="Error bound for fields not in `errors` (0: those are not compressed).")
    errors: dict[str, float] = Field(
        default_factory=dict, description="Error bound per field name, in the field's unit (e.g. temperature = 0.1)."
    )
    max_gap_s: float = Field(3600.0, ge=0, description="Heartbeat: kept points at most this far apart (0: none).")


class DetectSettings(_Frozen):
    enabled: bool = Field(True, description="Run the stream's `detect` stage (anomaly scores).")
    detectors: tuple[DetectorSettings, ...] = Field(
        (DetectorSettings(),),
        description="Which fields get anomaly scores and from which detector; the first matching entry wins.",
    )
    exclude_measurements: tuple[str, ...] = Field(
        ("*_forecast",),
        description="Measurements (globs) never scored: forecasts written back by `sensorium forecast --store`.",
    )
    quality: QualityCheckSettings = QualityCheckSettings()
    compression: CompressionSettings = CompressionSettings()


class WebhookSinkSettings(_Frozen):
    url: str = Field(description="Receives each alert change as an HTTP POST (JSON, Idempotency-Key header).")
    timeout_s: float = Field(5.0, gt=0, description="Per-attempt timeout.")
    max_attempts: int = Field(8, ge=1, description="Attempts before the delivery becomes a dead letter.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt.")
    backoff_max_s: float = Field(60.0, gt=0, description="Longest retry delay.")


class MqttSinkSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic: str = Field(
        "sensorium/alerts/{rule}/{device_id}",
        description="Topic template; fields of the alert ({rule}, {severity}, {state}, {measurement}, tags...).",
    )
    qos: int = Field(1, ge=0, le=2)
    max_attempts: int = Field(8, ge=1, description="Attempts before the delivery becomes a dead letter.")


class CommandSinkSettings(_Frozen):
    """An alert sink that sends a device command (over MQTT, see `[commands]`) when a rule fires."""

    rule: str = Field("*", description="Rules (name or glob) whose alerts send the command.")
    on: Literal["firing", "resolved"] = Field("firing", description="The alert change that sends it.")
    device_tag: str = Field("device_id", description="The alert's tag naming the device commanded.")
    command: str = Field(description="The command, e.g. `set` or `off`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Command parameters.")
    max_attempts: int = Field(8, ge=1, description="Attempts before the delivery becomes a dead letter.")


class AlertSettings(_Frozen):
    flap_window_s: float = Field(
        300.0, ge=0, description="A rule re-firing this soon after resolving reopens the same alert."
    )
    flap_max_changes: int = Field(
        6, ge=2, description="This many state changes within flap_window_s mark an alert flapping (notifications held)."
    )
    log: bool = Field(True, description="Write every alert change to the log (logger `sensorium.alerts`).")
    webhooks: tuple[WebhookSinkSettings, ...] = ()
    mqtt: MqttSinkSettings | None = None
    commands: tuple[CommandSinkSettings, ...] = Field(
        (), description="Device commands sent when alerts fire (or resolve); see `[[alerts.commands]]`."
    )


class MqttTopicSettings(_Frozen):
    """One subscription of an MQTT source (see docs/mqtt.md)."""

    topic: str = Field(
        description="Topic template: `{name}` levels become tags (`{measurement}` and `{field}` name "
        "the measurement and field instead), `+`/`#` match without a tag; the subscription filter "
        "is derived (`{name}` → `+`).",
    )
    format: Literal["json", "lp", "value"] = Field(
        "json", description="Payload: JSON readings, line protocol, or a bare number."
    )
    measurement: str | None = Field(
        None, description="Measurement (a `{measurement}` level wins); needed for `value` payloads."
    )
    field: str | None = Field(
        None, description="Field name for `value` payloads (a `{field}` level wins; default `value`)."
    )
    qos: int = Field(1, ge=0, le=2, description="Subscription QoS; QoS 1/2 are acknowledged after the WAL append.")
    bucket: str | None = Field(None, description="Bucket (default: `default_bucket`).")
    precision: Literal["ns", "us", "ms", "s"] = Field("ns", description="Timestamp unit of line-protocol payloads.")


class MqttSourceSettings(_Frozen):
    """An MQTT source: one broker connection and its subscriptions (`[[mqtt_sources]]`)."""

    name: str = Field("mqtt", description="Source name: the `source` label of its metrics and dead letters.")
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(
        None, description="MQTT client id (default `sensorium-<name>`); the persistent session is keyed by it."
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version; 5 lets the source raise the broker's in-flight window (receive_maximum)."
    )
    session_expiry_s: int = Field(
        3600, ge=0, description="Persistent session: the broker keeps unacknowledged and new QoS 1 messages "
        "this long while the source is down (0: a clean session each connect).",
    )
    receive_maximum: int = Field(
        10000, ge=1, le=65535, description="MQTT 5: QoS 1/2 messages the broker may have in flight to the source."
    )
    keepalive_s: int = Field(30, ge=5, description="MQTT keep-alive.")
    batch_max_messages: int = Field(1000, ge=1, description="Messages per platform write (one WAL append).")
    batch_max_ms: float = Field(50.0, gt=0, description="... or fewer, once the oldest has waited this long.")
    backoff_initial_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles per failure.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    topics: tuple[MqttTopicSettings, ...] = Field(description="Subscriptions; the first whose template matches a topic wins.")


class CommandSettings(_Frozen):
    """Device commands over MQTT (`POST /api/v1/devices/{id}/commands`, `sensorium command`)."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    topic: str = Field(
        "sensorium/devices/{device_id}/commands", description="Topic template ({device_id}, {command})."
    )
    qos: int = Field(1, ge=0, le=2)
    timeout_s: float = Field(5.0, gt=0, description="Connect + publish acknowledgement timeout.")


class AutomationSettings(_Frozen):
    """Automations (`[automations]`, see docs/automations.md)."""

    enabled: bool = Field(True, description="Evaluate automations in the stream (needs the stream).")
    file: Path | None = Field(
        None, description="Automations file (TOML or YAML, `[[automations]]`), loaded at start; "
        "automations created over the API are kept beside them."
    )


class ClusterSettings(_Frozen):
    """Scale-out on the NATS log: `sensorium ingest`, `sensorium worker`, `sensorium api` (see
    docs/deployment.md)."""

    device_tag: str = Field(
        "device_id", description="Tag whose value picks a series' log partition (so one device stays on one worker)."
    )
    lease_s: float = Field(
        10.0, gt=0, description="A worker that stops heartbeating loses its membership and partitions after this long."
    )
    heartbeat_s: float = Field(2.0, gt=0, description="Workers renew membership and partition leases this often.")
    ack_wait_s: float = Field(
        60.0, gt=0, description="A record delivered to a worker and not acknowledged this long is delivered again."
    )
    fetch_batch: int = Field(256, ge=1, description="Log records a worker fetches per partition at a time.")
    flush_interval_s: float = Field(
        1.0, gt=0, description="A worker stores, checkpoints and acknowledges its partitions' records this often."
    )


class RegistrySettings(_Frozen):
    """The device registry and relationship graph (see docs/registry.md)."""

    url: str | None = Field(
        None,
        description="Database of the registry (SQLAlchemy URL, e.g. `postgresql://host/db`; PostgreSQL "
        "needs `pip install 'sensorium[postgres]'`). Unset: SQLite at `<data_dir>/registry.sqlite`.",
    )
    pg_schema: str = Field(
        "sensorium_registry", description="PostgreSQL schema holding the registry's tables (created when missing)."
    )
    auto_register: bool = Field(
        True, description="Devices that send telemetry and are not in the registry are added as `unregistered`."
    )


class AgentSettings(_Frozen):
    """The natural-language agent (`sensorium ask`, `POST /api/v1/ask`; see docs/agent.md)."""

    timezone: str = Field("UTC", description="Time zone of 'yesterday', 'since Monday 8 am' ... (IANA name).")
    embeddings: bool = Field(
        True, description="Match names by meaning with local sentence embeddings when the `agent` extra is "
        "installed (`pip install 'sensorium[agent]'`); else by spelling only."
    )
    embedding_min_similarity: float = Field(0.6, gt=0, le=1, description="Least cosine similarity of a meaning match.")
    anomaly_score: float = Field(0.6, gt=0, le=1, description="An anomaly is a point with an anomaly score at least this.")
    vocabulary_ttl_s: float = Field(30.0, ge=0, description="How long the names read from the platform are reused.")
    session_ttl_s: float = Field(3600.0, gt=0, description="Follow-ups refer to a session's last question this long.")
    max_sessions: int = Field(10_000, ge=1, description="Sessions remembered (least recently used dropped).")
    llm_url: str | None = Field(
        None, description="An OpenAI-compatible chat-completions endpoint (e.g. `http://127.0.0.1:8080/v1`); "
        "unset: the embedded parser only."
    )
    llm_model: str = Field("local", description="Model name sent to the LLM endpoint.")
    llm_api_key: SecretStr | None = Field(None, description="Bearer key for the LLM endpoint.")
    llm_timeout_s: float = Field(20.0, gt=0, description="Per-request timeout; on timeout or error the embedded parser answers.")
    llm_max_steps: int = Field(4, ge=1, le=16, description="Tool-call rounds per question.")


class AuthSettings(_Frozen):
    """Users, API tokens, sessions and per-location access (`[auth]`, see docs/security.md)."""

    enabled: bool | None = Field(
        None,
        description="Require a token (or a login) on every HTTP endpoint but /health, /ping, "
        "/api/v1/login and the dashboard's page and assets. Unset: on when `host` is not a loopback "
        "address or `auth_token` is set; off on loopback (the two-command quick start).",
    )
    session_ttl_s: float = Field(43200.0, gt=0, description="Lifetime of a session token from `POST /api/v1/login`.")
    token_cache_s: float = Field(
        5.0, ge=0, description="A verified token is trusted this long before it is checked again "
        "(a revocation or role change made by another process takes effect within it)."
    )
    token_use_audit_s: float = Field(
        60.0, ge=0, description="A token's use is written to the audit log at most once per this many seconds."
    )
    login_max_failures: int = Field(
        5, ge=1, le=10_000, description="Failed password checks for one user name within `login_window_s` "
        "after which further attempts for it are refused (429) until the oldest failure leaves the window "
        "(per process: each api node counts its own)."
    )
    login_window_s: float = Field(300.0, gt=0, description="The window of `login_max_failures`.")
    password_min_length: int = Field(8, ge=1, le=1024, description="Shortest password accepted.")
    argon2_time_cost: int = Field(3, ge=1, le=100, description="Argon2id passes (password hashing).")
    argon2_memory_kib: int = Field(65536, ge=8, le=4 * 1024 * 1024, description="Argon2id memory, KiB.")
    argon2_parallelism: int = Field(4, ge=1, le=64, description="Argon2id lanes.")


class PiiSettings(_Frozen):
    """Encryption of personal data at rest (`[pii]`, see docs/security.md)."""

    key_file: Path | None = Field(
        None,
        description="File of Fernet keys, one per line, the first the current one (`sensorium pii "
        "keygen` prints a key). The environment variable `SENSORIUM_PII_KEYS` (comma-separated, first "
        "= current) wins over it. User names, e-mails and the `pii` part of documents are encrypted "
        "with it; without a key, storing personal data is refused.",
    )


class Settings(BaseSettings):
    """The effective configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SENSORIUM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where the WAL, the lake and metadata live.")
    host: str = Field(DEFAULT_HOST, description="HTTP listen address.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="HTTP listen port.")
    auth_token: SecretStr | None = Field(
        None, description="An admin token: `Authorization: Token <auth_token>` (setting it turns "
        "`[auth]` on unless `auth.enabled = false`; users and their tokens: docs/security.md)."
    )
    default_bucket: str = Field("default", description="Bucket used when a request names none.")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 past it).")
    max_decompressed_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Largest gzip-inflated body.")
    max_reported_errors: int = Field(100, ge=1, description="Cap on rejected lines listed in one response.")
    parse_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Processes that parse and validate large write bodies beside the server "
        "process, so ingest uses every core. Unset: one per CPU when there are 2 or more; "
        "0: all in the server process.",
    )
    switch_interval_ms: float = Field(
        1.0, gt=0, le=100,
        description="The thread switch interval (Python's `sys.setswitchinterval`) of the processes `sensorium "
        "up`, `ingest`, `api` and `worker` run in. A thread back from native code (NumPy, Polars, Arrow, SQLite) "
        "waits up to this long for the interpreter while another thread runs Python: the stream makes many short "
        "native calls per step beside the HTTP threads, and at Python's default (5 ms) those waits add up under "
        "load (docs/benchmarks.md, stream, session 17).",
    )
    query_timeout_s: float = Field(30.0, gt=0, description="Queries running longer are interrupted.")
    query_max_rows: int = Field(1_000_000, ge=1, description="Largest result a query may return.")
    cache: Literal["memory", "redis"] = Field(
        "memory",
        description="Latest-value cache (`/api/v1/latest`): in process memory, or in Redis "
        "(shared by processes, needs `pip install 'sensorium[redis]'`; see docs/cache.md).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for cache = \"redis\".")
    cache_ttl_s: float = Field(
        86400.0, gt=0, description="A series not updated this long drops out of the latest-value cache."
    )
    cache_instance: str | None = Field(
        None,
        description="Redis key namespace (`sensorium:<cache_instance>:...`) so instances can share "
        "a Redis. Unset: derived from data_dir.",
    )
    log_backend: Literal["wal", "nats"] = Field(
        "wal",
        description="The durable log: the embedded write-ahead log (`wal`, files under data_dir) "
        "or a NATS JetStream stream (`nats`, needs `pip install 'sensorium[nats]'`; see docs/nats.md).",
    )
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server for log_backend = \"nats\".")
    nats_stream: str = Field(
        "sensorium", description="JetStream stream of the log (subjects `<nats_stream>.log.<partition>`)."
    )
    nats_partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="Partitions (subjects) of the log stream; records go by device (`cluster.device_tag`), "
        "so each device's series are processed by one worker.",
    )
    nats_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Replicas of the log stream (and the workers' key-value bucket) when they are "
        "created: 3 on a NATS cluster, so an acknowledged record survives the loss of a server.",
    )
    store_backend: Literal["delta", "postgres"] = Field(
        "delta",
        description="Where flushed data is stored: the embedded Delta lake (`delta`, under data_dir) "
        "or PostgreSQL (`postgres`, at `postgres_dsn`; needs `pip install 'sensorium[postgres]'`; "
        "queries load each measurement they name into DuckDB; see docs/postgres.md). The WAL, "
        "schema registry and dead letters stay under data_dir either way.",
    )
    postgres_dsn: str = Field(
        "postgresql://127.0.0.1:5432/test", description="PostgreSQL for store_backend = \"postgres\"."
    )
    wal: WALSettings = WALSettings()
    store: StoreSettings = StoreSettings()
    quality: QualitySettings = QualitySettings()
    simulator: SimulatorSettings = SimulatorSettings()
    stream: StreamSettings = StreamSettings()
    alerts: AlertSettings = AlertSettings()
    detect: DetectSettings = DetectSettings()
    mqtt_sources: tuple[MqttSourceSettings, ...] = Field(
        (), description="MQTT sources (`[[mqtt_sources]]`, see docs/mqtt.md), started by `sensorium up`."
    )
    commands: CommandSettings = CommandSettings()
    cluster: ClusterSettings = ClusterSettings()
    registry: RegistrySettings = RegistrySettings()
    automations: AutomationSettings = AutomationSettings()
    auth: AuthSettings = AuthSettings()
    pii: PiiSettings = PiiSettings()
    agent: AgentSettings = AgentSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("SENSORIUM_CONFIG") or (
            str(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.exists() else None
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The configuration as plain data, secrets shown as ``**********``."""
        data = self.model_dump(mode="json")
        if self.auth_token is not None:
            data["auth_token"] = "**********"
        return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, the TOML file (``--config``, ``SENSORIUM_CONFIG`` or ``./sensorium.toml``),
    the environment, then ``overrides`` (highest). Raises :class:`ConfigError` with the reason."""
    from pydantic import ValidationError

    from sensorium.errors import ConfigError

    if config_file is not None and not Path(config_file).exists():
        raise ConfigError(f"config file not found: {config_file}")
    old = os.environ.get("SENSORIUM_CONFIG")
    try:
        if config_file is not None:
            os.environ["SENSORIUM_CONFIG"] = str(config_file)
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {errs}") from None
    except Exception as exc:  # tomllib.TOMLDecodeError and friends
        raise ConfigError(f"cannot read configuration: {exc}") from None
    finally:
        if config_file is not None:
            if old is None:
                os.environ.pop("SENSORIUM_CONFIG", None)
            else:
                os.environ["SENSORIUM_CONFIG"] = old
