"""A store wrapper that keeps a session's objects pinned on a remote pinning service, for users with no
always-on node: every object put through it (and the manifest every published head points to) is
asked to be pinned there, and `unpin()` removes those pins again.

Followed (facts only, the code is ours): the IPFS Pinning Service API, ipfs/pinning-services-api-spec
ipfs-pinning-service.yaml (v0.1.x): `POST /pins` with the JSON `Pin` `{"cid", "name"?, "origins"?,
"meta"?}` answers 202 and a `PinStatus` `{"requestid", "status", "created", "pin", "delegates",
"info"?}`; `GET /pins?cid=A&cid=B` (at most 10 CIDs, `style: form, explode: true`; `status` likewise,
one of queued/pinning/pinned/failed; `limit` 1..1000, default 10) answers `PinResults` `{"count",
"results": [PinStatus]}`; `DELETE /pins/{requestid}` answers 202; errors are `{"error": {"reason",
"details"?}}` with 400/401/404/409/4XX/5XX; every request carries `Authorization: Bearer <token>`.

Batching: CIDs to pin are collected and sent when BATCH are waiting and whenever a head is published
(the point where a push is complete). The API has no bulk create, so a batch is one `GET /pins?cid=`
per 10 CIDs (pins this or another device already requested are not asked again; a `failed` one is)
and one `POST /pins` for each CID not yet pinned there. Idempotent and durable: the pins requested
(CID -> requestid) and the CIDs still waiting are kept in a small JSON file (atomic writes; the CIDs
the puts added, before a push records the revision naming them: `keep_wanted`), so a restart, or a
kill -9, neither forgets a waiting pin nor asks for one twice. A pinning service that fails (down,
token refused, out of funds) never fails a push: the object and head are in the inner store; the CIDs
stay waiting, the error is kept in `status()`, and the next batch tries again.

Bounded: every append adds objects, so the pins remembered are the PINS_KEPT most recent only (in
memory and in the state file, rewritten at each batch). One forgotten is no loss: wanted again, it is
asked about (`GET /pins?cid=`) before any new request, and `unpin` looks it up by CID the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from nacl.signing import SigningKey

from ..storage.fsutil import atomic_write, ensure_durable_dir
from ..storage.redact import shown_url
from .base import CannotDelete, Freed, Store, StoreError
from .cid import BlobId, CIDError, parse_ipfs_cid
from .errors import AuthRefused, ServerError
from .http import HttpClient, RetryPolicy
from .registry import RegistryEntry

log = logging.getLogger("sessiond.stores.pinning")

BATCH = 32  # CIDs waiting before a batch is sent without waiting for a head
CIDS_PER_QUERY = 10  # the spec's maxItems for the `cid` filter of GET /pins
LIVE = ("queued", "pinning", "pinned")  # a pin request in one of these needs no new request
PINS_KEPT = 4096  # pin requests remembered (CID -> requestid), the most recent; older ones are looked up


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise StoreError(f"cannot read the pinning service token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise StoreError(f"the pinning service token file {path} is not text") from None
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token or any(c.isspace() for c in token):
        raise StoreError(f"the pinning service token file {path} must hold one access token (no spaces or line breaks)")
    return token


class PinningStore(Store):
    def __init__(
        self,
        inner: Store,
        service: str,
        *,
        token_file: str,
        state_dir: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        batch: int = BATCH,
        pins_kept: int = PINS_KEPT,
    ):
        if not service.startswith(("http://", "https://")):
            raise StoreError(f"a pinning service URL is http(s)://HOST[/PATH] (got {service!r})")
        self.inner = inner
        self.url = inner.url
        self.service = service.rstrip("/")
        self.batch = batch
        self.pins_kept = max(1, pins_kept)
        self.http = HttpClient(
            self.service, timeout=timeout, retry=retry, max_body=4 << 20, max_requests_per_second=None
        )
        self._token_file = token_file
        self._token = self.http.secret(read_token(token_file))
        self._state_path = None
        if state_dir:
            ensure_durable_dir(state_dir)
            name = hashlib.sha256(self.service.encode()).hexdigest()[:24]
            self._state_path = os.path.join(state_dir, f"pins-{name}.json")
        self._pins: dict[str, str] = {}  # CID -> requestid of our recent pin requests, oldest first
        self._pending: dict[str, None] = {}  # CIDs waiting to be pinned, in order
        self._unsaved = False  # CIDs added to _pending since the state file was written (keep_wanted)
        self._load()
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"<PinningStore {shown_url(self.url)} pinned on {shown_url(self.service)}>"

    # -- state ----------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._state_path:
            return
        try:
            with open(self._state_path, "rb") as f:
                doc = json.loads(f.read())
            pins, pending = doc["pins"], doc["pending"]
            if not isinstance(pins, dict) or not isinstance(pending, list):
                raise ValueError
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, OSError):
            # a damaged state file loses nothing the service does not know: every CID is asked about
            # (GET /pins?cid=) before a new pin request; start afresh
            log.warning("pinning state %s is unreadable; starting afresh", self._state_path)
            return
        for k, v in pins.items():
            self._remember(str(k), str(v))
        self._pending = dict.fromkeys(str(c) for c in pending)

    def _save(self) -> None:
        if self._state_path:
            doc = {"service": self.service, "pins": self._pins, "pending": list(self._pending)}
            atomic_write(self._state_path, json.dumps(doc, separators=(",", ":")).encode(), 0o600)
        self._unsaved = False  # (once written: a write that failed leaves them to the next keep_wanted)

    def _remember(self, cid: str, rid: str) -> None:
        """Our pin request `rid` for `cid`, as the most recent; the oldest past the cap is forgotten."""
        self._pins.pop(cid, None)
        self._pins[cid] = rid
        while len(self._pins) > self.pins_kept:
            del self._pins[next(iter(self._pins))]

    def status(self) -> dict:
        out: dict[str, object] = {
            "service": shown_url(self.service),  # a token in its URL is not shown
            "pinned": len(self._pins),
            "pending": len(self._pending),
            "last_error": self.last_error,
        }
        if self.last_error is not None:  # what to do, as status and doctor say it
            out["fix"] = (
                f"( umask 077; cat > {self._token_file} )  # paste a valid access token if the service refused it"
                " (read again at the next try), or check the service; the waiting pins are asked for at the next push"
            )
        return out

    # -- the service ----------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kw):
        """A request with the token; on 401/403 the token file is read again (a token renewed by its
        owner) and, if it changed, the request is sent once more."""
        try:
            return await self.http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw)
        except AuthRefused:
            fresh = read_token(self._token_file)
            if fresh == self._token:
                raise AuthRefused(
                    f"the pinning service {self.service} refused the access token in "
                    f"{self._token_file}; put a valid one there"
                ) from None
            self._token = self.http.secret(fresh)
        try:
            return await self.http.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kw)
        except AuthRefused:
            raise AuthRefused(
                f"the pinning service {self.service} refused the access token in "
                f"{self._token_file} (read again); put a valid one there"
            ) from None

    async def _existing(self, cids: list[str], statuses: tuple[str, ...]) -> dict[str, list[dict]]:
        """The pin requests the service holds for these CIDs (at most 10), by CID."""
        params: list[tuple[str, str]] = [("cid", c) for c in cids] + [("status", s) for s in statuses]
        params.append(("limit", "1000"))
        reply = await self._call("GET", "/pins", params=params)
        doc = reply.json()
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            raise ServerError(f"the pinning service {self.service} answered GET /pins without results")
        found: dict[str, list[dict]] = {}
        wanted = {self._norm(c): c for c in cids}
        for r in results:
            cid = r.get("pin", {}).get("cid") if isinstance(r, dict) and isinstance(r.get("pin"), dict) else None
            rid = r.get("requestid") if isinstance(r, dict) else None
            if isinstance(cid, str) and isinstance(rid, str) and self._norm(cid) in wanted:
                found.setdefault(wanted[self._norm(cid)], []).append(r)
        return found

    @staticmethod
    def _norm(cid: str) -> bytes | str:
        """A CID's hash, so that the service may answer it in another base."""
        try:
            return parse_ipfs_cid(cid)
        except CIDError:
            return cid

    async def _pin(self, cid: str) -> str:
        reply = await self._call(
            "POST", "/pins", json={"cid": cid, "name": f"sessiond {cid[-12:]}"}, ok=(200, 201, 202)
        )
        doc = reply.json()
        rid = doc.get("requestid") if isinstance(doc, dict) else None
        if not isinstance(rid, str) or not rid:
            raise ServerError(f"the pinning service {self.service} answered POST /pins without a requestid")
        return rid

    async def flush(self) -> int:
        """Send the waiting pin requests now; the number of new pin requests made. Raises the
        service's failure (the CIDs not done stay waiting, durably)."""
        async with self._lock:
            todo = [c for c in self._pending if c not in self._pins]
            for c in list(self._pending):
                if c in self._pins:
                    del self._pending[c]
            self._save()
            made = 0
            for i in range(0, len(todo), CIDS_PER_QUERY):
                chunk = todo[i : i + CIDS_PER_QUERY]
                found = await self._existing(chunk, LIVE)
                for cid in chunk:
                    if cid in found:
                        self._remember(cid, found[cid][0]["requestid"])
                    else:
                        self._remember(cid, await self._pin(cid))
                        made += 1
                    self._pending.pop(cid, None)
                self._save()
            self.last_error = None
            return made

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except StoreError as exc:
            self.last_error = str(exc)
            log.warning("pinning on %s: %s (%d CIDs wait for the next try)", self.service, exc, len(self._pending))

    def _want(self, h: bytes) -> None:
        cid = BlobId(h, 0).ipfs_cid()
        if cid not in self._pins and cid not in self._pending:
            self._pending[cid] = None
            self._unsaved = True

    async def keep_wanted(self) -> None:
        """The CIDs waiting, written to the state file if some were added since it was last written (once per
        revision a push records: the state file, up to PINS_KEPT pins, is not rewritten at each put)."""
        if self._unsaved:
            self._save()

    # -- Store ----------------------------------------------------------------------------------

    async def put(self, data: bytes) -> bytes:
        return (await self.put_many([data]))[0]

    async def put_many(
        self, items: list[bytes], hashes: Sequence[bytes | None] | None = None, *, timeout: float | None = None
    ) -> list[bytes]:
        """The inner store's put_many (its batch, if it has one), then the pins asked for together, in
        `timeout` too (as a put and its pins were in one before: a hung service fails the write)."""
        hs = await self.inner.put_many(items, hashes, timeout=timeout)
        for h in hs:
            self._want(h)
        if len(self._pending) >= self.batch:
            await (self._flush_quietly() if timeout is None else asyncio.wait_for(self._flush_quietly(), timeout))
        return hs

    async def set_head(self, entry: RegistryEntry) -> None:
        await self.inner.set_head(entry)
        if len(entry.data) >= 33 and entry.data[0] == 0x1E:  # 0x1e | BLAKE3 of the manifest
            self._want(entry.data[1:33])
        await self._flush_quietly()

    @property
    def heads_expire(self) -> bool:
        return self.inner.heads_expire

    async def refresh_head(self, key: SigningKey, *, margin: dt.timedelta) -> bool | None:
        return await self.inner.refresh_head(key, margin=margin)

    def take_records(self) -> dict[bytes, tuple[bytes, bool]]:
        return self.inner.take_records()

    async def put_record(self, pk: bytes, record: bytes) -> bool:
        return await self.inner.put_record(pk, record)

    async def unpin(self, hashes: list[bytes]) -> None:
        """Remove our pin requests for these objects (DELETE /pins/{requestid}), and the inner store's
        pins. A pin request this device does not remember (made by another device, or before the
        state file was lost) is looked up by CID first. Already gone (404) is success."""
        await self.inner.unpin(hashes)
        cids = [BlobId(h, 0).ipfs_cid() for h in dict.fromkeys(hashes)]
        async with self._lock:
            for c in cids:
                self._pending.pop(c, None)
            self._save()
            unknown = [c for c in cids if c not in self._pins]
            rids: dict[str, list[str]] = {c: [self._pins[c]] for c in cids if c in self._pins}
            for i in range(0, len(unknown), CIDS_PER_QUERY):
                found = await self._existing(unknown[i : i + CIDS_PER_QUERY], LIVE + ("failed",))
                for c, results in found.items():
                    rids[c] = [r["requestid"] for r in results]
            for c, ids in rids.items():
                for rid in ids:
                    await self._call("DELETE", f"/pins/{quote(rid, safe='')}", ok=(200, 202, 204), passthrough=(404,))
                self._pins.pop(c, None)
                self._save()

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        """The inner store frees what it can (its count is the report); then this device's pin requests
        on the service are removed, so the service lets the objects go."""
        try:
            out = await self.inner.free(hashes, dry_run=dry_run)
        except CannotDelete:
            out = Freed("unpinned", len(set(hashes)), 0, list(dict.fromkeys(hashes)))
        if not dry_run:
            await self.unpin(hashes)
        return out

    async def get(self, h: bytes) -> bytes:
        return await self.inner.get(h)

    async def get_capped(self, h: bytes, limit: int, what: str = "an object") -> bytes:
        return await self.inner.get_capped(h, limit, what)

    async def has(self, h: bytes) -> bool:
        return await self.inner.has(h)

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        return await self.inner.get_head(pk)

    async def get_heads(self, pks: list[bytes], *, concurrency: int = 4) -> dict[bytes, Any]:
        return await self.inner.get_heads(pks, concurrency=concurrency)

    async def head_versions(self) -> dict[bytes, object] | None:
        return await self.inner.head_versions()

    async def head_changes(self, since: object | None) -> tuple[object, set[bytes] | None] | None:
        return await self.inner.head_changes(since)

    async def head_revisions(self) -> dict[bytes, int] | None:
        return await self.inner.head_revisions()

    def write_stats(self) -> dict[str, int]:
        return self.inner.write_stats()

    def service_status(self) -> dict[str, object]:
        return {**self.inner.service_status(), "pinning": self.status()}

    def fail_rate_limits_at_once(self) -> None:
        self.http.fail_rate_limits_at_once()
        self.inner.fail_rate_limits_at_once()

    async def close(self) -> None:
        if self._pending:
            self._save()  # waiting CIDs are asked for at the next start
        await self.http.close()
        await self.inner.close()
