"""Embedded write-ahead log: segment files of length- and CRC-framed records.

Frame layout (little endian)::

    u32 payload_length | u32 crc | u64 offset | payload

``crc`` is CRC-32 of the payload, continued over ``offset`` and ``payload_length`` so a frame whose
header or body is torn fails the check. A payload is ``u8 kind | u32 header_length | header JSON |
Arrow IPC stream`` (the stream may be empty).

Segments are named after their first offset (``00000000000000000042.wal``). On open, every segment
is scanned; a torn or corrupt tail of the LAST segment (a crash mid-append) is truncated; corruption
anywhere else is an error, never silently skipped.

Durability: :meth:`WAL.append` returns only once the record is synced under ``fsync="always"``.
Concurrent appenders share fsyncs (group commit): whoever syncs covers everyone written before.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from sensorium.config import WALSettings
from sensorium.errors import WALCorruption

FRAME = struct.Struct("<IIQ")
_LEN_OFF = struct.Struct("<QI")
KIND = struct.Struct("<BI")
SEGMENT_SUFFIX = ".wal"

KIND_DATA = 1
KIND_DEAD_LETTERS = 2


@dataclass(frozen=True, slots=True)
class WALRecord:
    offset: int
    kind: int
    header: dict[str, Any]
    table: pa.Table | None


def encode_payload(kind: int, header: dict[str, Any], table: pa.Table | None) -> bytes:
    head = orjson.dumps(header)
    parts = [KIND.pack(kind, len(head)), head]
    if table is not None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        parts.append(sink.getvalue().to_pybytes())
    return b"".join(parts)


def decode_payload(offset: int, payload: bytes) -> WALRecord:
    kind, hlen = KIND.unpack_from(payload, 0)
    start = KIND.size
    header = orjson.loads(payload[start : start + hlen])
    rest = memoryview(payload)[start + hlen :]
    table = pa.ipc.open_stream(pa.py_buffer(rest)).read_all() if len(rest) else None
    return WALRecord(offset, kind, header, table)


def _crc(offset: int, payload: bytes | memoryview, payload_crc: int | None = None) -> int:
    c = zlib.crc32(payload) if payload_crc is None else payload_crc
    return zlib.crc32(_LEN_OFF.pack(offset, len(payload)), c)


def _scan(data: bytes) -> tuple[list[tuple[int, int, int]], int, bool]:
    """Frames of a segment's bytes as ``(offset, start, end)``; end of the last good frame; torn?"""
    frames: list[tuple[int, int, int]] = []
    pos = 0
    n = len(data)
    prev: int | None = None
    while pos < n:
        if pos + FRAME.size > n:
            return frames, pos, True
        length, crc, offset = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + length
        if end > n:
            return frames, pos, True
        body = memoryview(data)[pos + FRAME.size : end]
        if _crc(offset, body) != crc or (prev is not None and offset != prev + 1):
            return frames, pos, True
        frames.append((offset, pos + FRAME.size, end))
        prev = offset
        pos = end
    return frames, pos, False


