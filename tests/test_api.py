"""The socket API over a real Unix socket, against a real daemon process."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from conftest import UnixHTTP, events_route, eventually
from sessiond.client import ApiError, AsyncClient, Client, ClientError
from unixproxy import UnixProxy


def raw(daemon, method, path, body=None, headers=None):
    c = UnixHTTP(daemon.socket, timeout=10)
    c.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def test_session_lifecycle(daemon):
    c = daemon.client()
    s = c.create_session(
        id="chat-1",
        name="Demo",
        system_prompt="You are terse.",
        model="llama-3",
        user="alice",
        tags=["work", "demo"],
        settings={"temperature": 0.2, "top_k": 40, "top_p": 0.9, "max_tokens": 512},
        initial_messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        metadata={"app": "test"},
        preferences={"lang": "en"},
        expires_in=3600,
    )
    assert s["id"] == "chat-1" and s["status"] == "active" and s["current_chat"] == "main"
    assert s["settings"] == {"temperature": 0.2, "top_k": 40, "top_p": 0.9, "max_tokens": 512}
    assert s["tags"] == ["demo", "work"] and s["expires_at"] > s["created_at"]
    got = c.get_session("chat-1")
    assert got["initial_messages"][1]["content"] == "yo" and got["initial_messages"][1]["tokens"] == 1
    assert got["message_count"] == 0 and got["chat_count"] == 1
    # generated ids are time-sortable
    a = c.create_session()["id"]
    b = c.create_session()["id"]
    assert len(a) == 26 and a < b
    assert c.update_session("chat-1", name="Renamed", settings={"temperature": 1.0})["name"] == "Renamed"
    assert c.pause("chat-1")["status"] == "paused"
    with pytest.raises(ApiError) as e:
        c.append("chat-1", "user", "while paused")
    assert e.value.status == 409 and "resume" in e.value.message
    assert c.resume("chat-1")["status"] == "active"
    assert c.end("chat-1")["status"] == "ended"
    with pytest.raises(ApiError) as e:
        c.resume("chat-1")
    assert e.value.status == 409
    c.delete_session(a)
    with pytest.raises(ApiError) as e:
        c.get_session(a)
    assert e.value.status == 404 and e.value.code == "not_found"


def test_duplicate_id_conflicts(daemon):
    c = daemon.client()
    c.create_session(id="dup")
    with pytest.raises(ApiError) as e:
        c.create_session(id="dup")
    assert e.value.status == 409


def test_list_filters_and_pages(daemon):
    c = daemon.client()
    for i in range(7):
        c.create_session(id=f"s{i}", user="bob" if i % 2 else "ann", tags=["odd"] if i % 2 else ["even"])
    c.pause("s1")
    assert [s["id"] for s in c.list_sessions(user="bob")["sessions"]] == ["s1", "s3", "s5"]
    assert [s["id"] for s in c.list_sessions(tag="even")["sessions"]] == ["s0", "s2", "s4", "s6"]
    assert [s["id"] for s in c.list_sessions(status="paused")["sessions"]] == ["s1"]
    seen, after = [], None
    while True:
        page = c.list_sessions(limit=3, after=after)
        seen += [s["id"] for s in page["sessions"]]
        after = page["next"]
        if not after:
            break
    assert seen == [f"s{i}" for i in range(7)]


def test_messages_chats_and_cursors(daemon):
    c = daemon.client()
    sid = c.create_session(name="m")["id"]
    m1 = c.append(sid, "user", "one", tokens=3)
    assert m1["role"] == "user" and m1["tokens"] == 3 and m1["chat"] == "main"
    res = c.append_many(sid, [{"role": "assistant", "content": f"a{i}"} for i in range(50)])
    assert res["count"] == 50 and res["chat"] == "main" and res["last_seq"] - res["first_seq"] == 49
    batch = [{"id": i} for i in res["ids"]]
    assert len({m["id"] for m in batch}) == 50
    msgs = c.messages(sid)["messages"]
    assert [m["content"] for m in msgs] == ["one"] + [f"a{i}" for i in range(50)]
    page = c.messages(sid, limit=10)
    assert len(page["messages"]) == 10 and page["next"] == page["messages"][-1]["id"]
    rest = c.messages(sid, after=page["next"], limit=1000)["messages"]
    assert [m["content"] for m in rest] == [f"a{i}" for i in range(9, 50)]
    before = c.messages(sid, before=batch[5]["id"], limit=3)["messages"]
    assert [m["content"] for m in before] == ["a2", "a3", "a4"]
    chat = c.create_chat(sid, name="side", system_prompt="other", model="m2", settings={"temperature": 0.5})
    assert chat["current"] is False and chat["system_prompt"] == "other"
    c.switch_chat(sid, "side")
    assert c.get_session(sid)["current_chat"] == chat["id"]
    c.append(sid, "user", "in side")
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["in side"]
    assert len(c.messages(sid, chat="main", limit=1000)["messages"]) == 51
    assert len(c.messages(sid, all_chats=True, limit=1000)["messages"]) == 52
    chats = c.list_chats(sid)["chats"]
    assert [ch["name"] for ch in chats] == ["main", "side"] and chats[1]["current"]
    with pytest.raises(ApiError) as e:
        c.switch_chat(sid, "nope")
    assert e.value.status == 404


@pytest.mark.parametrize(
    "method,path,body,status,code",
    [
        ("POST", "/v1/sessions", b"{not json", 400, "bad_json"),
        ("POST", "/v1/sessions", b"[1,2]", 422, "invalid"),
        ("POST", "/v1/sessions", b'{"id": "../../etc"}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"id": ""}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"id": "abc\\n"}', 422, "invalid"),  # "$" matched before a final newline
        ("POST", "/v1/sessions", b'{"bogus": 1}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"settings": {"temperature": "hot"}}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"settings": {"top_p": 2}}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"settings": {"seed": 1}}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"tags": "x"}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"metadata": [1]}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"name": 5}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"initial_messages": [{"role": "wizard", "content": "x"}]}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"expires_in": -5}', 422, "invalid"),
        ("POST", "/v1/sessions", b"\xff\xfe\x00", 400, "bad_json"),
        ("POST", "/v1/verify", b"\n", 400, "bad_json"),  # whitespace is not an empty body
        # what DAG-CBOR cannot hold could never be pushed (issue 19): refused before anything is stored
        ("POST", "/v1/sessions", b'{"metadata": {"n": 18446744073709551616}}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"preferences": {"a": [-18446744073709551617]}}', 422, "invalid"),
        (
            "POST",
            "/v1/sessions",
            b'{"initial_messages": [{"role": "user", "content": "x", "metadata": {"n": 99999999999999999999999}}]}',
            422,
            "invalid",
        ),
        ("POST", "/v1/sessions", b'{"metadata": {"n": NaN}}', 422, "invalid"),
        # lone surrogates are not text, in any field; a JSON nesting too deep for the parser is a bad body
        ("POST", "/v1/sessions", b'{"name": "\\ud800"}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"metadata": {"k\\udfff": 1}}', 422, "invalid"),
        ("POST", "/v1/sessions", b'{"tags": ["ok", "\\uDC00x"]}', 422, "invalid"),
        ("POST", "/v1/sessions", b"[" * 100_000 + b"]" * 100_000, 400, "bad_json"),
        ("POST", "/v1/sessions", b'{"metadata": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001, 400, "bad_json"),
        ("GET", "/v1/sessions?limit=abc", None, 422, "invalid"),
        ("GET", "/v1/sessions?limit=0", None, 422, "invalid"),
        # a number is ASCII digits: int() would also take spaces and other whitespace around it (a NEL,
        # U+0085, here: schemathesis found it), other scripts' digits and underscores
        ("GET", "/v1/sessions?limit=9%C2%85", None, 422, "invalid"),
        ("GET", "/v1/sessions?limit=%209", None, 422, "invalid"),
        ("GET", "/v1/sessions?limit=%D9%A9", None, 422, "invalid"),
        ("GET", "/v1/sessions?limit=1_0", None, 422, "invalid"),
        ("GET", "/v1/search?q=x&limit=9%C2%85", None, 422, "invalid"),
        ("GET", "/v1/sessions?status=gone", None, 422, "invalid"),
        ("GET", "/v1/sessions/nope", None, 404, "not_found"),
        ("PATCH", "/v1/sessions/nope", b'{"name": "x"}', 404, "not_found"),
        ("DELETE", "/v1/sessions/nope", None, 404, "not_found"),
        ("POST", "/v1/sessions/nope/messages", b'{"role": "user", "content": "x"}', 404, "not_found"),
        ("GET", "/v1/nothing", None, 404, "not_found"),
        ("PUT", "/v1/sessions", b"{}", 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_clear_json_errors(daemon, method, path, body, status, code):
    st, data = raw(daemon, method, path, body)
    assert st == status, data
    assert data["error"]["code"] == code and data["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"role": "user"}',
        b'{"content": "x"}',
        b'{"role": "user", "content": 5}',
        b'{"role": "user", "content": "x", "tokens": -1}',
        b'{"role": "user", "content": "x", "tokens": 1.5}',
        b'{"messages": []}',
        b'{"messages": "x"}',
        b'{"messages": [{"role": "user"}]}',
        b'{"role": "user", "content": "x", "chat": "missing"}',
        b'{"role": "user", "content": "x", "extra": 1}',
        b'{"messages": [{"role": "user", "content": "ok"}, {"role": "nobody", "content": "bad"}]}',
        b'{"role": "user", "content": "\\ud800"}',
        b'{"role": "user", "content": "x", "name": "\\udbff"}',
        b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "a\\ud800b"}]}',
        b'{"role": "user", "content": "x", "metadata": {"n": 18446744073709551616}}',
        b'{"role": "user", "content": "x", "tokens": 1e30}',
    ],
)
def test_bad_appends_change_nothing(daemon, body):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "before")
    st, data = raw(daemon, "POST", f"/v1/sessions/{sid}/messages", body)
    assert st in (404, 422), data
    assert "error" in data
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["before"]


def test_a_bad_append_names_its_field_as_sent(daemon):
    """One message or a batch: the error names the field of the body that was sent (the union's
    member chosen by its keys), never a model's name, and for a batch the message's index."""
    sid = daemon.client().create_session()["id"]
    for body, says in (
        (b'{"role": "user", "content": "x", "tokens": -5}', "tokens must be between"),
        (b'{"messages": [{"role": "user", "content": "x", "tokens": -5}]}', "messages[0].tokens must be between"),
        (b'{"messages": [{"role": "user", "content": "ok"}, {"role": "user"}]}', "messages[1].content is required"),
        (b'{"messages": []}', "messages must not be empty"),
    ):
        st, data = raw(daemon, "POST", f"/v1/sessions/{sid}/messages", body)
        said = data["error"]["message"]
        assert st == 422 and said.startswith(says) and "MessageIn" not in said, (body, said)


def test_patch_rules(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    for body in (b"{}", b'{"status": "ended"}', b'{"settings": {"top_k": 0}}'):
        st, data = raw(daemon, "PATCH", f"/v1/sessions/{sid}", body)
        assert st == 422, data
    assert c.get_session(sid)["status"] == "active"


def test_null_means_the_default_and_a_patch_with_null_clears(daemon):
    """What the OpenAPI document promises: null for these fields is accepted, as their empty default."""
    c = daemon.client()
    fields = ("settings", "initial_messages", "metadata", "tags", "preferences")
    st, s = raw(daemon, "POST", "/v1/sessions", json.dumps(dict.fromkeys(fields)).encode())
    assert st == 201, s
    got = c.get_session(s["id"])
    assert (got["settings"], got["metadata"], got["tags"], got["preferences"]) == ({}, {}, [], {})
    sid = c.create_session(tags=["a", "b"], metadata={"k": 1}, preferences={"p": True})["id"]
    st, data = raw(daemon, "PATCH", f"/v1/sessions/{sid}", b'{"tags": null, "metadata": null, "preferences": null}')
    assert st == 200, data
    got = c.get_session(sid)
    assert (got["tags"], got["metadata"], got["preferences"]) == ([], {}, {})
    schemas = c.openapi()["components"]["schemas"]
    for name in ("SessionCreate", "SessionPatch"):
        props = schemas[name]["properties"]
        for k in ("initial_messages", "metadata", "tags", "preferences"):
            assert "null" in props[k]["type"], (name, k)
        assert {"type": "null"} in props["settings"]["anyOf"]


def test_openapi_matches_routes(daemon):
    doc = daemon.client().openapi()
    assert doc["openapi"].startswith("3.")
    from sessiond.daemon.api import ROUTES

    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.method, r.path) for r in ROUTES}
    for r in ROUTES:
        for ref in json.dumps(doc["paths"][r.path]).split('"#/components/schemas/')[1:]:
            assert ref.split('"')[0] in doc["components"]["schemas"]


def test_status(daemon):
    st = daemon.client().status()
    assert st["version"] and len(st["device_id"]) == 16 and st["uptime"] >= 0
    assert st["counts"]["sessions"] == 0 and st["socket"] == daemon.socket
    # the SQLite commits so far: each write (here a session made) commits, or shares another's commit
    daemon.client().create_session(name="s")
    assert daemon.client().status()["database"]["commits"] > st["database"]["commits"] >= 0


async def test_async_client_and_events(daemon):
    async with AsyncClient(daemon.home) as c:
        seen = []
        probes: set[str] = set()
        subscribed = asyncio.Event()

        async def watch():
            async for ev in c.events():
                if ev.get("session") in probes:  # the stream is live: it carries what happens from now on
                    subscribed.set()
                    continue
                seen.append(ev)
                if ev["type"] == "messages.appended":
                    return

        async with AsyncClient(daemon.home) as c2:
            task = asyncio.create_task(watch())

            async def probe() -> bool:  # a change made before the subscription took hold is not seen: again
                probes.add(pid := f"probe-{len(probes)}")
                await c2.create_session(id=pid)
                try:
                    await asyncio.wait_for(subscribed.wait(), 0.2)
                except TimeoutError:
                    return False
                return True

            await eventually(probe, timeout=10, what="the event stream's subscription")
            s = await c2.create_session(name="ev")
            await c2.append(s["id"], "user", "hello")
            await asyncio.wait_for(task, 10)
        types = [e["type"] for e in seen]
        assert "session.created" in types and types[-1] == "messages.appended"
        assert all(e.get("session") == s["id"] for e in seen if e["type"] != "sync.pushed")
        with pytest.raises(ApiError):
            await c.get_session("missing")


def test_unicode_and_large_content(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    text = "héllo 🌍 " * 20000 + "\u2028end"
    c.append(sid, "assistant", text)
    assert c.messages(sid)["messages"][0]["content"] == text


async def test_event_stream_passes_cancellation_on(tmp_path):
    """The /v1/events handler re-raises CancelledError: a cancelled stream's task ends cancelled,
    instead of returning as if the app had left and keeping the connection's task alive."""
    path = str(tmp_path / "s.sock")
    async with events_route(path) as events:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"sessiond events\n\n"), 10)
        (task,) = events._streams.values()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done and task.cancelled(), "the event stream swallowed its cancellation"
        writer.close()


