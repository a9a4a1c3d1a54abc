"""Routes of users and access (docs/security.md): login and logout, the caller itself, users,
API tokens, the audit log, and the data catalog with each column's classification.

Users, tokens and the audit log are for admins; ``/me`` for whoever asks; the catalog for anyone
authenticated (it lists names and classifications, no data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_body
from sensorium.api.body import json_response as _json
from sensorium.auth.http import HttpAuth, principal_of
from sensorium.auth.service import Auth
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium

USER_KEYS = frozenset({"id", "name", "email", "role", "password"})
PATCH_KEYS = frozenset({"name", "email", "role", "password"})
TOKEN_KEYS = frozenset({"user", "name", "expires_in_s"})


def _keys(data: Any, allowed: frozenset[str], example: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest(f"body must be a JSON object like {example}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(unknown)} (use {', '.join(sorted(allowed))})")
    for k, v in data.items():
        if k != "expires_in_s" and v is not None and not isinstance(v, str):
            raise BadRequest(f"`{k}` must be a string")
    return data


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    s = platform.settings
    http: HttpAuth = app.state.auth
    auth: Auth = http.auth

    async def body_of(request: Request) -> Any:
        return await json_body(request, s.max_body_bytes, s.max_decompressed_bytes)

    # -- sessions -------------------------------------------------------------------------------
    @app.post("/api/v1/login", tags=["auth"])
    async def login(request: Request) -> Response:
        """`{"username", "password"}` (the user id or e-mail) → `{"token", "token_id",
        "expires_at", "user", "role"}`: a session token for `Authorization: Token …` (the
        dashboard keeps it). 401 for a wrong name or password (audited)."""
        data = await body_of(request)
        if not isinstance(data, dict) or set(data) - {"username", "password"}:
            raise BadRequest('body must be {"username": "...", "password": "..."}')
        return _json(await asyncio.to_thread(auth.login, data.get("username"), data.get("password")))

    @app.post("/api/v1/logout", tags=["auth"])
    async def logout(request: Request) -> Response:
        """End the caller's session (the token it sent)."""
        check_auth(request)
        await asyncio.to_thread(auth.logout, principal_of(request))
        return Response(status_code=204)

    @app.get("/api/v1/me", tags=["auth"])
    async def me(request: Request) -> Response:
        """Who the caller is: id, role, how it authenticated, and (users, guests) its scope —
        the locations, rooms and devices it may see."""
        check_auth(request)
        return _json(principal_of(request).to_dict() | {"auth_enabled": auth.enabled})

    @app.put("/api/v1/me/password", tags=["auth"])
    async def change_password(request: Request) -> Response:
        """`{"old_password", "new_password"}`: the caller's own password (ends its sessions)."""
        check_auth(request)
        data = await body_of(request)
        if not isinstance(data, dict) or set(data) != {"old_password", "new_password"}:
            raise BadRequest('body must be {"old_password": "...", "new_password": "..."}')
        await asyncio.to_thread(auth.change_own_password, principal_of(request),
                                data["old_password"], data["new_password"])
        return Response(status_code=204)

    # -- users (admins) -------------------------------------------------------------------------
    @app.get("/api/v1/users", tags=["auth"])
    async def list_users(request: Request) -> Response:
        """Every user: id, name, e-mail (decrypted), role, `has_password`, live API `tokens`."""
        check_auth(request)
        return _json({"users": await asyncio.to_thread(auth.users)})

    @app.post("/api/v1/users", status_code=201, tags=["auth"])
    async def create_user(request: Request) -> Response:
        """`{"id"?, "name"?, "email"?, "role"?, "password"?}` → 201 with the user (a registry
        `user`; name and e-mail encrypted at rest). 409 when the id or e-mail is taken."""
        check_auth(request)
        data = _keys(await body_of(request), USER_KEYS, '{"id": "alice", "role": "user", "password": "..."}')
        actor = principal_of(request).id
        out = await asyncio.to_thread(lambda: auth.add_user(
            data.get("id"), name=data.get("name"), email=data.get("email"), role=data.get("role") or "user",
            password=data.get("password"), actor=actor))
        return _json(out, 201)

    @app.get("/api/v1/users/{user_id}", tags=["auth"])
    async def get_user(request: Request, user_id: str) -> Response:
        check_auth(request)
        return _json(await asyncio.to_thread(auth.store().get, user_id, "user"))

    @app.patch("/api/v1/users/{user_id}", tags=["auth"])
    async def patch_user(request: Request, user_id: str) -> Response:
        """Change `name`, `email`, `role` or `password` (a new password ends the user's sessions)."""
        check_auth(request)
        data = _keys(await body_of(request), PATCH_KEYS, '{"role": "guest"}')
        actor = principal_of(request).id
        return _json(await asyncio.to_thread(lambda: auth.update_user(
            user_id, role=data.get("role"), name=data.get("name"), email=data.get("email"),
            password=data.get("password"), actor=actor)))

    @app.delete("/api/v1/users/{user_id}", tags=["auth"])
    async def delete_user(request: Request, user_id: str) -> Response:
        """Remove a user with their tokens, sessions and documents. 409 for the last admin."""
        check_auth(request)
        actor = principal_of(request).id
        return _json({"deleted": await asyncio.to_thread(lambda: auth.remove_user(user_id, actor=actor))})

    # -- tokens (admins) ------------------------------------------------------------------------
    @app.get("/api/v1/tokens", tags=["auth"])
    async def list_tokens(
        request: Request,
        user: str | None = Query(None, description="Only this user's tokens."),
        revoked: bool = Query(False, description="Include revoked tokens."),
    ) -> Response:
        """API tokens (never their secrets): id, name, user, created/last used/expiry/revoked."""
        check_auth(request)
        return _json({"tokens": await asyncio.to_thread(lambda: auth.tokens(user, revoked=revoked))})

    @app.post("/api/v1/tokens", status_code=201, tags=["auth"])
    async def create_token(request: Request) -> Response:
        """`{"user", "name", "expires_in_s"?}` → 201 `{"token": "sns_…", ...}`. The secret is
        shown this once; only its SHA-256 is stored."""
        check_auth(request)
        data = _keys(await body_of(request), TOKEN_KEYS, '{"user": "alice", "name": "ci"}')
        if not isinstance(data.get("user"), str) or not isinstance(data.get("name"), str):
            raise BadRequest('body needs "user" and "name"')
        ttl = data.get("expires_in_s")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
            raise BadRequest("`expires_in_s` must be a number of seconds")
        actor = principal_of(request).id
        secret, info = await asyncio.to_thread(
            lambda: auth.create_token(data["user"], data["name"], ttl_s=ttl, actor=actor))
        return _json({"token": secret, **info}, 201)

    @app.delete("/api/v1/tokens/{token_id}", tags=["auth"])
    async def revoke_token(request: Request, token_id: str) -> Response:
        """Revoke a token (or a session): refused at once by this node, within `token_cache_s`
        by others."""
        check_auth(request)
        actor = principal_of(request).id
        return _json({"revoked": await asyncio.to_thread(lambda: auth.revoke_token(token_id, actor=actor))})

    # -- audit (admins) and catalog -------------------------------------------------------------
    @app.get("/api/v1/audit", tags=["auth"])
    async def audit(
        request: Request,
        actor: str | None = Query(None, description="Only this actor (a user id, auth_token, local, cli:…)."),
        action: str | None = Query(None, description="login, login_failed, logout, token_use, token_create, token_revoke, user_create, user_update, user_delete, password_change, change, pii_rotate"),
        since: str | None = Query(None, description="RFC 3339 or now-<duration>"),
        until: str | None = Query(None),
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """The audit log, newest first: `{"total", "items": [{"id", "time", "actor", "action",
        "target", "status", "detail"}]}`."""
        check_auth(request)
        from sensorium.documents.store import parse_when

        now = platform.clock()
        lo = parse_when(since, now, "since") if since else None
        hi = parse_when(until, now, "until") if until else None
        if auth.audit is None:
            raise BadRequest("this node keeps no audit log (it does not open the registry)")
        log = auth.audit
        total, items = await asyncio.to_thread(
            lambda: log.list(actor=actor, action=action, since=lo, until=hi, limit=limit, offset=offset))
        return _json({"total": total, "items": items})

    @app.get("/api/v1/catalog", tags=["auth"])
    async def catalog(request: Request) -> Response:
        """Every table (registry database, SQL tables, telemetry measurements) with each column's
        classification: `pii` (encrypted at rest), `internal` or `public`."""
        check_auth(request)
        from sensorium.pii.catalog import catalog as build

        return _json(await asyncio.to_thread(build, platform))
