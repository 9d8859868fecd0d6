"""The typed keys under which the daemon's aiohttp applications keep what their handlers read (aiohttp
warns on plain string keys). A module of its own, importing nothing of the daemon's, so that the socket
API (api.py, routes/) and the OpenAI-compatible endpoint (openai_compat.py) share them without a cycle."""

from collections.abc import Callable
from typing import Any

from aiohttp import web

# The Daemon (daemon/server.py), on the socket API's app and the OpenAI-compatible endpoint's.
DAEMON_KEY: web.AppKey[Any] = web.AppKey("sessiond.daemon", object)
# The socket API's OpenAPI document (daemon/openapi.py), built at the first request for it: ~0.1 s of
# pydantic's schema work that a start no longer pays (a daemon's start is ~1 s of CPU in all).
OPENAPI_KEY: web.AppKey[Callable[[], dict]] = web.AppKey("sessiond.openapi")
# A request's Route (daemon/routes/__init__.py), set by the app before its handler runs.
ROUTE_KEY: web.RequestKey[Any] = web.RequestKey("sessiond.route", object)
