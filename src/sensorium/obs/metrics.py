"""Prometheus metrics, one registry per running platform (so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LAT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.points_accepted = Counter(
            "sensorium_points_accepted_total", "Points (rows) accepted and durable", ["bucket"], registry=r
        )
        self.values_accepted = Counter(
            "sensorium_values_accepted_total", "Field values accepted and durable", ["bucket"], registry=r
        )
        self.points_rejected = Counter(
            "sensorium_points_rejected_total", "Lines or rows rejected, by rule", ["bucket", "rule"], registry=r
        )
        self.duplicates = Counter(
            "sensorium_duplicates_total", "Duplicate points dropped (same series and time)", registry=r
        )
        self.requests = Counter(
            "sensorium_http_requests_total", "HTTP requests", ["route", "status"], registry=r
        )
        self.wal_bytes = Counter("sensorium_wal_bytes_total", "Bytes appended to the WAL", registry=r)
        self.wal_fsync = Histogram(
            "sensorium_wal_fsync_seconds", "Time spent in fsync of the WAL", buckets=_LAT, registry=r
        )
        self.flush_seconds = Histogram(
            "sensorium_flush_seconds", "Hot buffer → Delta Lake flush latency", buckets=_LAT, registry=r
        )
        self.flush_rows = Counter("sensorium_flush_rows_total", "Rows flushed to the lake", registry=r)
        self.query_seconds = Histogram(
            "sensorium_query_seconds", "SQL query latency", buckets=_LAT, registry=r
        )
        self.write_seconds = Histogram(
            "sensorium_write_seconds", "Write request latency (parse → durable)", buckets=_LAT, registry=r
        )
        self.hot_rows = Gauge("sensorium_hot_rows", "Rows in the hot buffer (not yet in the lake)", registry=r)
        self.wal_segments = Gauge("sensorium_wal_segments", "WAL segment files on disk", registry=r)
        self.flush_errors = Counter(
            "sensorium_background_errors_total", "Failed flushes or compactions (retried)", registry=r
        )
        self.compactions = Counter(
            "sensorium_compactions_total", "Partitions compacted", registry=r
        )

        self.alerts = Counter(
            "sensorium_alert_transitions_total", "Alert changes stored, by rule and state", ["rule", "state"], registry=r
        )
        self.stream_step_seconds = Histogram(
            "sensorium_stream_step_seconds", "Stream micro-batch latency, by stage", ["step_id"], buckets=_LAT, registry=r
        )
        self.stream_backlog = Gauge("sensorium_stream_backlog_rows", "Log rows waiting for the stream", registry=r)
        self.stream_late = Counter("sensorium_stream_late_total", "Values later than the allowed lateness", registry=r)

        # MQTT sources (ingest/mqtt.py), by source name
        self.mqtt_messages = Counter("sensorium_mqtt_messages_total", "MQTT messages received and stored (acknowledged)", ["source"], registry=r)
        self.mqtt_points = Counter("sensorium_mqtt_points_total", "Points accepted from MQTT messages", ["source"], registry=r)
        self.mqtt_rejects = Counter("sensorium_mqtt_rejects_total", "Readings or lines of MQTT messages sent to dead letters", ["source"], registry=r)
        self.mqtt_reconnects = Counter("sensorium_mqtt_reconnects_total", "Lost or failed MQTT connections (then retried with backoff)", ["source"], registry=r)
        self.mqtt_connected = Gauge("sensorium_mqtt_connected", "1 while the MQTT source is connected and subscribed", ["source"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
