"""The daemon itself: its status and this API's OpenAPI document."""

from aiohttp import web

from .common import daemon_of, ok


async def status(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).status())


async def openapi(request: web.Request) -> web.Response:
    return ok(request.app["openapi"])
