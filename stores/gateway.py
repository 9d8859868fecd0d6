"""A read-only store on a trustless IPFS gateway (`ipfs+https://GATEWAY`; `ipfs+gateway+http://` for a
LAN or loopback one): enough to import and follow a shared session with no node and no account.

Followed (facts only): ipfs/specs src/http-gateways/trustless-gateway.md: `GET /ipfs/{cid}?format=raw`
(or `Accept: application/vnd.ipld.raw`) answers the block's bytes, `GET /ipns/{name}?format=ipns-record`
(or `Accept: application/vnd.ipfs.ipns-record`) the signed record. Nothing a gateway answers is
trusted: every block is hashed, every record verified (stores/ipns.py) and checked against the
highest sequence seen. A name the gateway finds no record of is no head: a 404 (or 410), or boxo's 500
"routing: not found" (Kubo's gateway, rainbow); any other 5xx is a failing gateway.
"""

from __future__ import annotations

from ..storage.redact import shown_url
from .base import MAX_OBJECT_SIZE, CannotDelete, Freed, HeadExpired, ObjectMissing, Store, StoreError
from .cid import BlobId, digest
from .errors import LyingServer, ReadOnlyStore, WrongBytes
from .heads import SeenRevisions
from .http import DEFAULT_MAX_REQUESTS_PER_SECOND, HttpClient, Reply, RetryPolicy
from .ipns import MAX_RECORD, IpnsError, expired_at, expired_head, head_from_record, name_of
from .registry import RegistryEntry
from .urls import credentials_header, parse_store_url

NO_RECORD = b"routing: not found"  # go-libp2p's routing.ErrNotFound, as a boxo gateway answers it (HTTP 500)


def _no_record(reply: Reply) -> bool:
    """Whether `reply` is a boxo gateway's answer for an IPNS name it found no record of: HTTP 500 with the
    text "routing: not found" (gateway/handler_ipns_record.go passes GetIPNSRecord's error to webError with
    a default of 500, and routing.ErrNotFound is none of the errors it turns into a 404)."""
    return reply.status == 500 and NO_RECORD in reply.body[:1024].lower()


class GatewayStore(Store):
    read_only = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND,
    ):
        if url.partition("://")[0] not in ("ipfs+https", "ipfs+gateway+http", "ipfs+gateway+https"):
            raise StoreError("not a gateway URL (expected ipfs+https://GATEWAY)")
        # A path (ipfs+https://HOST/PREFIX) is where the gateway is mounted: /PREFIX/ipfs/..., /PREFIX/ipns/...
        # USER:PASSWORD@ (or TOKEN@) before the host is sent as authorization, and is not part of self.url.
        parsed = parse_store_url(url, "gateway")
        authority = parsed.authority
        self.url = parsed.identity
        creds = parsed.credentials
        self._auth = {"Authorization": credentials_header(creds)} if creds else {}
        self.http = HttpClient(
            parsed.base(),
            timeout=timeout,
            retry=retry,
            max_body=MAX_OBJECT_SIZE + 4096,
            max_requests_per_second=max_requests_per_second,
        )
        for value in (parsed.credentials, *self._auth.values()):
            if value:
                self.http.secret(value)
        self._heads = SeenRevisions(f"the gateway {authority}")

    def __repr__(self) -> str:
        return f"<GatewayStore {shown_url(self.url)}>"

    def _read_only(self, what: str) -> ReadOnlyStore:
        return ReadOnlyStore(
            f"{shown_url(self.url)} is a read-only gateway: it cannot {what}. Use a Kubo node "
            "(ipfs+http://127.0.0.1:5001) or an S5 portal to write"
        )

    async def put(self, data: bytes) -> bytes:
        raise self._read_only("store objects")

    async def set_head(self, entry: RegistryEntry) -> None:
        raise self._read_only("publish heads")

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        raise CannotDelete(f"{shown_url(self.url)} is a read-only gateway: it cannot free objects")

    async def get(self, h: bytes) -> bytes:
        reply = await self.http.request(
            "GET",
            f"/ipfs/{BlobId(h, 0).ipfs_cid()}",
            params={"format": "raw"},
            headers={"Accept": "application/vnd.ipld.raw", **self._auth},
            passthrough=(404, 410),
        )
        if reply.status in (404, 410):
            raise ObjectMissing(h)
        if digest(reply.body) != h:
            raise WrongBytes(h, f"the gateway {shown_url(self.url)} sent bytes that do not match the hash")
        return reply.body

    async def has(self, h: bytes) -> bool:
        try:
            await self.get(h)
        except ObjectMissing:
            return False
        return True

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        name = name_of(pk[1:])
        reply = await self.http.request(
            "GET",
            f"/ipns/{name}",
            params={"format": "ipns-record"},
            headers={"Accept": "application/vnd.ipfs.ipns-record", **self._auth},
            passthrough=(404, 410),
            final=_no_record,
            max_body=MAX_RECORD,
            capped=True,
        )
        if reply.status in (404, 410) or _no_record(reply):
            return None
        try:
            entry = head_from_record(reply.body, pk)
        except IpnsError as exc:
            eol = expired_at(reply.body, pk)
            if eol is not None:
                raise HeadExpired(expired_head(name, f"the gateway {shown_url(self.url)}", eol)) from None
            raise LyingServer(
                f"the gateway {shown_url(self.url)} answered an IPNS record for /ipns/{name} that is refused: {exc}"
            ) from None
        return self._heads.check(pk, entry)

    def fail_rate_limits_at_once(self) -> None:
        self.http.fail_rate_limits_at_once()

    async def close(self) -> None:
        await self.http.close()
