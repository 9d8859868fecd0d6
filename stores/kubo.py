"""A store on a Kubo node, through its RPC (`ipfs+http://127.0.0.1:5001`; every call is a POST).

Followed (facts only): Kubo's RPC reference (docs.ipfs.tech/reference/kubo/rpc): `block/put` takes the
block as a multipart file and `cid-codec`, `mhtype`, `pin`, and answers `{"Key", "Size"}`;
`block/get?arg=CID` answers the bytes; `block/stat?arg=CID` answers `{"Key", "Size"}`;
`routing/put?arg=/ipns/NAME` takes an IPNS record as a multipart file (`allow-offline=true` stores it
on a node with no peers); `routing/get?arg=/ipns/NAME` answers a JSON event whose `Extra` is the
record in base64; every error is HTTP 500 with `{"Message", "Code", "Type": "error"}`. The RPC's
optional authorization (Kubo's `API.Authorizations`) is a Basic or Bearer `Authorization` header.

Objects are raw blocks under their CIDv1 (raw, BLAKE3; stores/cid.py), so the CID Kubo answers must
be the one computed here. Heads are IPNS records (stores/ipns.py) signed by the head's own key.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os

from nacl.signing import SigningKey

from ..storage.clock import wall_utc
from ..storage.redact import shown_url
from .base import MAX_OBJECT_SIZE, Freed, HeadExpired, ObjectMissing, StaleHead, Store, StoreError
from .cid import BlobId, CIDError, digest, parse_ipfs_cid
from .errors import OFFLINE_FIX, AuthRefused, LyingServer, ObjectTooLarge, ServerError, StoreOffline, WrongBytes
from .heads import SeenRevisions
from .http import DEFAULT_MAX_REQUESTS_PER_SECOND, HttpClient, Reply, RetryPolicy, file_form
from .ipns import IpnsError, expired_at, expired_head, head_and_validity, head_from_record, name_of, record_for_head
from .registry import RegistryEntry
from .urls import credentials_header, parse_store_url


def read_auth_file(path: str) -> str:
    """The Authorization header value in `path`: `Bearer TOKEN`, `Basic B64`, or Kubo's own
    `API.Authorizations` forms `bearer:TOKEN` and `basic:USER:PASSWORD`, or plain `USER:PASSWORD`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as exc:
        raise StoreError(f"cannot read the Kubo RPC credentials file {path}: {exc.strerror}") from None
    if not text:
        raise StoreError(f"the Kubo RPC credentials file {path} is empty")
    low = text.lower()
    if low.startswith(("bearer ", "basic ")):
        return text
    if low.startswith("bearer:"):
        return "Bearer " + text[7:]
    if low.startswith("basic:"):
        text = text[6:]
    if ":" in text:
        return "Basic " + base64.b64encode(text.encode()).decode()
    return "Bearer " + text


def auth_secrets(header: str) -> list[str]:
    """The secrets inside an Authorization header value (read_auth_file's): a bearer's token; a Basic's
    USER:PASSWORD decoded and its password alone. A node or a proxy may echo any of them in an error."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return [value]
    try:
        plain = base64.b64decode(value, validate=True).decode()
    except ValueError:  # (binascii.Error and UnicodeDecodeError are ValueErrors)
        return [value]
    return [value, plain, plain.partition(":")[2]]


def _kubo_error(reply: Reply) -> str | None:
    """Kubo's error message if `reply` is one of its errors (500 with its JSON shape), else None."""
    if reply.status != 500:
        return None
    try:
        doc = json.loads(reply.body)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("Type") == "error" and isinstance(doc.get("Message"), str):
        return doc["Message"]
    return None


def _not_found(message: str) -> bool:
    m = message.lower()
    return "not found" in m or "could not find" in m


