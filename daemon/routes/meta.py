"""The daemon itself: its status, its health checks (doctor) and this API's OpenAPI document."""

from aiohttp import web

from ..appkeys import OPENAPI_KEY
from ..doctor import diagnose
from ..testhooks import pause_for_tests
from .common import daemon_of, ok, query


async def status(request: web.Request) -> web.Response:
    await pause_for_tests("status")  # (the tests hold a status call: a daemon that does not answer it)
    return ok(await daemon_of(request).status())


async def openapi(request: web.Request) -> web.Response:
    return ok(request.app[OPENAPI_KEY]())


async def doctor(request: web.Request) -> web.Response:
    return ok(await diagnose(daemon_of(request), verify=query(request).get("verify", True)))