class DropAfterAnswer(UnixProxy):
    """A Unix-socket proxy in front of a daemon. The first `drops` requests go through to the daemon,
    whose whole answer is read (so whatever it did is committed) and then the app's connection is
    closed without the answer: the app sees a reset connection. Later requests pass both ways."""

    def __init__(self, upstream: str, drops: int = 1):
        self.drops, self.dropped = drops, 0
        super().__init__(upstream)

    @staticmethod
    def _read_message(f) -> bytes | None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return None
            head += line
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head + f.read(length)

    def handle(self, app, daemon) -> None:
        threading.Thread(target=self._pipe, args=(app, daemon), daemon=True).start()

    def _pipe(self, conn, up) -> None:
        cf, uf = conn.makefile("rb"), up.makefile("rb")
        try:
            while (req := self._read_message(cf)) is not None:
                up.sendall(req)
                answer = self._read_message(uf)
                if self.dropped < self.drops:
                    self.dropped += 1
                    return  # the daemon answered; the app never hears it
                conn.sendall(answer)
        finally:
            conn.close()
            up.close()


def test_a_retried_append_is_stored_once(daemon):
    """The client retries an append whose connection broke after the daemon committed it: the retry
    carries the same Idempotency-Key, and the daemon answers it with the first result."""
    c = daemon.client()
    sid = c.create_session(name="retry")["id"]
    px = DropAfterAnswer(daemon.socket)
    try:
        with Client(
            socket=px.path, append_stream=False
        ) as pc:  # the POST's retry (the stream's: test_append_stream.py)
            m = pc.append(sid, "user", "only once")
            assert px.dropped == 1  # the first answer was lost, the retry's came through
            px.drops += 1
            batch = pc.append_many(sid, [{"role": "user", "content": "b1"}, {"role": "assistant", "content": "b2"}])
    finally:
        px.close()
    msgs = c.messages(sid)["messages"]
    assert [x["content"] for x in msgs] == ["only once", "b1", "b2"]
    assert m["id"] == msgs[0]["id"] and m["content"] == "only once"
    assert batch["ids"] == [msgs[1]["id"], msgs[2]["id"]] and batch["count"] == 2