def _no_valid_record(message: str) -> bool:
    """A routing/get error that means the node holds no valid record of the name. Kubo validates a
    record before answering it, so one past its end of life is "routing: not found", as a name never
    published (the DHT's SearchValue, libp2p/go-libp2p-kad-dht routing.go; kubo v0.43); a router that
    answers its validator's error instead says "record is expired" (boxo ipns ErrExpiredRecord)."""
    return _not_found(message) or "expired" in message.lower()


def _offline(message: str) -> bool:
    """Whether routing/get was refused because the node runs offline (`ipfs daemon --offline`): Kubo's
    RoutingAPI.Get answers coreiface.ErrOffline, "this action must be run in online mode, try running
    'ipfs daemon' first", before it looks at what it holds (kubo core/coreapi/routing.go)."""
    return "must be run in online mode" in message.lower()


def _not_pinned(message: str) -> bool:
    return "not pinned" in message.lower()


def _same_cid(text: str, h: bytes) -> bool:
    try:
        return parse_ipfs_cid(text) == h
    except CIDError:
        return False


PIN_RM_BATCH = 64  # CIDs per pin/rm call: well inside any URL length limit (~65 characters each)


class KuboStore(Store):
    signs_heads = True  # an IPNS record, signed with the head's own key (set_head)

    def __init__(
        self,
        url: str,
        *,
        auth_file: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND,
    ):
        if url.partition("://")[0] not in ("ipfs+http", "ipfs+rpc+http", "ipfs+rpc+https"):
            raise StoreError("not a Kubo RPC URL (expected ipfs+http://HOST:PORT)")
        # A path (ipfs+rpc+https://HOST/PREFIX) is where a reverse proxy mounts the RPC: /PREFIX/api/v0/...
        # USER:PASSWORD@ (or TOKEN@) before the host is sent as authorization, and is not part of self.url.
        parsed = parse_store_url(url, "Kubo RPC")
        authority = parsed.authority
        self.url = parsed.identity
        self.http = HttpClient(
            parsed.base("/api/v0"),
            timeout=timeout,
            retry=retry,
            max_body=MAX_OBJECT_SIZE + 4096,
            max_requests_per_second=max_requests_per_second,
        )
        # `auth_file` (the home's kubo-auth) may be written after the start, or changed: a request the node
        # refuses reads it again (_rpc), so doctor's fix (write it, then `sessiond sync --wait`) needs no restart
        self._auth_file = auth_file
        self._auth: dict[str, str] = {}
        self._auth_from_file()
        if not self._auth and parsed.credentials:
            self.http.secret(parsed.credentials)
            self._auth = {"Authorization": self.http.secret(credentials_header(parsed.credentials))}
        self._heads = SeenRevisions(f"the Kubo node {authority}")
        self._records: dict[bytes, tuple[bytes, bool]] = {}  # take_records: put or read since it was last called

    def __repr__(self) -> str:
        return f"<KuboStore {shown_url(self.url)}>"

    def _auth_from_file(self) -> bool:
        """Take the credentials in the auth file, if there is one now; whether they changed."""
        if self._auth_file is None or not os.path.exists(self._auth_file):
            return False
        value = read_auth_file(self._auth_file)
        for part in auth_secrets(value):  # each form the secret takes, scrubbed from every message
            self.http.secret(part)
        header = {"Authorization": self.http.secret(value)}
        changed, self._auth = header != self._auth, header
        return changed

    async def _rpc(
        self, command: str, params, *, body=None, max_body: int | None = None, capped: bool = False
    ) -> tuple[Reply, str | None]:
        """POST one RPC command; (reply, Kubo's error message or None). Credentials the node refuses are
        read again from the auth file, and the command is sent once more if they changed."""
        for again in (False, True):
            try:
                reply = await self.http.request(
                    "POST",
                    "/" + command,
                    params=params,
                    headers=self._auth,
                    body=body,
                    final=lambda r: _kubo_error(r) is not None,
                    max_body=max_body,
                    capped=capped,
                )
            except AuthRefused:
                if again or not self._auth_from_file():
                    raise
                continue
            return reply, _kubo_error(reply)
        raise AssertionError("unreachable")  # pragma: no cover

    async def put(self, data: bytes) -> bytes:
        if len(data) > MAX_OBJECT_SIZE:
            raise ObjectTooLarge(f"object of {len(data)} bytes exceeds the 1 MiB limit")
        blob = BlobId.of(data)

        reply, err = await self._rpc(
            "block/put",
            {"cid-codec": "raw", "mhtype": "blake3", "mhlen": "32", "pin": "true"},
            body=file_form(data, "block"),
        )
        if err is not None:
            if "over" in err.lower() and "mib" in err.lower():
                raise ObjectTooLarge(f"the Kubo node refused the block as too large: {err}")
            raise ServerError(f"the Kubo node refused block/put: {self.http.scrub(err)}", 500)
        try:
            doc = reply.json()
            answered = parse_ipfs_cid(doc["Key"])
        except (KeyError, TypeError, CIDError) as exc:
            raise LyingServer(
                f"the Kubo node answered block/put with a CID that is not raw/BLAKE3 "
                f"({exc}); expected {blob.ipfs_cid()}"
            ) from None
        if answered != blob.hash or doc.get("Size") not in (None, len(data)):
            raise LyingServer(
                f"the Kubo node answered CID {doc['Key']} for a block whose CID is "
                f"{blob.ipfs_cid()}: the upload is not trusted"
            )
        return blob.hash

    async def get(self, h: bytes) -> bytes:
        cid = BlobId(h, 0).ipfs_cid()
        reply, err = await self._rpc("block/get", {"arg": cid})
        if err is not None:
            if _not_found(err):
                raise ObjectMissing(h)
            raise ServerError(f"the Kubo node failed block/get {cid}: {self.http.scrub(err)}", 500)
        if digest(reply.body) != h:
            raise WrongBytes(h, "the Kubo node sent bytes that do not match the hash")
        return reply.body

    async def has(self, h: bytes) -> bool:
        cid = BlobId(h, 0).ipfs_cid()
        _reply, err = await self._rpc("block/stat", {"arg": cid, "offline": "true"})
        if err is not None:
            if _not_found(err):
                return False
            raise ServerError(f"the Kubo node failed block/stat {cid}: {self.http.scrub(err)}", 500)
        return True

    async def unpin(self, hashes: list[bytes]) -> None:
        """Unpin objects the log no longer references (`pin/rm`), so the node's garbage collection may
        drop them. Kubo unpins its arguments in order and stops at the first that is not pinned; so a
        batch that fails that way is done again one by one, where "not pinned" is success (released
        already, or never pinned here)."""
        cids = [BlobId(h, 0).ipfs_cid() for h in dict.fromkeys(hashes)]
        for i in range(0, len(cids), PIN_RM_BATCH):
            batch = cids[i : i + PIN_RM_BATCH]
            _reply, err = await self._rpc("pin/rm", [("arg", c) for c in batch] + [("recursive", "true")])
            if err is None:
                continue
            if not _not_pinned(err):
                raise ServerError(f"the Kubo node failed pin/rm: {self.http.scrub(err)}", 500)
            for cid in batch:
                _reply, err = await self._rpc("pin/rm", [("arg", cid), ("recursive", "true")])
                if err is not None and not _not_pinned(err):
                    raise ServerError(f"the Kubo node failed pin/rm {cid}: {self.http.scrub(err)}", 500)

    async def free(self, hashes: list[bytes], *, dry_run: bool = False) -> Freed:
        """Unpin (pin/rm): the node's own garbage collection (`ipfs repo gc`, or its automatic one) drops
        the bytes later. Counted: the objects pinned here, their sizes by block/stat."""
        out = Freed("unpinned")
        for h in dict.fromkeys(hashes):
            out.gone.append(h)
            if not await self.pinned(h):
                continue
            reply, err = await self._rpc("block/stat", {"arg": BlobId(h, 0).ipfs_cid(), "offline": "true"})
            size = reply.json().get("Size", 0) if err is None and isinstance(reply.json(), dict) else 0
            out.objects, out.nbytes = out.objects + 1, out.nbytes + int(size or 0)
        if not dry_run:
            await self.unpin(out.gone)
        return out

    async def pinned(self, h: bytes) -> bool:
        """Whether the node holds a pin on this object (`pin/ls`)."""
        cid = BlobId(h, 0).ipfs_cid()
        reply, err = await self._rpc("pin/ls", {"arg": cid, "type": "all"})
        if err is not None:
            if _not_pinned(err):
                return False
            raise ServerError(f"the Kubo node failed pin/ls {cid}: {self.http.scrub(err)}", 500)
        keys = reply.json().get("Keys") if isinstance(reply.json(), dict) else None
        return isinstance(keys, dict) and any(_same_cid(k, h) for k in keys)

    async def _record(self, pk: bytes) -> bytes | None:
        """The IPNS record the node holds for head `pk` (routing/get), unchecked; None if it has none (or
        none valid: Kubo answers a record past its end of life as not found)."""
        name = name_of(pk[1:])
        reply, err = await self._rpc("routing/get", {"arg": f"/ipns/{name}"}, max_body=1 << 20, capped=True)
        if err is not None:
            if _no_valid_record(err):
                return None
            if _offline(err):
                raise StoreOffline(
                    f"the Kubo node {shown_url(self.url)} runs offline (started with `ipfs daemon --offline`): it "
                    f"refuses to read IPNS records (routing/get: {self.http.scrub(err)}), so no head can be read "
                    f"or published there; {OFFLINE_FIX}"
                )
            raise ServerError(f"the Kubo node failed routing/get /ipns/{name}: {self.http.scrub(err)}", 500)
        record = None
        for line in reply.body.splitlines():  # one JSON event per line; the value event has Extra
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("Extra"), str) and event["Extra"]:
                try:
                    record = base64.b64decode(event["Extra"], validate=True)
                except ValueError:
                    raise LyingServer(f"the Kubo node answered /ipns/{name} with a record that is not base64") from None
        if record is None:
            raise ServerError(f"the Kubo node answered routing/get /ipns/{name} with no record")
        return record

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        record = await self._record(pk)
        if record is None:
            return None
        try:
            entry = head_from_record(record, pk)
        except IpnsError as exc:
            eol = expired_at(record, pk)
            if eol is not None:
                raise HeadExpired(expired_head(name_of(pk[1:]), "the Kubo node", eol)) from None
            raise LyingServer(
                f"the Kubo node answered an IPNS record for /ipns/{name_of(pk[1:])} that is refused: {exc}"
            ) from None
        entry = self._heads.check(pk, entry)
        if self._records.get(pk, (b"",))[0] != record:
            self._records[pk] = (record, False)
        return entry

    def take_records(self) -> dict[bytes, tuple[bytes, bool]]:
        """The IPNS records put (set_head, refresh_head) or read (get_head) since the last call. Kubo's DHT
        forgets a record 48 h after it was put, whatever its end of life (go-libp2p-kad-dht
        amino.DefaultMaxRecordAge; 36 h in older versions), and Kubo's own republisher puts again only the
        records of keys in its keystore: the records of sessiond's heads, signed here, are put again by
        the devices that keep them (sync/reput.py)."""
        out, self._records = self._records, {}
        return out

    async def put_record(self, pk: bytes, record: bytes) -> bool:
        """routing/put the same signed bytes again: the DHT takes a record equal to the one it holds and
        counts its age from now (go-libp2p-kad-dht routing.go PutValue: Select only between different
        values). False if the node holds a newer record of the head (a write meanwhile)."""
        name = name_of(pk[1:])
        form = file_form(record, "record", "application/vnd.ipfs.ipns-record")
        _reply, err = await self._rpc("routing/put", {"arg": f"/ipns/{name}", "allow-offline": "true"}, body=form)
        if err is None:
            return True
        if "older value" in err.lower():
            return False
        raise ServerError(f"the Kubo node refused routing/put /ipns/{name}: {self.http.scrub(err)}", 500)

    async def refresh_head(self, key: SigningKey, *, margin: dt.timedelta) -> bool | None:
        """Republish the head signed by `key` if the node's record of it ends within `margin` (or has
        ended, if the node still answers it): the same entry, at the same sequence, with a new validity
        (the IPNS spec's republish; of two records with one sequence the later end of life is kept).
        Whether it did; None if the node holds no valid record of it, as Kubo answers for one past its
        end of life (or forgotten: its DHT keeps a record 48 h after it was put, whatever its end of
        life): there is nothing to read and renew, and the caller writes the head again from what it
        knows. A record that does not verify under `key` (forged, damaged) is left for a reader to
        refuse: only the push that follows a change replaces it."""
        pk = b"\xed" + bytes(key.verify_key)
        record = await self._record(pk)
        if record is None:
            return None
        try:
            entry, eol = head_and_validity(record, pk, expired_ok=True)
        except IpnsError:
            return False
        if eol - wall_utc() > margin:
            return False
        try:
            await self._publish(dataclasses.replace(entry, signing_key=key))
        except StaleHead:  # a push of a newer revision came first: nothing left to republish
            return False
        return True

    async def _held(self, pk: bytes) -> RegistryEntry | None:
        """The head the node's record carries for `pk`, even past its end of life; None if it holds none
        or one that does not verify."""
        record = await self._record(pk)
        if record is None:
            return None
        try:
            return head_and_validity(record, pk, expired_ok=True)[0]
        except IpnsError:
            return None

    async def set_head(self, entry: RegistryEntry) -> None:
        """Publish `entry`. Kubo keeps, of two records, the one with the higher sequence and, at an equal
        sequence, the later end of life (so that a republish replaces the record it renews): another entry
        at the revision the node holds would replace it too. So the head held is read first, and an entry
        not newer than it is StaleHead (the same entry: published again, a later end of life)."""
        held = await self._held(entry.pk)
        if held is not None and held.revision >= entry.revision and held != entry:
            raise StaleHead(f"the Kubo node holds revision {held.revision}; revision {entry.revision} is not newer")
        await self._publish(entry)

    async def _publish(self, entry: RegistryEntry) -> None:
        entry.verify()
        if entry.signing_key is None:
            raise StoreError(
                "an IPNS head can only be published by the device holding the head's key (this entry came without it)"
            )
        try:
            record = record_for_head(entry, entry.signing_key)
        except IpnsError as exc:
            raise StoreError(f"cannot publish this head as an IPNS record: {exc}") from None
        name = name_of(entry.pk[1:])

        form = file_form(record, "record", "application/vnd.ipfs.ipns-record")
        _reply, err = await self._rpc("routing/put", {"arg": f"/ipns/{name}", "allow-offline": "true"}, body=form)
        if err is not None:
            # Kubo refuses a record that is not better than the one it holds (a write meanwhile)
            current = await self._held(entry.pk)
            if current is not None and current.revision >= entry.revision:
                if current == entry:
                    return
                raise StaleHead(
                    f"the Kubo node holds revision {current.revision}; revision {entry.revision} is not newer"
                )
            raise ServerError(f"the Kubo node refused routing/put /ipns/{name}: {self.http.scrub(err)}", 500)
        self._heads.saw(entry)
        self._records[entry.pk] = (record, True)

    def fail_rate_limits_at_once(self) -> None:
        self.http.fail_rate_limits_at_once()

    async def close(self) -> None:
        await self.http.close()
