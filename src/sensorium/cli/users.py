"""`sensorium users`, `sensorium tokens`, `sensorium audit` and `sensorium pii`: users and
access, the audit log, and personal data (docs/security.md).

Each works on the data directory's registry (``--data-dir``, ``--config``; safe beside a running
server) or, for users, tokens and the audit log, on a server (``--url``; send an admin token in
``SENSORIUM_TOKEN``). Passwords are asked for (hidden, twice) or read from ``SENSORIUM_PASSWORD``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sensorium.cli.common import (
    ConfigOpt,
    DataDirOpt,
    FormatOpt,
    UrlOpt,
    console,
    err,
    parse_duration,
)
from sensorium.cli.common import http as _http
from sensorium.cli.common import settings as _settings

users_app = typer.Typer(help="Users: add, list, set passwords and roles, remove (admins manage them).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
pii_app = typer.Typer(help="Personal data: keys, rotation, pseudonymised exports.", no_args_is_help=True)

PASSWORD_ENV = "SENSORIUM_PASSWORD"


@contextmanager
def _auth(config: Path | None, data_dir: Path | None) -> Iterator[Any]:
    """The data directory's :class:`~sensorium.auth.service.Auth` (its registry opened read-write)."""
    from sensorium.auth.service import Auth
    from sensorium.pii.store import check_keys
    from sensorium.registry import open_registry

    s = _settings(config, data_dir=data_dir)
    store = open_registry(s.registry, s.data_dir)
    assert store is not None
    try:
        check_keys(store)
        yield Auth(s, store)
    finally:
        store.close()


def _actor() -> str:
    from sensorium.auth.service import cli_actor

    return cli_actor()


def _password(ask: bool = True) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if not ask:
        raise typer.BadParameter(f"no password: set {PASSWORD_ENV} or run in a terminal")
    pw: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return pw


def _print(rows: list[dict[str, Any]], cols: tuple[str, ...], fmt: str, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    if fmt != "table":
        raise typer.BadParameter("--format must be table or json")
    t = Table(title=title)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in cols])
    console.print(t)


