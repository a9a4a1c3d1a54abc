"""Reading request bodies within limits (size, gzip) — 413 past the limit, never a 500 — and
writing JSON responses."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sensorium.errors import BadRequest, ParseError, PayloadTooLarge, UnsupportedMediaType


async def read_body(request: Request, max_bytes: int, max_inflated: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise ParseError(f"invalid Content-Length header: {length!r}") from None
        if n > max_bytes:
            raise PayloadTooLarge(
                f"request body of {n} bytes exceeds the limit of {max_bytes} bytes (max_body_bytes)",
                limit=max_bytes,
            )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {max_bytes} bytes (max_body_bytes)", limit=max_bytes
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    enc = request.headers.get("content-encoding", "identity").lower().strip()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding '{enc}' (use gzip or identity)")
    return inflate(body, enc, max_inflated)


async def json_body(request: Request, max_bytes: int, max_inflated: int | None = None) -> Any:
    """The request body as JSON, within the size limits (413 past them, 400 when empty or not
    JSON) — every JSON-taking route reads its body this way."""
    raw = await read_body(request, max_bytes, max_bytes if max_inflated is None else max_inflated)
    if not raw.strip():
        raise BadRequest("the body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"the body is not JSON: {exc}") from None


def inflate(body: bytes, enc: str, max_inflated: int) -> bytes:
    """Decompress every member of a gzip (or one deflate) stream, within ``max_inflated``.
    A truncated stream or bytes after the last member are errors, never silently dropped."""
    parts: list[bytes] = []
    size = 0
    data = body
    while True:
        d = zlib.decompressobj(wbits=47 if enc != "deflate" else 15)
        try:
            out = d.decompress(data, max_inflated + 1 - size)
        except zlib.error as exc:
            raise ParseError(f"body is not valid {enc} data: {exc}") from None
        size += len(out)
        parts.append(out)
        if size > max_inflated or d.unconsumed_tail:
            raise PayloadTooLarge(
                f"decompressed body exceeds the limit of {max_inflated} bytes (max_decompressed_bytes)",
                limit=max_inflated,
            )
        if not d.eof:
            raise ParseError(f"{enc} body is truncated (the stream ends before its end marker)")
        data = d.unused_data
        if not data or enc == "deflate":
            if data:
                raise ParseError(f"{len(data)} unexpected bytes after the end of the {enc} stream")
            return b"".join(parts)


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response (orjson; NumPy scalars and arrays serialise as numbers and lists)."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")
