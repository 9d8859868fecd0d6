"""Request bodies as the relay reads them from untrusted clients: never more than the route's limit
(413 as soon as it is passed, before the rest is read), within BODY_TIMEOUT seconds (408: a client
cannot hold a connection, and what it sent, by stalling its body), and a body that does not parse is a
400 naming what is wrong (never a 500).

    JSON (a login or registration answer, a registry entry): at most MAX_JSON_BODY bytes; these are a
        few hundred bytes, and a login's is read before anyone is known
    an upload: at most MAX_OBJECT_SIZE bytes of object, raw or as the multipart field `file`
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import BodyPartReader, web

from ..stores.base import MAX_OBJECT_SIZE
from .objects import TooLarge
from .wire import BadRequest

MAX_JSON_BODY = 4096
# Seconds a request's body has to arrive in, all of it. A device's own requests give up after 30 s.
BODY_TIMEOUT = 60.0
CHUNK = 1 << 16


class TooSlow(Exception):
    """The body did not arrive within BODY_TIMEOUT (408)."""


def _too_large(limit: int, size: int | None = None) -> TooLarge:
    of = f" of {size} bytes" if size is not None else ""
    return TooLarge(f"request body{of} larger than the relay's limit of {limit} bytes for it")


async def _bounded(read, limit: int) -> bytes:
    buf = bytearray()
    while chunk := await read(CHUNK):
        buf += chunk
        if len(buf) > limit:
            raise _too_large(limit)
    return bytes(buf)


async def read_json(request: web.Request, timeout: float) -> dict:
    """The body as a JSON object."""
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise _too_large(MAX_JSON_BODY, request.content_length)
    try:
        async with asyncio.timeout(timeout):
            raw = await _bounded(request.content.read, MAX_JSON_BODY)
    except TimeoutError:
        raise TooSlow(f"the request body did not arrive within {timeout:g} s") from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise BadRequest("the body is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


async def _multipart_file(request: web.Request) -> bytes:
    data: bytes | None = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("a nested multipart body: expected one field 'file' holding the object")
            if part.name != "file" or data is not None:
                raise BadRequest(f"unexpected multipart field {part.name!r} (expected one field 'file')")
            data = await _bounded(part.read_chunk, MAX_OBJECT_SIZE)
    except ValueError as exc:  # aiohttp's multipart parser: no boundary, a broken part
        raise BadRequest(f"not a multipart body the relay can read ({exc})") from None
    if data is None:
        raise BadRequest("the multipart body has no 'file' field")
    return data


async def read_upload(request: web.Request, timeout: float) -> bytes:
    """The object of an upload: the multipart field `file`, or the raw body."""
    if request.content_length is not None and request.content_length > MAX_OBJECT_SIZE + CHUNK:
        raise _too_large(MAX_OBJECT_SIZE, request.content_length)  # room left for a multipart's framing
    try:
        async with asyncio.timeout(timeout):
            if request.content_type == "multipart/form-data":
                return await _multipart_file(request)
            return await _bounded(request.content.read, MAX_OBJECT_SIZE)
    except TimeoutError:
        raise TooSlow(f"the request body did not arrive within {timeout:g} s") from None
