"""AsyncClient's append streams (GET /v1/appends, a WebSocket: daemon/routes/appends.py), pipelined: the
appends an app has in flight at once go on one stream, each frame sent without waiting for the answers
before it (the daemon takes a connection's frames together, so that they share its commits), each answer
matched to its append by its tag. At most PIPELINE appends are in flight on a stream (the daemon's own
bound); past that a second stream is opened, up to STREAMS (each holds one of aiohttp's 100 connections);
past those, appends wait for room.

A stream that breaks (the daemon stopped or restarted, the connection cut) fails the appends then in flight
on it: AsyncClient sends each again once, on a new stream, with its Idempotency-Key (answered with the first
result if the daemon had committed it). A stream the daemon closed while it was idle is seen by its reader
task, and the next append goes on a new one with no retry; so does the next append after a stream sat idle
for half the daemon's idle timeout (its handshake names it: calls.stream_idle_limit), which is closed here
then, before the daemon's close could be on its way (late, if the daemon's loop is busy: an append sent
meanwhile would be dropped with the stream, and sent again). An append that times out or is cancelled leaves
the stream as it is: its answer, when it comes, is dropped (the tags tell the answers apart).

Imported on AsyncClient's first append on a stream (aiohttp is, on its first use)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ClientError, keyed

PIPELINE = 64  # appends in flight at once on one stream (the daemon reads no further than 64 ahead)
STREAMS = 16  # streams at most per AsyncClient: each holds one of aiohttp's connections (100 by default)
# seconds a stream of a daemon that names no idle timeout (before it did) may sit idle and still be used
# unchecked: the daemon closes one idle for its connection_idle_timeout (config.toml, at least 1 s); one idle
# longer gets two turns of the loop first, in which its reader reads the close the daemon may have sent
IDLE_CHECK = 1.0


class Broken(Exception):
    """The stream ended before this append's answer: it may or may not have been committed."""


class AppendPipe:
    """One open stream: its appends in flight (by tag) and the task that reads their answers."""

    def __init__(self, ws: Any, idle_limit: float | None):
        self.ws = ws
        self.idle_limit = idle_limit  # seconds it may sit idle and still be used (None: not named)
        self.waiting: dict[int, asyncio.Future[dict]] = {}
        self.dead = False  # ended (closed by either side, or broken): no more appends on it
        self.idle_since = asyncio.get_running_loop().time()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        failure: Exception = Broken()
        try:
            async for msg in self.ws:  # (ends at the stream's close; pings answered by aiohttp)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break  # ERROR (a binary frame is no answer either)
                answer = json.loads(msg.data)
                if not isinstance(answer, dict) or type(answer.get("tag")) is not int:
                    failure = ClientError("the daemon's answer on the append stream is not an append's answer")
                    break
                fut = self.waiting.pop(answer["tag"], None)
                if fut is not None and not fut.done():  # (none: an append that timed out or was cancelled)
                    fut.set_result(answer)
                if not self.waiting:
                    self.idle_since = asyncio.get_running_loop().time()
        except (aiohttp.ClientError, ConnectionError):
            failure = Broken()
        except ValueError:  # not JSON
            failure = ClientError("the daemon's answer on the append stream is not JSON")
        finally:
            self.dead = True
            waiting, self.waiting = self.waiting, {}
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(failure)
                    fut.exception()  # (retrieved: a cancelled append's future logs nothing)
            if not self.ws.closed:
                await self.ws.close()

    async def append(self, tag: int, frame: str, timeout: float) -> dict:
        """Send `frame` (tagged `tag`) and return its answer; Broken if the stream ends before it."""
        import aiohttp

        if self.dead:
            raise Broken()
        fut: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.waiting[tag] = fut
        try:
            try:
                await self.ws.send_str(frame)
            except (aiohttp.ClientError, ConnectionError):
                raise Broken() from None
            return await asyncio.wait_for(fut, timeout)
        finally:
            if self.waiting.pop(tag, None) is not None and not self.waiting:
                self.idle_since = asyncio.get_running_loop().time()

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait([self.reader])


class AppendStreams:
    """An AsyncClient's streams: `append` puts an append on one with room, opening one if need be."""

    def __init__(self, open_stream: Callable[[], Awaitable[Any]]):
        self._open = open_stream  # a new stream's (WebSocket, idle limit), or None if the daemon has none
        self._retiring: set[asyncio.Task] = set()  # the closes of streams left idle
        self.pipes: list[AppendPipe] = []
        self._pick = asyncio.Lock()  # one append at a time picks (or opens) a stream: no two open one each
        self._room = asyncio.Semaphore(STREAMS * PIPELINE)
        self._tag = 0
        self.closed = False  # the client closed them: an append still on its way opens no new one

    async def append(self, sid: str, body: dict, key: str, timeout: float) -> dict | None:
        """The answer frame of an append ({tag, status, body}), or None if the daemon has no stream. Sent again
        once, on another stream, with the same key if its stream broke before the answer; Broken if that one
        broke too."""
        self._tag += 1
        tag = self._tag
        frame = json.dumps({"tag": tag, "session": sid, "key": key}) + "\n" + json.dumps(body)
        async with self._room:
            for attempt in (0, 1):
                if self.closed:  # (a retry: its first try broke as its stream was closed)
                    raise keyed(
                        ClientError(f"the client was closed while an append was on its way to {sid}"),
                        key,
                        bool(attempt),
                    )
                try:
                    pipe = await self._pipe()
                except ClientError as exc:  # no new stream for the retry: the first may have been committed
                    raise keyed(exc, key, bool(attempt)) from None
                if pipe is None:
                    return None
                try:
                    return await pipe.append(tag, frame, timeout)
                except Broken:
                    if attempt:
                        raise
        return None  # pragma: no cover

    async def _pipe(self) -> AppendPipe | None:
        """A live stream with room for one more append, or a new one (None if the daemon has none)."""
        async with self._pick:
            while True:
                self.pipes = [p for p in self.pipes if not p.dead]
                open_ = [p for p in self.pipes if len(p.waiting) < PIPELINE]
                if not open_:
                    break
                pipe = min(open_, key=lambda p: len(p.waiting))
                if pipe.waiting:
                    return pipe
                idle = asyncio.get_running_loop().time() - pipe.idle_since
                if pipe.idle_limit is not None:
                    if idle < pipe.idle_limit:
                        return pipe
                    self._retire(pipe)  # its close may be on its way: the append goes on a new stream
                    continue
                if idle < IDLE_CHECK:
                    return pipe
                for _ in range(2):  # idle a while: its reader gets to read a close the daemon sent meanwhile
                    await asyncio.sleep(0)
                if not pipe.dead:
                    return pipe
            # (the semaphore leaves room on some stream unless fewer than STREAMS are open)
            opened = await self._open()
            if opened is None:
                return None
            pipe = AppendPipe(*opened)
            self.pipes.append(pipe)
            return pipe

    def _retire(self, pipe: AppendPipe) -> None:
        """No more appends on an idle stream: closed in the background (its close waits for the daemon's)."""
        pipe.dead = True
        task = asyncio.create_task(pipe.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        self.closed = True
        async with self._pick:  # a stream being opened is open, and closed below
            pipes, self.pipes = self.pipes, []
        for p in pipes:
            await p.close()
        if self._retiring:
            await asyncio.wait(set(self._retiring))
