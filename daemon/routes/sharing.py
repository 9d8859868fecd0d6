"""Sharing between devices: share codes, importing them, rekeying; pushing and verifying snapshots."""

from aiohttp import web

from ...storage.errors import Invalid
from ...sync.gc import DEFAULT_GRACE
from ..urlguess import relative_folder
from .common import body, daemon_of, ok, query, session_id


async def share(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(
        await daemon_of(request).ops.share(
            session_id(request),
            write=b.get("write", False),
            passphrase=b.get("passphrase"),
            expires_in=b.get("expires_in"),
        ),
        201,
    )


async def import_code(request: web.Request) -> web.Response:
    b = await body(request)
    if isinstance(b.get("store"), str) and relative_folder(b["store"]) is not None:
        # made absolute from the daemon's own folder (where it was started; / under systemd), not the app's
        raise Invalid(
            "`store` is a relative folder's path, which the daemon would read from its own folder, not yours:"
            " give the folder's absolute path (/path/to/folder, or file:///path/to/folder)",
            param="store",
        )
    return ok(await daemon_of(request).ops.import_code(b["code"], b.get("passphrase"), b.get("store")), 201)


async def rekey(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.rekey(session_id(request), b.get("drop") or []))


async def sync_now(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(
        await daemon_of(request).ops.sync_now(b.get("session"), wait=b.get("wait", False), timeout=b.get("timeout", 60))
    )


async def verify(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.verify(b.get("session")))


async def shares(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).ops.issued_shares(query(request).get("session")))


async def unshare(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.unshare(session_id(request), b.get("device")))


async def devices(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).ops.devices(session_id(request)))


async def gc(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.gc(grace=b.get("grace", DEFAULT_GRACE), dry_run=b.get("dry_run", False)))
