"""The MQTT source: subscribe to a broker, store what devices publish, acknowledge after the log.

One :class:`MqttSource` is one broker connection (aiomqtt, in its own thread and event loop) with
one or more subscriptions. Each subscription has a *topic template*::

    home/{location}/{device_id}/{sensor_type}      → subscribes to home/+/+/+

``{name}`` levels become tags of every point in the message (``{measurement}`` and ``{field}``
name the measurement and field instead); ``+`` and a final ``#`` match without a tag. The topic
wins over a tag of the same name inside the payload: it is what the broker's ACL authorises.

Payloads (``format``): ``json`` — JSON readings (an object, an array, or NDJSON; the mapping of
docs/formats.md, with ``device_id`` taken from the topic when the template has it); ``lp`` — line
protocol; ``value`` — a bare number (measurement and field from the template or the settings).
A reading or line without a timestamp gets the time the message arrived.

**Acknowledgement.** Messages are taken in batches (``batch_max_messages``, or fewer after
``batch_max_ms``), written with one :meth:`Sensorium.write_parsed` per (bucket, format) — one WAL
append and fsync — and only then acknowledged (manual PUBACK, in arrival order). A bad payload is
a dead letter (written in the same append) and is acknowledged too: nothing is dropped silently.
If the write fails or the connection drops, nothing of the batch is acknowledged; the source
reconnects with exponential backoff and the broker redelivers the unacknowledged messages
(persistent session: ``session_expiry_s`` > 0 and a fixed client id). Delivery is at least once;
a redelivered point has the same series and time and is stored once (deduplication).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.config import MqttSourceSettings, MqttTopicSettings
from sensorium.errors import ConfigError
from sensorium.ingest.jsonreadings import _add
from sensorium.ingest.lineprotocol import _Acc, _assemble, parse_lines
from sensorium.schema import LINE, RESERVED, TIME, TIME_TYPE, ParseResult, Reject, is_tag

if TYPE_CHECKING:
    from sensorium.platform import Sensorium

log = logging.getLogger("sensorium.mqtt")

#: template names that are not tags
SPECIAL = frozenset({"measurement", "field"})


class TopicTemplate:
    """A topic template: the subscription filter it stands for, and the tags of a topic."""

    def __init__(self, template: str) -> None:
        self.template = template
        levels = template.split("/")
        if not template or any(c in template for c in "\x00"):
            raise ConfigError(f"invalid MQTT topic template {template!r}")
        self.names: list[tuple[int, str]] = []
        self.literals: list[tuple[int, str]] = []
        self.multi = False
        filt: list[str] = []
        for i, lv in enumerate(levels):
            if lv == "#":
                if i != len(levels) - 1:
                    raise ConfigError(f"MQTT topic template {template!r}: '#' must be the last level")
                self.multi = True
                filt.append("#")
            elif lv == "+":
                filt.append("+")
            elif lv.startswith("{") and lv.endswith("}"):
                name = lv[1:-1]
                if not name.isidentifier() or name in RESERVED:
                    raise ConfigError(
                        f"MQTT topic template {template!r}: {{{name}}} is not a usable tag name"
                    )
                if name in (n for _, n in self.names):
                    raise ConfigError(f"MQTT topic template {template!r}: {{{name}}} appears twice")
                self.names.append((i, name))
                filt.append("+")
            elif any(c in lv for c in "{}+#"):
                raise ConfigError(
                    f"MQTT topic template {template!r}: level {lv!r} mixes text and wildcards; "
                    "a level is text, {name}, + or #"
                )
            else:
                self.literals.append((i, lv))
                filt.append(lv)
        self.levels = len(levels)
        self.filter = "/".join(filt)

    def match(self, topic: str) -> dict[str, str] | None:
        """The template's values in ``topic`` (empty levels left out), or None if it does not match."""
        parts = topic.split("/")
        if self.multi:
            if len(parts) < self.levels - 1:
                return None
        elif len(parts) != self.levels:
            return None
        for i, lit in self.literals:
            if parts[i] != lit:
                return None
        return {name: parts[i] for i, name in self.names if parts[i]}


def _esc_meas(s: str) -> bytes:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").encode()


def _esc_key(s: str) -> bytes:
    return (
        s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ").encode()
    )


@dataclass(slots=True)
class _Route:
    """What a topic resolves to: its subscription, tags, and (value payloads) the line prefix."""

    sub: MqttTopicSettings
    bucket: str
    tags: dict[str, str]
    measurement: str | None
    field: str | None
    prefix: bytes = b""


