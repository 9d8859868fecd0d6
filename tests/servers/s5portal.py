"""A strict loopback S5 portal: the subset of the S5 portal HTTP API sessiond uses, written from the
portal's source (s5-dev/S5 lib/http_api/http_api.dart for upload, download, blob redirect and
registry; lib/service/accounts.dart for the challenge login and Bearer tokens; s5-dev/lib5
lib/src/storage_service/sign_challenge.dart for the signed response layout).

Strict: wrong methods get 405, an upload must be multipart/form-data with a `file` field, registry
JSON must have exactly the portal's keys and types and a valid signature, and every route but the
registry read and the login needs a Bearer token the portal issued. `faults` switches simulate a
misbehaving portal, so every error class a store raises has a test.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass, field

import blake3
from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from sessiond.stores.cid import BlobId, CIDError, b58encode, digest
from sessiond.stores.registry import RegistryEntry, RegistryError


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Faults:
    reject_tokens: bool = False  # every token is refused (401), even fresh ones
    expire_tokens: bool = False  # the tokens issued so far are forgotten (next request: 401, re-login)
    status: int | None = None  # answer this status to the next `times` requests (429, 500, 503)
    times: int = 0
    retry_after: str | None = None
    wrong_bytes: bool = False  # downloads answer other bytes
    truncated: bool = False  # downloads promise more bytes than they send
    overlong: bool = False  # downloads send more bytes than their Content-Length announces
    # DELETE /s5/delete/{cid} answers 401 "Endpoint disabled in config.toml", as S5's node does when its config
    # leaves http.api.delete off (s5-dev/S5 lib/http_api/http_api.dart); else no such route here (404)
    delete_disabled: bool = False
    drip: float | None = None  # every answer's body is sent one byte every this many seconds (a slow drip)
    wrong_cid: bool = False  # uploads answer another CID
    forged_head: bool = False  # registry reads answer an entry with a broken signature
    rollback_head: int | None = None  # registry reads answer this older revision (kept from history)
    hang: asyncio.Event | None = None  # requests wait on this event (a server that does not answer)
    delay: float | None = None  # every request waits this many seconds before it is answered (a slow server)
    registration_open: bool = True
    redirect: str | None = None  # every request is answered 307 to this base URL, its path kept (sent elsewhere)
    body: bytes | None = None  # every request is answered 200 with these bytes (a server that lies)
    fail_heads: set = field(default_factory=set)  # registry reads of these public keys answer 500


async def dripped(request: web.Request, answer: web.StreamResponse, faults: Faults) -> web.StreamResponse:
    """`answer` (a whole Response) sent at once, its body then one byte every `faults.drip` seconds (the rest at
    once when the fault is cleared)."""
    body = answer.body if isinstance(answer, web.Response) and isinstance(answer.body, bytes) else b""
    resp = web.StreamResponse(status=answer.status, headers={**answer.headers, "Content-Length": str(len(body))})
    await resp.prepare(request)
    sent = 0
    while sent < len(body) and faults.drip is not None:
        await resp.write(body[sent : sent + 1])
        sent += 1
        await asyncio.sleep(faults.drip)  # the fault itself (a server this slow), not a wait
    await resp.write(body[sent:])
    return resp


@dataclass
class Portal:
    authority: str = ""
    blobs: dict = field(default_factory=dict)  # hash -> bytes
    registry: dict = field(default_factory=dict)  # pk -> [entries, oldest first]
    accounts: dict = field(default_factory=dict)  # pubKey (b64url) -> account id
    tokens: dict = field(default_factory=dict)  # token -> account id
    challenges: dict = field(default_factory=dict)  # (kind, pubKey) -> challenge
    faults: Faults = field(default_factory=Faults)
    requests: list = field(default_factory=list)  # (method, path, Authorization header)
    head_reads: list = field(default_factory=list)  # the public key of each registry read, in order
    logins: int = 0


def make_app(portal: Portal) -> web.Application:
    def account_of(request: web.Request) -> int | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or portal.faults.reject_tokens:
            return None
        return portal.tokens.get(auth[7:])

    @web.middleware
    async def faults(request: web.Request, handler):
        portal.requests.append((request.method, request.path, request.headers.get("Authorization")))
        f = portal.faults
        if f.hang is not None:
            await f.hang.wait()
        if f.delay is not None:
            await asyncio.sleep(f.delay)  # the fault itself (a server this slow), not a wait
        if f.expire_tokens:
            portal.tokens.clear()
            f.expire_tokens = False
        if f.status is not None and f.times > 0:
            f.times -= 1
            headers = {"Retry-After": f.retry_after} if f.retry_after else {}
            return web.Response(status=f.status, text="simulated fault", headers=headers)
        if f.redirect is not None:
            raise web.HTTPTemporaryRedirect(f.redirect + request.path_qs)
        if f.body is not None:
            return web.Response(status=200, body=f.body, content_type="application/json")
        if f.drip is not None:
            return await dripped(request, await handler(request), f)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (KeyError, ValueError, TypeError, CIDError) as exc:
            # the portal's catch-all (http_api.dart): any thrown error is a 500 with its text
            return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")

    def need_auth(request) -> int:
        acct = account_of(request)
        if acct is None:
            raise web.HTTPUnauthorized(text="Unauthorized")
        return acct

    async def upload(request: web.Request):
        need_auth(request)
        if request.content_type != "multipart/form-data":
            raise web.HTTPBadRequest(text="expected multipart/form-data")
        reader = await request.multipart()
        data = None
        async for part in reader:
            if part.name != "file" or data is not None:
                raise web.HTTPBadRequest(text=f"unexpected multipart field {part.name!r}")
            data = await part.read()
        if data is None:
            raise web.HTTPBadRequest(text="no file field")
        h = digest(bytes(data))
        portal.blobs[h] = bytes(data)
        legacy = BlobId(h, len(data)).to_legacy_bytes()
        if portal.faults.wrong_cid:
            legacy = BlobId(digest(b"other" + data), len(data)).to_legacy_bytes()
        return web.json_response({"cid": "z" + b58encode(legacy)})

    def lookup(cid_text: str) -> bytes:
        blob = BlobId.parse(cid_text)
        data = portal.blobs.get(blob.hash)
        if data is None:
            raise web.HTTPNotFound(text="not found")
        return data

    async def download(request: web.Request):
        need_auth(request)
        data = lookup(request.match_info["cid"])
        if portal.faults.wrong_bytes:
            data = b"X" + data[1:] if data else b"X"
        if portal.faults.truncated:
            resp = web.StreamResponse(
                headers={"Content-Length": str(len(data) + 100), "Content-Type": "application/octet-stream"}
            )
            await resp.prepare(request)
            await resp.write(data)
            request.transport.close()  # the connection drops before the promised length
            return resp
        if portal.faults.overlong and request.transport is not None:
            # one write, the object whole after a Content-Length announcing half of it: what follows the
            # announced length is no HTTP answer (a server or proxy counting its body wrong)
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(data) // 2}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            request.transport.write(head.encode() + data)
            request.transport.close()
            return web.Response()
        return web.Response(body=data, content_type="application/octet-stream")

    async def delete(request: web.Request):
        need_auth(request)
        if portal.faults.delete_disabled:
            raise web.HTTPUnauthorized(text="Endpoint disabled in config.toml")
        raise web.HTTPNotFound(text="not found")  # (no delete modelled: as a portal without the route)

    async def blob_redirect(request: web.Request):
        lookup(request.match_info["cid"])
        raise web.HTTPTemporaryRedirect(f"/s5/download/{request.match_info['cid']}")

    async def registry_get(request: web.Request):
        pk = unb64url(request.query["pk"])
        portal.head_reads.append(pk)
        if pk in portal.faults.fail_heads:
            return web.Response(status=500, text="simulated fault")
        history = portal.registry.get(pk)
        if not history:
            return web.Response(status=404, text="")
        entry = history[-1]
        if portal.faults.rollback_head is not None:
            entry = next(e for e in history if e.revision == portal.faults.rollback_head)
        sig = entry.signature
        if portal.faults.forged_head:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        return web.json_response(
            {"pk": b64url(entry.pk), "revision": entry.revision, "data": b64url(entry.data), "signature": b64url(sig)}
        )

    async def registry_post(request: web.Request):
        need_auth(request)
        doc = await request.json()
        if not isinstance(doc, dict) or set(doc) != {"pk", "revision", "data", "signature"}:
            raise web.HTTPBadRequest(text="registry entry must have exactly pk, revision, data, signature")
        if not isinstance(doc["revision"], int) or isinstance(doc["revision"], bool):
            raise web.HTTPBadRequest(text="revision must be an integer")
        for k in ("pk", "data", "signature"):
            if not isinstance(doc[k], str) or "=" in doc[k]:
                raise web.HTTPBadRequest(text=f"{k} must be base64url without padding")
        entry = RegistryEntry(unb64url(doc["pk"]), doc["revision"], unb64url(doc["data"]), unb64url(doc["signature"]))
        try:
            entry.verify()
        except RegistryError:
            return web.Response(status=500, text="Invalid signature found")
        history = portal.registry.setdefault(entry.pk, [])
        if history and history[-1].revision >= entry.revision:
            return web.Response(status=500, text="Revision number too low")  # the registry throws
        history.append(entry)
        return web.Response(status=204)

    def challenge_get(kind: int):
        async def handler(request: web.Request):
            if kind == 1 and not portal.faults.registration_open:
                raise web.HTTPUnauthorized(text="Unauthorized")
            pub = request.query["pubKey"]
            challenge = secrets.token_bytes(32)
            portal.challenges[(kind, pub)] = challenge
            return web.json_response({"challenge": b64url(challenge)})

        return handler

    def challenge_post(kind: int):
        async def handler(request: web.Request):
            if kind == 1 and not portal.faults.registration_open:
                raise web.HTTPUnauthorized(text="Unauthorized")
            doc = await request.json()
            required = {"pubKey", "response", "signature", "label"} | ({"email"} if kind == 1 else set())
            if set(doc) != required:
                raise web.HTTPBadRequest(text=f"expected exactly {sorted(required)}")
            pub = doc["pubKey"]
            challenge = portal.challenges.pop((kind, pub), None)
            if challenge is None:
                raise ValueError("No challenge exists for this pubKey")
            response = unb64url(doc["response"])
            expected = bytes([kind]) + challenge + blake3.blake3(portal.authority.encode()).digest()
            if response != expected:
                raise ValueError("Invalid response")
            key = unb64url(pub)
            if key[0] != 0xED:
                raise ValueError("Only ed25519 keys are supported")
            try:
                VerifyKey(key[1:]).verify(response, unb64url(doc["signature"]))
            except BadSignatureError:
                raise ValueError("Invalid signature") from None
            if kind == 1:
                portal.accounts.setdefault(pub, len(portal.accounts) + 1)
            elif pub not in portal.accounts:
                raise ValueError("This public key is not registered on this portal")
            token = secrets.token_urlsafe(24)
            portal.tokens[token] = portal.accounts[pub]
            portal.logins += 1
            resp = web.Response(status=200)
            resp.headers["Set-Cookie"] = (
                f"s5-auth-token={token}; Path=/; Domain={portal.authority}; Max-Age=2592000; HttpOnly; Secure"
            )
            return resp

        return handler

    app = web.Application(middlewares=[faults], client_max_size=8 << 20)
    app.router.add_post("/s5/upload", upload)
    app.router.add_get("/s5/download/{cid}", download)
    app.router.add_get("/s5/blob/{cid}", blob_redirect)
    app.router.add_delete("/s5/delete/{cid}", delete)
    app.router.add_get("/s5/registry", registry_get)
    app.router.add_post("/s5/registry", registry_post)
    app.router.add_get("/s5/account/register", challenge_get(1))
    app.router.add_post("/s5/account/register", challenge_post(1))
    app.router.add_get("/s5/account/login", challenge_get(2))
    app.router.add_post("/s5/account/login", challenge_post(2))
    return app


class Running:
    """An aiohttp app served on 127.0.0.1 on a free port, in the test's event loop."""

    def __init__(self, app: web.Application):
        self.app = app
        self.runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self, port: int = 0) -> Running:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_portal() -> tuple[Portal, Running]:
    portal = Portal()
    running = await Running(make_app(portal)).start()
    portal.authority = f"127.0.0.1:{running.port}"
    return portal, running


class Threaded:
    """An app served from its own thread and event loop, for tests whose body blocks (daemon
    processes driven through the blocking client)."""

    def __init__(self, app: web.Application):
        import threading

        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.running = self.loop.run_until_complete(Running(self.app).start())
        self.port = self.running.port
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> Threaded:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
