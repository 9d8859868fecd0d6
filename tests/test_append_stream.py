"""The append stream (GET /v1/appends, a WebSocket; daemon/routes/appends.py) over a real daemon's socket:
its answers are the POST's (the same code path), idempotency keys are shared with the POST, malformed frames
are answered and change nothing, pipelined frames share commits and are answered (and each session's
committed) in order, an app gone with answers due leaves each append whole, an acknowledged append survives
kill -9; the clients use it, fall back to the POST on a daemon without it, and retry once on a broken one."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web

from conftest import cli_json, config_refused, started_with
from sessiond.api.idempotency import IDEMPOTENCY_HEADER
from sessiond.client import ApiError, AsyncClient, Client
from sessiond.client.aioappends import STREAMS
from sessiond.client.wire import Connection, request_head
from sessiond.client.wsframes import AppendStream, frame
from unixproxy import UnixProxy
from waiting import wait_for


def post(c: Client, sid: str, body, key: str | None) -> tuple[int, dict]:
    """The POST's (status, answer), raw."""
    status, raw = c._request("POST", f"/v1/sessions/{sid}/messages", body, key)
    return status, json.loads(raw)


def streamed(d, sid: str, body, key: str) -> tuple[int, dict]:
    """The stream's (status, answer), raw, on a stream of its own."""
    s = AppendStream(d.socket, 10)
    try:
        return s.append(sid, key, json.dumps(body).encode())
    finally:
        s.close()


def stored(c: Client, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=1000)["messages"]]