# -- users -----------------------------------------------------------------------------------------
@users_app.command("add")
def users_add(
    user_id: Annotated[str, typer.Argument(help="The user's id (letters, digits, _ . : @ + ~ -).")],
    name: Annotated[str | None, typer.Option(help="Full name (encrypted at rest).")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail address (encrypted; also a login name).")] = None,
    role: Annotated[str, typer.Option(help="admin, user or guest.")] = "user",
    password: Annotated[bool, typer.Option("--password/--no-password", help=f"Set a password (asked for, or ${PASSWORD_ENV}).")] = True,
    url: UrlOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a user (a registry `user`); give them places with `sensorium registry relate USER OWNS|HAS_ACCESS PLACE`."""
    pw = _password() if password else None
    body = {k: v for k, v in {"id": user_id, "name": name, "email": email, "role": role, "password": pw}.items() if v is not None}
    if url:
        out = _http(url, "POST", "/api/v1/users", json=body).json()
    else:
        with _auth(config, data_dir) as auth:
            out = auth.add_user(user_id, name=name, email=email, role=role, password=pw, actor=_actor())
    console.print(f"added user [bold]{out['id']}[/] ({out['role']})")


@users_app.command("list")
def users_list(fmt: FormatOpt = "table", url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Users with their role, whether they have a password, and their live API tokens."""
    if url:
        rows = _http(url, "GET", "/api/v1/users").json()["users"]
    else:
        with _auth(config, data_dir) as auth:
            rows = auth.users()
    _print(rows, ("id", "name", "email", "role", "has_password", "tokens"), fmt, "users")


@users_app.command("passwd")
def users_passwd(
    user_id: Annotated[str, typer.Argument(help="The user.")],
    url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Set a user's password (asked for, or $SENSORIUM_PASSWORD); ends their sessions."""
    pw = _password()
    if url:
        _http(url, "PATCH", f"/api/v1/users/{user_id}", json={"password": pw})
    else:
        with _auth(config, data_dir) as auth:
            auth.set_password(user_id, pw, actor=_actor())
    console.print(f"password of [bold]{user_id}[/] set")


@users_app.command("role")
def users_role(
    user_id: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="admin, user or guest.")],
    url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Change a user's role."""
    if url:
        _http(url, "PATCH", f"/api/v1/users/{user_id}", json={"role": role})
    else:
        with _auth(config, data_dir) as auth:
            auth.update_user(user_id, role=role, actor=_actor())
    console.print(f"[bold]{user_id}[/] is now {role}")


@users_app.command("remove")
def users_remove(
    user_id: Annotated[str, typer.Argument(help="The user.")],
    url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Remove a user, their tokens, sessions and documents."""
    if url:
        _http(url, "DELETE", f"/api/v1/users/{user_id}")
    else:
        with _auth(config, data_dir) as auth:
            auth.remove_user(user_id, actor=_actor())
    console.print(f"removed user [bold]{user_id}[/]")


# -- tokens ----------------------------------------------------------------------------------------
@tokens_app.command("create")
def tokens_create(
    user_id: Annotated[str, typer.Argument(help="The user the token acts as (its role and places).")],
    name: Annotated[str, typer.Option(help="What the token is for (e.g. the device or job).")] = "api",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d (default: until revoked).")] = None,
    url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Create an API token and print it — the only time it is shown (only its hash is stored)."""
    ttl = parse_duration(expires) if expires else None
    if url:
        out = _http(url, "POST", "/api/v1/tokens", json={"user": user_id, "name": name, "expires_in_s": ttl}).json()
        secret, info = out.pop("token"), out
    else:
        with _auth(config, data_dir) as auth:
            secret, info = auth.create_token(user_id, name, ttl_s=ttl, actor=_actor())
    err.print(f"token {info['id']} for {user_id} ({name}); it is shown once — keep it now:")
    sys.stdout.write(secret + "\n")


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")] = False,
    fmt: FormatOpt = "table", url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """API tokens (never their secrets)."""
    if url:
        params: dict[str, Any] = {"revoked": str(revoked).lower(), **({"user": user} if user else {})}
        rows = _http(url, "GET", "/api/v1/tokens", params=params).json()["tokens"]
    else:
        with _auth(config, data_dir) as auth:
            rows = auth.tokens(user, revoked=revoked)
    _print(rows, ("id", "name", "user_id", "created_at", "last_used_at", "expires_at", "revoked_at"), fmt, "tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), from `sensorium tokens list`.")],
    url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Revoke a token (or a session)."""
    if url:
        _http(url, "DELETE", f"/api/v1/tokens/{token_id}")
    else:
        with _auth(config, data_dir) as auth:
            auth.revoke_token(token_id, actor=_actor())
    console.print(f"revoked {token_id}")


# -- audit -----------------------------------------------------------------------------------------
def audit(
    actor: Annotated[str | None, typer.Option(help="Only this actor (user id, auth_token, local, cli:…).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (login, login_failed, token_use, change, ...).")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339 or now-<duration>, e.g. now-1d.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    fmt: FormatOpt = "table", url: UrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """The audit log, newest first: logins, token use, changes."""
    if url:
        params = {k: v for k, v in {"actor": actor, "action": action, "since": since, "limit": limit}.items() if v is not None}
        data = _http(url, "GET", "/api/v1/audit", params=params).json()
        total, rows = data["total"], data["items"]
    else:
        import time

        from sensorium.documents.store import parse_when

        with _auth(config, data_dir) as auth:
            assert auth.audit is not None
            lo = parse_when(since, time.time_ns(), "since") if since else None
            total, rows = auth.audit.list(actor=actor, action=action, since=lo, limit=limit)
    _print(rows, ("time", "actor", "action", "target", "status"), fmt, f"audit log ({total} in all)")


# -- personal data ---------------------------------------------------------------------------------
@pii_app.command("keygen")
def pii_keygen() -> None:
    """Print a new Fernet key: put it first in SENSORIUM_PII_KEYS (or the key file), keep the
    old ones after it, then run `sensorium pii rotate`."""
    from sensorium.pii.keys import generate_key

    sys.stdout.write(generate_key() + "\n")


@pii_app.command("status")
def pii_status(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """How much personal data is stored, and the configured keys (by fingerprint)."""
    from sensorium.pii.keys import ring
    from sensorium.pii.store import count_values
    from sensorium.registry.models import Base

    with _auth(config, data_dir) as auth:
        with auth.store().engine.connect() as conn:
            counts = count_values(conn, Base.metadata)
    r = ring()
    console.print(f"keys: {'none' if r is None else f'{len(r.keys)} ({r.source}), current {r.fingerprint}'}")
    for k, n in counts.items():
        console.print(f"  {k}: {n} values (encrypted)")


@pii_app.command("rotate")
def pii_rotate(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Re-encrypt every personal value with the current (first) key, and recompute the blind
    indexes; afterwards the older keys can be dropped. Safe to re-run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from sensorium.pii.keys import require
    from sensorium.pii.store import rotate

    key = require()
    with _auth(config, data_dir) as auth, Progress(
        TextColumn("[bold]rotate"), BarColumn(), MofNCompleteColumn(), console=err
    ) as prog:
        task = prog.add_task("rotate", total=None)
        out = rotate(auth.store(), key, progress=lambda done, total: prog.update(task, completed=done, total=total))
        auth.record(_actor(), "pii_rotate", key.fingerprint, detail={"rewritten": out})
    n = sum(out.values())
    console.print(f"re-encrypted {n} value(s) with key {key.fingerprint}: " + ", ".join(f"{k} {v}" for k, v in out.items()))


@pii_app.command("export")
def pii_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for users/relations/documents/audit .jsonl.")],
    pseudonymise: Annotated[bool, typer.Option("--pseudonymise/--plain", help="User ids and e-mails as keyed HMAC pseudonyms, personal fields left out (default); --plain: everything in clear (a data-subject export).")] = True,
    data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Export the registry's people-related data for analytics, pseudonymised."""
    from rich.progress import Progress, TextColumn

    from sensorium.pii.export import export
    from sensorium.pii.keys import require

    key = require()
    with _auth(config, data_dir) as auth, Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.completed:,} rows"), console=err) as prog:
        tasks: dict[str, Any] = {}

        def progress(name: str, n: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name)
            prog.update(tasks[name], completed=n)

        counts = export(auth.store(), out, key, progress=progress, pseudonymise=pseudonymise)
    console.print(f"wrote {', '.join(f'{k} ({n})' for k, n in counts.items())} to {out}"
                  + ("" if pseudonymise else " [bold red]in clear[/]"))


__all__ = ["audit", "pii_app", "tokens_app", "users_app"]
