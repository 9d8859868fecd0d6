"""The socket API's application: a versioned JSON API under /v1. The routes are declared once, in the
route table (daemon/routes/__init__.py), which drives the router, each request's checks and the OpenAPI
document at GET /v1/openapi.json; the handlers live in daemon/routes/ by area. This module assembles
them and turns every error into the one JSON error shape (api/errors.py)."""

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..storage.errors import NotFound, SessiondError
from .openapi import build_openapi
from .routes import ROUTES, Handler, Route
from .routes.common import ROUTE_KEY, body_json, ok  # noqa: F401 (the names other modules used)

log = logging.getLogger("sessiond.api")


def error_body(code: str, message: str, **details) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SessiondError as exc:
        return web.json_response(error_body(exc.code, exc.message, **exc.details), status=exc.status)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        msg = exc.reason
        if exc.status == 404:
            msg = f"no such route: {request.method} {request.path} (see GET /v1/openapi.json)"
        elif exc.status == 405:
            msg = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            msg = "request body too large"
        return web.json_response(error_body(code, msg), status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # a bug: log it with its traceback, answer without internals
        log.exception("internal error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal", "internal error; see the daemon log"), status=500)


def _bound(route: Route) -> Handler:
    """The route's handler, with the request knowing its route (and so its models)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[ROUTE_KEY] = route
        return await route.handler(request)

    handle.__name__ = route.handler.__name__
    return handle


def make_app(daemon) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=256 << 20)
    app["daemon"] = daemon
    for r in ROUTES:
        app.router.add_route(r.method, r.path, _bound(r))
    app["openapi"] = build_openapi(ROUTES, daemon.version)
    return app


__all__ = ["ROUTES", "NotFound", "Route", "error_body", "make_app"]
