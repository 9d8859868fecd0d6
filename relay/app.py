"""The relay's HTTP API and server.

S5 portal subset (the same routes and shapes as tests/servers/s5portal.py, which stores/s5.py speaks):
    POST   /s5/upload               multipart field `file` (or a raw body)   -> {"cid": legacy raw CID}
    GET    /s5/download/{cid}       the bytes, verbatim                       (account)
    GET    /s5/blob/{cid}           307 to /s5/download/{cid}                 (account)
    DELETE /s5/delete/{cid}         remove the caller's own pin               (account)
    GET    /s5/registry?pk=         {"pk", "revision", "data", "signature"} or 404 (anyone)
    POST   /s5/registry             the same JSON; 204                        (account)
    GET    /s5/account/register|login?pubKey=    {"challenge"}
    POST   /s5/account/register|login            {"pubKey", "response", "signature", "label"[, "email",
                                                 "invite"]} -> Set-Cookie: s5-auth-token=...
Relay only:
    GET    /s5/registry/changes?since=N&epoch=E&wait=S   (account)
        -> {"epoch", "cursor", "reset", "scope": "followed", "changes": [{"pk", "revision"}]}: the heads
        this account follows (set, or read with its token: feed.py) set after its cursor N of epoch E
        (all it follows if E is not the relay's current epoch), waiting up to S seconds (at most 25) for
        one if there is none yet. The cursor counts this account's changes only.

Errors are plain-text 4xx naming what is wrong; 401 without a valid Bearer token; 413 for an object
over 1 MiB (or a JSON body over 4 KiB: body.py); 408 for a body that does not arrive within 60 s;
507 (Insufficient Storage) for an object, or a new head, past the account's quota (a head its account
creates counts objects.HEAD_SIZE bytes; moving a head is free); 409 for a head that does not move
forward; 429 for a connection past the ones its client address may hold open (conns.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from ..storage.fsutil import ensure_durable_dir
from ..stores.base import MAX_OBJECT_SIZE
from ..stores.cid import BlobId, CIDError, b58encode
from ..stores.registry import MAX_DATA, MAX_REVISION, RegistryEntry
from . import feedstate
from .accounts import LOGIN, REGISTER, TOKEN_TTL, Accounts, LoginRefused
from .body import BODY_TIMEOUT, TooSlow, read_json, read_upload
from .conns import DEFAULT_PER_ADDRESS, ConnectionCap
from .feed import Feed
from .follows import FollowLog
from .objects import Objects, QuotaExceeded, TooLarge
from .recover import tidy
from .registry import Refused, Registry
from .serving import note_url
from .wire import BadRequest, b64url, field, unb64url

log = logging.getLogger("sessiond.relay")

MAX_WAIT = 25.0
DEFAULT_QUOTA = 1 << 30
# A connection that has not sent a whole request for this long is closed (aiohttp's default keeps one
# for an hour): a client cannot hold the relay's connections by never finishing a request line.
IDLE_TIMEOUT = 75.0


class Relay:
    def __init__(
        self,
        data_dir: str,
        *,
        open_registration: bool = False,
        quota: int = DEFAULT_QUOTA,
        token_ttl: float = TOKEN_TTL,
    ):
        ensure_durable_dir(data_dir)
        self.data_dir = data_dir
        tidy(data_dir)  # what a relay stopped mid-write left, before any quota is counted
        self.feed = Feed()
        self.objects = Objects(data_dir, quota)
        self.registry = Registry(data_dir, self.feed, self.objects)
        self.accounts = Accounts(data_dir, open_registration=open_registration, token_ttl=token_ttl)
        self.follows = FollowLog(data_dir, self.feed.max_followed)
        keep = lambda account: _valid_account(account) and self.accounts.active(account)  # noqa: E731
        # the feed as a clean stop left it (feedstate.py); its file is gone before anything is served
        saved = feedstate.take(data_dir)
        if saved is not None:
            self.feed.restore(saved, keep=keep, logged=lambda account: self.follows.read(account) or [])
        else:  # not stopped cleanly: a new epoch, each account following what its follows log kept
            self.feed.adopt(self.follows.load(keep))
        self.follows.settle(self.feed.follows())
        self.feed.log = self.follows

    def save_feed(self) -> None:
        """The feed's state, for the next start (feedstate.py): once, when the relay has stopped serving."""
        try:
            feedstate.save(self.data_dir, self.feed.saved())
        except OSError as exc:  # (disk full): the next start is as after a crash, a new epoch
            log.warning("relay: the change feed's state was not kept (%s): every follower's feed starts again", exc)