def test_the_stream_answers_as_the_post_does_and_shares_its_keys(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    one = {"role": "user", "content": "one", "metadata": {"a": [1, 2]}}
    s_status, s_answer = streamed(daemon, sid, one, "k-stream")
    p_status, p_answer = post(c, sid, one, "k-stream")  # the stream's key, on the POST: its first result
    assert s_status == p_status == 201 and s_answer == p_answer and s_answer["content"] == "one"
    batch = {"messages": [{"role": "user", "content": "two"}, {"role": "assistant", "content": "three"}]}
    p_status, p_answer = post(c, sid, batch, "k-post")
    s_status, s_answer = streamed(daemon, sid, batch, "k-post")  # the POST's key, on the stream
    assert s_status == p_status == 201 and s_answer == p_answer and s_answer["count"] == 2
    assert stored(c, sid) == ["one", "two", "three"]  # each stored once
    # a fresh append: the same fields as the POST's
    s_status, s_answer = streamed(daemon, sid, {"role": "user", "content": "four"}, "k4")
    p_status, p_answer = post(c, sid, {"role": "user", "content": "five"}, "k5")
    assert s_status == p_status == 201 and set(s_answer) == set(p_answer)
    assert s_answer["seq"] + 1 == p_answer["seq"]


def test_the_stream_refuses_as_the_post_does(daemon):
    c = daemon.client()
    sid = c.create_session(name="s", policy={"token_quota": 10})["id"]
    ended = c.create_session(name="e")["id"]
    c.end(ended)
    cases = [
        ("nope", {"role": "user", "content": "x"}),  # no such session
        (sid, {"role": "wizard", "content": "x"}),  # an invalid field
        (sid, {"messages": []}),  # an empty batch
        (sid, "not an object"),
        (sid, {"role": "user", "content": "x", "tokens": 100}),  # past the quota
        (ended, {"role": "user", "content": "x"}),  # an ended session
    ]
    seen = set()
    for i, (s, body) in enumerate(cases):
        on_stream = streamed(daemon, s, body, f"s{i}")
        on_post = post(c, s, body, f"p{i}")
        assert on_stream == on_post, (s, body)
        assert on_stream[0] >= 400
        seen.add(on_stream[0])
    assert {404, 422, 429, 409} <= seen, seen
    # a body that is not JSON, and a bad key: the same 400 and 422
    st = AppendStream(daemon.socket, 10)
    try:
        assert st.append(sid, "k", b"{bad") == post_raw(daemon, sid, b"{bad", "k")
        twice = b'{"role": "user", "role": "assistant", "content": "x"}'  # a key given twice
        assert st.append(sid, "k2", twice) == post_raw(daemon, sid, twice, "k2")
        assert st.append(sid, "k2", twice)[0] == 400
        assert st.append(sid, "bad\x01key", b'{"role":"user","content":"x"}')[0] == 422
    finally:
        st.close()
    assert stored(c, sid) == [] and stored(c, ended) == []


def post_raw(d, sid: str, payload: bytes, key: str) -> tuple[int, dict]:
    conn = Connection(d.socket, 10)
    try:
        status, raw = conn.exchange(
            request_head("POST", f"/v1/sessions/{sid}/messages", payload, key, IDEMPOTENCY_HEADER) + payload
        )
    finally:
        conn.close()
    return status, json.loads(raw)


def raw_answers(st: AppendStream, frames: list[tuple[int, bytes]], n: int) -> list[dict]:
    """Send `frames` ((opcode, payload)) at once, then read `n` answers."""
    st.sock.sendall(b"".join(frame(p, op) for op, p in frames))
    return [json.loads(st._message(st.sock)) for _ in range(n)]


def test_malformed_frames_are_answered_change_nothing_and_the_connection_goes_on(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    good = json.dumps({"role": "user", "content": "kept"}).encode()
    frames = [
        (1, b"no newline at all"),
        (1, b"[1, 2]\n" + good),  # a head that is not an object
        (1, b"{bad json\n" + good),
        (1, json.dumps({"tag": 3, "key": "k"}).encode() + b"\n" + good),  # no session
        (1, json.dumps({"tag": 4, "session": sid}).encode() + b"\n" + good),  # no key
        (1, json.dumps({"tag": 5, "session": sid, "key": "k", "pad": "x" * 5000}).encode() + b"\n" + good),
        (2, json.dumps({"tag": 6, "session": sid, "key": "k"}).encode() + b"\n" + good),  # binary
        (1, json.dumps({"tag": 7, "session": sid, "key": "k"}).encode() + b"\n" + good),  # a good one, last
    ]
    st = AppendStream(daemon.socket, 10)
    try:
        answers = raw_answers(st, frames, len(frames))
    finally:
        st.close()
    *bad, last = answers
    for a, why in zip(bad, ["newline", "not a JSON object", "not a JSON object", '"session"', '"key"', "longer"]):
        assert a["status"] == 400 and a["body"]["error"]["code"] == "bad_frame", a
        assert why in a["body"]["error"]["message"], (why, a)
    assert [a["tag"] for a in bad] == [None, None, None, 3, 4, None, None]
    assert bad[-1]["body"]["error"]["code"] == "bad_frame" and "binary" in bad[-1]["body"]["error"]["message"]
    assert last["tag"] == 7 and last["status"] == 201
    assert stored(c, sid) == ["kept"]


def test_a_head_with_a_field_it_does_not_take_is_refused_with_its_tag(daemon):
    """A head that reads as JSON but gives a field besides tag, session and key (an append's `chat` put in the
    head) was answered with `tag` null, though the head was read: an app matching answers by tag lost this one.
    The README says the tag is null only when the head could not be read."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    good = json.dumps({"role": "user", "content": "not kept"}).encode()
    head = json.dumps({"tag": "t-1", "session": sid, "key": "k", "chat": "main"}).encode()
    st = AppendStream(daemon.socket, 10)
    try:
        (answer,) = raw_answers(st, [(1, head + b"\n" + good)], 1)
    finally:
        st.close()
    assert answer["status"] == 400 and answer["body"]["error"]["code"] == "bad_frame", answer
    assert "'chat'" in answer["body"]["error"]["message"], answer
    assert answer["tag"] == "t-1", answer
    assert stored(c, sid) == []


@pytest.mark.parametrize("pipeline", [False, True])
def test_pipelined_frames_are_answered_in_order(daemon, pipeline):
    """Frames sent ahead of their answers are answered in order, on a stream that takes them one at a time
    (the default) as on one that takes them together (?pipeline=1)."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    frames = [
        (
            1,
            json.dumps({"tag": f"t{i}", "session": sid, "key": f"k{i}"}).encode()
            + b"\n"
            + json.dumps({"role": "user", "content": f"m{i}"}).encode(),
        )
        for i in range(50)
    ]
    st = AppendStream(daemon.socket, 10, pipeline=pipeline)
    try:
        answers = raw_answers(st, frames, 50)
    finally:
        st.close()
    assert [a["tag"] for a in answers] == [f"t{i}" for i in range(50)]
    assert [a["body"]["content"] for a in answers] == [f"m{i}" for i in range(50)]
    assert stored(c, sid) == [f"m{i}" for i in range(50)]


def append_frame(tag, sid: str, key: str, body) -> tuple[int, bytes]:
    """A text frame (opcode, payload) appending `body` to `sid` with `key`."""
    return 1, json.dumps({"tag": tag, "session": sid, "key": key}).encode() + b"\n" + json.dumps(body).encode()


def test_pipelined_frames_of_one_connection_share_commits_and_keep_their_order(daemon):
    """A connection's frames are under way together (daemon/routes/appends.py): pipelined ones share SQLite
    commits, as many connections' appends do, and are still answered in the order they came, each session's
    committed in frame order."""
    c = daemon.client()
    sids = [c.create_session(name=f"s{i}")["id"] for i in range(4)]
    frames = [append_frame(i, sids[i % 4], f"k{i}", {"role": "user", "content": f"m{i}"}) for i in range(64)]
    before = c.status()["database"]["commits"]
    st = AppendStream(daemon.socket, 20, pipeline=True)
    try:
        answers = raw_answers(st, frames, 64)
    finally:
        st.close()
    commits = c.status()["database"]["commits"] - before
    assert [a["tag"] for a in answers] == list(range(64))
    assert all(a["status"] == 201 for a in answers), [a for a in answers if a["status"] != 201][:1]
    assert [a["body"]["content"] for a in answers] == [f"m{i}" for i in range(64)]
    for j, sid in enumerate(sids):
        mine = [a["body"] for a in answers[j::4]]
        assert [m["seq"] for m in mine] == sorted(m["seq"] for m in mine) and len({m["seq"] for m in mine}) == 16
        assert [m["lamport"] for m in mine] == sorted(m["lamport"] for m in mine)
        assert stored(c, sid) == [f"m{i}" for i in range(j, 64, 4)]
    assert commits <= 32, f"64 pipelined appends took {commits} commits"  # on one at a time: 64


def test_pipelined_frames_naming_chats_and_failing_keep_their_order_and_their_own_answers(daemon):
    """A frame naming its chat by name may be appended in a second transaction (messages._append); the
    frames after it to the same session still commit after it. A frame that fails is its own answer alone."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    other = c.create_session(name="o")["id"]
    side = c.create_chat(sid, name="side")["id"]
    frames, want = [], []
    for i in range(40):
        if i % 5 == 1:
            body = {"role": "user", "content": f"m{i}", "chat": "side"}  # by name
        elif i % 5 == 3:
            body = {"role": "user", "content": f"m{i}", "chat": side}  # by id
        else:
            body = {"role": "user", "content": f"m{i}"}
        frames.append(append_frame(i, sid, f"k{i}", body))
        want.append(f"m{i}")
        if i % 10 == 4:  # failures between them: no such session, an invalid role, a reused key, no such chat
            frames.append(append_frame(f"bad{i}", "nope", f"kb{i}", {"role": "user", "content": "x"}))
            frames.append(append_frame(f"role{i}", sid, f"kr{i}", {"role": "wizard", "content": "x"}))
            frames.append(append_frame(f"reuse{i}", sid, f"k{i}", {"role": "user", "content": "other"}))
            frames.append(append_frame(f"chat{i}", sid, f"kc{i}", {"role": "user", "content": "x", "chat": "no"}))
        if i % 10 == 6:
            frames.append(append_frame(f"o{i}", other, f"ko{i}", {"role": "user", "content": f"o{i}"}))
    st = AppendStream(daemon.socket, 20, pipeline=True)
    try:
        answers = raw_answers(st, frames, len(frames))
    finally:
        st.close()
    assert [a["tag"] for a in answers] == [json.loads(p.partition(b"\n")[0])["tag"] for _, p in frames]
    by_tag = {a["tag"]: a for a in answers}
    for i in range(40):
        assert by_tag[i]["status"] == 201, by_tag[i]
    seqs = [by_tag[i]["body"]["seq"] for i in range(40)]
    assert seqs == sorted(seqs), seqs  # committed in frame order, the chat named by name too
    for i in (4, 14, 24, 34):
        assert by_tag[f"bad{i}"]["status"] == 404 and by_tag[f"role{i}"]["status"] == 422
        assert by_tag[f"reuse{i}"]["body"]["error"]["code"] == "idempotency_key_reused"
        assert by_tag[f"chat{i}"]["status"] == 404
    got = c.messages(sid, limit=1000, all_chats=True)["messages"]
    assert [m["content"] for m in got] == want
    assert {m["content"] for m in got if m["chat"] == side} == {f"m{i}" for i in range(40) if i % 5 in (1, 3)}
    assert stored(c, other) == [f"o{i}" for i in range(40) if i % 10 == 6]


def test_pipelined_frames_past_the_bytes_under_way_wait_their_turn(daemon):
    """Large frames pipelined past IN_FLIGHT_BYTES: the daemon reads the next as the first are answered."""
    from sessiond.daemon.routes.appends import IN_FLIGHT_BYTES

    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    n, size = 6, IN_FLIGHT_BYTES // 4
    frames = [append_frame(i, sid, f"k{i}", {"role": "user", "content": f"{i}" * size}) for i in range(n)]
    st = AppendStream(daemon.socket, 60, pipeline=True)
    # sent from a thread while this one reads: each answer echoes its content, and a sender that read
    # nothing until it had sent all would hold the daemon's answers, and so its reading, as it holds them
    sending = threading.Thread(target=st.sock.sendall, args=(b"".join(frame(p, op) for op, p in frames),))
    try:
        sending.start()
        answers = [json.loads(st._message(st.sock)) for _ in range(n)]
    finally:
        sending.join()
        st.close()
    assert [(a["tag"], a["status"]) for a in answers] == [(i, 201) for i in range(n)]
    assert [m["content"][:1] for m in c.messages(sid, limit=10)["messages"]] == [f"{i}" for i in range(n)]


def test_a_frame_naming_its_chat_holds_its_sessions_next_frames_while_the_writer_is_busy(daemon):
    """A frame naming its chat by name is refused by the append's first transaction and appended by a
    second (messages._append). While the writer's lock is held across awaits (here a search indexing its
    pending messages on a thread), the frames after it queue for the lock before that second transaction:
    unless they wait for the frame, they commit before it."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    c.create_chat(sid, name="side")
    words = " ".join(f"w{i}" for i in range(400))
    # (3 waves of 2,000 messages: with the frames not waiting for the one naming its chat, the first or second
    # wave failed in each of 7 runs; 5 waves of 4,000 took 5 s more)
    for wave in range(3):
        for _ in range(2):  # messages for the search to index: it holds the writer meanwhile
            c.append_many(sid, [{"role": "user", "content": words} for _ in range(1000)])
        searching = threading.Thread(target=lambda: daemon.client().search("w7"))
        frames = [
            append_frame(
                i, sid, f"k{wave}.{i}", {"role": "user", "content": f"m{i}", **({"chat": "side"} if i % 3 == 1 else {})}
            )
            for i in range(60)
        ]
        st = AppendStream(daemon.socket, 30, pipeline=True)
        try:
            searching.start()
            answers = raw_answers(st, frames, 60)
        finally:
            st.close()
            searching.join()
        assert all(a["status"] == 201 for a in answers)
        seqs = [a["body"]["seq"] for a in answers]
        assert seqs == sorted(seqs), (wave, seqs)


