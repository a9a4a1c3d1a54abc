"""Authentication and the administration of users and tokens, over the registry's database.

* **Users** are the registry's ``user`` entities (role ``admin`` / ``user`` / ``guest``); their
  password is an Argon2id hash in ``users.password_hash``; their name and e-mail are encrypted.
* **Tokens**: ``sns_`` + 256 random bits (url-safe base64), shown once; the database keeps the
  SHA-256 of the secret (a token is found by it), its name, owner, creation, last use, expiry and
  revocation. API tokens are made by admins; sessions by ``POST /api/v1/login`` (they expire).
* **The admin token** ``auth_token`` from the settings keeps working, as an admin.
* **Principals** (:class:`~sensorium.auth.principal.Principal`): admins are unrestricted; users and
  guests carry their :meth:`~sensorium.registry.store.RegistryStore.access_scope`.

A verified token is cached for ``[auth] token_cache_s`` (default 5 s) so a write path does not
query the database per request; a revocation made by this process drops it at once.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from sensorium.auth.audit import AuditLog
from sensorium.auth.models import AuthToken
from sensorium.auth.passwords import Passwords
from sensorium.auth.principal import ADMIN_TOKEN, LOCAL, ROLES, Forbidden, Principal, Role, Via
from sensorium.config import Settings
from sensorium.errors import BadRequest, Conflict, NotFound, TooManyRequests, Unauthorized
from sensorium.registry.errors import RegistryUnavailable
from sensorium.registry.models import User
from sensorium.registry.schemas import iso
from sensorium.registry.scope import AccessScope
from sensorium.registry.store import RegistryStore, ns_to_datetime

TOKEN_PREFIX = "sns_"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    import ipaddress

    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def auth_enabled(settings: Settings) -> bool:
    """``[auth] enabled``; unset: on unless the server listens on loopback only without an
    ``auth_token`` (the quick start)."""
    if settings.auth.enabled is not None:
        return settings.auth.enabled
    return settings.auth_token is not None or not is_loopback(settings.host)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def as_role(value: str) -> Role:
    """A stored role (the database's check constraint keeps it one of :data:`ROLES`)."""
    for r in ROLES:
        if value == r:
            return r
    raise ValueError(f"unknown role {value!r}")


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _token_dict(t: AuthToken) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "name": t.name, "user_id": t.user_id, "created_by": t.created_by,
            "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
            "last_used_at": iso(t.last_used_at), "revoked_at": iso(t.revoked_at)}


