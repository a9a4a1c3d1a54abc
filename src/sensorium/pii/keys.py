"""The keys that encrypt personal data: Fernet keys, newest first, from ``SENSORIUM_PII_KEYS``
(comma-separated) or ``[pii] key_file`` (one per line).

* **Encryption**: :class:`cryptography.fernet.MultiFernet` — new values with the first (current)
  key, old values readable with any key; :meth:`KeyRing.rotate` re-encrypts with the current one.
* **Blind index**: a keyed HMAC-SHA256 of a normalised value (an e-mail, lower-cased) so equality
  look-ups work on an encrypted column. Written with the current key; a look-up tries every key,
  so a value written before a rotation is still found until ``sensorium pii rotate`` rewrites it.
* **Pseudonyms** (analytics exports): a keyed HMAC too, with another derived key, so the same
  user id gives the same pseudonym in every row and every export while the current key stays.

HMAC keys are derived from each Fernet key with HKDF-SHA256 (a different ``info`` per purpose),
so one secret per generation is all there is to keep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sensorium.errors import ConfigError, SensoriumError

ENV = "SENSORIUM_PII_KEYS"
_INDEX_INFO = b"sensorium blind index v1"
_PSEUDONYM_INFO = b"sensorium pseudonym v1"


class PIIKeyMissing(SensoriumError):
    """Personal data must be encrypted or decrypted, and no key is configured."""

    status = 503
    code = "pii_key_missing"


class PIIKeyInvalid(SensoriumError):
    """Stored personal data does not decrypt with any configured key."""

    status = 503
    code = "pii_key_invalid"


MISSING_HINT = (
    f"set {ENV} (comma-separated Fernet keys, the first the current one) or [pii] key_file; "
    "`sensorium pii keygen` prints a new key"
)


def _derive(key: bytes, info: bytes) -> bytes:
    raw = base64.urlsafe_b64decode(key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)


def normalise(value: str) -> str:
    """The form a blind index is computed on: stripped and lower-cased (e-mails, names)."""
    return value.strip().lower()


@dataclass(frozen=True)
class KeyRing:
    """Fernet keys, the current (newest) first."""

    keys: tuple[bytes, ...]
    source: str
    _fernet: MultiFernet = field(init=False, repr=False, compare=False)
    _index_keys: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _pseudonym_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(f"no PII keys in {self.source}")
        fernets = []
        for i, k in enumerate(self.keys, 1):
            try:
                fernets.append(Fernet(k))
            except (ValueError, binascii.Error):
                raise ConfigError(
                    f"PII key {i} in {self.source} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes; `sensorium pii keygen` prints one)"
                ) from None
        object.__setattr__(self, "_fernet", MultiFernet(fernets))
        object.__setattr__(self, "_index_keys", tuple(_derive(k, _INDEX_INFO) for k in self.keys))
        object.__setattr__(self, "_pseudonym_key", _derive(self.keys[0], _PSEUDONYM_INFO))

    @property
    def fingerprint(self) -> str:
        """A short, non-secret name of the current key (which key wrote what, in logs and docs)."""
        return hashlib.sha256(self._index_keys[0]).hexdigest()[:12]

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError):
            raise PIIKeyInvalid(
                f"stored personal data does not decrypt with any of the {len(self.keys)} configured "
                f"key(s) ({self.source}): the key that wrote it is missing"
            ) from None

    def rotate(self, token: str) -> str:
        """The same plaintext, encrypted with the current key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise PIIKeyInvalid(
                f"a stored value does not decrypt with any configured key ({self.source})"
            ) from None

    def current_key_wrote(self, token: str) -> bool:
        """Whether ``token`` was encrypted with the current key (rotation skips those)."""
        try:
            Fernet(self.keys[0]).decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def index(self, value: str) -> str:
        """The blind index of ``value`` under the current key (what is stored)."""
        return hmac.new(self._index_keys[0], normalise(value).encode(), hashlib.sha256).hexdigest()

    def indexes(self, value: str) -> list[str]:
        """The blind index of ``value`` under every key (what a look-up matches)."""
        v = normalise(value).encode()
        return [hmac.new(k, v, hashlib.sha256).hexdigest() for k in self._index_keys]

    def pseudonym(self, value: str, prefix: str = "u") -> str:
        """A stable pseudonym: ``<prefix>_`` + 20 hex digits of a keyed HMAC."""
        mac = hmac.new(self._pseudonym_key, f"{prefix}:{value}".encode(), hashlib.sha256)
        return f"{prefix}_{mac.hexdigest()[:20]}"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_keys(text: str, source: str, sep: str | None = None) -> KeyRing:
    parts = text.split(sep) if sep else text.splitlines()
    keys = tuple(
        p.strip().encode("ascii") for p in parts if p.strip() and not p.strip().startswith("#")
    )
    return KeyRing(keys, source)


# -- the process's key ring -------------------------------------------------------------------------
_lock = threading.Lock()
_key_file: Path | None = None
_cache: tuple[tuple[object, ...], KeyRing | None] | None = None


def configure(key_file: Path | None) -> None:
    """Use ``key_file`` (``[pii] key_file``) when ``SENSORIUM_PII_KEYS`` is not set."""
    global _key_file, _cache
    with _lock:
        _key_file = Path(key_file) if key_file is not None else None
        _cache = None


def ring() -> KeyRing | None:
    """The configured keys (None: none configured). Re-read when the variable or file changes."""
    global _cache
    env = os.environ.get(ENV, "").strip()
    kf = _key_file
    stamp: tuple[object, ...]
    if env:
        stamp = ("env", env)
    elif kf is not None:
        try:
            st = kf.stat()
        except OSError as exc:
            raise ConfigError(f"[pii] key_file {kf}: {exc.strerror}") from None
        stamp = ("file", str(kf), st.st_mtime_ns, st.st_size)
    else:
        stamp = ("none",)
    with _lock:
        if _cache is not None and _cache[0] == stamp:
            return _cache[1]
    if env:
        got: KeyRing | None = parse_keys(env, f"${ENV}", sep=",")
    elif kf is not None:
        got = parse_keys(kf.read_text(), f"key file {kf}")
    else:
        got = None
    with _lock:
        _cache = (stamp, got)
    return got


def require(what: str = "personal data") -> KeyRing:
    """The key ring, or :class:`PIIKeyMissing` naming what needed it and how to configure one."""
    r = ring()
    if r is None:
        raise PIIKeyMissing(f"{what} is encrypted at rest and no key is configured: {MISSING_HINT}")
    return r


__all__ = [
    "ENV",
    "KeyRing",
    "PIIKeyInvalid",
    "PIIKeyMissing",
    "configure",
    "generate_key",
    "normalise",
    "parse_keys",
    "require",
    "ring",
]