def _valid_account(account: str) -> bool:
    return len(account) == 32 and all(c in "0123456789abcdef" for c in account)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


def _cid_hash(text: str) -> bytes:
    try:
        return BlobId.parse(text).hash
    except CIDError as exc:
        raise BadRequest(f"not a blob CID: {exc}") from None


def make_app(relay: Relay) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except BadRequest as exc:
            return _text(400, str(exc))
        except LoginRefused as exc:
            return _text(exc.status, str(exc))
        except Refused as exc:
            return _text(exc.status, str(exc))
        except TooLarge as exc:
            return _text(413, str(exc))
        except TooSlow as exc:  # 408 Request Timeout: the client stalled its body
            return _text(408, str(exc))
        except QuotaExceeded as exc:  # 507 Insufficient Storage: the account is full, not the object too large
            return _text(507, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relay: %s %s failed", request.method, request.path)
            return _text(500, "internal error in the relay (see its log)")

    def account_or_none(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return relay.accounts.account_of(auth[7:].strip()) if auth.startswith("Bearer ") else None

    def account(request: web.Request) -> str:
        acct = account_or_none(request)
        if acct is None:
            raise web.HTTPUnauthorized(text="log in first: this route needs an account's Bearer token")
        return acct

    async def upload(request: web.Request):
        acct = account(request)
        data = await read_upload(request, BODY_TIMEOUT)
        h = await relay.objects.put(acct, data)
        return web.json_response({"cid": "z" + b58encode(BlobId(h, len(data)).to_legacy_bytes())})

    async def download(request: web.Request):
        account(request)
        h = _cid_hash(request.match_info["cid"])
        data = await asyncio.to_thread(relay.objects.read, h)
        if data is None:
            raise web.HTTPNotFound(text="no such object on this relay")
        return web.Response(body=data, content_type="application/octet-stream")

    async def blob_redirect(request: web.Request):
        account(request)
        _cid_hash(request.match_info["cid"])
        raise web.HTTPTemporaryRedirect(f"/s5/download/{request.match_info['cid']}")

    async def delete(request: web.Request):
        acct = account(request)
        if not await relay.objects.delete(acct, _cid_hash(request.match_info["cid"])):
            raise web.HTTPNotFound(text="this account keeps no such object (only its own uploads can be deleted)")
        return web.Response(status=204)

    def ed25519_pk(pk: bytes) -> bytes:
        if len(pk) != 33 or pk[0] != 0xED:
            raise BadRequest("pk must be 0xed followed by a 32-byte Ed25519 key, base64url")
        return pk

    def pk_param(request: web.Request) -> bytes:
        return ed25519_pk(unb64url(request.query.get("pk"), "pk"))

    async def registry_get(request: web.Request):
        pk = pk_param(request)
        acct = account_or_none(request)  # anyone may read; an account's read makes its feed follow the head
        if acct is not None:
            relay.feed.follow(acct, pk)  # before the read: a change after it is named
        entry = await relay.registry.get(pk)
        if entry is None:
            return web.Response(status=404, text="")
        return web.json_response(
            {
                "pk": b64url(entry.pk),
                "revision": entry.revision,
                "data": b64url(entry.data),
                "signature": b64url(entry.signature),
            }
        )

    async def registry_post(request: web.Request):
        acct = account(request)
        doc = await read_json(request, BODY_TIMEOUT)
        if set(doc) != {"pk", "revision", "data", "signature"}:
            raise BadRequest("a registry entry has exactly the fields pk, revision, data, signature")
        rev = doc["revision"]
        if not isinstance(rev, int) or isinstance(rev, bool) or not 0 <= rev <= MAX_REVISION:
            raise BadRequest("revision must be an integer from 0 to 2^64-1")
        data, sig = field(doc, "data"), field(doc, "signature")
        if len(data) > MAX_DATA:
            raise BadRequest(f"data is {len(data)} bytes; at most {MAX_DATA} fit in a registry entry")
        if len(sig) != 64:
            raise BadRequest("signature must be 64 bytes")
        # the key checked before it is followed: a pk no head can have must not reach the feed (nor its file)
        entry = RegistryEntry(ed25519_pk(field(doc, "pk")), rev, data, sig)
        relay.feed.follow(acct, entry.pk)  # whoever sets a head hears of the others' changes to it
        await relay.registry.set(entry, acct)
        return web.Response(status=204)

    async def changes(request: web.Request):
        acct = account(request)
        q = request.query
        try:
            since = int(q.get("since", "0"))
            wait = min(MAX_WAIT, float(q.get("wait", "0")))
        except ValueError:
            raise BadRequest("since must be an integer and wait a number of seconds") from None
        if since < 0 or not wait >= 0:
            raise BadRequest("since and wait must not be negative")
        reset, cursor, items = await relay.feed.wait(acct, since, q.get("epoch"), wait)
        return web.json_response(
            {
                "epoch": relay.feed.epoch,
                "cursor": cursor,
                "reset": reset,
                "scope": "followed",
                "changes": [{"pk": b64url(pk), "revision": rev} for pk, rev in items],
            }
        )

    def challenge_get(kind: int):
        async def handler(request: web.Request):
            pub = unb64url(request.query.get("pubKey"), "pubKey")
            return web.json_response({"challenge": b64url(relay.accounts.challenge(kind, pub))})

        return handler

    def challenge_post(kind: int):
        async def handler(request: web.Request):
            doc = await read_json(request, BODY_TIMEOUT)
            token = await relay.accounts.answer(kind, doc, request.host)
            resp = web.Response(status=200)
            max_age = int(relay.accounts.token_ttl)
            resp.set_cookie("s5-auth-token", token, max_age=max_age, httponly=True, path="/", secure=request.secure)
            return resp

        return handler

    app = web.Application(middlewares=[errors], client_max_size=MAX_OBJECT_SIZE + (64 << 10))
    app.router.add_post("/s5/upload", upload)
    app.router.add_get("/s5/download/{cid}", download)
    app.router.add_get("/s5/blob/{cid}", blob_redirect)
    app.router.add_delete("/s5/delete/{cid}", delete)
    app.router.add_get("/s5/registry", registry_get)
    app.router.add_post("/s5/registry", registry_post)
    app.router.add_get("/s5/registry/changes", changes)
    for kind, name in ((REGISTER, "register"), (LOGIN, "login")):
        app.router.add_get(f"/s5/account/{name}", challenge_get(kind))
        app.router.add_post(f"/s5/account/{name}", challenge_post(kind))
    return app


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:5050, 0.0.0.0:443)")
    if int(port) > 65535:
        raise ValueError(f"--listen {text!r}: port {int(port)} is past 65535, the highest there is; give another")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted: give it without a passphrase")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key, password=_no_passphrase)  # never a prompt on the terminal
    return ctx


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of `host` (as aiohttp's TCPSite binds them), made before anything
    else is: a port in use is refused before the relay's data folder is made. Port 0: one free port, the
    first address's, for all of them."""
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        ):
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr[:1] + (port,) + addr[2:])
            s.listen(128)
            s.setblocking(False)
            port = port or s.getsockname()[1]
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def public_url(host: str, port: int, tls: bool) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"s5+{'https' if tls else 'http'}://{shown}:{port}"


