"""Serving the packaged assets (from memory, with ETags) and the loopback-only rule."""

from __future__ import annotations

import hashlib
import ipaddress
import mimetypes
from dataclasses import dataclass
from pathlib import Path

#: With authentication off (the loopback quick start) the dashboard answers only on a loopback bind.
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of localhost; False for anything else
    (0.0.0.0 and :: listen on every interface)."""
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class StaticFiles:
    """The files under ``root``, read once: a path outside that set (``..``, absolute, unknown)
    is simply not there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, Asset] | None = None

    def _load(self) -> dict[str, Asset]:
        files = {}
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or p.name.startswith(".") or p.suffix == ".py":
                continue
            body = p.read_bytes()
            mt = TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            files[p.relative_to(self.root).as_posix()] = Asset(body, mt, etag)
        return files

    def get(self, path: str) -> Asset | None:
        if self._files is None:
            self._files = self._load()
        return self._files.get(path)

    def names(self) -> list[str]:
        if self._files is None:
            self._files = self._load()
        return list(self._files)