def test_idempotency_key_repeats_and_misuse(daemon):
    c = daemon.client()
    sid = c.create_session(name="keys")["id"]
    first = c.append(sid, "user", "hello", idempotency_key="k-1")
    again = c.append(sid, "user", "hello", idempotency_key="k-1")
    assert again == first and len(c.messages(sid)["messages"]) == 1
    with pytest.raises(ApiError) as exc:  # the same key for another message: refused, nothing stored
        c.append(sid, "user", "something else", idempotency_key="k-1")
    assert exc.value.status == 422 and exc.value.code == "idempotency_key_reused"
    b1 = c.append_many(sid, [{"role": "user", "content": "x"}], idempotency_key="k-2")
    assert c.append_many(sid, [{"role": "user", "content": "x"}], idempotency_key="k-2") == b1
    other = c.create_session(name="other")["id"]  # keys are per session
    c.append(other, "user", "hello", idempotency_key="k-1")
    assert [m["content"] for m in c.messages(other)["messages"]] == ["hello"]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["hello", "x"]
    for bad in ("", "x" * 300, "tab\there"):
        raw = UnixHTTP(daemon.socket)
        raw.request(
            "POST",
            f"/v1/sessions/{sid}/messages",
            body=json.dumps({"role": "user", "content": "y"}),
            headers={"Content-Type": "application/json", "Idempotency-Key": bad},
        )
        r = raw.getresponse()
        assert r.status == 422 and b"Idempotency-Key" in r.read(), bad
    assert len(c.messages(sid)["messages"]) == 2
    daemon.restart()  # remembered durably: a retry after a crash or restart still finds its key
    c = daemon.client()
    assert c.append(sid, "user", "hello", idempotency_key="k-1") == first