async def run(
    relay: Relay,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_ready: Callable[[str, int], None] = lambda url, port: None,
    stop: asyncio.Event | None = None,
    access_log: bool = False,
    socks: list[socket.socket] | None = None,
    per_address: int = DEFAULT_PER_ADDRESS,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when none is given). `access_log`: a line per
    request on the `sessiond.relay.access` logger (method, path and query, status; never a header).
    `socks`: listening sockets made already (listen()), served instead of binding `host`:`port`.
    `per_address`: the connections one client address may hold open at once (conns.py)."""
    runner = web.AppRunner(
        make_app(relay),
        shutdown_timeout=5.0,
        access_log=logging.getLogger("sessiond.relay.access") if access_log else None,
        access_log_format='%t "%r" %s %b %Tf',
        keepalive_timeout=IDLE_TIMEOUT,
    )
    await runner.setup()
    servers: list[asyncio.Server] = []
    try:
        socks = socks or listen(host, port)
        assert runner.server is not None  # set up above
        protocols = ConnectionCap(per_address).protocols(runner.server)
        loop = asyncio.get_running_loop()
        for s in socks:  # each connection counted against its address before aiohttp's server gets it
            servers.append(await loop.create_server(protocols, sock=s, ssl=ssl_context, backlog=128))
        bound = socks[0].getsockname()[1]
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        url = public_url(host, bound, ssl_context is not None)
        note_url(relay.data_dir, url)  # for `serve invite`, which names the whole store URL to give a device
        on_ready(url, bound)
        await stop.wait()
        await relay.feed.close()
    finally:
        for server in servers:
            server.close()  # no new connections; the open ones are shut down by the runner
        await runner.cleanup()
        relay.save_feed()  # nothing answers any more: the feed is as every follower was last told
