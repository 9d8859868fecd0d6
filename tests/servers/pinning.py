"""A strict loopback pinning service: the IPFS Pinning Service API as sessiond uses it, written from
the spec (ipfs/pinning-services-api-spec, ipfs-pinning-service.yaml v0.1.x): `GET /pins` with the
filters `cid` (at most 10, repeated), `status` (repeated; queued/pinning/pinned/failed), `limit`
(1..1000, default 10), `name`, `match`, `before`, `after`, `meta`, and with no filter only pinned
requests; `POST /pins` with a JSON `Pin` (`cid` required; `name` at most 255 characters; `origins`
and `meta` optional; nothing else) answering 202 and a `PinStatus`; `GET`/`DELETE /pins/{requestid}`
(DELETE answers 202 with no body; an unknown id 404); every route needs `Authorization: Bearer`; every
error is `{"error": {"reason", "details"}}`. A new request is `queued`, and `pinned` when next read
(a service that fetches quickly). `faults` simulate a misbehaving service (401, 429, 5xx).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from sessiond.stores.cid import CIDError, parse_ipfs_cid

STATUSES = ("queued", "pinning", "pinned", "failed")
LIST_PARAMS = {"cid", "name", "match", "status", "before", "after", "limit", "meta"}


@dataclass
class Faults:
    status: int | None = None  # answer this status to the next `times` requests
    times: int = 0
    retry_after: str | None = None
    fail_pins: bool = False  # new pin requests end `failed` instead of `pinned`


@dataclass
class Service:
    tokens: set = field(default_factory=lambda: {"s3cret-token"})
    pins: dict = field(default_factory=dict)  # requestid -> PinStatus (dict)
    faults: Faults = field(default_factory=Faults)
    requests: list = field(default_factory=list)  # (method, path_qs)
    _tick: int = 0

    def live(self, cid: str) -> list[dict]:
        return [p for p in self.pins.values() if p["pin"]["cid"] == cid and p["status"] != "failed"]


def failure(status: int, reason: str, details: str) -> web.Response:
    return web.json_response({"error": {"reason": reason, "details": details}}, status=status)


def make_app(svc: Service) -> web.Application:
    @web.middleware
    async def mw(request: web.Request, handler):
        svc.requests.append((request.method, request.path_qs))
        f = svc.faults
        if f.status is not None and f.times > 0:
            f.times -= 1
            return web.json_response(
                {"error": {"reason": "SIMULATED", "details": "simulated fault"}},
                status=f.status,
                headers={"Retry-After": f.retry_after} if f.retry_after else {},
            )
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in svc.tokens:
            return failure(401, "UNAUTHORIZED", "Access token is missing or invalid")
        return await handler(request)

    def settle() -> None:
        for p in svc.pins.values():
            if p["status"] == "queued":
                p["status"] = "failed" if svc.faults.fail_pins else "pinned"

    async def list_pins(request: web.Request):
        q = request.query
        unknown = set(q) - LIST_PARAMS
        if unknown:
            return failure(400, "BAD_REQUEST", f"unknown parameters {sorted(unknown)}")
        cids = q.getall("cid", [])
        if len(cids) > 10 or len(set(cids)) != len(cids):
            return failure(400, "BAD_REQUEST", "cid: at most 10 unique CIDs")
        for c in cids:
            if "," in c:
                return failure(400, "BAD_REQUEST", "cid is repeated (?cid=A&cid=B), not a list")
        statuses = q.getall("status", [])
        if any(s not in STATUSES for s in statuses):
            return failure(400, "BAD_REQUEST", f"status must be one of {STATUSES}")
        try:
            limit = int(q.get("limit", "10"))
        except ValueError:
            return failure(400, "BAD_REQUEST", "limit must be an integer")
        if not 1 <= limit <= 1000:
            return failure(400, "BAD_REQUEST", "limit must be within 1..1000")
        settle()
        if not statuses:
            statuses = ["pinned"]  # with no status filter, only successful pins
        found = [p for p in svc.pins.values() if p["status"] in statuses and (not cids or p["pin"]["cid"] in cids)]
        found.sort(key=lambda p: p["created"], reverse=True)
        return web.json_response({"count": len(found), "results": found[:limit]})

    async def add_pin(request: web.Request):
        if request.content_type != "application/json":
            return failure(400, "BAD_REQUEST", "the body must be application/json")
        try:
            pin = json.loads(await request.read())
        except ValueError:
            return failure(400, "BAD_REQUEST", "the body is not JSON")
        if (
            not isinstance(pin, dict)
            or not isinstance(pin.get("cid"), str)
            or set(pin) - {"cid", "name", "origins", "meta"}
        ):
            return failure(400, "BAD_REQUEST", "a Pin is {cid, name?, origins?, meta?}")
        try:
            parse_ipfs_cid(pin["cid"])
        except CIDError as exc:
            return failure(400, "BAD_REQUEST", f"invalid cid: {exc}")
        if "name" in pin and (not isinstance(pin["name"], str) or len(pin["name"]) > 255):
            return failure(400, "BAD_REQUEST", "name: a string of at most 255 characters")
        svc._tick += 1
        created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=svc._tick)
        rid = str(uuid.uuid4())
        status = {
            "requestid": rid,
            "status": "queued",
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pin": pin,
            "delegates": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLoopbackPinningService"],
        }
        svc.pins[rid] = status
        return web.json_response(status, status=202)

    async def get_pin(request: web.Request):
        settle()
        p = svc.pins.get(request.match_info["rid"])
        if p is None:
            return failure(404, "NOT_FOUND", "The specified resource was not found")
        return web.json_response(p)

    async def delete_pin(request: web.Request):
        if svc.pins.pop(request.match_info["rid"], None) is None:
            return failure(404, "NOT_FOUND", "The specified resource was not found")
        return web.Response(status=202)

    app = web.Application(middlewares=[mw])
    app.router.add_get("/pins", list_pins, allow_head=False)
    app.router.add_post("/pins", add_pin)
    app.router.add_get("/pins/{rid}", get_pin, allow_head=False)
    app.router.add_delete("/pins/{rid}", delete_pin)
    return app


async def start_service():
    from servers.s5portal import Running

    svc = Service()
    running = await Running(make_app(svc)).start()
    return svc, running
