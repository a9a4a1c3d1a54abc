"""Authentication and authorisation over HTTP.

* :class:`AuthMiddleware` (ASGI) authenticates every request — ``Authorization: Token …`` /
  ``Bearer …`` / ``Basic`` (user and password or token), or ``?p=`` (InfluxDB v1 ``?u=&p=``,
  EventSource and download links) — and puts the :class:`~sensorium.auth.principal.Principal` on
  ``request.state.principal`` (and a restricted principal's access scope on
  ``request.state.registry_scope``, which the registry and graph routes apply). With
  authentication on, a request without credentials gets 401, except on the public paths (health,
  ping, login, the dashboard's page and assets, the OpenAPI page). It also writes the audit
  log's "change" entries: every successful (or refused) non-read request, with its actor.
* :meth:`HttpAuth.check` — the body of the app's ``check_auth`` — applies :mod:`the policy
  <sensorium.auth.policy>` of the matched route: 403 with the reason when the role may not.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sensorium.auth.policy import NOT_AUDITED, rule_for
from sensorium.auth.principal import LOCAL, Forbidden, Principal
from sensorium.auth.service import Auth
from sensorium.errors import SensoriumError, Unauthorized
from sensorium.registry.errors import RegistryUnavailable

log = logging.getLogger("sensorium.auth")

PUBLIC_PATHS = frozenset({
    "/health", "/ping", "/api/v1/login", "/", "/favicon.ico", "/docs", "/docs/oauth2-redirect",
    "/redoc", "/openapi.json",
})
PUBLIC_PREFIXES = ("/dashboard/static/",)
ADMIN_PATHS = frozenset({"/metrics"})  # routes that do not call check_auth themselves
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NEED_AUTH = (
    "authentication required: send 'Authorization: Token <token>' (an API token, or a session "
    "from POST /api/v1/login)"
)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _send_error(send: Send, exc: SensoriumError) -> None:
    body = orjson.dumps(exc.to_dict())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Token realm="sensorium"'))
    if "retry_after_s" in exc.context:
        headers.append((b"retry-after", str(exc.context["retry_after_s"]).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        try:
            principal = await self._principal(scope, path)
        except SensoriumError as exc:
            await _send_error(send, exc)
            return
        state = scope.setdefault("state", {})
        if principal is not None:
            state["principal"] = principal
            if principal.scope is not None:
                state["registry_scope"] = principal.scope
        if method not in UNSAFE or path in NOT_AUDITED or principal is None:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if status and (status[0] < 400 or status[0] in (401, 403)):
                route = scope.get("route")
                template = getattr(route, "path", None)
                await anyio.to_thread.run_sync(self._audit, principal, f"{method} {path}", status[0], template)

    def _audit(self, p: Principal, target: str, status: int, template: str | None) -> None:
        try:
            self.auth.record(p.id, "change", target, status=status,
                             detail={"route": template} if template else None)
        except RegistryUnavailable as exc:  # the change is done; the audit entry is what failed
            log.error("audit log not written (%s %s): %s", p.id, target, exc.message)

    async def _principal(self, scope: Scope, path: str) -> Principal | None:
        if not self.auth.enabled:
            return LOCAL
        if is_public(path):
            return None
        request = Request(scope)
        p = self.auth.quick(request.headers, request.query_params)  # no database: no thread
        if p is None:
            p = await anyio.to_thread.run_sync(self.auth.authenticate, request.headers, request.query_params)
        if p is None:
            raise Unauthorized(NEED_AUTH)
        if path in ADMIN_PATHS:
            p.require_admin(f"read {path}")
        return p


class HttpAuth:
    """What the app's routes use: :meth:`check` (its ``check_auth``) and :meth:`principal`."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    def principal(self, request: Request) -> Principal:
        p: Principal | None = getattr(request.state, "principal", None)
        if p is None:  # a public path, or no middleware in front: authenticate here
            p = self.auth.authenticate(request.headers, request.query_params)
            if p is None:
                raise Unauthorized(NEED_AUTH)
            request.state.principal = p
            if p.scope is not None:
                request.state.registry_scope = p.scope
        return p

    def check(self, request: Request) -> Principal:
        """Authenticated (401) and allowed by the route's policy (403 with the reason)."""
        p = self.principal(request)
        route = request.scope.get("route")
        template = str(getattr(route, "path", request.url.path))
        rule = rule_for(request.method, template)
        what = f"{request.method} {template}"
        if rule == "admin":
            p.require_admin(what)
        elif rule == "write":
            p.require_write(what)
        device = request.path_params.get("device_id")
        if device is not None and not p.allows_device(str(device)):
            raise Forbidden(f"device {device!r} is not in {p.id!r}'s locations", device_id=device)
        return p


def principal_of(request: Request) -> Principal:
    """The principal a route acts for (authenticated by the middleware or ``check_auth``)."""
    http: HttpAuth = request.app.state.auth
    return http.principal(request)


def install(app: FastAPI, platform: Any) -> HttpAuth:
    """Authentication for every request of ``app`` (see the module docstring)."""
    auth = Auth(platform.settings, platform.registry_store, clock=platform.clock)
    http = HttpAuth(auth)
    app.state.auth = http
    app.add_middleware(AuthMiddleware, auth=auth)
    return http


__all__ = ["AuthMiddleware", "HttpAuth", "install", "is_public", "principal_of"]