class Auth:
    """Users, tokens, logins and the principal of a request (see the module docstring)."""

    def __init__(
        self, settings: Settings, registry: RegistryStore | None, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.settings = settings
        self.enabled = auth_enabled(settings)
        self.registry = registry
        self.clock = clock
        self.passwords = Passwords(settings.auth)
        self.audit = AuditLog(registry, clock) if registry is not None else None
        self._admin = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
        self._lock = threading.Lock()
        # credential hash → (monotonic expiry, user id, role, via, token id)
        self._cache: dict[str, tuple[float, str, Role, Via, str | None]] = {}
        self._used: dict[str, float] = {}  # token id → monotonic time of its last audited use
        self._failures: dict[str, deque[float]] = {}  # user name → monotonic times of failed logins

    # -- plumbing --------------------------------------------------------------------------------
    def store(self) -> RegistryStore:
        if self.registry is None:
            raise RegistryUnavailable("users and tokens live in the registry, which this node does not open")
        return self.registry

    def _now(self) -> datetime:
        return ns_to_datetime(self.clock())

    def record(self, actor: str | None, action: str, target: str | None = None, *,
               status: int | None = None, detail: dict[str, Any] | None = None) -> None:
        if self.audit is not None:
            self.audit.record(actor, action, target, status=status, detail=detail)

    def forget(self) -> None:
        """Drop every cached verification (after a revocation, a role change, a removal)."""
        with self._lock:
            self._cache.clear()

    # -- principals ------------------------------------------------------------------------------
    def scope_of(self, user_id: str) -> AccessScope:
        if self.registry is None:
            return AccessScope(user=user_id, visible=frozenset({user_id}))
        try:
            return self.registry.access_scope(user_id)
        except NotFound:
            return AccessScope(user=user_id, visible=frozenset({user_id}))

    def principal(self, user_id: str, role: Role, via: Via, token_id: str | None = None) -> Principal:
        scope = None if role == "admin" else self.scope_of(user_id)
        return Principal(id=user_id, role=role, via=via, user_id=user_id, token_id=token_id, scope=scope)

    def for_user(self, user_id: str) -> Principal:
        """The principal of ``user_id`` as it stands (for tools acting on a user's behalf)."""
        with self.store().session() as s:
            u = s.get(User, user_id)
            if u is None:
                raise NotFound(f"no user {user_id!r}")
            role = as_role(u.role)
        return self.principal(user_id, role, "token")

    # -- authentication --------------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        """The principal of a request's credentials; None when it presents none. Wrong, revoked
        or expired credentials are :class:`Unauthorized` (401) with the reason."""
        if not self.enabled:
            return LOCAL
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        scheme, cred = scheme.lower(), cred.strip()
        if scheme in ("token", "bearer") and cred:
            return self.verify_token(cred)
        if scheme == "basic" and cred:
            try:
                user, _, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("malformed Basic credentials") from None
            return self._user_or_token(user, password)
        if auth:
            raise Unauthorized("unsupported Authorization scheme: send 'Authorization: Token <token>'")
        p = query.get("p")
        if p:  # InfluxDB v1 ?u=&p=, and EventSource / download links (which cannot send headers)
            return self._user_or_token(query.get("u") or "", p)
        return None

    def quick(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Principal | None:
        """The principal when it needs no database (authentication off, the admin token, an admin's
        token verified moments ago); None: use :meth:`authenticate` (in a thread)."""
        if not self.enabled:
            return LOCAL
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        secret = cred.strip() if scheme.lower() in ("token", "bearer") else ""
        if not auth and not query.get("u"):
            secret = query.get("p") or ""
        if not secret:
            return None
        if self._admin is not None and hmac.compare_digest(secret.encode(), self._admin.encode()):
            return ADMIN_TOKEN
        if not secret.startswith(TOKEN_PREFIX):
            return None
        hit = self._cached(secret_hash(secret))
        if hit is None or hit[2] != "admin" or self._use_due(hit[4]):
            return None
        return Principal(id=hit[1], role="admin", via=hit[3], user_id=hit[1], token_id=hit[4])

    def _use_due(self, token_id: str | None) -> bool:
        if token_id is None:
            return False
        with self._lock:
            last = self._used.get(token_id)
        return last is None or time.monotonic() - last >= self.settings.auth.token_use_audit_s

    def _user_or_token(self, user: str, secret: str) -> Principal:
        if not user or secret.startswith(TOKEN_PREFIX) or (self._admin is not None and hmac.compare_digest(
                secret.encode(), self._admin.encode())):
            return self.verify_token(secret)
        return self.verify_password(user, secret)

    def verify_token(self, secret: str) -> Principal:
        if self._admin is not None and hmac.compare_digest(secret.encode(), self._admin.encode()):
            return ADMIN_TOKEN
        if not secret.startswith(TOKEN_PREFIX) or self.registry is None:
            raise Unauthorized("wrong token")
        h = secret_hash(secret)
        hit = self._cached(h)
        if hit is None:
            hit = self._lookup_token(h)
        _, user_id, role, via, token_id = hit
        self._note_use(token_id, user_id)
        return self.principal(user_id, role, via, token_id)

    def _cached(self, key: str) -> tuple[float, str, Role, Via, str | None] | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit
        return None

    def _remember(self, key: str, user_id: str, role: Role, via: Via, token_id: str | None,
                  expires: datetime | None) -> tuple[float, str, Role, Via, str | None]:
        ttl = self.settings.auth.token_cache_s
        if expires is not None:
            ttl = min(ttl, (expires - self._now()).total_seconds())
        hit = (time.monotonic() + ttl, user_id, role, via, token_id)
        if ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = hit
        return hit

    def _lookup_token(self, h: str) -> tuple[float, str, Role, Via, str | None]:
        with self.store().session() as s:
            row = s.execute(
                select(AuthToken, User.role).join(User, User.id == AuthToken.user_id)
                .where(AuthToken.secret_hash == h)
            ).first()
            if row is None:
                raise Unauthorized("unknown token")
            tok, role = row
            if tok.revoked_at is not None:
                raise Unauthorized(f"token {tok.id} was revoked")
            if tok.expires_at is not None and tok.expires_at <= self._now():
                raise Unauthorized(f"{'session' if tok.kind == 'session' else 'token'} {tok.id} has expired")
            via: Via = "session" if tok.kind == "session" else "token"
            return self._remember(h, tok.user_id, as_role(role), via, tok.id, tok.expires_at)

    def _note_use(self, token_id: str | None, user_id: str) -> None:
        """The first use of a token per ``token_use_audit_s``: audited, and its last use stored."""
        if token_id is None:
            return
        now = time.monotonic()
        with self._lock:
            last = self._used.get(token_id)
            if last is not None and now - last < self.settings.auth.token_use_audit_s:
                return
            self._used[token_id] = now
        with self.store().session(write=True) as s:
            s.execute(update(AuthToken).where(AuthToken.id == token_id).values(last_used_at=self._now()))
        self.record(user_id, "token_use", token_id)

    # -- password guessing -------------------------------------------------------------------------
    def _throttle(self, username: str) -> None:
        """Refuse (429) a user name with ``login_max_failures`` failed checks in the window."""
        a = self.settings.auth
        now = time.monotonic()
        with self._lock:
            seen = self._failures.get(username.casefold())
            while seen and now - seen[0] >= a.login_window_s:
                seen.popleft()
            if seen is not None and len(seen) >= a.login_max_failures:
                wait = max(1, round(a.login_window_s - (now - seen[0])))
                raise TooManyRequests(
                    f"too many failed logins for this user name: try again in {wait} s", retry_after_s=wait)

    def _failed(self, username: str) -> None:
        with self._lock:
            if len(self._failures) > 100_000:  # bounded: forget the oldest names
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(username.casefold(), deque(maxlen=self.settings.auth.login_max_failures)).append(
                time.monotonic())

    def verify_password(self, username: str, password: str) -> Principal:
        key = "pw:" + hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        hit = self._cached(key)
        if hit is None:
            self._throttle(username)
            user = self._check_password(username, password)
            if user is None:
                self._failed(username)
                raise Unauthorized("wrong user name or password")
            with self._lock:
                self._failures.pop(username.casefold(), None)
            hit = self._remember(key, user[0], user[1], "password", None, None)
        return self.principal(hit[1], hit[2], "password")

    def _find_user(self, username: str) -> User | None:
        from sensorium.pii.keys import ring

        with self.store().session() as s:
            u = s.get(User, username)
            if u is None and "@" in username and (r := ring()) is not None:
                found = s.scalars(select(User).where(User.email_index.in_(r.indexes(username)))).all()
                u = found[0] if len(found) == 1 else None
            return u

    def _check_password(self, username: str, password: str) -> tuple[str, Role] | None:
        u = self._find_user(username)
        if not self.passwords.verify(u.password_hash if u is not None else None, password):
            return None
        assert u is not None and u.password_hash is not None
        if self.passwords.needs_rehash(u.password_hash):
            self._store_password_hash(u.id, self.passwords.hash(password))
        return u.id, as_role(u.role)

    # -- login / sessions ------------------------------------------------------------------------
    def login(self, username: object, password: object) -> dict[str, Any]:
        """A session for a user name (or e-mail) and password: ``{"token", "expires_at", "user"}``.
        Failures are audited (without the name typed, which may be an e-mail) and answer 401."""
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise BadRequest('body must be {"username": "...", "password": "..."}')
        self._throttle(username)
        user = self._check_password(username, password)
        if user is None:
            self._failed(username)
            known = self._find_user(username)
            self.record(known.id if known is not None else None, "login_failed",
                        known.id if known is not None else None, status=401)
            raise Unauthorized("wrong user name or password")
        with self._lock:
            self._failures.pop(username.casefold(), None)
        secret, info = self.create_token(user[0], "session", kind="session",
                                         ttl_s=self.settings.auth.session_ttl_s, actor=user[0], audit=False)
        self.record(user[0], "login", info["id"], status=200)
        return {"token": secret, "token_id": info["id"], "expires_at": info["expires_at"],
                "user": user[0], "role": user[1]}

    def logout(self, p: Principal) -> None:
        if p.via != "session" or p.token_id is None:
            raise BadRequest("logout ends a session (from POST /api/v1/login); revoke API tokens instead")
        self._revoke(p.token_id)
        self.record(p.id, "logout", p.token_id, status=200)

    # -- tokens ----------------------------------------------------------------------------------
    def create_token(
        self, user_id: str, name: str, *, kind: str = "api", ttl_s: float | None = None,
        actor: str | None = None, audit: bool = True,
    ) -> tuple[str, dict[str, Any]]:
        """A new token for ``user_id``: (the secret — shown once, never stored —, its record)."""
        if not isinstance(name, str) or not 1 <= len(name) <= 128:
            raise BadRequest("a token needs a name of 1..128 characters")
        if ttl_s is not None and ttl_s <= 0:
            raise BadRequest("a token's lifetime must be > 0 seconds")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        with self.store().session(write=True) as s:
            if s.get(User, user_id) is None:
                raise BadRequest(f"no user {user_id!r}: tokens belong to a user (sensorium users add)")
            tok = AuthToken(id="tok_" + secrets.token_hex(6), kind=kind, name=name, user_id=user_id,
                            secret_hash=secret_hash(secret), created_by=actor, created_at=now,
                            expires_at=now + timedelta(seconds=ttl_s) if ttl_s is not None else None)
            s.add(tok)
            s.flush()
            info = _token_dict(tok)
        if audit:
            self.record(actor, "token_create", info["id"], detail={"user": user_id, "name": name})
        return secret, info

    def tokens(self, user_id: str | None = None, *, kind: str = "api", revoked: bool = False) -> list[dict[str, Any]]:
        conds = [AuthToken.kind == kind]
        if user_id is not None:
            conds.append(AuthToken.user_id == user_id)
        if not revoked:
            conds.append(AuthToken.revoked_at.is_(None))
        with self.store().session() as s:
            rows = s.scalars(select(AuthToken).where(*conds).order_by(AuthToken.created_at, AuthToken.id))
            return [_token_dict(t) for t in rows]

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> dict[str, Any]:
        out = self._revoke(token_id)
        self.record(actor, "token_revoke", token_id, detail={"user": out["user_id"]})
        return out

    def _revoke(self, token_id: str) -> dict[str, Any]:
        with self.store().session(write=True) as s:
            tok = s.get(AuthToken, token_id)
            if tok is None:
                raise NotFound(f"no token {token_id!r}")
            if tok.revoked_at is None:
                tok.revoked_at = self._now()
            s.flush()
            out = _token_dict(tok)
        self.forget()
        return out

    # -- users -----------------------------------------------------------------------------------
    def users(self) -> list[dict[str, Any]]:
        store = self.store()
        _, items = store.entities("user", limit=1000)
        with store.session() as s:
            with_pw = set(s.scalars(select(User.id).where(User.password_hash.is_not(None))))
            counts = dict(s.execute(select(AuthToken.user_id, func.count()).where(
                AuthToken.kind == "api", AuthToken.revoked_at.is_(None)).group_by(AuthToken.user_id)).all())
        for u in items:
            u["has_password"] = u["id"] in with_pw
            u["tokens"] = int(counts.get(u["id"], 0))
        return items

    def add_user(
        self, user_id: str | None, *, name: str | None = None, email: str | None = None, role: str = "user",
        password: str | None = None, actor: str | None = None,
    ) -> dict[str, Any]:
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        pw_hash = self.passwords.hash(password) if password is not None else None
        body: dict[str, Any] = {"role": role}
        for k, v in (("id", user_id), ("name", name), ("email", email)):
            if v is not None:
                body[k] = v
        out = self.store().create("user", body)
        if pw_hash is not None:
            self._store_password_hash(out["id"], pw_hash)
        self.record(actor, "user_create", out["id"], detail={"role": role})
        return out

    def update_user(
        self, user_id: str, *, role: str | None = None, name: str | None = None, email: str | None = None,
        password: str | None = None, actor: str | None = None,
    ) -> dict[str, Any]:
        if role is not None and role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if role is not None and role != "admin":
            self._keep_an_admin(user_id, "take admin from")
        pw_hash = self.passwords.hash(password) if password is not None else None
        patch = {k: v for k, v in (("role", role), ("name", name), ("email", email)) if v is not None}
        out = self.store().patch("user", user_id, patch) if patch else self.store().get(user_id, "user")
        if pw_hash is not None:
            self._store_password_hash(user_id, pw_hash)
            self._end_sessions(user_id)
            self.record(actor, "password_change", user_id)
        if patch:
            self.record(actor, "user_update", user_id, detail={"fields": sorted(patch), **(
                {"role": role} if role is not None else {})})
        self.forget()
        return out

    def set_password(self, user_id: str, password: str, *, actor: str | None = None) -> None:
        self.update_user(user_id, password=password, actor=actor)

    def change_own_password(self, p: Principal, old: object, new: object) -> None:
        if p.user_id is None:
            raise BadRequest(f"{p.id!r} is not a user: it has no password")
        if not isinstance(old, str) or not isinstance(new, str):
            raise BadRequest('body must be {"old_password": "...", "new_password": "..."}')
        if self._check_password(p.user_id, old) is None:
            raise Forbidden("the old password is wrong")
        self.update_user(p.user_id, password=new, actor=p.id)

    def remove_user(self, user_id: str, *, actor: str | None = None) -> dict[str, Any]:
        self._keep_an_admin(user_id, "remove")
        out = self.store().delete(user_id, "user")  # tokens and documents go with it
        self.forget()
        self.record(actor, "user_delete", user_id)
        return out

    def _keep_an_admin(self, user_id: str, what: str) -> None:
        if self._admin is not None:
            return  # the auth_token stays an admin
        with self.store().session() as s:
            u = s.get(User, user_id)
            if u is None or u.role != "admin":
                return
            n = int(s.execute(select(func.count()).select_from(User).where(User.role == "admin")).scalar_one())
        if n <= 1:
            raise Conflict(f"cannot {what} {user_id!r}: it is the last admin (make another admin first)")

    def _store_password_hash(self, user_id: str, pw_hash: str) -> None:
        with self.store().session(write=True) as s:
            n = s.execute(update(User).where(User.id == user_id).values(password_hash=pw_hash)).rowcount  # type: ignore[attr-defined]
            if not n:
                raise NotFound(f"no user {user_id!r}")

    def _end_sessions(self, user_id: str) -> None:
        with self.store().session(write=True) as s:
            s.execute(update(AuthToken).where(AuthToken.user_id == user_id, AuthToken.kind == "session",
                                              AuthToken.revoked_at.is_(None)).values(revoked_at=self._now()))
        self.forget()

    def admins(self) -> int:
        with self.store().session() as s:
            return int(s.execute(select(func.count()).select_from(User).where(
                User.role == "admin", User.password_hash.is_not(None))).scalar_one())


__all__ = ["TOKEN_PREFIX", "Auth", "auth_enabled", "cli_actor", "is_loopback", "secret_hash"]