def test_a_connection_closed_with_frames_under_way_leaves_each_append_whole(daemon):
    """The app goes away with appends sent and not all answered: what was answered is committed, and each
    session holds its frames' messages whole (a batch all or nothing) and in frame order, a prefix of them;
    the daemon goes on serving, and stops cleanly with nothing left of that connection."""
    c = daemon.client()
    sids = [c.create_session(name=f"s{i}")["id"] for i in range(2)]
    third = c.create_session(name="t")["id"]
    frames = [
        append_frame(
            i, sids[i % 2], f"k{i}", {"messages": [{"role": "user", "content": f"m{i}.{j}"} for j in range(3)]}
        )
        for i in range(200)
    ]
    st = AppendStream(daemon.socket, 20, pipeline=True)
    try:
        answered = raw_answers(st, frames, 5)
        assert all(a["status"] == 201 for a in answered)
        st.sock.shutdown(socket.SHUT_RDWR)  # gone, no close frame, 195 answers unread
    finally:
        st.sock.close()
        st.sock = None
    assert streamed(daemon, third, {"role": "user", "content": "next"}, "k-next")[0] == 201
    proc = daemon.proc
    proc.send_signal(__import__("signal").SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"Task exception was never retrieved" not in err and b"destroyed but it is pending" not in err, err
    daemon.start()
    with daemon.client() as again:
        for j, sid in enumerate(sids):
            got = [m["content"] for m in again.messages(sid, limit=1000)["messages"]]
            sent = [f"m{i}.{k}" for i in range(j, 200, 2) for k in range(3)]
            assert len(got) % 3 == 0 and got == sent[: len(got)], got[:9]
            assert len(got) >= 3 * len([a for a in answered if a["tag"] % 2 == j])
        assert stored(again, third) == ["next"]


def test_threads_sharing_a_client_take_turns_on_its_stream(daemon):
    sid = daemon.client().create_session(name="s")["id"]
    errors: list[BaseException] = []
    with Client(daemon.home) as c:

        def appender(t: int) -> None:
            try:
                for i in range(40):
                    m = c.append(sid, "user", f"{t}-{i}")
                    assert m["content"] == f"{t}-{i}"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=appender, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert c._stream is not None and not c._no_stream  # the appends went on the stream
    assert not errors, errors
    got = stored(daemon.client(), sid)
    assert sorted(got) == sorted(f"{t}-{i}" for t in range(6) for i in range(40))


async def test_the_async_client_appends_on_streams(daemon):
    sid = daemon.client().create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        answers = await asyncio.gather(*(ac.append(sid, "user", f"a{i}") for i in range(20)))
        assert [a["content"] for a in answers] == [f"a{i}" for i in range(20)]
        assert ac._streams and not ac._no_stream
        with pytest.raises(ApiError) as e:
            await ac.append("nope", "user", "x")
        assert e.value.status == 404 and e.value.code == "not_found"
        batch = await ac.append_many(sid, [{"role": "user", "content": "b"}], idempotency_key="kb")
        assert await ac.append_many(sid, [{"role": "user", "content": "b"}], idempotency_key="kb") == batch
    assert len(stored(daemon.client(), sid)) == 21


def test_an_acknowledged_append_survives_kill_9(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    acked = [c.append(sid, "user", f"m{i}")["id"] for i in range(30)]
    assert c._stream is not None
    daemon.kill()
    daemon.start()
    with daemon.client() as again:
        assert [m["id"] for m in again.messages(sid, limit=100)["messages"]] == acked


@contextlib.contextmanager
def served_on_a_socket(route: Callable[[web.Application], None]) -> Iterator[str]:
    """An aiohttp app routed by `route`, served in a thread of its own on a Unix socket: its path."""
    path = os.path.join(tempfile.mkdtemp(prefix="sd-old-"), "old.sock")
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        async def main() -> None:
            app = web.Application()
            route(app)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.UnixSite(runner, path).start()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)
            await runner.cleanup()

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield path
    finally:
        stop.set()
        t.join(10)
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def posted(seen: list[str]) -> Callable:
    """A stand-in daemon's POST /v1/sessions/{id}/messages: the append noted in `seen`, echoed, 201."""

    async def append(request: web.Request) -> web.Response:
        seen.append(f"POST {request.match_info['id']} {request.headers.get('Idempotency-Key')}")
        body = await request.json()
        return web.json_response({"id": "m-1", "role": body["role"], "content": body["content"]}, status=201)

    return append


@pytest.fixture
def old_daemon():
    """A daemon of before the stream, as far as appends go: POST /v1/sessions/{id}/messages, and a 404 for
    every other route (GET /v1/appends among them)."""
    seen: list[str] = []
    append = posted(seen)

    async def other(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.json_response({"error": {"code": "not_found", "message": "no such route"}}, status=404)

    def route(app: web.Application) -> None:
        app.router.add_post("/v1/sessions/{id}/messages", append)
        app.router.add_route("*", "/{tail:.*}", other)

    with served_on_a_socket(route) as path:
        yield path, seen


def test_the_client_appends_by_post_to_a_daemon_without_the_stream(old_daemon, home):
    path, seen = old_daemon
    with Client(home, socket=path) as c:
        assert c.append("s1", "user", "hi", idempotency_key="k1")["content"] == "hi"
        assert c.append("s1", "user", "again", idempotency_key="k2")["content"] == "again"
        assert c.append("s1", "user", "more", idempotency_key="k3")["content"] == "more"
    # the first append a POST (a script appending once pays no handshake); the stream asked for once, by the
    # second; then POSTs
    assert seen == ["POST s1 k1", "GET /v1/appends", "POST s1 k2", "POST s1 k3"]


async def test_the_async_client_appends_by_post_to_a_daemon_without_the_stream(old_daemon, home):
    path, seen = old_daemon
    async with AsyncClient(home, socket=path) as c:
        assert (await c.append("s1", "user", "hi", idempotency_key="k1"))["content"] == "hi"
        assert (await c.append("s1", "user", "again", idempotency_key="k2"))["content"] == "again"
        assert (await c.append("s1", "user", "more", idempotency_key="k3"))["content"] == "more"
    assert seen == ["POST s1 k1", "GET /v1/appends", "POST s1 k2", "POST s1 k3"]


@pytest.fixture
def stream_daemon_before_pipeline():
    """A daemon of the version before `?pipeline` (as far as appends go): the append stream, taking a
    connection's frames one at a time, in order, and, as every route of that version but OpenAI's, a 400
    bad_parameter for a query parameter the route does not name (it named none on GET /v1/appends)."""
    seen: list[str] = []
    append = posted(seen)

    async def appends(request: web.Request) -> web.StreamResponse:
        if request.query_string:
            seen.append(f"GET {request.path_qs}: 400")
            message = "unknown query parameter 'pipeline' on GET /v1/appends: it takes none"
            return web.json_response({"error": {"code": "bad_parameter", "message": message}}, status=400)
        seen.append("GET /v1/appends")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:  # one at a time: each answered before the next is read
            head_text, _, raw = msg.data.partition("\n")
            head, body = json.loads(head_text), json.loads(raw)
            seen.append(f"FRAME {head['session']} {head['key']}")
            answer = {"id": f"m-{len(seen)}", "role": body["role"], "content": body["content"]}
            await ws.send_str(json.dumps({"tag": head["tag"], "status": 201, "body": answer}))
        return ws

    def route(app: web.Application) -> None:
        app.router.add_post("/v1/sessions/{id}/messages", append)
        app.router.add_get("/v1/appends", appends)

    with served_on_a_socket(route) as path:
        yield path, seen


async def test_the_async_client_appends_on_the_stream_of_a_daemon_before_pipeline(stream_daemon_before_pipeline, home):
    """The async client opens its streams as GET /v1/appends?pipeline=1; a daemon of the version before
    (still running after the client was upgraded) refuses a query parameter it does not know with a 400, and
    every append after a client's first failed ("the daemon refused the append stream (HTTP 400)"). It now
    opens that daemon's stream without the parameter: the appends, pipelined or not, are answered in order."""
    path, seen = stream_daemon_before_pipeline
    async with AsyncClient(home, socket=path) as c:
        assert (await c.append("s1", "user", "hi", idempotency_key="k1"))["content"] == "hi"
        assert (await c.append("s1", "user", "again", idempotency_key="k2"))["content"] == "again"
        many = await asyncio.gather(*(c.append("s1", "user", f"m{i}", idempotency_key=f"p{i}") for i in range(5)))
        assert [m["content"] for m in many] == [f"m{i}" for i in range(5)]
    assert seen[:2] == ["POST s1 k1", "GET /v1/appends?pipeline=1: 400"]
    assert seen.count("GET /v1/appends?pipeline=1: 400") == 1  # asked once: the client remembers
    assert [s for s in seen if s.startswith("FRAME")] == ["FRAME s1 k2"] + [f"FRAME s1 p{i}" for i in range(5)]


class CutFirstAnswer(UnixProxy):
    """In front of a daemon: on the first append stream's connection, the WebSocket handshake passes, the
    first append frame reaches the daemon (which commits it and answers), and then both connections are
    closed without the answer. Other connections pass both ways."""

    def __init__(self, upstream: str):
        self.cut = False
        super().__init__(upstream)

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        first = not self.cut and app.recv(64, socket.MSG_PEEK).startswith((b"GET /v1/appends ", b"GET /v1/appends?"))
        self.cut = self.cut or first

        def pipe(src: socket.socket, dst: socket.socket, answers: bool) -> None:
            head = b""
            try:
                while data := src.recv(65536):
                    if first and answers and b"\r\n\r\n" in head:  # the answer to the first append: dropped
                        for s in (app, daemon):  # shutdown: the other thread is in recv() on one
                            s.shutdown(socket.SHUT_RDWR)
                        return
                    head += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(app, daemon, False), daemon=True).start()
        threading.Thread(target=pipe, args=(daemon, app, True), daemon=True).start()


def test_a_broken_stream_is_retried_once_with_the_same_key(daemon):
    sid = daemon.client().create_session(name="s")["id"]
    proxy = CutFirstAnswer(daemon.socket)
    try:
        with Client(daemon.home, socket=proxy.path, timeout=10) as c:
            c.append(sid, "user", "posted")  # a client's first append is a POST; its second opens the stream
            m = c.append(sid, "user", "once")  # committed, its answer lost: sent again, answered by the first
            assert m["content"] == "once"
            assert c.append(sid, "user", "twice")["content"] == "twice"
    finally:
        proxy.close()
    got = daemon.client().messages(sid)["messages"]
    assert [x["content"] for x in got] == ["posted", "once", "twice"] and got[1]["id"] == m["id"]


async def test_the_async_clients_appends_at_once_are_pipelined_on_one_stream(daemon):
    """Appends in flight at once on one AsyncClient go on one stream, sent ahead of their answers (the daemon
    takes a connection's frames together), rather than a stream (a connection) each."""
    sid = daemon.client().create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        await ac.append(sid, "user", "posted")  # a client's first append is a POST
        answers = await asyncio.gather(*(ac.append(sid, "user", f"a{i}") for i in range(40)))
        assert [a["content"] for a in answers] == [f"a{i}" for i in range(40)]
        assert len(ac._streams) == 1
    assert sorted(stored(daemon.client(), sid)) == sorted(["posted", *(f"a{i}" for i in range(40))])


async def test_the_async_client_sends_each_append_of_a_broken_stream_again_once_with_its_key(daemon):
    sid = daemon.client().create_session(name="s")["id"]
    proxy = CutFirstAnswer(daemon.socket)
    try:
        async with AsyncClient(daemon.home, socket=proxy.path, timeout=10) as ac:
            # straight to a stream (the first append's POST would leave a kept-alive connection, which aiohttp
            # would upgrade rather than the fresh one the proxy cuts)
            ac._appended = True
            answers = await asyncio.gather(*(ac.append(sid, "user", f"a{i}") for i in range(10)))
            assert [a["content"] for a in answers] == [f"a{i}" for i in range(10)]
            assert proxy.cut and len(ac._streams) == 1  # the cut stream, then the one they went again on
    finally:
        proxy.close()
    got = daemon.client().messages(sid)["messages"]
    assert sorted(m["content"] for m in got) == sorted(f"a{i}" for i in range(10))  # each once
    assert {m["id"] for m in got} >= {a["id"] for a in answers}


def test_a_stream_closed_by_a_restart_is_opened_again(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "posted")  # a client's first append is a POST
    c.append(sid, "user", "before")
    assert c._stream is not None
    daemon.restart()  # the daemon closes its open streams as it stops
    assert c.append(sid, "user", "after")["content"] == "after"
    assert stored(c, sid) == ["posted", "before", "after"]


async def test_many_appends_at_once_share_a_few_streams_and_leave_connections_for_other_calls(daemon):
    """aiohttp's connector lends at most 100 connections, and each open stream holds one: appends in flight at
    once beyond the client's few streams wait for one, rather than holding every connection (a stream per
    append) and leaving none for the next call."""
    sid = daemon.client().create_session(name="s")["id"]
    async with daemon.aclient() as ac:
        answers = await asyncio.wait_for(
            asyncio.gather(*(ac.append(sid, "user", f"a{i}") for i in range(150))), timeout=60
        )
        assert len(answers) == 150 and len(ac._streams) <= STREAMS
        assert len((await asyncio.wait_for(ac.messages(sid, limit=200), timeout=20))["messages"]) == 150


def test_a_streamed_append_is_announced_and_pushed_as_a_posted_one(make_daemon, store_dir):
    d = make_daemon("file://" + store_dir).start()
    c = d.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "posted")  # a client's first append is a POST; its second opens the stream
    events = Client(d.home).event_stream()
    try:
        m = c.append(sid, "user", "announced")
        assert c._stream is not None
        for ev in events:
            if ev["type"] == "messages.appended":
                assert ev["session"] == sid and ev["ids"] == [m["id"]]
                break
    finally:
        events.close()
    # the sync worker was told: it pushes the message with no `sync` asked for
    wait_for(lambda: c.get_session(sid)["sync"]["pushed_seq"] >= m["seq"], what="the append pushed by the sync worker")


