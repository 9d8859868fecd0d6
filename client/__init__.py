"""Python client for the sessiond socket API.

    from sessiond.client import Client, AsyncClient
    with Client() as c:                       # the daemon of $SESSIOND_HOME or the default home
        s = c.create_session(name="demo", system_prompt="Be brief.")
        c.append(s["id"], "user", "Hello")
        print(c.messages(s["id"]))

    async with AsyncClient(home="/tmp/h") as c:
        await c.status()

Both classes expose the same methods (one per API route); the async one returns awaitables (so typed: an
app's `s = await c.status()` is a `Status`), and its streams are async iterators.
Errors from the daemon raise `ApiError` (with .status, .code, .message); no daemon raises
`DaemonNotRunning`; one that takes the connection and answers nothing within the client's timeout (stuck,
or busier than the timeout allows) raises `DaemonNotAnswering`; a socket the client will not talk to (a
long home's, outside it, in a folder another user could have made or can write to) raises `UnsafeSocket`
when the client is made; anything else that fails on the way (a stream that stops midway, a connection
broken before or during an answer, an answer that is not HTTP) raises `ClientError`, the base of them
all. An error after which a request may or may not have been done has `.done_unknown`; an append's or a
question's also names the Idempotency-Key it carried (`.idempotency_key`), with which it is sent again
safely. Threads may share a `Client` (their calls take turns on its connection).

    calls.py     every API call as a method of `Api`, written once; idempotency keys, what may be retried
    blocking.py  `Client`: http.client over the Unix socket (standard library only: the CLI starts fast)
    aio.py       `AsyncClient`: aiohttp over the Unix socket
    aiocalls.py  `AsyncApi`, AsyncClient's calls typed as awaitables (GENERATED from `Api`: .ci/aiocalls.py)
    streams.py   the server-sent event streams: change events (`events()` resumes them after a dropped
                 connection, Last-Event-ID), a streamed answer (`CompletionStream`)
    errors.py    `ClientError` and its kinds (`DaemonNotRunning`, `DaemonNotAnswering`, `UnsafeSocket`,
                 `ApiError`), and the error an answer carries

The client imports api/ (where a daemon's socket is; the models, for type checkers only) and nothing
else of sessiond.
"""

from __future__ import annotations

from .aio import AsyncClient
from .blocking import Client
from .calls import IDEMPOTENCY_HEADER, new_idempotency_key
from .errors import ApiError, ClientError, DaemonNotAnswering, DaemonNotRunning, UnsafeSocket
from .streams import CompletionStream

__all__ = [
    "IDEMPOTENCY_HEADER",
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "CompletionStream",
    "DaemonNotAnswering",
    "DaemonNotRunning",
    "UnsafeSocket",
    "new_idempotency_key",
]