@dataclass
class _Group:
    """Messages of one batch that become one write: (bucket, json | lp, precision)."""

    kind: str
    sentinel: int
    # per message: first line, tags, arrival (monotonic s), topic
    starts: list[int] = field(default_factory=list)
    tags: list[dict[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    next_line: int = 1
    # lp
    chunks: list[bytes] = field(default_factory=list)
    own_rejects: list[Reject] = field(default_factory=list)
    # json
    items: list[tuple[int, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    json_rejects: dict[int, str] = field(default_factory=dict)

    def _begin(self, route: _Route, arrival: float, topic: str) -> None:
        self.starts.append(self.next_line)
        self.tags.append(route.tags)
        self.arrivals.append(arrival)
        self.topics.append(topic)

    def add_lp(self, payload: bytes, route: _Route, arrival: float, topic: str) -> None:
        self._begin(route, arrival, topic)
        self.chunks.append(payload)
        self.next_line += payload.count(b"\n") + 1

    def add_value(self, payload: bytes, route: _Route, arrival: float, topic: str) -> None:
        self._begin(route, arrival, topic)
        try:
            v = float(payload)
        except ValueError:
            v = math.nan
            why = "payload is not a number"
        else:
            why = "payload is not a finite number"
        if math.isfinite(v):
            self.chunks.append(route.prefix + repr(v).encode())
        else:
            self.chunks.append(b"")  # a blank line: the reject takes its place
            raw = payload.decode("utf-8", "replace")
            self.own_rejects.append(
                Reject(self.next_line, f"{why} (topic {topic})", raw, route.measurement, "parse")
            )
        self.next_line += 1

    def add_json(self, payload: bytes, route: _Route, arrival: float, topic: str) -> None:
        self._begin(route, arrival, topic)
        text = payload.decode("utf-8", "replace")
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            lines = [ln for ln in payload.split(b"\n") if ln.strip()]
            if len(lines) < 2:  # not NDJSON either
                self._json_reject(f"invalid JSON: {e.msg} at column {e.colno} (topic {topic})", text)
                return
            for ln in lines:  # NDJSON: each line on its own
                lt = ln.decode("utf-8", "replace")
                try:
                    self._json_reading(orjson.loads(ln), route, lt)
                except orjson.JSONDecodeError as e2:
                    self._json_reject(f"invalid JSON: {e2.msg} at column {e2.colno} (topic {topic})", lt)
            return
        if type(obj) is list:
            for one in obj:
                self._json_reading(one, route, orjson.dumps(one).decode())
            if not obj:
                self._json_reject(f"empty JSON array (topic {topic})", text)
        else:
            self._json_reading(obj, route, text)

    def _json_reject(self, why: str, raw: str) -> None:
        self.json_rejects[self.next_line] = why
        self.raw.append(raw)
        self.next_line += 1

    def _json_reading(self, obj: Any, route: _Route, raw: str) -> None:
        if type(obj) is dict:
            dev = route.tags.get("device_id")
            if dev is not None:
                obj["device_id"] = dev
            if route.measurement is not None:
                obj["sensor_type"] = route.measurement
            if route.field is not None:
                obj["measurement_type"] = route.field
        self.items.append((self.next_line, obj))
        self.raw.append(raw)
        self.next_line += 1

    # -- the write --------------------------------------------------------------------------
    def parse(self, precision: str, known: Any) -> ParseResult:
        if self.kind == "json":
            acc = _Acc(1, self.sentinel)
            acc.rejects.update(self.json_rejects)
            _add(acc, self.items)
            parsed = _assemble(acc, self.raw, known)
        else:
            parsed = parse_lines(
                b"\n".join(self.chunks), precision=precision, now_ns=self.sentinel, known=known
            )
            parsed.lines_total += len(self.own_rejects)
            parsed.rejects.extend(self.own_rejects)
        return parsed

    def finish(self, parsed: ParseResult, now_ns: int, mono_now: float) -> ParseResult:
        """Arrival times for points without a timestamp; the topic's tags; topics in reasons."""
        starts = np.asarray(self.starts, dtype=np.int64)
        arrival_ns = now_ns - ((mono_now - np.asarray(self.arrivals)) * 1e9).astype(np.int64)
        names = sorted({k for t in self.tags for k in t if k not in SPECIAL})
        values = {n: pa.array([t.get(n) for t in self.tags], pa.string()) for n in names}
        extra: list[Reject] = []
        for m, table in list(parsed.batches.items()):
            lines = table[LINE].to_numpy(zero_copy_only=False).astype(np.int64)
            msg = np.searchsorted(starts, lines, side="right") - 1
            t = table[TIME].cast(pa.int64()).to_numpy(zero_copy_only=False)
            unset = t == self.sentinel
            if unset.any():
                t = np.where(unset, arrival_ns[msg], t)
                table = table.set_column(
                    table.schema.get_field_index(TIME), TIME, pa.array(t).cast(TIME_TYPE)
                )
            idx = pa.array(msg)
            for n in names:
                new = values[n].take(idx)
                if n in table.column_names and not is_tag(table.schema.field(n).type):
                    bad = pc.is_valid(new).to_numpy(zero_copy_only=False)
                    for i in np.flatnonzero(bad).tolist():
                        ln = int(lines[i])
                        extra.append(Reject(
                            ln, f"field '{n}' has the name of a tag of the topic "
                            f"{self.topics[int(msg[i])]}", parsed.raw(ln), m, "type_conflict",
                        ))
                    table = table.filter(pa.array(~bad))
                    idx = pa.array(msg[~bad])
                    lines, msg = lines[~bad], msg[~bad]
                    continue
                if n in table.column_names:
                    old = table[n].cast(pa.string())
                    new = pc.if_else(pc.is_valid(new), new, old)
                    table = table.drop_columns([n])
                table = table.append_column(n, pc.dictionary_encode(new).combine_chunks()
                                            if isinstance(new, pa.ChunkedArray) else pc.dictionary_encode(new))
            parsed.batches[m] = _order(table) if table.num_rows else table
            if not table.num_rows:
                del parsed.batches[m]
        if parsed.rejects:  # name the topic (rare: only for bad input)
            out = []
            for r in parsed.rejects:
                if "(topic " in r.reason:
                    out.append(r)
                    continue
                i = int(np.searchsorted(starts, r.line, side="right") - 1)
                topic = self.topics[i] if 0 <= i < len(self.topics) else "?"
                out.append(Reject(r.line, f"{r.reason} (topic {topic})", r.raw, r.measurement, r.rule))
            parsed.rejects = out
        parsed.rejects.extend(extra)
        return parsed


def _order(table: pa.Table) -> pa.Table:
    """``time``, the tags (sorted), then the rest, as the parsers produce them."""
    tags = sorted(f.name for f in table.schema if is_tag(f.type))
    rest = [c for c in table.column_names if c != TIME and c not in tags]
    return table.select([TIME, *tags, *rest])


class MqttSource:
    """Subscribes per ``settings`` and writes into ``platform``; :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        platform: Sensorium,
        settings: MqttSourceSettings,
        *,
        before_write: Callable[[list[Any]], None] | None = None,
    ) -> None:
        """``before_write``: called with each batch before it is written (tests inject faults)."""
        try:
            import aiomqtt  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigError("the MQTT source needs aiomqtt: pip install aiomqtt") from None
        if not settings.topics:
            raise ConfigError(f"MQTT source {settings.name!r} has no topics")
        self.platform = platform
        self.settings = settings
        self.name = settings.name
        # one broker session per source and node (several ingest nodes must not share a client id)
        node = getattr(platform, "node_id", None) if getattr(platform, "role", "all") == "ingest" else None
        self.client_id = settings.client_id or f"sensorium-{settings.name}" + (f"-{node}" if node else "")
        self.subs: list[tuple[MqttTopicSettings, TopicTemplate]] = []
        for sub in settings.topics:
            tpl = TopicTemplate(sub.topic)
            names = {n for _, n in tpl.names}
            if sub.format == "value" and sub.measurement is None and "measurement" not in names:
                raise ConfigError(
                    f"MQTT topic {sub.topic!r}: value payloads need a measurement: set measurement "
                    "or put {measurement} in the template"
                )
            if sub.format == "lp" and names & SPECIAL:
                raise ConfigError(
                    f"MQTT topic {sub.topic!r}: line protocol names its own measurement and fields"
                )
            self.subs.append((sub, tpl))
        self._before_write = before_write
        self._routes: dict[str, _Route | None] = {}
        self._pending: list[Any] = []
        self._first_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_evt: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"mqtt-{self.name}")
        self.connected = threading.Event()
        self.last_error: str | None = None
        m = platform.metrics
        self._m_messages = m.mqtt_messages.labels(self.name)
        self._m_points = m.mqtt_points.labels(self.name)
        self._m_rejects = m.mqtt_rejects.labels(self.name)
        self._m_reconnects = m.mqtt_reconnects.labels(self.name)
        self._m_connected = m.mqtt_connected.labels(self.name)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop_evt = asyncio.Event()
            self._wake = asyncio.Event()
            ready.set()
            try:
                loop.run_until_complete(self._run())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"sensorium-mqtt-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Write and acknowledge what was received, disconnect, end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._thread = None
        stop_evt = self._stop_evt
        assert stop_evt is not None
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop_evt.set)
        thread.join(timeout)
        self._executor.shutdown(wait=True)
        self._m_connected.set(0)

    # -- the loop thread ------------------------------------------------------------------------
    async def _run(self) -> None:
        import aiomqtt

        assert self._stop_evt is not None
        delay = self.settings.backoff_initial_s
        while not self._stop_evt.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except (aiomqtt.MqttError, OSError, _WriteFailed) as exc:
                self.last_error = str(exc) or type(exc).__name__
                self._m_reconnects.inc()
                log.warning("MQTT source %s: %s; reconnecting in %.1fs", self.name, self.last_error, delay)
            finally:
                self.connected.clear()
                self._m_connected.set(0)
                self._pending.clear()  # unacknowledged: the broker sends them again
            if self._stop_evt.is_set():
                break
            if time.monotonic() - started > 2 * self.settings.backoff_max_s:
                delay = self.settings.backoff_initial_s  # it had been up a while
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_evt.wait(), delay)
            delay = min(delay * 2, self.settings.backoff_max_s)

    def _client(self) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        st = self.settings
        persistent = st.session_expiry_s > 0
        kw: dict[str, Any] = {}
        if st.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.ReceiveMaximum = st.receive_maximum
            if persistent:
                props.SessionExpiryInterval = st.session_expiry_s
            kw.update(protocol=aiomqtt.ProtocolVersion.V5, properties=props, clean_start=not persistent)
        else:
            kw.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=not persistent)
        client = aiomqtt.Client(
            st.host, st.port, identifier=self.client_id, keepalive=st.keepalive_s,
            username=st.username,
            password=st.password.get_secret_value() if st.password is not None else None,
            timeout=10, **kw,
        )
        paho = client._client
        paho.manual_ack_set(True)  # PUBACK only after the WAL append (self._ack)
        paho.on_message = self._on_message  # raw paho messages: no per-message wrapping
        return client

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # on the loop thread (aiomqtt reads the socket there)
        pending = self._pending
        pending.append(msg)
        assert self._wake is not None
        if len(pending) == 1:
            self._first_at = time.monotonic()
            self._wake.set()
        elif len(pending) >= self.settings.batch_max_messages:
            self._wake.set()

    async def _session(self) -> None:
        import aiomqtt

        assert self._stop_evt is not None and self._wake is not None
        client = self._client()
        paho = client._client
        async with client:
            for sub, tpl in self.subs:
                await client.subscribe(tpl.filter, qos=sub.qos)
            self.connected.set()
            self._m_connected.set(1)
            log.info("MQTT source %s: connected to %s:%s", self.name, self.settings.host, self.settings.port)
            disconnected: asyncio.Future[Any] = client._disconnected
            stop_task = asyncio.ensure_future(self._stop_evt.wait())
            loop = asyncio.get_running_loop()
            try:
                while True:
                    await self._due(stop_task, disconnected)
                    if disconnected.done():
                        raise aiomqtt.MqttError("connection lost") from _exc(disconnected)
                    final = stop_task.done()
                    while self._pending:  # after a stop: all that was received, in batches
                        n = min(len(self._pending), self.settings.batch_max_messages)
                        batch = self._pending[:n]
                        del self._pending[:n]
                        self._first_at = time.monotonic()
                        await loop.run_in_executor(self._executor, self._write, batch)
                        for msg in batch:  # in arrival order, as MQTT requires
                            if msg.qos:
                                paho.ack(msg.mid, msg.qos)
                        self._m_messages.inc(len(batch))
                        if not final:
                            break
                    if final:
                        return
            finally:
                stop_task.cancel()
                if disconnected.done() and not disconnected.cancelled():
                    disconnected.exception()  # retrieved: not logged as never retrieved

    async def _due(self, stop_task: asyncio.Future[Any], disconnected: asyncio.Future[Any]) -> None:
        """Wait until a batch is due (full, or its oldest message old enough), a stop, or a
        disconnect."""
        assert self._wake is not None
        limit = self.settings.batch_max_messages
        while not (stop_task.done() or disconnected.done()):
            n = len(self._pending)
            if n >= limit:
                return
            timeout = None
            if n:
                timeout = self._first_at + self.settings.batch_max_ms / 1000 - time.monotonic()
                if timeout <= 0:
                    return
            self._wake.clear()
            wake = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait(
                (wake, stop_task, disconnected), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()

    # -- the writer thread -----------------------------------------------------------------------
    def _route(self, topic: str) -> _Route | None:
        route = self._routes.get(topic, False)
        if route is not False:
            return route  # type: ignore[return-value]
        found = None
        for sub, tpl in self.subs:
            vals = tpl.match(topic)
            if vals is None:
                continue
            meas = vals.get("measurement", sub.measurement)
            fld = vals.get("field", sub.field)
            found = _Route(sub, sub.bucket or self.platform.settings.default_bucket, vals, meas, fld)
            if sub.format == "value":
                assert meas is not None
                found.prefix = _esc_meas(meas) + b" " + _esc_key(fld or "value") + b"="
            break
        if len(self._routes) > 100_000:
            self._routes.clear()
        self._routes[topic] = found
        return found

    def _write(self, batch: list[Any]) -> None:
        try:
            if self._before_write is not None:
                self._before_write(batch)
            p = self.platform
            now = p.clock()
            mono = time.monotonic()
            sentinel = now  # "no timestamp": replaced by each message's arrival time
            groups: dict[tuple[str, str, str], _Group] = {}
            unrouted: list[tuple[str, bytes]] = []
            for msg in batch:
                topic = msg.topic
                route = self._route(topic)
                if route is None:
                    unrouted.append((topic, msg.payload))
                    continue
                sub = route.sub
                kind = "json" if sub.format == "json" else "lp"
                key = (route.bucket, kind, sub.precision if kind == "lp" else "ns")
                g = groups.get(key)
                if g is None:
                    g = groups[key] = _Group(kind, sentinel)
                if sub.format == "json":
                    g.add_json(msg.payload, route, msg.timestamp, topic)
                elif sub.format == "lp":
                    g.add_lp(msg.payload, route, msg.timestamp, topic)
                else:
                    g.add_value(msg.payload, route, msg.timestamp, topic)
            if unrouted:  # a broker sent what no template matches: kept, with the reason
                g = groups.setdefault((p.settings.default_bucket, "lp", "ns"), _Group("lp", sentinel))
                for topic, payload in unrouted:
                    g.starts.append(g.next_line)
                    g.tags.append({})
                    g.arrivals.append(mono)
                    g.topics.append(topic)
                    g.chunks.append(b"")
                    g.own_rejects.append(Reject(
                        g.next_line, f"topic {topic} matches no configured template",
                        payload.decode("utf-8", "replace"), None, "parse",
                    ))
                    g.next_line += 1
            for (bucket, kind, precision), g in groups.items():
                known = _known(p, bucket)
                parsed = g.finish(g.parse(precision, known), now, mono)
                res = p.write_parsed(parsed, bucket=bucket, source=f"mqtt:{self.name} {kind}/{precision}")
                self._m_points.inc(res.accepted_rows)
                self._m_rejects.inc(res.rejected)
        except Exception as exc:
            log.exception("MQTT source %s: write failed; the batch stays unacknowledged", self.name)
            raise _WriteFailed(f"write failed: {exc}") from exc


class _WriteFailed(Exception):
    """The platform did not store a batch: reconnect, let the broker redeliver it."""


def _known(platform: Sensorium, bucket: str) -> Callable[[str], Mapping[str, str]]:
    def known(measurement: str) -> Mapping[str, str]:
        return platform.registry.columns(bucket, measurement)

    return known


def _exc(fut: asyncio.Future[Any]) -> BaseException | None:
    if fut.cancelled():
        return None
    return fut.exception()


def start_sources(platform: Sensorium) -> list[MqttSource]:
    """Start every configured ``[[mqtt_sources]]`` (``sensorium up``); stop them before
    ``platform.close()``."""
    sources = [MqttSource(platform, s) for s in platform.settings.mqtt_sources]
    for s in sources:
        s.start()
    return sources


__all__ = ["MqttSource", "TopicTemplate", "start_sources"]
