"""The socket API's application: a versioned JSON API under /v1. The routes are declared once, in the
route table (daemon/routes/__init__.py), which drives the router, each request's checks and the OpenAPI
document at GET /v1/openapi.json; the handlers live in daemon/routes/ by area. This module assembles
them and turns every error into the one JSON error shape (api/errors.py)."""

import asyncio
import functools
import logging
from collections.abc import Callable

from aiohttp import web

from ..api.idempotency import IDEMPOTENCY_HEADER
from ..storage.errors import Invalid, NotFound
from . import openai_compat
from .appkeys import DAEMON_KEY, OPENAPI_KEY, ROUTE_KEY
from .openapi import build_openapi
from .querystring import query_names, refuse_unknown_query
from .routes import ROUTES, Handler, Route
from .routes.appends import close_streams
from .routes.common import body_json, ok  # noqa: F401 (the names other modules used)
from .routes.failures import BODY_LIMIT, error_body, failure, home_of, lost_instead, too_large
from .stopgrace import UnderWay, install
from .unread import hang_up_stalled, idle_of, send, waits

log = logging.getLogger("sessiond.api")


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, a method the route has not, a body too large) in our shape."""
    if exc.status in (404, 405) and request.path.startswith("/openai/"):  # an OpenAI SDK's: OpenAI's shape
        return openai_compat.unrouted(request)
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
    msg = exc.reason
    if exc.status == 404:
        msg = f"no such route: {request.method} {request.path} (see GET /v1/openapi.json)"
    elif exc.status == 405:
        msg = f"{request.method} is not allowed on {request.path}"
    elif exc.status == 413:
        return web.json_response(too_large(), status=413)
    return web.json_response(error_body(code, msg), status=exc.status)


def _bound(route: Route, idle: float, under: UnderWay) -> Handler:
    """The route's handler, with the request knowing its route (and so its models), every error
    turned into the API's shape, and an answer whose write may wait for the app sent under the idle
    timeout (unread.py). This is done here rather than in a middleware: an application with
    any middleware pays aiohttp's middleware chain (two more coroutines, a cache look-up) on every
    request, and the appends are the hot path."""
    handler = route.handler
    # every route but OpenAI's (whose clients may add parameters of their own) refuses a query parameter
    # it does not name; the appends have no query string, so they pay one attribute read
    names = query_names(route.query) if not route.path.startswith("/openai/") else None
    where = f"{route.method} {route.path}"
    # a route that takes no body refuses one with fields, as the others refuse a field they do not name
    no_body = route.request is None and route.method != "GET" and not route.path.startswith("/openai/")
    # a POST that keeps no Idempotency-Key refuses one: ignored, a retry would do it twice (two sessions); PATCH
    # and DELETE ignore it (a client library may send one with every change: their retry comes to the same end)
    keyless = route.method == "POST" and not route.path.startswith("/openai/")
    keyless = keyless and IDEMPOTENCY_HEADER not in route.header_names

    tasks = under.tasks  # (a stop gives the requests under way the grace it sets: stopgrace.py)

    async def handle(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()  # (noted inline, not by a context manager: the appends' path)
        tasks.add(task)
        try:
            request[ROUTE_KEY] = route
            try:
                if names is not None and request.query_string:
                    refuse_unknown_query(where, names, request.query)
                if keyless and IDEMPOTENCY_HEADER in request.headers:
                    refuse_key(where)
                if no_body and request.body_exists:
                    refuse_body(where, await body_json(request))
                resp = await handler(request)
            except web.HTTPException as exc:
                if exc.content_type == "application/json":
                    if waits(request, exc):
                        await send(request, exc, idle)
                    raise
                resp = _http_error(request, exc)
            except (asyncio.CancelledError, ConnectionResetError):
                raise
            except Exception as exc:  # a SessiondError, a full disk, a bug: failures.py
                d = request.app[DAEMON_KEY]
                status, data = failure(lost_instead(exc, d), f"{request.method} {request.path}", home_of(d))
                resp = web.json_response(data, status=status)
            if waits(request, resp):  # (a test, not a timer: the appends' answers are small)
                await send(request, resp, idle)
            return resp
        finally:
            tasks.discard(task)

    handle.__name__ = handler.__name__
    return handle


def refuse_body(where: str, body: object) -> None:
    """A body sent to a route that takes none: refused (422) unless it is nothing, or an empty object."""
    if body != {}:
        fields = f" (fields {', '.join(map(repr, body))})" if isinstance(body, dict) else ""
        raise Invalid(f"{where} takes no body{fields:.200}: send none")


def refuse_key(where: str) -> None:
    """An Idempotency-Key sent to a route that does not keep one: refused (422), nothing done."""
    raise Invalid(
        f"{where} keeps no Idempotency-Key, so a retry with it would be done again, not recognised: only an append"
        " (POST /v1/sessions/{id}/messages) and a question (POST /v1/sessions/{id}/complete) keep one. Send this"
        " request without the header (a session or chat created with an `id` of your own is safe to retry: a retry"
        " that finds it is refused, 409)"
    )


def _unrouted(idle: float) -> Handler:
    """The handler of every request no route takes (the last resource, matching any path and method): a 405
    if some route has the path with other methods, else a 404, as the router itself would have refused it."""

    async def unrouted(request: web.Request) -> web.StreamResponse:
        resp = await _refused(request)
        if waits(request, resp):
            await send(request, resp, idle)
        return resp

    return unrouted


async def _refused(request: web.Request) -> web.Response:
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own:
            allowed |= (await resource.resolve(request))[1]
    exc = web.HTTPMethodNotAllowed(request.method, allowed) if allowed else web.HTTPNotFound()
    return _http_error(request, exc)


# The router tries the resources under one path prefix in the order they were added (about twenty
# under /v1/sessions, each a regular expression): the routes apps call most go first. No two
# patterns match the same path, so the order changes nothing but the time a look-up takes.
HOT_PATHS = ("/v1/sessions/{id}/messages", "/v1/sessions/{id}")


def router_order(routes: list[Route]) -> list[Route]:
    """The routes grouped by path (one router resource each), the hot paths first, then as declared."""
    paths = list(dict.fromkeys(r.path for r in routes))
    paths.sort(key=lambda p: HOT_PATHS.index(p) if p in HOT_PATHS else len(HOT_PATHS))
    return [r for p in paths for r in routes if r.path == p]


def make_app(daemon) -> web.Application:
    app = web.Application(client_max_size=BODY_LIMIT)  # no middleware: see _bound
    app[DAEMON_KEY] = daemon
    idle = idle_of(daemon)
    app.on_shutdown.append(close_streams)  # open append streams closed, not waited for
    app.on_shutdown.append(hang_up_stalled)  # answers waiting for an app that reads none: not waited for long
    under = install(app)  # then the requests under way, given the grace the stop sets (stopgrace.py)
    for r in router_order(ROUTES):
        app.router.add_route(r.method, r.path, _bound(r, idle, under))
    app.router.add_route("*", "/{tail:.*}", _unrouted(idle))

    @functools.cache
    def openapi() -> dict:
        return build_openapi(ROUTES, daemon.version)

    builder: Callable[[], dict] = openapi
    app[OPENAPI_KEY] = builder
    return app


__all__ = ["ROUTES", "NotFound", "Route", "error_body", "make_app"]
