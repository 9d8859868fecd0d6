"""A strict loopback Kubo node: the RPC commands sessiond uses, and a trustless gateway over the same
blocks and records.

Written from Kubo's RPC reference (docs.ipfs.tech/reference/kubo/rpc: POST only, a GET answers 405;
`block/put` with a multipart file and `cid-codec`/`mhtype`/`pin`, answering `{"Key","Size"}`;
`block/get`, `block/stat`; `routing/put` with a multipart IPNS record and `allow-offline`; `routing/get`
answering `{"Extra": base64 record, "Type": 5, ...}`; `pin/rm?arg=CID&arg=...` (`recursive` default
true) answering `{"Pins": [CID, ...]}`, unpinning in order and failing on the first argument that is not
pinned with "not pinned or pinned indirectly" (Kubo's core/commands/pin/pin.go loops over the arguments
and returns the first error); `pin/ls?arg=CID&type=all` answering `{"Keys": {CID: {"Type": "recursive",
"Name": ""}}}`, or the error "path '...' is not pinned"; errors as 500 with
`{"Message","Code","Type":"error"}`; blocks over 1 MiB refused; `API.Authorizations` refused with 403),
and from the trustless gateway spec (ipfs/specs src/http-gateways/trustless-gateway.md: `GET
/ipfs/{cid}?format=raw` as application/vnd.ipld.raw, `GET /ipns/{name}?format=ipns-record` as
application/vnd.ipfs.ipns-record; a name with no record served is HTTP 500 "routing: not found" as
boxo's gateway answers it, gateway/handler_ipns_record.go and errors.go webError). Records put are
checked as Kubo's IPNS validator does (signature, name; a record replaces the one held if it is better
by the IPNS validator's Select (boxo ipns, as js-ipns's ipnsSelector): a higher sequence, or the same
sequence and a later end of life (a republish); never the reverse, and another record just as good is
refused; the same bytes again are taken, and counted from then: go-libp2p-kad-dht routing.go PutValue
selects only between different values).

Records past their end of life are treated as Kubo does (v0.43; its DHT's value store,
libp2p/go-libp2p-kad-dht records/value_store.go, and boxo routing/offline/offline.go): `routing/get`
validates the record it holds before answering, so one past its end of life is never served: the
answer is "routing: not found" (the DHT's GetValue finds no valid value: routing.ErrNotFound), exactly
as for a name never published. `routing/put` still compares a new record with the expired one it holds
(the DHT's PutValue reads it with getLocal, which checks its age, not its EOL): the same sequence with a
later end of life replaces it, a lower sequence is refused. `Node.max_record_age` (seconds) models the
DHT forgetting a record received longer ago than that (amino.DefaultMaxRecordAge, 48 h, whatever its
EOL): it is then absent for both, until a put (of the same bytes too) counts it from then.
`Faults.serve_expired` serves an expired record anyway (a node or gateway that does not check, or an
older Kubo), for the readers' own check.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

from servers.s5portal import Running
from sessiond.stores.cid import BlobId, CIDError, digest, parse_ipfs_cid
from sessiond.stores.ipns import IpnsError, key_of_name, name_of, verify_record


@dataclass
class Faults:
    status: int | None = None  # answer this status to the next `times` requests
    times: int = 0
    retry_after: str | None = None
    wrong_bytes: bool = False
    wrong_cid: bool = False
    forged_record: bool = False  # routing/get and the gateway answer a record with a broken signature
    rollback: int | None = None  # ... answer the record of this older sequence
    serve_expired: bool = False  # routing/get and the gateway answer a record past its end of life too
    hang: asyncio.Event | None = None


@dataclass
class Node:
    blocks: dict = field(default_factory=dict)  # BLAKE3 -> bytes
    pins: set = field(default_factory=set)
    records: dict = field(default_factory=dict)  # name -> [(sequence, record bytes)], oldest first
    eols: dict = field(default_factory=dict)  # name -> the end of life of the record held
    received: dict = field(default_factory=dict)  # name -> when (time.monotonic()) the record held was put
    max_record_age: float | None = None  # seconds after its put a record is forgotten (a DHT's 48 h)
    reputs: dict = field(default_factory=dict)  # name -> how many times the record held was put again unchanged
    offline: bool = False  # started with `ipfs daemon --offline`: routing/get refused (see OFFLINE)
    auth: str | None = None  # the Authorization header required, if any
    faults: Faults = field(default_factory=Faults)
    requests: list = field(default_factory=list)


# what Kubo's routing/get answers on a node started with --offline, whatever it holds: kubo core/coreapi
# routing.go RoutingAPI.Get returns coreiface.ErrOffline when the node is not online (IsOnline = !--offline);
# routing/put with allow-offline=true still stores the record (checkOnline(allowOffline))
OFFLINE = "this action must be run in online mode, try running 'ipfs daemon' first"


def kubo_error(message: str) -> web.Response:
    return web.json_response({"Message": message, "Code": 0, "Type": "error"}, status=500)


def _aged_out(node: Node, name: str) -> bool:
    """Whether the DHT has forgotten the record held (received more than max_record_age ago)."""
    got = node.received.get(name)
    return node.max_record_age is not None and got is not None and time.monotonic() - got > node.max_record_age


def served_record(node: Node, name: str) -> bytes | None:
    history = node.records.get(name)
    if not history or _aged_out(node, name):
        return None
    if node.eols[name] <= dt.datetime.now(dt.UTC) and not node.faults.serve_expired:
        return None  # validated before it is answered: past its end of life, it is "not found"
    record = history[-1][1]
    if node.faults.rollback is not None:
        record = next(r for s, r in history if s == node.faults.rollback)
    if node.faults.forged_record:
        record = record[:-5] + bytes([record[-5] ^ 1]) + record[-4:]  # a flipped byte in the signed data
    return record


def _fault_middleware(node: Node):
    @web.middleware
    async def faults(request: web.Request, handler):
        node.requests.append((request.method, request.path_qs, request.headers.get("Authorization")))
        f = node.faults
        if f.hang is not None:
            await f.hang.wait()
        if f.status is not None and f.times > 0:
            f.times -= 1
            return web.Response(
                status=f.status, text="simulated fault", headers={"Retry-After": f.retry_after} if f.retry_after else {}
            )
        return await handler(request)

    return faults


async def _one_file(request: web.Request) -> bytes:
    if request.content_type != "multipart/form-data":
        raise web.HTTPBadRequest(text="expected a multipart/form-data body")
    reader = await request.multipart()
    data = None
    async for part in reader:
        if data is not None:
            raise web.HTTPBadRequest(text="expected exactly one file")
        data = bytes(await part.read())
    if data is None:
        raise web.HTTPBadRequest(text="file argument 'data' is required")
    return data


def make_rpc_app(node: Node) -> web.Application:
    async def rpc(request: web.Request):
        if request.method != "POST":
            return web.Response(status=405, text="405 - Method Not Allowed")
        if node.auth is not None and request.headers.get("Authorization") != node.auth:
            return web.Response(status=403, text="403 - Forbidden")
        cmd = request.match_info["cmd"]
        q = request.query
        if cmd == "block/put":
            if (q.get("cid-codec"), q.get("mhtype"), q.get("pin")) != ("raw", "blake3", "true"):
                return kubo_error("expected cid-codec=raw, mhtype=blake3, pin=true")
            data = await _one_file(request)
            if len(data) > 1 << 20:
                return kubo_error("produced block is over 1MiB: big blocks can't be exchanged with other peers")
            h = digest(data)
            node.blocks[h] = data
            node.pins.add(h)
            key_hash = digest(b"not " + data) if node.faults.wrong_cid else h
            return web.json_response({"Key": BlobId(key_hash, 0).ipfs_cid(), "Size": len(data)})
        if cmd in ("block/get", "block/stat"):
            try:
                h = parse_ipfs_cid(q["arg"])
            except (KeyError, CIDError) as exc:
                return kubo_error(f"invalid cid: {exc}")
            data = node.blocks.get(h)
            if data is None:
                return kubo_error(f"block was not found locally (offline): ipld: could not find {q['arg']}")
            if cmd == "block/stat":
                return web.json_response({"Key": q["arg"], "Size": len(data)})
            if node.faults.wrong_bytes:
                data = b"X" + data[1:]
            return web.Response(body=data, content_type="text/plain")
        if cmd in ("pin/rm", "pin/ls"):
            args = q.getall("arg", [])
            if cmd == "pin/rm" and not args:
                return kubo_error('argument "ipfs-path" is required')
            if q.get("recursive", "true") not in ("true", "false") or q.get("type", "all") not in (
                "all",
                "recursive",
                "direct",
                "indirect",
            ):
                return kubo_error("invalid option value")
            if cmd == "pin/ls" and not args:
                return web.json_response(
                    {
                        "Keys": {
                            c: {"Type": "recursive", "Name": ""}
                            for c in sorted(BlobId(h, 0).ipfs_cid() for h in node.pins)
                        }
                    }
                )
            keys, removed = {}, []
            for arg in args:
                try:
                    h = parse_ipfs_cid(arg.removeprefix("/ipfs/"))
                except CIDError as exc:
                    return kubo_error(f"invalid path {arg!r}: {exc}")
                if h not in node.pins:
                    if cmd == "pin/rm":
                        return kubo_error("not pinned or pinned indirectly")
                    return kubo_error(f"path '{arg}' is not pinned")
                if cmd == "pin/rm":
                    node.pins.discard(h)
                    removed.append(BlobId(h, 0).ipfs_cid())
                else:
                    keys[BlobId(h, 0).ipfs_cid()] = {"Type": "recursive", "Name": ""}
            return web.json_response({"Pins": removed} if cmd == "pin/rm" else {"Keys": keys})
        if cmd in ("routing/put", "routing/get"):
            arg = q.get("arg", "")
            if not arg.startswith("/ipns/"):
                return kubo_error("invalid key: only /ipns/ keys are supported here")
            name = arg[6:]
            try:
                pk = key_of_name(name)
            except IpnsError as exc:
                return kubo_error(f"invalid IPNS name: {exc}")
            name = name_of(pk)
            if cmd == "routing/get":
                if node.offline:
                    return kubo_error(OFFLINE)
                record = served_record(node, name)
                if record is None:
                    return kubo_error("routing: not found")
                return web.json_response(
                    {"Extra": base64.b64encode(record).decode(), "ID": "", "Responses": None, "Type": 5}
                )
            if q.get("allow-offline") != "true":
                return kubo_error("can't put while offline: pass `--allow-offline` to override")
            record = await _one_file(request)
            try:
                rec = verify_record(record, pk)
            except IpnsError as exc:
                return kubo_error(f"record validation failed: {exc}")
            history = node.records.setdefault(name, [])
            held = history and not _aged_out(node, name)  # (an expired record still counts: see above)
            if held and history[-1][1] == record:  # the same bytes: taken, and aged from now (a re-put)
                node.received[name] = time.monotonic()
                node.reputs[name] = node.reputs.get(name, 0) + 1
                return web.Response(text=json.dumps({"Extra": "", "ID": "", "Responses": None, "Type": 5}) + "\n")
            if held and (history[-1][0], node.eols[name]) >= (rec.sequence, rec.validity):
                return kubo_error("can't replace a newer value with an older value")
            history.append((rec.sequence, record))
            node.eols[name] = rec.validity
            node.received[name] = time.monotonic()
            return web.Response(text=json.dumps({"Extra": "", "ID": "", "Responses": None, "Type": 5}) + "\n")
        return web.Response(status=404, text="404 page not found")

    app = web.Application(middlewares=[_fault_middleware(node)], client_max_size=8 << 20)
    app.router.add_route("*", "/api/v0/{cmd:.+}", rpc)
    return app


def make_gateway_app(node: Node) -> web.Application:
    async def ipfs(request: web.Request):
        if request.query.get("format") != "raw" and request.headers.get("Accept") != "application/vnd.ipld.raw":
            return web.Response(status=400, text="only raw blocks are served (format=raw)")
        try:
            h = parse_ipfs_cid(request.match_info["cid"])
        except CIDError:
            return web.Response(status=400, text="invalid CID")
        data = node.blocks.get(h)
        if data is None:
            return web.Response(status=404, text="block not found")
        if node.faults.wrong_bytes:
            data = b"X" + data[1:]
        return web.Response(body=data, content_type="application/vnd.ipld.raw")

    async def ipns_route(request: web.Request):
        if (
            request.query.get("format") != "ipns-record"
            and request.headers.get("Accept") != "application/vnd.ipfs.ipns-record"
        ):
            return web.Response(status=400, text="only IPNS records are served (format=ipns-record)")
        try:
            name = name_of(key_of_name(request.match_info["name"]))
        except IpnsError:
            return web.Response(status=400, text="invalid IPNS name")
        record = served_record(node, name)
        if record is None:  # boxo's gateway: GetIPNSRecord's routing.ErrNotFound is no IPLD "not found",
            return web.Response(status=500, text="routing: not found\n")  # so webError keeps its default 500
        return web.Response(body=record, content_type="application/vnd.ipfs.ipns-record")

    app = web.Application(middlewares=[_fault_middleware(node)])
    app.router.add_get("/ipfs/{cid}", ipfs)
    app.router.add_get("/ipns/{name}", ipns_route)
    return app


async def start_node(auth: str | None = None) -> tuple[Node, Running, Running]:
    node = Node(auth=auth)
    rpc = await Running(make_rpc_app(node)).start()
    gateway = await Running(make_gateway_app(node)).start()
    return node, rpc, gateway