class WAL:
    """Append-only, segmented, crash-safe log of batches."""

    def __init__(
        self,
        directory: Path,
        settings: WALSettings | None = None,
        *,
        on_fsync: Callable[[float], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.settings = settings or WALSettings()
        self._on_fsync = on_fsync
        self._read_only = read_only
        self._lock = threading.Lock()  # appends: offset order == file order
        self._sync_lock = threading.Lock()
        self._segments: list[tuple[int, Path]] = []  # (first offset, path), ascending
        self._fd: int | None = None
        self._seg_size = 0
        self.next_offset = 0
        self._written = 0  # appends written (monotonic)
        self._synced = 0  # appends known durable
        self.truncated_bytes = 0
        self.bytes_written = 0
        self._closed = False
        self._ticker: threading.Thread | None = None
        self._open()

    # -- opening -------------------------------------------------------------------------------
    def _open(self) -> None:
        if not self._read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
        segs = sorted(self.dir.glob(f"*{SEGMENT_SUFFIX}")) if self.dir.exists() else []
        last_offset = -1
        for i, path in enumerate(segs):
            first = int(path.stem)
            frames, good_end, torn = _scan(path.read_bytes())
            is_last = i == len(segs) - 1
            if torn and not is_last:
                raise WALCorruption(
                    f"WAL segment {path.name} is corrupt at byte {good_end} and is not the last "
                    "segment; refusing to skip acknowledged data (restore it or move it away)",
                    path=str(path),
                )
            if frames and frames[0][0] != first:
                raise WALCorruption(f"WAL segment {path.name} starts at offset {frames[0][0]}")
            if torn:
                self.truncated_bytes = path.stat().st_size - good_end
                if not self._read_only:
                    with open(path, "r+b") as fh:
                        fh.truncate(good_end)
                        os.fsync(fh.fileno())
            if frames:
                if last_offset >= 0 and frames[0][0] != last_offset + 1:
                    raise WALCorruption(f"WAL gap before segment {path.name}")
                last_offset = frames[-1][0]
            self._segments.append((first, path))
        self.next_offset = max(last_offset + 1, self._segments[-1][0] if self._segments else 0)
        if self._read_only:
            return
        if self._segments:
            path = self._segments[-1][1]
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._seg_size = path.stat().st_size
        else:
            self._roll()
        if self.settings.fsync == "interval":
            self._ticker = threading.Thread(target=self._tick, name="wal-fsync", daemon=True)
            self._ticker.start()

    def _roll(self) -> None:
        """Start a new segment (call with ``_lock`` held or before use)."""
        if self._fd is not None:
            if self.settings.fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
        path = self.dir / f"{self.next_offset:020d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._seg_size = 0
        self._segments.append((self.next_offset, path))
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- writing -------------------------------------------------------------------------------
    def append(
        self,
        payloads: list[bytes],
        *,
        under_lock: Callable[[list[int]], None] | None = None,
    ) -> list[int]:
        """Append encoded payloads as consecutive records; return their offsets once durable.

        ``under_lock(offsets)`` runs while the append lock is held, so callers can apply records
        in log order (e.g. to the hot buffer) before the sync.
        """
        if self._closed or self._fd is None:
            raise WALCorruption("WAL is closed")
        crcs = [zlib.crc32(p) for p in payloads]
        with self._lock:
            if self._seg_size >= self.settings.segment_bytes:
                self._roll()
            offsets = list(range(self.next_offset, self.next_offset + len(payloads)))
            frames = []
            for off, p, c in zip(offsets, payloads, crcs, strict=True):
                frames.append(FRAME.pack(len(p), _crc(off, p, c), off))
                frames.append(p)
            buf = b"".join(frames)
            os.write(self._fd, buf)
            self._seg_size += len(buf)
            self.bytes_written += len(buf)
            self.next_offset += len(payloads)
            self._written += 1
            ticket = self._written
            if under_lock is not None:
                under_lock(offsets)
        if self.settings.fsync == "always":
            self._sync_until(ticket)
        return offsets

    def _sync_until(self, ticket: int) -> None:
        if self._synced >= ticket:
            return
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                target = self._written
                fd = self._fd
            if fd is None:
                return
            t0 = time.perf_counter()
            os.fsync(fd)
            if self._on_fsync:
                self._on_fsync(time.perf_counter() - t0)
            self._synced = target

    def sync(self) -> None:
        self._sync_until(self._written)

    def _tick(self) -> None:
        period = self.settings.fsync_interval_ms / 1000
        while not self._closed:
            time.sleep(period)
            try:
                self.sync()
            except OSError:
                if self._closed:
                    return
                raise

    # -- reading -------------------------------------------------------------------------------
    def replay(self, from_offset: int = 0) -> Iterator[WALRecord]:
        """Records with ``offset >= from_offset``, in order."""
        segs = list(self._segments)
        for i, (_first, path) in enumerate(segs):
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            if nxt is not None and nxt <= from_offset:
                continue
            if not path.exists():
                continue
            data = path.read_bytes()
            frames, _, _ = _scan(data)
            for off, start, end in frames:
                if off >= from_offset:
                    yield decode_payload(off, data[start:end])

    # -- retention -----------------------------------------------------------------------------
    def truncate_before(self, offset: int) -> int:
        """Delete whole segments whose records all have offsets ``< offset``. Returns count."""
        removed = 0
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= offset:
                _, path = self._segments.pop(0)
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def reset(self) -> None:
        """Start a fresh, empty segment at ``next_offset`` and delete all older ones. Only when
        everything logged so far is stored elsewhere (clean shutdown). Offsets keep counting."""
        with self._lock:
            if self._fd is None:
                return
            self._roll()
        self.truncate_before(self.next_offset)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self._segments if p.exists())

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            if self._fd is not None:
                if self.settings.fsync != "never":
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