def test_a_body_over_the_posts_limit_is_refused_as_the_post_refuses_it_and_the_stream_goes_on(daemon):
    from sessiond.daemon.routes.failures import BODY_LIMIT

    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    st = AppendStream(daemon.socket, 60)
    try:
        big = b'{"role": "user", "content": "' + b"x" * BODY_LIMIT + b'"}'
        status, answer = st.append(sid, "k-big", big)
        del big
        assert status == 413 and answer["error"]["code"] == "too_large", answer
        assert "over the 256 MiB a request may carry" in answer["error"]["message"], answer
        assert answer["error"]["details"] == {"limit": BODY_LIMIT}, answer
        assert st.append(sid, "k-small", b'{"role": "user", "content": "small"}')[0] == 201
    finally:
        st.close()
    assert stored(c, sid) == ["small"]


def test_the_openai_tcp_listener_does_not_serve_the_stream(make_daemon):
    """SECURITY.md: the stream is a route of the Unix socket only; a web page can reach the TCP listener."""
    d = started_with(make_daemon, openai_listen="127.0.0.1:0")
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    host, port = info["base_url"].split("//")[1].split("/")[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {
        "Authorization": f"Bearer {key}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    for path in ("/v1/appends", "/openai/v1/appends"):
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == 404, (path, r.status)
    conn.close()


def close_of(st: AppendStream) -> tuple[int, bytes]:
    """The daemon's close frame on `st` (data frames before it skipped): its (code, reason); then EOF."""
    import struct

    while True:
        _, opcode, payload = st._frame(st.sock)
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            st.sock.settimeout(10)
            rest = b""
            try:  # the close answered, as RFC 6455 asks; then the daemon ends the connection (EOF)
                st.sock.sendall(frame(payload[:2], 0x8))
                while more := st.sock.recv(65536):
                    rest += more
            except (BrokenPipeError, ConnectionResetError):
                pass
            return code, payload[2:]


@pytest.mark.parametrize(
    "bad, code",
    [
        # a frame's header declaring more than FRAME_LIMIT (its payload need not follow: refused on the length)
        ("too large", 1009),
        ("not UTF-8", 1007),
    ],
)
def test_a_protocol_breach_closes_the_connection_and_the_daemon_serves_the_next(daemon, bad, code):
    import struct

    from sessiond.daemon.routes.appends import FRAME_LIMIT

    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    st = AppendStream(daemon.socket, 10)
    try:
        if bad == "too large":
            st.sock.sendall(struct.pack("!BBQ", 0x81, 0xFF, FRAME_LIMIT + 1) + os.urandom(4) + b"x" * 4096)
        else:
            head = json.dumps({"tag": 1, "session": sid, "key": "k-bad"}).encode()
            st.sock.sendall(frame(head + b'\n{"role": "user", "content": "\xff\xfe"}'))
        assert close_of(st)[0] == code
    finally:
        st.close()
    assert streamed(daemon, sid, {"role": "user", "content": "next"}, "k-next")[0] == 201
    assert stored(c, sid) == ["next"]


IDLE = 1.0  # connection_idle_timeout in the idle tests' config.toml (seconds; the least it takes)


def test_an_idle_stream_is_closed_with_a_reason(make_daemon):
    """As an idle kept-alive HTTP connection is: an app that opened a stream and went away holds no file
    descriptor and no task in the daemon for good."""
    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sid = d.client().create_session(name="s")["id"]
    st = AppendStream(d.socket, 10)
    try:
        assert st.append(sid, "k1", b'{"role": "user", "content": "x"}')[0] == 201
        code, reason = close_of(st)  # within the socket's 10 s: closed after IDLE s of silence
    finally:
        st.close()
    assert code == 1000 and b"idle" in reason, (code, reason)
    conn = Connection(d.socket, 10)  # the same knob closes an idle kept-alive HTTP connection
    try:
        assert conn.exchange(request_head("GET", "/v1/status", None, None, IDEMPOTENCY_HEADER))[0] == 200
        wait_for(conn.closed_by_peer, what="the idle HTTP connection closed by the daemon")
    finally:
        conn.close()


def test_a_streams_idle_clock_counts_from_its_last_answer_across_appends(make_daemon):
    """A stream (one frame at a time: the blocking client's) whose appends come more often than
    connection_idle_timeout stays open past it, its one timer set again for each wait begun since; it is
    closed once idle that long after its last answer."""
    import time

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sid = d.client().create_session(name="s")["id"]
    st = AppendStream(d.socket, 10)
    try:
        # 7 appends 0.3 IDLE apart: 1.8 IDLE in all, never idle for IDLE (0.7 IDLE to spare for a loaded machine's
        # delays between an answer and the next append: with 0.6 IDLE pauses, 1 run under heavy load was closed)
        for i in range(7):
            if i:
                time.sleep(0.3 * IDLE)  # the app's pause between appends (what is tested), not a wait
            assert st.append(sid, f"k{i}", b'{"role": "user", "content": "x"}')[0] == 201
        answered = time.monotonic()
        code, reason = close_of(st)
        quiet = time.monotonic() - answered
    finally:
        st.close()
    assert code == 1000 and b"idle" in reason, (code, reason)
    assert quiet > 0.8 * IDLE, f"closed {quiet:.2f} s after its last answer, idle for less than {IDLE} s"
    assert stored(d.client(), sid) == ["x"] * 7


def test_an_app_silent_after_the_idle_close_is_let_go_soon(make_daemon):
    """The daemon's close frame asks for the app's; an app that stays connected and answers nothing holds
    the connection (its file descriptor, its task) only for CLOSE_TIMEOUT more, not aiohttp's 10 s."""
    import time

    from sessiond.daemon.routes.appends import CLOSE_TIMEOUT

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    st = AppendStream(d.socket, 30)
    try:
        while st._frame(st.sock)[1] != 0x8:  # the idle close, after IDLE s; not answered
            pass
        closed = time.monotonic()
        while st.sock.recv(65536):  # then the daemon hangs up: EOF
            pass
        gone = time.monotonic() - closed
    finally:
        st.close()
    assert gone < CLOSE_TIMEOUT + 2, f"the daemon held a silent app's stream {gone:.1f} s after closing it"


def send_reading_nothing(st: AppendStream, sid: str) -> None:
    """Eight appends of 1 MiB each (each answer echoes it), their answers left unread: the connection fills."""
    for i in range(8):
        try:
            st.sock.sendall(frame(append_frame(i, sid, f"k{i}", {"role": "user", "content": "x" * (1 << 20)})[1]))
        except OSError:  # hung up on already, or the daemon reads no more (one frame at a time: after the first
            break  # answer stalled, while later frames were still being sent)


@pytest.mark.parametrize("pipeline", [False, True])
def test_an_app_that_sends_and_reads_no_answers_is_hung_up_on(make_daemon, pipeline):
    """An app that pipelines appends and reads none of their answers (each echoes its content): once the
    answers it left unread have filled the connection, the daemon cannot send the next; after
    connection_idle_timeout of that it hangs up, rather than holding the connection and its tasks for good."""
    import select

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sid = d.client().create_session(name="s")["id"]
    st = AppendStream(d.socket, 10, pipeline=pipeline)
    try:
        send_reading_nothing(st, sid)
        hangup = select.poll()
        hangup.register(st.sock, select.POLLHUP)
        wait_for(lambda: hangup.poll(0), timeout=IDLE + 8, what="the daemon hanging up on an app that reads nothing")
    finally:
        st.close()
    assert len(stored(d.client(), sid)) <= 8  # (each append whole: committed or not)


def test_the_client_reopens_a_stream_closed_while_idle_without_a_retry(make_daemon, monkeypatch):
    import select

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sent: list[str] = []
    real = AppendStream.append

    def counted(self, sid, key, body):
        sent.append(key)
        return real(self, sid, key, body)

    monkeypatch.setattr(AppendStream, "append", counted)
    with d.client() as c:
        sid = c.create_session(name="s")["id"]
        c.append(sid, "user", "posted", idempotency_key="k0")  # a client's first append is a POST
        c.append(sid, "user", "before", idempotency_key="k1")
        stream = c._stream
        assert stream is not None and stream.sock is not None
        wait_for(lambda: select.select([stream.sock], [], [], 0)[0], what="the idle stream closed by the daemon")
        assert c.append(sid, "user", "after", idempotency_key="k2")["content"] == "after"
        assert c._stream is not stream
        assert sent == ["k1", "k2"]  # the second sent once, on a new stream: not first on the closed one
        assert stored(c, sid) == ["posted", "before", "after"]


async def test_the_async_client_reopens_a_stream_closed_while_idle_without_a_retry(make_daemon, monkeypatch):
    import aiohttp

    from waiting import eventually

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sent: list[str] = []
    real = aiohttp.ClientWebSocketResponse.send_str

    async def counted(self, data, *a, **kw):
        sent.append(json.loads(data.partition("\n")[0])["key"])
        return await real(self, data, *a, **kw)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "send_str", counted)
    sid = d.client().create_session(name="s")["id"]
    async with d.aclient() as ac:
        await ac.append(sid, "user", "posted", idempotency_key="k0")  # a client's first append is a POST
        await ac.append(sid, "user", "before", idempotency_key="k1")
        # the daemon closes the client's stream, idle for connection_idle_timeout, and the client's reader reads
        # that close. (A witness stream opened just after the answer and awaited instead raced it: the
        # daemon's idle clock counts from the answer sent, a few ms before the witness opened, and a loop
        # lagging more than that under load can close the witness first.)
        await eventually(
            lambda: all(p.dead for p in ac._streams), timeout=20, what="the client's stream closed by the daemon"
        )
        assert (await ac.append(sid, "user", "after", idempotency_key="k2"))["content"] == "after"
        assert sent == ["k1", "k2"]
    assert stored(d.client(), sid) == ["posted", "before", "after"]


def test_a_pipelined_streams_idle_clock_counts_from_its_last_answer(make_daemon):
    """An append answered late (here: another program held the database's write lock for most of
    connection_idle_timeout) leaves its stream open a whole connection_idle_timeout after its answer, not
    only what remained of it since the frame was read: an app sending its next append just after a slow
    answer finds the stream open, not closing."""
    import sqlite3
    import time

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sid = d.client().create_session(name="s")["id"]
    st = AppendStream(d.socket, 10, pipeline=True)
    db = sqlite3.connect(os.path.join(d.home, "sessions.db"), timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # the write lock, held as a backup or a sqlite3 shell may
        st.sock.sendall(frame(append_frame(1, sid, "k1", {"role": "user", "content": "slow"})[1]))
        time.sleep(0.85 * IDLE)  # the fault itself (an append that long in coming), not a wait
        db.execute("ROLLBACK")
        answer = json.loads(st._message(st.sock))
        answered = time.monotonic()
        code, reason = close_of(st)
        quiet = time.monotonic() - answered
    finally:
        db.close()
        st.close()
    assert answer["tag"] == 1 and answer["status"] == 201, answer
    assert code == 1000 and b"idle" in reason, (code, reason)
    assert quiet > 0.6 * IDLE, f"closed {quiet:.2f} s after its answer, idle for less than {IDLE} s"


@pytest.mark.parametrize("value", ["0.5", "0", "-1", "true", '"75"', "inf"])
def test_a_connection_idle_timeout_under_a_second_or_not_a_number_is_refused(tmp_path, value):
    cfg = config_refused(tmp_path, "connection_idle_timeout", value, "1", r"connection_idle_timeout.*at least 1")
    assert cfg.connection_idle_timeout == 1.0


@pytest.mark.parametrize("query", ["pipeline=2", "pipeline=maybe", "other=1", "pipeline=1&x=2"])
def test_a_stream_asked_for_with_another_query_is_refused_before_the_upgrade(daemon, query):
    """The stream takes one query parameter, pipeline (true or false): anything else is refused as every
    route refuses a query it does not take, naming it, not a stream that ignores what the app asked for."""
    conn = Connection(daemon.socket, 10)
    try:
        status, body = conn.exchange(
            f"GET /v1/appends?{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
    finally:
        conn.close()
    assert status == 400, body
    assert b"pipeline" in body, body


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_daemon_stops_soon_past_an_app_that_reads_no_answers(make_daemon, pipeline):
    """An app that sends appends and reads none of their answers: asked to stop (SIGTERM: `sessiond stop`,
    systemd), the daemon closed its stream, but the close waited for the connection to drain, and the
    daemon waited for its handler, so it stopped only once the app had been hung up on for leaving answers
    unread, connection_idle_timeout later (75 s by default; systemd kills at 90). Now the daemon stopping
    hangs up on a stream's app that has not taken its close frame within CLOSE_TIMEOUT, as an idle
    stream's: it exits within seconds, each append whole (committed or not)."""
    import signal
    import subprocess
    import time

    from sessiond.daemon.routes.appends import CLOSE_TIMEOUT

    d = started_with(make_daemon, connection_idle_timeout=60)
    sid = d.client().create_session(name="s")["id"]
    st = AppendStream(d.socket, 3, pipeline=pipeline)
    try:
        send_reading_nothing(st, sid)
        # the answers it leaves unread fill the connection (each echoes its 1 MiB): the daemon's send waits
        wait_for(lambda: d.client().messages(sid, limit=1)["messages"], timeout=20, what="an append committed")
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=CLOSE_TIMEOUT + 8)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon still runs {time.monotonic() - started:.0f} s after SIGTERM")
    finally:
        st.close()
    assert d.proc.returncode == 0
    d.start()
    assert len(stored(d.client(), sid)) <= 8


@contextlib.contextmanager
def daemon_stopped(d) -> Iterator[None]:
    """The daemon's process stopped (SIGSTOP) meanwhile, then let go on: its event loop lagging, at worst. A
    call answered first: the daemon is past the steps of what it answered before (its idle clock set)."""
    import signal

    with Client(d.home, socket=d.socket, timeout=10) as c:
        c.status()
    d.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        d.proc.send_signal(signal.SIGCONT)


def test_the_client_retires_its_idle_stream_before_the_daemon_would_close_it(make_daemon, monkeypatch):
    """An app idle just past the daemon's connection_idle_timeout, its next append sent while the daemon's
    idle close is still to come (its loop lagging: here, stopped across the timeout): the append went on the
    stream the daemon was about to close, was dropped with it, and was sent again with its key (stored once,
    but two frames and a round trip more). The client now leaves a stream idle for half the daemon's timeout
    (which the daemon's handshake names) and appends on a new one: one frame."""
    import time

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sent: list[str] = []
    opened: list[int] = []
    real_append, real_init = AppendStream.append, AppendStream.__init__

    def counted(self, sid, key, body):
        sent.append(key)
        return real_append(self, sid, key, body)

    def opening(self, *a, **kw):
        opened.append(1)
        real_init(self, *a, **kw)

    monkeypatch.setattr(AppendStream, "append", counted)
    monkeypatch.setattr(AppendStream, "__init__", opening)
    with d.client() as c:
        sid = c.create_session(name="s")["id"]
        c.append(sid, "user", "posted", idempotency_key="k0")  # a client's first append is a POST
        c.append(sid, "user", "before", idempotency_key="k1")
        answers: list[dict] = []
        app = threading.Thread(target=lambda: answers.append(c.append(sid, "user", "after", idempotency_key="k2")))
        with daemon_stopped(d):
            time.sleep(1.2 * IDLE)  # the fault itself (the daemon's loop held past its idle timeout), not a wait
            app.start()
            # the app's append goes out on the old stream, or begins a new one (whose handshake waits)
            wait_for(lambda: sent[-1] == "k2" or len(opened) > 1, what="the append under way")
        app.join(20)
        assert answers and answers[0]["content"] == "after"
        assert sent == ["k1", "k2"]  # sent once, on a new stream
        assert stored(c, sid) == ["posted", "before", "after"]


async def test_the_async_client_retires_its_idle_stream_before_the_daemon_would_close_it(make_daemon, monkeypatch):
    """As the blocking client's: an append after the daemon's idle timeout, its close not yet come (the
    daemon's loop lagging), went on the stream the daemon closed and was sent again. Now: one frame."""
    import aiohttp

    d = started_with(make_daemon, connection_idle_timeout=IDLE)
    sent: list[str] = []
    opened: list[int] = []
    real_send, real_open = aiohttp.ClientWebSocketResponse.send_str, AsyncClient._open_stream

    async def counted(self, data, *a, **kw):
        sent.append(json.loads(data.partition("\n")[0])["key"])
        return await real_send(self, data, *a, **kw)

    async def opening(self):
        opened.append(1)
        return await real_open(self)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "send_str", counted)
    monkeypatch.setattr(AsyncClient, "_open_stream", opening)
    sid = d.client().create_session(name="s")["id"]
    async with d.aclient() as ac:
        await ac.append(sid, "user", "posted", idempotency_key="k0")  # a client's first append is a POST
        await ac.append(sid, "user", "before", idempotency_key="k1")
        with daemon_stopped(d):
            await asyncio.sleep(1.2 * IDLE)  # the fault itself (the daemon's loop held past its idle timeout)
            app = asyncio.create_task(ac.append(sid, "user", "after", idempotency_key="k2"))
            from waiting import eventually

            await eventually(lambda: sent[-1] == "k2" or len(opened) > 1, what="the append under way")
        assert (await asyncio.wait_for(app, 20))["content"] == "after"
        assert sent == ["k1", "k2"]  # sent once, on a new stream
    assert stored(d.client(), sid) == ["posted", "before", "after"]
