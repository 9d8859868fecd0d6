"""What stands between a provider's first token and the app (issue 16, bench/complete.py): the provider
client in-process against the loopback provider (tests/servers/openai_server.py). The endpoints that use
it are tested end to end in test_model.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from conftest import wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.daemon.answering import Answering
from sessiond.daemon.appkeys import DAEMON_KEY
from sessiond.daemon.openai_compat import PREFIX, ROUTES, Compat
from sessiond.daemon.providers import Providers
from sessiond.storage.closing import Closing
from sessiond.storage.errors import Conflict


@pytest.fixture(scope="module")
def loop_provider():
    p, server = serve_threaded(Provider())
    yield p, server
    server.stop()


def _providers(server) -> Providers:
    return Providers({"loop": {"base_url": f"http://127.0.0.1:{server.port}/v1"}}, "loop")


BODY = {"model": "echo-1", "messages": [{"role": "user", "content": "a b"}]}


def test_a_stream_read_to_its_end_gives_its_connection_back(loop_provider):
    p, server = loop_provider
    p.faults.eof_delay = 0.05  # the body's end comes after [DONE], as through a proxy that flushes late

    async def go():
        ps = _providers(server)
        try:
            for _ in range(2):
                chunks = [c async for _, c in ps.stream(ps.get(None), BODY)]
                assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
                    "echo: a b"
                )
                await ps.settled()
        finally:
            await ps.close()

    try:
        asyncio.run(go())
    finally:
        p.faults.eof_delay = 0.0
    assert p.peers[-1] == p.peers[-2]  # the second request opened no new connection


def test_a_stream_left_early_closes_its_connection(loop_provider):
    p, server = loop_provider
    p.faults.delay = 0.05  # still generating when the app goes
    stopped = p.streams_stopped

    async def go():
        ps = _providers(server)
        try:
            chunks = ps.stream(ps.get(None), {**BODY, "messages": [{"role": "user", "content": "1 2 3 4 5 6"}]})
            await chunks.__anext__()
            await chunks.aclose()  # the app went away: the generation must stop, the connection with it
            async for _ in ps.stream(ps.get(None), BODY):
                pass
        finally:
            await ps.close()

    try:
        asyncio.run(go())
    finally:
        p.faults.delay = 0.0
    assert p.peers[-1] != p.peers[-2]
    wait_for(lambda: p.streams_stopped == stopped + 1, timeout=20)  # the provider saw the app go


# ---------------------------------------------------------------------------------------------- the endpoint
class _Db:
    """The database as the OpenAI endpoint uses it; the question's append waits until the test lets it go
    (after the provider got the request: the question is recorded while the provider thinks), then
    succeeds or fails."""

    def __init__(self, fail: bool, provider: Provider | None = None):
        self.fail = fail
        self.go = asyncio.Event()
        self.appended: list[list[dict]] = []
        self.provider = provider
        self.asked_before_sql: bool | None = None
        self.asked = 0  # the provider's requests before this one

    async def get_session(self, sid):
        return {"id": sid, "current_chat": "main", "access": "write", "status": "active", "tokens_used": 0}

    async def get_chat(self, sid, chat):
        return {"id": chat}

    async def chat_history(self, sid, chat, limit=-1):
        return []

    async def check_room(self, sid, chat, adding, what=""):
        return None  # (no max_messages_per_chat here)

    async def check_fits(self, sid, chat, messages):
        return None  # (no token quota nor context budget here)

    async def append_messages(self, sid, messages, chat=None, *, key=None, answer=False, asked=False, also=None):
        assert also is None  # (its requests ask for one answer, go on from none of several: no writes of their own)
        if not answer:
            if self.provider is not None:  # the SQL blocks the loop: the request must have left before it
                # The loop stays blocked here (as by the SQL), so it sends nothing meanwhile: a request the
                # provider's thread gets now had left before. That thread may be slow to get the CPU.
                deadline = time.monotonic() + 5
                while len(self.provider.requests) == self.asked and time.monotonic() < deadline:
                    time.sleep(0.005)  # the blocking step itself, polling the provider's thread
                self.asked_before_sql = len(self.provider.requests) > self.asked
            await self.go.wait()
            if self.fail:
                raise Conflict(f"session {sid!r} is ended; an ended session takes no new messages", reason="ended")
        self.appended.append(messages)
        return [{"id": f"m{len(self.appended)}"}]


class _Daemon:
    def __init__(self, server, db):
        self.db = db
        self.providers = _providers(server)
        self.compat = Compat(self)
        self.answering = Answering()
        self.ops = types.SimpleNamespace(closing=Closing())  # (the sessions being deleted or ended: none here)

    @staticmethod
    def estimate(text: str) -> int:
        return len(text) // 4 + 1


async def _endpoint(server, db, body: dict, p) -> tuple[int, bytes, _Daemon]:
    d = _Daemon(server, db)
    app = web.Application()
    app[DAEMON_KEY] = d  # where the routes read the daemon, as the daemon sets it
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    asked = 0

    async def release():
        deadline = time.monotonic() + 5
        while len(p.requests) == asked:  # the provider has the request before the question is recorded
            assert time.monotonic() < deadline, "the provider was not asked before the question was recorded"
            await asyncio.sleep(0.005)
        db.go.set()

    try:
        async for _ in d.providers.stream(d.providers.get(None), BODY):
            pass  # a connection to the provider is open, as on a daemon that asked it before
        await d.providers.settled()
        asked = db.asked = len(p.requests)
        async with TestClient(TestServer(app)) as http:
            releasing = asyncio.create_task(release())
            resp = await asyncio.wait_for(
                http.post(PREFIX + "/chat/completions", json=body, headers={"X-Sessiond-Session": "s1"}), 10
            )
            got = await resp.read()
            await releasing
            return resp.status, got, d
    finally:
        await d.providers.close()


def test_the_provider_is_asked_while_the_question_is_recorded_and_answers_after(loop_provider):
    p, server = loop_provider
    db = _Db(fail=False, provider=p)
    body = {"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "x y"}]}
    status, got, _ = asyncio.run(_endpoint(server, db, body, p))
    assert status == 200
    assert db.asked_before_sql is True
    events = [line[6:] for line in got.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: x y"
    # the question first, then the answer: each once
    assert [[(m["role"], m["content"]) for m in ms] for ms in db.appended] == [
        [("user", "x y")],
        [("assistant", "echo: x y")],
    ]


@pytest.mark.parametrize("stream", [True, False])
def test_a_question_that_cannot_be_recorded_stops_the_provider_and_is_the_answer(loop_provider, stream):
    p, server = loop_provider
    p.faults.delay = 0.05  # still generating when the question's record fails
    stopped = p.streams_stopped
    db = _Db(fail=True)
    body = {"model": "echo-1", "stream": stream, "messages": [{"role": "user", "content": "1 2 3 4 5 6"}]}
    try:
        status, got, _ = asyncio.run(_endpoint(server, db, body, p))
    finally:
        p.faults.delay = 0.0
    assert status == 400  # (the OpenAI endpoint: not 409, which the SDKs retry)
    assert json.loads(got)["error"]["code"] == "conflict" and "ended" in json.loads(got)["error"]["message"]
    assert db.appended == []  # no answer recorded without its question
    if stream:
        wait_for(lambda: p.streams_stopped == stopped + 1, timeout=20)  # the generation was stopped


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_before_the_model_is_watched_tells_the_app_so(loop_provider, stream):
    """The daemon's stop in the few ms between a question taken (under way) and the watch on its model begun (here:
    its question being recorded, the provider asked) closed the app's connection: an SDK saw a connection error and
    retried against a daemon gone, not told `stopping`. Such a question is ended by its watch, begun stopped."""
    p, server = loop_provider
    # (an event of this test's own: one set for good at the end of another, whose provider's thread may begin its wait
    # on it only then, would be cleared under that wait, held 30 s, past the module server's 10 s stop)
    p.resume = threading.Event()
    p.faults.held = True  # the model thinks: nothing of its answer arrives before the stop
    db = _Db(fail=False)
    body = {"model": "echo-1", "stream": stream, "messages": [{"role": "user", "content": "x y"}]}

    async def go() -> tuple[int, dict]:
        d = _Daemon(server, db)
        app = web.Application()
        app[DAEMON_KEY] = d
        for method, path, handler in ROUTES:
            app.router.add_route(method, path, handler)
        try:
            async with TestClient(TestServer(app)) as http:
                posting = asyncio.ensure_future(
                    http.post(PREFIX + "/chat/completions", json=body, headers={"X-Sessiond-Session": "s1"})
                )
                deadline = time.monotonic() + 10
                while not d.answering.busy("s1"):  # taken, its question being recorded: no watch yet
                    assert time.monotonic() < deadline and not posting.done(), "the question was not taken"
                    await asyncio.sleep(0.005)
                stopping = asyncio.ensure_future(d.answering.end_all(5.0))
                await asyncio.sleep(0)  # (the stop's call made while the question is recorded)
                db.go.set()
                resp = await asyncio.wait_for(posting, 10)
                got = await resp.json()
                await asyncio.wait_for(stopping, 10)
                return resp.status, got
        finally:
            await d.providers.close()

    try:
        status, got = asyncio.run(go())
    finally:
        p.faults.held = False
        p.resume.set()  # (left set: a wait the provider's thread begins only now returns at once)
    assert status == 503 and got["error"]["code"] == "stopping", (status, got)
    assert [[m["role"] for m in ms] for ms in db.appended] == [["user"]]  # the question kept, no answer


def test_a_watch_begun_after_the_stop_keeps_what_arrived_before_it():
    """A watch begun after the daemon's stop began (`stopping`) is stopped at once; but what it waits for may be in
    hand already (the provider, asked before the question was recorded, answered meanwhile): that answer was
    dropped unread, paid for, and the app told nothing of it was recorded. It is kept: the watch is not stopped."""
    from sessiond.daemon.answering import AppWatch

    async def go() -> tuple[bool, bool]:
        answering = Answering()
        request = types.SimpleNamespace(transport=None)
        await answering.end_all(0)  # (nothing under way: the stop begun)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result("the answer")
        async with AppWatch(request, told=answering) as in_hand:  # type: ignore[arg-type]
            assert await done == "the answer"
        thinking: asyncio.Future = asyncio.get_running_loop().create_future()
        async with AppWatch(request, told=answering) as waiting:  # type: ignore[arg-type]
            await thinking
        return in_hand.stopped, waiting.stopped

    assert asyncio.run(go()) == (False, True)