def test_a_request_that_is_not_idempotent_is_not_retried(daemon):
    c = daemon.client()
    px = DropAfterAnswer(daemon.socket)
    try:
        with Client(socket=px.path) as pc:
            with pytest.raises(ClientError) as exc:
                pc.create_session(name="once")
            assert "may" in str(exc.value)
            assert pc.status()["pid"]  # a GET is retried freely
    finally:
        px.close()
    assert [s["name"] for s in c.list_sessions()["sessions"]] == ["once"]


async def test_async_client_retries_appends_once_with_their_key(daemon):
    c = daemon.client()
    sid = c.create_session(name="async")["id"]
    px = DropAfterAnswer(daemon.socket)
    try:
        async with AsyncClient(socket=px.path, append_stream=False) as ac:  # the POST's retry
            m = await ac.append(sid, "user", "async once")
            assert px.dropped == 1
    finally:
        px.close()
    msgs = c.messages(sid)["messages"]
    assert [x["content"] for x in msgs] == ["async once"] and msgs[0]["id"] == m["id"]


def test_what_can_be_pushed_is_accepted_to_the_edge(daemon):
    """The limits are DAG-CBOR's, not narrower: 64-bit integers either way, and escaped surrogate pairs
    (one character) are text."""
    c = daemon.client()
    st, s = raw(
        daemon,
        "POST",
        "/v1/sessions",
        b'{"name": "\\ud83d\\ude00", "metadata": {"big": 18446744073709551615, "small": -18446744073709551616}}',
    )
    assert st == 201, s
    assert s["name"] == "\U0001f600" and s["metadata"] == {"big": (1 << 64) - 1, "small": -(1 << 64)}
    st, _ = raw(
        daemon,
        "POST",
        f"/v1/sessions/{s['id']}/messages",
        b'{"role": "user", "content": "\\ud83d\\ude00", "metadata": {"n": 18446744073709551615}}',
    )
    assert st == 201
    # a float is a whole number beyond 2^53, and JSON counts 1e86 as an integer: out of range, as the
    # schema says (schemathesis found the daemon accepting it)
    for big in (b"-1.9124444585316524e+86", b"1.8446744073709552e19", b"3.7e19"):
        st, err = raw(daemon, "POST", "/v1/sessions", b'{"metadata": {"x": ' + big + b"}}")
        assert st == 422 and "64-bit range" in err["error"]["message"], (big, st, err)
    c.sync(wait=True)
    assert c.verify()["ok"]


