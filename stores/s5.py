"""A store on an S5 portal, through its HTTP API (`s5+https://PORTAL`, `s5+http://HOST:PORT`).

Followed (facts only, the code is ours):
* s5-dev/S5 lib/http_api/http_api.dart: `POST /s5/upload` (multipart field `file`, or a raw body)
  answers `{"cid": <base58btc CID>}`; `GET /s5/download/:cid` answers the bytes of a raw CID;
  `GET /s5/blob/:cid` answers a 307 to where the bytes are; `GET /s5/registry?pk=` answers
  `{"pk", "revision", "data", "signature"}` (base64url without padding) or 404; `POST /s5/registry`
  takes the same JSON and answers 204.
* s5-dev/S5 lib/service/accounts.dart: `GET /s5/account/register|login?pubKey=` answers
  `{"challenge": base64url}` (32 bytes); `POST` the same path with JSON `{"pubKey", "response",
  "signature", "label"}` (and `"email"` to register), where `response` is 65 bytes
  (type | challenge | 32 more) and `signature` the Ed25519 signature of `response` by `pubKey`
  (0xed | key); the token comes back in `Set-Cookie: s5-auth-token=...`, and is then accepted as
  `Authorization: Bearer <token>`.
* s5-dev/lib5 lib/src/storage_service/sign_challenge.dart: `response = type (1 register, 2 login) |
  challenge | BLAKE3(utf8(portal authority))`.
* A portal's raw CID is S5's legacy form `0x26 0x1f | BLAKE3 | size` (stores/cid.py reads it).

Every object read is checked against its BLAKE3 hash, every CID a portal answers against the one
computed here, every head against its signature, key and the highest revision seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from http.cookies import SimpleCookie
from typing import Any

from ..storage.fsutil import atomic_write, ensure_durable_dir
from .base import MAX_OBJECT_SIZE, CannotDelete, Freed, ObjectMissing, StaleHead, Store, StoreError
from .cid import BlobId, CIDError, b58encode, digest
from .errors import RELAY_INVITE, AuthRefused, LyingServer, NoRelayAccount, ObjectTooLarge, ServerError, WrongBytes
from .heads import SeenRevisions
from .http import DEFAULT_MAX_REQUESTS_PER_SECOND, HttpClient, RetryPolicy, file_form
from .registry import RegistryEntry
from .s5account import CHALLENGE_LOGIN, CHALLENGE_REGISTER, account_key, b64url, challenge_response, unb64url
from .s5feed import ChangeFeed
from .urls import parse_store_url

# A failed look for the relay's change feed (the store down, a 5xx) is not repeated at every poll: first
# after FEED_PROBE_BACKOFF[0] seconds, then twice as long each time it fails again, up to [1].
FEED_PROBE_BACKOFF = (2.0, 60.0)


# What S5's node answers (401) a request to an endpoint its config turns off (s5-dev/S5 lib/http_api/http_api.dart:
# DELETE /s5/delete/{cid} without http.api.delete): no credentials are at fault, and no login mends it
ENDPOINT_DISABLED = "Endpoint disabled in config.toml"
# What a sessiond relay answers (404) a delete of an object the account keeps none of (relay/app.py): the one 404 a
# delete meets that says "no such object". S5's node, whose route it is (s5-dev/S5 lib/http_api/http_api.dart),
# answers a delete 200 whether or not the account pinned the object; any other 404 is a portal's router finding no
# such route (a portal that does not delete), not an answer about the object
NO_SUCH_OBJECT = "keeps no such object"


def _text(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace")


def portal_raw_cid(h: bytes) -> str:
    """The CID a portal downloads by: legacy raw form, hash only (the size is optional to it)."""
    return "z" + b58encode(b"\x26\x1f" + h)


class S5Store(Store):
    def __init__(
        self,
        url: str,
        *,
        account_seed: bytes | None = None,
        token_dir: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND,
    ):
        if url.partition("://")[0] not in ("s5+http", "s5+https"):
            raise StoreError("not an S5 portal URL (expected s5+https://PORTAL)")
        # s5+http://INVITE@HOST:PORT: an invite to a `sessiond serve` relay whose registration is
        # closed, sent once, with the registration (JSON field `invite`). Never part of self.url.
        # A path (s5+https://HOST/PREFIX) is where the portal is mounted: every request goes below it.
        parsed = parse_store_url(url, "S5 portal")
        invite, authority = parsed.credentials, parsed.authority
        self.url = parsed.identity
        self.authority = authority
        self.http = HttpClient(
            parsed.base(),
            timeout=timeout,
            retry=retry,
            max_body=MAX_OBJECT_SIZE + 4096,
            max_requests_per_second=max_requests_per_second,
        )
        self._invite = self.http.secret(invite) if invite else None
        self._key = account_key(account_seed, authority) if account_seed else None
        self._token_path = None
        if token_dir:
            ensure_durable_dir(token_dir)
            # a portal mounted under a path has tokens of its own (none for the bare host: as before)
            name = hashlib.sha256((authority.lower() + parsed.path).encode()).hexdigest()[:24]
            self._token_path = os.path.join(token_dir, f"s5-{name}.token")
        self._token: str | None = self._load_token()
        self._login_lock = asyncio.Lock()
        self._heads = SeenRevisions(f"the S5 portal {authority}")
        self._feed: ChangeFeed | None = None
        self._no_feed = False
        self._feed_probe_at = 0.0  # monotonic time before which a failed look for the feed is not repeated
        self._feed_probe_wait: float | None = None  # the wait after the next failed look (None: the first)

    def __repr__(self) -> str:
        return f"<S5Store {self.url}>"

    # -- accounts -------------------------------------------------------------------------------

    def _load_token(self) -> str | None:
        if not self._token_path:
            return None
        try:
            with open(self._token_path, encoding="ascii") as f:
                token = f.read().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return self.http.secret(token) or None

    def _save_token(self, token: str) -> None:
        self._token = self.http.secret(token)
        if self._token_path:
            atomic_write(self._token_path, token.encode("ascii"), 0o600)

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def _challenge_login(self, path: str, kind: int) -> tuple[str | None, str]:
        """One challenge round on `path`; the token, or a str saying why the portal refused the signed
        answer (`HTTP 404: this public key is not registered ...`): an answer, not a failure of the portal
        (S5 portals answer every refusal 500). A portal failing otherwise (502, an answer cut short) raises."""
        assert self._key is not None  # called only for a store given a key
        pub = b64url(b"\xed" + bytes(self._key.verify_key))
        reply = await self.http.request(
            "GET",
            path,
            params={"pubKey": pub},
            headers=self._auth() if kind == CHALLENGE_REGISTER else None,
            retry=False,
        )
        try:
            challenge = unb64url(reply.json()["challenge"])
        except (KeyError, TypeError, ValueError):
            raise ServerError(f"the S5 portal {self.authority} sent a login challenge we cannot read") from None
        response, signature = challenge_response(self._key, kind, challenge, self.authority)
        body: dict[str, Any] = {
            "pubKey": pub,
            "response": b64url(response),
            "signature": b64url(signature),
            "label": "sessiond",
        }
        if kind == CHALLENGE_REGISTER:
            body["email"] = None
            if self._invite:
                body["invite"] = self._invite
        reply = await self.http.request("POST", path, json=body, retry=False, passthrough=(400, 404, 500))
        if reply.status != 200:
            text = self.http.scrub(reply.body[:300].decode("utf-8", "replace")).strip()
            return None, f"HTTP {reply.status}" + (f": {text}" if text else "")
        cookie = SimpleCookie()
        try:
            cookie.load(reply.headers.get("Set-Cookie", ""))
        except Exception:
            pass
        morsel = cookie.get("s5-auth-token")
        if morsel is None or not morsel.value:
            raise AuthRefused(f"the S5 portal {self.authority} accepted the login but sent no token")
        return morsel.value, ""

    async def _login(self, failed_token: str | None) -> None:
        if self._key is None:
            raise AuthRefused(
                f"the S5 portal {self.authority} requires an account, and this store has no device key to log in with"
            )
        async with self._login_lock:
            if self._token != failed_token:
                return  # another request logged in meanwhile
            token, login_said = await self._challenge_login("/s5/account/login", CHALLENGE_LOGIN)
            if token is None:
                token, register_said = await self._challenge_login("/s5/account/register", CHALLENGE_REGISTER)
            if token is None:
                said = (
                    f"both: {login_said}"
                    if login_said == register_said
                    else f"login: {login_said}; registration: {register_said}"
                )
                refused = NoRelayAccount if RELAY_INVITE in said else AuthRefused
                raise refused(
                    f"the S5 portal {self.authority} refused both login and registration for this device's account"
                    f" ({said})"
                )
            self._save_token(token)

    async def _call(self, method: str, path: str, **kw):
        """A request with our token; on 401/403 one fresh login, then the request once more. With no
        token yet and a key to log in with, the login comes first (every route but the registry read
        needs it, and a first push sends many uploads at once: each would go out in full to be
        refused); a token that fresh is not renewed again on a refusal."""
        fresh = False
        if self._token is None and self._key is not None and not (method == "GET" and path == "/s5/registry"):
            await self._login(None)
            fresh = True
        token = self._token
        if not fresh:
            try:
                return await self.http.request(method, path, headers=self._auth(), **kw)
            except AuthRefused as exc:
                if ENDPOINT_DISABLED in str(exc):
                    raise  # (its config's, not our token's: see free)
                await self._login(token)
        try:
            return await self.http.request(method, path, headers=self._auth(), **kw)
        except AuthRefused as exc:
            raise type(exc)(f"{exc} (after a fresh login)") from None

    # -- objects --------------------------------------------------------------------------------

    async def put(self, data: bytes) -> bytes:
        if len(data) > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(f"object of {len(data)} bytes exceeds the 1 MiB limit")
        blob = BlobId.of(data)

        reply = await self._call("POST", "/s5/upload", body=file_form(data, "blob"))
        try:
            answered = BlobId.parse(reply.json()["cid"])
        except (KeyError, TypeError, CIDError) as exc:
            raise ServerError(
                f"the S5 portal {self.authority} answered the upload with no usable CID ({exc})"
            ) from None
        if answered != blob:
            raise LyingServer(
                f"the S5 portal {self.authority} answered CID {answered} for an object whose "
                f"id is {blob}: the upload is not trusted"
            )
        return blob.hash

    async def get(self, h: bytes) -> bytes:
        reply = await self._call("GET", f"/s5/download/{portal_raw_cid(h)}", passthrough=(404,))
        if reply.status == 404:
            raise ObjectMissing(h)
        if digest(reply.body) != h:
            raise WrongBytes(h, f"the S5 portal {self.authority} sent bytes that do not match the hash")
        return reply.body

    async def has(self, h: bytes) -> bool:
        """A HEAD of the download (S5's router answers HEAD on its GET routes, as aiohttp's does): no
        bytes travel. A portal that refuses HEAD (405, 501) is asked with a GET, verified."""
        reply = await self._call("HEAD", f"/s5/download/{portal_raw_cid(h)}", passthrough=(404, 405, 501))
        if reply.status == 404:
            return False
        if reply.status in (405, 501):
            try:
                await self.get(h)
            except ObjectMissing:
                return False
        return True

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        """DELETE /s5/delete/{cid}: the portal (or relay) drops this account's pin, and the bytes once no
        account pins them; a relay refuses (404, NO_SUCH_OBJECT) what this account did not upload. Sizes come from a
        HEAD. A portal that does not delete (no route: 405, 501, or a 404 that does not say NO_SUCH_OBJECT; its
        delete turned off: 401 ENDPOINT_DISABLED) is a CannotDelete: the candidates stay."""
        out = Freed("deleted")
        for h in dict.fromkeys(hashes):
            cid = portal_raw_cid(h)
            head = await self._call("HEAD", f"/s5/download/{cid}", passthrough=(404, 405, 501))
            size = int(head.headers.get("Content-Length") or 0) if head.status == 200 else 0
            if dry_run:
                if head.status != 404:
                    out.objects, out.nbytes = out.objects + 1, out.nbytes + size
                continue
            try:
                reply = await self._call("DELETE", f"/s5/delete/{cid}", ok=(200, 204), passthrough=(404, 405, 501))
            except AuthRefused as exc:
                if ENDPOINT_DISABLED not in str(exc):
                    raise
                raise CannotDelete(
                    f"the S5 portal {self.authority} does not delete objects (its delete endpoint is disabled in its"
                    " config: http.api.delete)"
                ) from None
            if reply.status in (405, 501) or (reply.status == 404 and NO_SUCH_OBJECT not in _text(reply.body)):
                raise CannotDelete(
                    f"the S5 portal {self.authority} does not delete objects (HTTP {reply.status}"
                    f"{': it has no delete route' if reply.status == 404 else ''})"
                )
            out.gone.append(h)
            if reply.status != 404:  # 404, said so: this account keeps no such object (freed before, or not ours)
                out.objects, out.nbytes = out.objects + 1, out.nbytes + size
        return out

    # -- heads ----------------------------------------------------------------------------------

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        reply = await self._call("GET", "/s5/registry", params={"pk": b64url(pk)}, passthrough=(404,), capped=True)
        if reply.status == 404:
            return None
        doc = reply.json()
        try:
            entry = RegistryEntry(
                unb64url(doc["pk"]), int(doc["revision"]), unb64url(doc["data"]), unb64url(doc["signature"])
            )
        except (KeyError, TypeError, ValueError):
            raise LyingServer(f"the S5 portal {self.authority} answered a registry entry we cannot read") from None
        if isinstance(doc["revision"], bool) or not 0 <= entry.revision < 1 << 64:
            raise LyingServer(f"the S5 portal {self.authority} answered a registry entry with a bad revision")
        return self._heads.check(pk, entry)

    async def set_head(self, entry: RegistryEntry) -> None:
        entry.verify()
        body = {
            "pk": b64url(entry.pk),
            "revision": entry.revision,
            "data": b64url(entry.data),
            "signature": b64url(entry.signature),
        }
        try:
            await self._call("POST", "/s5/registry", json=body, ok=(200, 204), retry=True)
        except (ServerError, StoreError) as exc:
            if type(exc) not in (ServerError, StoreError):
                raise  # unreachable, timeout, auth: not a refusal of this revision
            # A portal refuses an old revision with an error (S5's registry throws); tell it apart.
            current = await self.get_head(entry.pk)
            if current is not None and current.revision >= entry.revision:
                if current == entry:
                    self._heads.saw(entry)
                    return
                raise StaleHead(
                    f"the S5 portal holds revision {current.revision}; revision {entry.revision} is not newer"
                ) from None
            raise
        self._heads.saw(entry)

    async def _change_feed(self) -> ChangeFeed | None:
        """The relay's change feed, started on first use; None from a portal without it."""
        if self._no_feed:
            return None
        if self._feed is None:
            if time.monotonic() < self._feed_probe_at:
                return None  # the last look failed: followers read each head until it is time to look again
            feed = ChangeFeed(self._call, self.authority, self.http.timeout)
            try:
                if not await feed.poll(0):
                    self._no_feed = True  # a portal without the feed: asked once, never again
                    return None
            except StoreError:
                first, longest = FEED_PROBE_BACKOFF
                wait = first if self._feed_probe_wait is None else self._feed_probe_wait
                self._feed_probe_at = time.monotonic() + wait
                self._feed_probe_wait = min(wait * 2, longest)
                return None
            self._feed_probe_wait = None
            self._feed = feed
            feed.start()
        return self._feed

    async def head_versions(self) -> dict[bytes, object] | None:
        """Every head's revision as the relay's change feed (`sessiond serve`) last told it: one
        long-poll request kept open in the background, so a new head is known as soon as it is set and
        this answer costs no request. None from a portal without the feed (then followers read each
        head), and while the feed is failing."""
        feed = await self._change_feed()
        return feed.versions() if feed is not None else None

    async def head_changes(self, since: object | None) -> tuple[object, set[bytes] | None] | None:
        """The heads the relay's change feed named since `since` (Store.head_changes): no request, and
        work in proportion to what changed, not to how many heads the relay holds."""
        feed = await self._change_feed()
        return feed.changes_since(since) if feed is not None else None

    async def head_revisions(self) -> dict[bytes, int] | None:
        """Each head's revision as the relay's change feed last named it (Store.head_revisions): its last
        reset's answer, updated by what it named since; no request. None from a portal without the feed,
        and while the feed is failing past its grace."""
        feed = await self._change_feed()
        return feed.revisions() if feed is not None else None

    async def has_change_feed(self) -> bool:
        """Whether the server is a relay (`sessiond serve`: it has the change feed) rather than a plain
        S5 portal. One request the first time (none if the feed is already followed); False when the
        server does not answer."""
        if self._no_feed:
            return False
        if self._feed is not None:
            return True
        try:
            return await ChangeFeed(self._call, self.authority, self.http.timeout).poll(0)
        except StoreError:
            return False

    def fail_rate_limits_at_once(self) -> None:
        self.http.fail_rate_limits_at_once()

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.stop()
            self._feed = None
        await self.http.close()
