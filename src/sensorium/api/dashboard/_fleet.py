"""Devices, the location → room → device tree and the overview numbers, for the dashboard.

There is no device registry yet (issue #6): a device is what the telemetry says it is. Its id,
location, room and kind are the ``device_id``, ``location`` (or ``location_id``), ``room`` (or
``room_id``) and ``sensor_type`` tags of its series, read from the last-value cache — one entry
per series, never a scan of the data. A device is *online* while its newest point is at most
``offline_after`` old (platform clock).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sensorium.errors import BadRequest
from sensorium.platform import Sensorium
from sensorium.query.downsample import parse_time

LOCATION_TAGS = ("location", "location_id")
ROOM_TAGS = ("room", "room_id")
KIND_TAGS = ("sensor_type", "kind")
#: Default age past which a device counts as offline.
DEFAULT_OFFLINE_AFTER = "5m"
NO_LOCATION, NO_ROOM = "(no location)", "(no room)"


def _first(tags: dict[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        if tags.get(n):
            return tags[n]
    return None


def _ns(t: Any, now: int) -> int:
    return t if isinstance(t, int) else parse_time(str(t), now)


def devices(
    platform: Sensorium, bucket: str, now_ns: int, offline_after_ns: int, device_id: str | None = None,
) -> list[dict[str, Any]]:
    """One entry per ``device_id`` (or just ``device_id``'s): tags, measurements, newest time,
    status and last values (the newest value of each field over its series), sorted by id."""
    out: dict[str, dict[str, Any]] = {}
    field_time: dict[tuple[str, str], int] = {}
    try:
        series = platform.latest(bucket, device_id=device_id) if device_id else platform.latest(bucket)
    except BadRequest:  # no measurement has a device_id tag
        return []
    for s in series:  # one entry per series (the last-value cache)
        tags = s.get("tags") or {}
        dev = tags.get("device_id")
        if not dev:
            continue
        t = _ns(s["time"], now_ns)
        d = out.get(dev)
        if d is None:
            d = out[dev] = {"device_id": dev, "location": None, "room": None, "sensor_type": None,
                            "measurements": [], "last_seen_ns": t, "fields": {}}
        d["location"] = d["location"] or _first(tags, LOCATION_TAGS)
        d["room"] = d["room"] or _first(tags, ROOM_TAGS)
        d["sensor_type"] = d["sensor_type"] or _first(tags, KIND_TAGS)
        if s["measurement"] not in d["measurements"]:
            d["measurements"].append(s["measurement"])
        d["last_seen_ns"] = max(d["last_seen_ns"], t)
        for name, value in (s.get("fields") or {}).items():
            if field_time.get((dev, name), -1) <= t:
                field_time[(dev, name)] = t
                d["fields"][name] = value
    rows = sorted(out.values(), key=lambda d: d["device_id"])
    for d in rows:
        age = now_ns - d["last_seen_ns"]
        d["status"] = "online" if age <= offline_after_ns else "offline"
        d["last_seen"] = d.pop("last_seen_ns") / 1e9
        d["fields"] = dict(sorted(d["fields"].items()))
    return rows


def search(rows: list[dict[str, Any]], q: str | None, status: str | None) -> list[dict[str, Any]]:
    """Devices whose id, location, room or kind contains ``q`` (any case), of ``status``."""
    needle = (q or "").strip().lower()
    out = []
    for d in rows:
        if status and d["status"] != status:
            continue
        if needle:
            hay = " ".join(str(d.get(k) or "") for k in ("device_id", "location", "room", "sensor_type"))
            if needle not in hay.lower():
                continue
        out.append(d)
    return out


#: the registry's devices as the dashboard reads them (through the caller's scoped views)
REGISTERED_SQL = "SELECT device_id, name, type, room, room_name, location, location_name FROM devices"


def merge_registry(rows: list[dict[str, Any]], registered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Telemetry devices placed by the registry where it knows them (its location and room
    names win over tags), plus registered devices that never sent data (status ``no data``)."""
    reg = {r["device_id"]: r for r in registered if r.get("device_id")}
    out = []
    for d in rows:
        r = reg.pop(d["device_id"], None)
        if r is not None:
            d = {**d, "name": r.get("name"), "registered": True,
                 "location": r.get("location_name") or r.get("location") or d.get("location"),
                 "room": r.get("room_name") or r.get("room") or d.get("room"),
                 "sensor_type": d.get("sensor_type") or r.get("type")}
        out.append(d)
    for dev, r in sorted(reg.items()):
        out.append({"device_id": dev, "name": r.get("name"), "registered": True,
                    "location": r.get("location_name") or r.get("location"),
                    "room": r.get("room_name") or r.get("room"), "sensor_type": r.get("type"),
                    "status": "no data", "last_seen": None, "measurements": []})
    return out


def registry_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Locations → rooms → devices, each level sorted by name (untagged ones last)."""
    tree: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for d in rows:
        loc = d.get("location") or NO_LOCATION
        room = d.get("room") or NO_ROOM
        tree.setdefault(loc, {}).setdefault(room, []).append({
            **{k: d[k] for k in ("device_id", "sensor_type", "status", "last_seen", "measurements")},
            "name": d.get("name"), "registered": bool(d.get("registered")),
        })

    def order(name: str) -> tuple[bool, str]:
        return (name.startswith("("), name)

    out = []
    for loc in sorted(tree, key=order):
        rooms: list[dict[str, Any]] = []
        n = online = 0
        for r in sorted(tree[loc], key=order):
            devs = tree[loc][r]
            up = sum(1 for d in devs if d["status"] == "online")
            rooms.append({"room": r, "devices": devs, "online": up})
            n, online = n + len(devs), online + up
        out.append({"location": loc, "rooms": rooms, "devices": n, "online": online})
    return out


def _counter_total(counter: Any) -> float:
    """Sum of a labelled Prometheus counter over its labels."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


class Overview:
    """The overview numbers, computed at most once per ``min_interval_s`` whoever asks (every
    open dashboard shares them), and the ingest rate from the accepted-points counter sampled
    each time: points/s over the last ``rate_window_s``, and a history for the chart."""

    def __init__(
        self,
        platform: Sensorium,
        *,
        min_interval_s: float = 1.0,
        rate_window_s: float = 10.0,
        history: int = 600,
        storage_every_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = platform
        self.min_interval_s = min_interval_s
        self.rate_window_s = rate_window_s
        self.storage_every_s = storage_every_s
        self._monotonic = monotonic
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=history)  # (mono, wall s, total)
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[str, int], dict[str, Any]] | None = None
        self._storage: tuple[float, dict[str, Any]] | None = None

    def _sample(self, now_mono: float, wall_s: float) -> tuple[float | None, list[list[float]]]:
        total = _counter_total(self.platform.metrics.points_accepted)
        if not self._samples or now_mono - self._samples[-1][0] >= 0.5:
            self._samples.append((now_mono, wall_s, total))
        samples = list(self._samples)
        rate = None
        base = [s for s in samples if now_mono - s[0] <= self.rate_window_s]
        if len(base) >= 2 and base[-1][0] > base[0][0]:
            rate = (base[-1][2] - base[0][2]) / (base[-1][0] - base[0][0])
        history = [
            [b[1], max(0.0, (b[2] - a[2]) / (b[0] - a[0]))]
            for a, b in zip(samples, samples[1:], strict=False) if b[0] > a[0]
        ]
        return rate, history

    def _storage_used(self, now_mono: float) -> dict[str, Any]:
        if self._storage is not None and now_mono - self._storage[0] < self.storage_every_s:
            return self._storage[1]
        p = self.platform
        tables = p.lake.tables()
        lake_bytes = sum(p.lake.stats(b, m).bytes for b, m in tables)
        out = {"lake_bytes": int(lake_bytes), "wal_bytes": int(p.wal.disk_bytes()),
               "tables": len(tables), "hot_rows": int(p.hot.rows())}
        out["bytes"] = out["lake_bytes"] + out["wal_bytes"]
        self._storage = (now_mono, out)
        return out

    def get(self, bucket: str, offline_after_ns: int) -> dict[str, Any]:
        with self._lock:
            now_mono = self._monotonic()
            key = (bucket, offline_after_ns)
            if self._cached is not None and self._cached[1] == key and now_mono - self._cached[0] < self.min_interval_s:
                return self._cached[2]
            out = self._compute(bucket, offline_after_ns, now_mono)
            self._cached = (now_mono, key, out)
            return out

    def _compute(self, bucket: str, offline_after_ns: int, now_mono: float) -> dict[str, Any]:
        p = self.platform
        now = p.clock()
        rate, history = self._sample(now_mono, now / 1e9)
        rows = devices(p, bucket, now, offline_after_ns)
        online = sum(1 for d in rows if d["status"] == "online")
        c = p.deadletters.counters()
        accepted, rejected = int(c["accepted_rows"]), int(c["pending"])
        quality = {
            "accepted": accepted, "rejected": rejected, "duplicates": int(c["duplicates"]),
            "flagged": int(c["flagged_rows"]),
            "valid_rate": accepted / (accepted + rejected) if accepted + rejected else None,
        }
        st = p.stream_status()
        return {
            "now": now / 1e9,
            "bucket": bucket,
            "ingest": {"rate": rate, "points_total": int(_counter_total(p.metrics.points_accepted)),
                       "rejected_total": int(_counter_total(p.metrics.points_rejected)),
                       "history": history},
            "devices": {"total": len(rows), "online": online, "offline": len(rows) - online,
                        "offline_after_s": offline_after_ns / 1e9},
            "alerts": p.alerts.counts() if p.alerts is not None else None,
            "quality": quality,
            "storage": self._storage_used(now_mono),
            "stream": {k: st.get(k) for k in ("enabled", "caught_up", "backlog_rows", "error")},
        }