def test_settings_patch_merges_per_field(daemon):
    """Like policy fields: a PATCH of one setting keeps the others, and null clears one."""
    c = daemon.client()
    sid = c.create_session(settings={"temperature": 0.3, "max_tokens": 100})["id"]
    assert c.update_session(sid, settings={"top_p": 0.5})["settings"] == {
        "temperature": 0.3,
        "max_tokens": 100,
        "top_p": 0.5,
    }
    st, s = raw(daemon, "PATCH", f"/v1/sessions/{sid}", b'{"settings": {"temperature": null, "top_k": 7}}')
    assert st == 200 and s["settings"] == {"max_tokens": 100, "top_p": 0.5, "top_k": 7}, s
    st, s = raw(daemon, "PATCH", f"/v1/sessions/{sid}", b'{"settings": {"top_k": "many"}}')
    assert st == 422 and c.get_session(sid)["settings"]["top_k"] == 7


def test_one_client_shared_by_threads_gives_each_call_its_own_answer(daemon):
    c = daemon.client()
    ids = [c.create_session(name=f"t{i}")["id"] for i in range(4)]
    wrong: list = []

    def ask(sid: str) -> None:
        for _ in range(100):
            try:
                got = c.get_session(sid)["id"]
            except Exception as exc:  # (what a thread met on the shared connection)
                got = repr(exc)
            if got != sid:
                wrong.append((sid, got))

    threads = [threading.Thread(target=ask, args=(sid,), daemon=True) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "threads hung on the shared connection"
    assert wrong == []
