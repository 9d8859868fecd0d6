"""The socket API at its edges, as an app meets them: requests racing each other on one session, and
bad input. Real daemons over their real sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

import pytest

from conftest import UnixHTTP, run_cli
from sessiond.client import ApiError, AsyncClient
from sessiond.daemon.openai_names import SESSION_HEADER


async def test_patches_at_once_each_keep_their_fields(daemon):
    """Two apps changing different fields of one session's settings (or policy) at the same moment: each
    PATCH merges into what is stored, so neither change is lost, whichever commits first."""
    clients = [daemon.aclient() for _ in range(4)]
    try:
        for _ in range(3):
            sid = (await clients[0].create_session())["id"]
            await asyncio.gather(
                clients[0].update_session(sid, settings={"temperature": 0.5}),
                clients[1].update_session(sid, settings={"top_k": 5}),
                clients[2].update_session(sid, policy={"token_quota": 100}),
                clients[3].update_session(sid, idle_timeout=1000),
            )
            s = await clients[0].get_session(sid)
            assert s["settings"] == {"temperature": 0.5, "top_k": 5}
            assert s["policy"] == {"token_quota": 100, "idle_timeout": 1000}
    finally:
        for c in clients:
            await c.close()


def _raw(daemon, method: str, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    c = UnixHTTP(daemon.socket, timeout=10)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data)


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/sessions/s/messages", "/openai/v1/chat/completions"])
def test_a_body_its_content_encoding_cannot_decode_is_a_400_naming_it(daemon, path):
    """A body labelled gzip that is not (an app's middleware adding the header, a proxy that already
    inflated it): a 400 saying the body could not be decoded, not a 500 "internal error"; nothing stored."""
    c = daemon.client()
    c.create_session(id="s")
    before = c.messages("s")["messages"]
    body = json.dumps({"role": "user", "content": "hi"}).encode()
    status, data = _raw(
        daemon,
        "POST",
        path,
        body,
        {"Content-Type": "application/json", "Content-Encoding": "gzip", SESSION_HEADER: "s"},
    )
    assert status == 400, data
    assert data["error"]["code"] == "bad_body"
    assert "gzip" in data["error"]["message"]
    assert [s["id"] for s in c.list_sessions()["sessions"]] == ["s"]
    assert c.messages("s")["messages"] == before
    # the same body, compressed as it says, is read
    status, data = _raw(
        daemon,
        "POST",
        "/v1/sessions/s/messages",
        gzip.compress(body),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert status == 201 and data["content"] == "hi"


async def test_a_pause_or_resume_racing_an_end_never_follows_it(daemon):
    """An app pausing (or resuming) a session while another ends it: the end is final. Either the pause came
    first (200, paused, then the end) or it is refused as for an ended session (409); never a 200 for a pause
    written after the end, announced as session.paused after session.ended."""
    c = daemon.client()
    stream = c.event_stream()
    clients = [daemon.aclient() for _ in range(2)]
    sids = []
    try:
        for i in range(12):
            sid = (await clients[0].create_session())["id"]
            sids.append(sid)
            await clients[0].append(sid, "user", "hi")  # (its end then makes a final checkpoint)
            if i % 2:
                await clients[0].pause(sid)

            async def change(sid=sid, i=i):  # sent a little later each time: the race's every moment
                for _ in range(i // 2):
                    await asyncio.sleep(0)
                return await (clients[0].resume if i % 2 else clients[0].pause)(sid)

            answers = await asyncio.gather(change(), clients[1].end(sid), return_exceptions=True)
            assert isinstance(answers[1], dict) and answers[1]["status"] == "ended", answers
            if isinstance(answers[0], ApiError):
                assert answers[0].status == 409 and "ended" in answers[0].message
            else:
                assert not isinstance(answers[0], BaseException), answers
        c.create_session(id="last")
        statuses: dict[str, list[str]] = {}
        for ev in stream:
            if ev.get("session") == "last":
                break
            if ev["type"] in ("session.paused", "session.resumed", "session.ended"):
                statuses.setdefault(ev["session"], []).append(ev["type"])
    finally:
        stream.close()
        for a in clients:
            await a.close()
    for sid in sids:
        assert statuses[sid][-1] == "session.ended", (sid, statuses[sid])


def _too_long_calls(c):
    return [
        lambda: c.get_session("x" * 9000),
        lambda: c.list_sessions(user="u" * 9000),
        lambda: c.messages("s", before="m" * 9000),
    ]


def _refused_by_the_http_parser(err: ApiError) -> None:
    assert err.status == 400 and err.code == "http_error", (err.status, err.code, err.message)
    assert "8190 bytes" in err.message, err.message  # aiohttp's own reason, passed on


def test_a_request_line_or_header_too_long_is_an_api_error_with_its_reason(daemon):
    """aiohttp's HTTP parser refuses a request line over 8 KiB with a plain-text 400 (README): the
    client raises it as the ApiError it is, with that reason, not a ClientError saying the daemon's reply
    is not JSON."""
    c = daemon.client()
    c.create_session(id="s")
    for call in _too_long_calls(c):
        with pytest.raises(ApiError) as info:
            call()
        _refused_by_the_http_parser(info.value)
    assert c.messages("s")["messages"] == []


async def test_async_a_request_line_or_header_too_long_is_an_api_error_with_its_reason(daemon):
    async with daemon.aclient() as c:
        await c.create_session(id="s")
        for call in _too_long_calls(c):
            with pytest.raises(ApiError) as info:
                await call()
            _refused_by_the_http_parser(info.value)
        assert (await c.messages("s"))["messages"] == []


def _undocumented(doc: dict, schema: str, answer: dict) -> set[str]:
    """The fields of `answer` that the OpenAPI document's component `schema` does not name."""
    return set(answer) - set(doc["components"]["schemas"][schema].get("properties", {}))


def test_every_field_of_the_answers_is_in_the_openapi_document(daemon):
    """What the daemon answers is what GET /v1/openapi.json says it answers: an app (or a client generated from
    the document) finds every field it gets there, tokens_used, policy and access of a session among them."""
    c = daemon.client()
    doc = c.openapi()
    s = c.create_session(name="x", token_quota=1000)
    sid = s["id"]
    m = c.append(sid, "user", "hello")
    chat = c.create_chat(sid, name="side")
    sessions = {
        "create": s,
        "get": c.get_session(sid),
        "list": c.list_sessions()["sessions"][0],
        "patch": c.update_session(sid, name="y"),
        "switch": c.switch_chat(sid, "side"),
        "clone": c.clone(sid),
        "fork": c.fork(sid, m["id"]),
        "pause": c.pause(sid),
        "resume": c.resume(sid),
    }
    for what, answer in sessions.items():
        assert not _undocumented(doc, "Session", answer), what
    ended = c.end(sid)
    assert not _undocumented(doc, "Ended", ended)
    assert ended["snapshot"] and ended["pushed"] is True and ended["checkpoints"]
    for answer in (chat, c.list_chats(sid)["chats"][0]):
        assert not _undocumented(doc, "Chat", answer)
    assert not _undocumented(doc, "Message", m)
    assert not _undocumented(doc, "Quota", c.quota(sid))
    assert not _undocumented(doc, "Context", c.context(sid))
    assert not _undocumented(doc, "Checkpoint", c.checkpoints(sid)["checkpoints"][0])


def test_status_sync_and_proof_answers_are_in_the_openapi_document(daemon):
    """As above, for the daemon's status (its openai and providers), a sync's answer (documented as any
    object) and a proof's check (documented as {ok} alone)."""
    c = daemon.client()
    doc = c.openapi()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello")
    assert not _undocumented(doc, "Status", c.status())
    synced = c.sync(sid, wait=True)
    assert synced["complete"] is True and not _undocumented(doc, "SyncResult", synced)
    proof = c.checkpoint(sid)
    held = c.verify_proof(sid, proof)
    assert held["ok"] is True and not _undocumented(doc, "ProofResult", held)
    broken = c.verify_proof(sid, {**proof, "tokens": proof["tokens"] + 1})
    assert broken["ok"] is False and broken["problem"] and not _undocumented(doc, "ProofResult", broken)


@pytest.mark.parametrize("meanwhile", ["append", "delete"])
def test_a_cleanup_deletes_no_session_written_to_while_it_runs(daemon, meanwhile):
    """`cleanup` lists the idle sessions, then deletes them one by one: a session an app appends to meanwhile
    is not idle any more and stays, with the message the app was told was stored (201); one the app deletes
    meanwhile is passed by (not a 404 that stops the clean-up half-way)."""
    c = daemon.client()
    for i in range(30):
        c.create_session(id=f"a{i:02}")
    c.create_session(id="z-last")  # the last one the clean-up comes to (it goes by id)
    stream = daemon.client().event_stream()  # subscribed when it returns
    appended: dict = {}

    def append_once_the_cleanup_runs():
        with daemon.client() as app:
            for ev in stream:
                if ev["type"] == "session.deleted":  # the clean-up has its list, and is deleting
                    if meanwhile == "delete":
                        appended.update(app.delete_session("z-last"))
                    else:
                        appended.update(app.append("z-last", "user", "still here"))
                    return

    thread = threading.Thread(target=append_once_the_cleanup_runs)
    thread.start()
    try:
        result = c.cleanup(0)  # every session idle since before now
        thread.join(10)
    finally:
        stream.close()
    assert appended, f"the {meanwhile} did not run during the clean-up"
    assert "z-last" not in [s["id"] for s in result["sessions"]]
    assert [s["id"] for s in result["sessions"]] == [f"a{i:02}" for i in range(30)]
    if meanwhile == "append":
        assert [m["content"] for m in c.messages("z-last")["messages"]] == ["still here"]
    assert [s["id"] for s in c.list_sessions()["sessions"]] == (["z-last"] if meanwhile == "append" else [])


async def test_async_client_changes_a_chat_named_dot_or_dot_dot(daemon):
    """A chat's name is any text, and a chat is changed by name: the asyncio client sends a chat named ".." or
    "." as that path segment, as the blocking client does, not as a dot segment its URL library removed
    (which made it a PATCH of /v1/sessions/ID/, "no such route")."""
    async with daemon.aclient() as c:
        sid = (await c.create_session(system_prompt="the session's"))["id"]
        for name in ("..", "."):
            await c.create_chat(sid, name=name)
            changed = await c.update_chat(sid, name, system_prompt=f"chat {name}")
            assert changed["name"] == name and changed["system_prompt"] == f"chat {name}"
        assert (await c.get_session(sid))["system_prompt"] == "the session's"


def test_messages_of_one_chat_and_of_every_chat_at_once_is_refused(daemon):
    """chat= (one chat) with all=true (every chat) asks for two things: refused naming both, where the chat was
    quietly dropped and every chat's messages answered as if it were one chat's."""
    c = daemon.client()
    c.create_session(id="s")
    c.append("s", "user", "in main")
    c.create_chat("s", name="side")
    c.append("s", "user", "in side", chat="side")
    with pytest.raises(ApiError) as info:
        c.messages("s", chat="side", all_chats=True)
    assert info.value.status == 422 and "chat" in info.value.message and "all" in info.value.message
    assert [m["content"] for m in c.messages("s", chat="side", all_chats=False)["messages"]] == ["in side"]
    assert [m["content"] for m in c.messages("s", all_chats=True)["messages"]] == ["in main", "in side"]
    out = run_cli(daemon.home, "log", "s", "--chat", "side", "--all", "--json")
    assert out.returncode != 0 and "--all" in out.stderr and "--chat" in out.stderr


@pytest.mark.parametrize(
    "method, path", [("POST", "/pause"), ("POST", "/end"), ("DELETE", ""), ("POST", "/checkpoints")]
)
def test_a_body_sent_to_a_route_that_takes_none_is_refused(daemon, method, path):
    """A route that takes no body (pause, resume, end, delete, a checkpoint) refuses one with fields, as every
    route refuses a field it does not know, and changes nothing; where it did what it does and dropped them."""
    c = daemon.client()
    c.create_session(id="s")
    c.append("s", "user", "hi")
    status, data = _raw(
        daemon, method, f"/v1/sessions/s{path}", b'{"reason": "done"}', {"Content-Type": "application/json"}
    )
    assert status == 422 and "takes no body" in data["error"]["message"] and "reason" in data["error"]["message"]
    s = c.get_session("s")
    assert s["status"] == "active" and c.checkpoints("s")["checkpoints"] == []
    status, _ = _raw(daemon, method, f"/v1/sessions/s{path}", b"{}", {"Content-Type": "application/json"})
    assert status in (200, 201)  # an empty object is no body


BAD_KEYS = ["€", "a\nb", "a\r\nX-Injected: 1", "\x00"]


def test_a_bad_idempotency_key_is_an_api_error_from_either_client(daemon):
    """An Idempotency-Key the API refuses (not 1-255 printable ASCII characters) is the ApiError (422) the
    daemon gives for one, from both clients, whatever the characters: not a UnicodeEncodeError or a
    ValueError about headers from the HTTP library, which an app catching ApiError does not expect."""
    c = daemon.client()
    c.create_session(id="s")
    for key in BAD_KEYS:
        for call in (
            lambda: c.append("s", "user", "hi", idempotency_key=key),
            lambda: c.append_many("s", [{"role": "user", "content": "hi"}], idempotency_key=key),
        ):
            with pytest.raises(ApiError) as info:
                call()
            assert info.value.status == 422 and "printable ASCII" in info.value.message, key
    assert c.messages("s")["messages"] == []


async def test_async_a_bad_idempotency_key_is_an_api_error(daemon):
    async with daemon.aclient() as c:
        await c.create_session(id="s")
        for key in BAD_KEYS:
            with pytest.raises(ApiError) as info:
                await c.append("s", "user", "hi", idempotency_key=key)
            assert info.value.status == 422 and "printable ASCII" in info.value.message, key
        assert (await c.messages("s"))["messages"] == []


def test_an_empty_chat_reference_is_refused_not_read_as_the_current_chat(daemon):
    """No chat has an empty id or name (a chat made with name "" is named by its id): "chat": "" names no chat
    and is refused (422), where an append with it went to the current chat, and a compaction compacted that."""
    c = daemon.client()
    c.create_session(id="s")
    c.create_chat("s", name="side", switch=True)
    calls = {
        "append": lambda: c.append("s", "user", "hi", chat=""),
        "batch": lambda: c.append_many("s", [{"role": "user", "content": "hi"}], chat=""),
        "batch message": lambda: c.append_many("s", [{"role": "user", "content": "hi", "chat": ""}]),
        "compact": lambda: c._call("POST", "/v1/sessions/s/compact", {"chat": "", "target_tokens": 0}),
        "switch": lambda: c.switch_chat("s", ""),
    }
    for what, call in calls.items():
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 422 and "chat" in info.value.message, what
    assert c.messages("s", all_chats=True)["messages"] == []
    assert c.get_session("s")["current_chat"] != "main"


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/sessions/s/messages", "/openai/v1/chat/completions"])
def test_a_number_too_long_to_read_is_a_bad_json_that_names_it_in_the_apis_terms(daemon, path):
    """A number of thousands of digits: a 400 saying what sessions hold, not Python's advice to call
    sys.set_int_max_str_digits() (the daemon's own limit on reading integers, meaningless to an app)."""
    c = daemon.client()
    c.create_session(id="s")
    body = b'{"role": "user", "content": "hi", "tokens": ' + b"9" * 5000 + b"}"
    status, data = _raw(daemon, "POST", path, body, {"Content-Type": "application/json", SESSION_HEADER: "s"})
    assert status == 400 and data["error"]["code"] == "bad_json"
    message = data["error"]["message"]
    assert "set_int_max_str_digits" not in message and "5000 digits" in message and "64 bits" in message


def test_a_policy_field_given_both_in_policy_and_as_its_shortcut_is_refused(daemon):
    """token_quota (and every policy field) may be given in `policy` or at the top level: given both ways at
    once, which one is meant cannot be told, and the request is refused (422, naming it) instead of the top
    level's winning without a word (a null there even cleared the quota the app set in `policy`)."""
    c = daemon.client()
    s = c.create_session(id="s", token_quota=100)
    calls = {
        "create": lambda: c.create_session(id="t", policy={"token_quota": 5}, token_quota=10),
        "patch": lambda: c.update_session("s", policy={"token_quota": 50}, token_quota=None),
        "chat": lambda: c.create_chat("s", policy={"max_context_tokens": 500}, max_context_tokens=1000),
        "chat patch": lambda: c.update_chat("s", "main", policy={"auto_compact": True}, auto_compact=False),
    }
    for what, call in calls.items():
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 422 and "twice" in info.value.message, what
    assert [x["id"] for x in c.list_sessions()["sessions"]] == ["s"]
    assert c.get_session("s")["policy"] == s["policy"] == {"token_quota": 100}
    assert [ch["policy"] for ch in c.list_chats("s")["chats"]] == [{}]


def test_the_call_after_a_refusal_that_closed_the_connection_is_sent_on_a_new_one(daemon):
    """aiohttp's parser refuses a request line over 8 KiB with an HTTP/1.0 answer and closes the connection:
    the blocking client reads that answer as the end of its kept-alive connection, so the next call (a create,
    not to be repeated blindly) goes on a new one, instead of failing as 'may or may not have been done'."""
    c = daemon.client()
    for _ in range(20):
        with pytest.raises(ApiError):
            c.get_session("x" * 9000)
        c.create_session()
    assert len(c.list_sessions()["sessions"]) == 20


def test_a_query_parameter_given_twice_is_refused_naming_it(daemon):
    """?status=active&status=ended asks for one status or the other, or both: no parameter takes a list, and the
    daemon used one of them without a word (an app meaning 'either' got only the active sessions)."""
    c = daemon.client()
    c.create_session(id="live")
    c.end(c.create_session(id="done")["id"])
    for query in ("status=active&status=ended", "limit=1&limit=50", "all=true&all=false"):
        path = "/v1/sessions/live/messages" if query.startswith("all") else "/v1/sessions"
        status, data = _raw(daemon, "GET", f"{path}?{query}", b"", {})
        assert status == 400 and data["error"]["code"] == "bad_parameter", (query, data)
        name = query.split("=")[0]
        assert data["error"]["details"]["parameter"] == name and "twice" in data["error"]["message"], data
    status, data = _raw(daemon, "GET", "/v1/sessions?status=ended", b"", {})
    assert status == 200 and [s["id"] for s in data["sessions"]] == ["done"]


def test_the_clients_send_an_empty_device_or_chat_as_given_not_as_none(daemon):
    """unshare(sid, device="") is not unshare(sid) (which ends every other device's access), nor uncompact with
    chat="" the current chat's: the client sends "" as it was given, and the daemon refuses it (422)."""
    c = daemon.client()
    sid = c.create_session(id="s", max_context_tokens=1000)["id"]
    c.append(sid, "user", "hello there")
    c.compact(sid, target_tokens=0)
    c.share(sid, write=True)
    for call in (lambda: c.unshare(sid, device=""), lambda: c.uncompact(sid, chat="")):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 422
    assert [s["status"] for s in c.shares(sid)["shares"]] == ["active"]  # no rekey revoked the code
    assert c.context(sid)["compacted_messages"] == 1


def test_messages_last_pages_from_the_end(daemon):
    """GET /v1/sessions/{id}/messages?last=true: the latest `limit` messages (oldest first), and `next` the
    cursor for the page before them (as `before` gives); both clients take `last`."""
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(7)])
    page = c.messages(sid, last=True, limit=3)
    assert [m["content"] for m in page["messages"]] == ["m4", "m5", "m6"]
    assert page["next"] == page["messages"][0]["id"]
    page = c.messages(sid, before=page["next"], limit=3)
    assert [m["content"] for m in page["messages"]] == ["m1", "m2", "m3"]
    page = c.messages(sid, last=True, limit=10)
    assert len(page["messages"]) == 7 and page["next"] is None

    async def latest():
        async with AsyncClient(daemon.home) as a:
            return await a.messages(sid, last=True, limit=1)

    assert [m["content"] for m in asyncio.run(latest())["messages"]] == ["m6"]


EMPTY_NAMES = [
    ("POST", "/v1/verify", {"session": ""}, "session"),
    ("POST", "/v1/sync", {"session": ""}, "session"),
    ("POST", "/v1/import", {"code": "sessiond1x", "store": ""}, "store"),
    ("GET", "/v1/shares?session=", None, "session"),
    ("GET", "/v1/sessions/s/context?chat=", None, "chat"),
    ("GET", "/v1/sessions/s/export?format=openai&chat=", None, "chat"),
    ("GET", "/v1/sessions/s/messages?chat=", None, "chat"),
    ("GET", "/v1/sessions/s/messages?before=", None, "before"),
    ("GET", "/v1/sessions/s/messages?after=", None, "after"),
    ("GET", "/v1/stats?session=", None, "session"),
    ("GET", "/v1/search?q=hello&session=", None, "session"),
    ("GET", "/v1/sessions?tag=", None, "tag"),
    ("GET", "/v1/sessions?after=", None, "after"),
]


@pytest.mark.parametrize("method,path,body,field", EMPTY_NAMES, ids=[p for _, p, _, _ in EMPTY_NAMES])
def test_an_empty_session_chat_or_filter_is_refused_not_read_as_all_or_current(daemon, method, path, body, field):
    """An empty string names no session, chat, tag or message: a 422 naming the field, where it was read
    as absent and so widened the request (every session verified or synced, every code listed, the current
    chat's context or export, a listing from the start)."""
    c = daemon.client()
    c.create_session(id="s", user="ann", tags=["t"])
    c.create_chat("s", name="side", switch=True)
    c.append("s", "user", "hello there")
    raw = json.dumps(body).encode() if body is not None else b""
    status, data = _raw(daemon, method, path, raw, {"Content-Type": "application/json"} if raw else {})
    assert status == 422, (path, status, data)
    assert field in data["error"]["message"], data


async def test_a_compaction_racing_another_never_writes_back_an_earlier_cut(daemon):
    """Two compactions of one chat at once (an app's and another's, or an append's automatic one): each
    computes its cut from the chat as stored in its own write transaction, so the later commit never moves
    the cut back to what it was before the other (which un-compacted the chat: its context grew back past
    its budget without a word)."""
    clients = [daemon.aclient() for _ in range(2)]
    try:
        for i in range(12):
            sid = (await clients[0].create_session(id=f"s{i}"))["id"]
            await clients[0].append_many(sid, [{"role": "user", "content": f"message {n}"} for n in range(20)])
            await asyncio.gather(
                clients[0].compact(sid, target_tokens=0),  # every message compacted away
                clients[1].compact(sid, target_tokens=1 << 30),  # nothing to compact: the cut as it is
            )
            ctx = await clients[0].context(sid)
            assert ctx["compacted_messages"] == 20 and ctx["active_tokens"] == 0, (i, ctx)
    finally:
        for c in clients:
            await c.close()


def _body_routes(sid: str) -> list[tuple[str, str]]:
    """Every route that reads a body (the OpenAI endpoint's included), with its path made concrete."""
    import re

    from sessiond.daemon.routes import ROUTES

    return [(r.method, re.sub(r"\{[^}]+\}", sid, r.path)) for r in ROUTES if r.method != "GET"]


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/json; charset=latin-1"]
)
def test_a_body_whose_content_type_is_not_json_is_a_415_naming_the_header(daemon, content_type):
    """`curl -d '{...}'` labels its body application/x-www-form-urlencoded: the daemon read it as JSON
    anyway. Every route taking a body refuses one labelled otherwise than JSON (415, the message naming
    the header and the fix), and stores nothing; the OpenAI endpoint in OpenAI's error shape."""
    c = daemon.client()
    sid = c.create_session()["id"]
    before = (c.list_sessions()["sessions"], c.messages(sid)["messages"])
    body = json.dumps({"role": "user", "content": "hi"}).encode()
    for method, path in _body_routes(sid):
        status, data = _raw(daemon, method, path, body, {"Content-Type": content_type, SESSION_HEADER: sid})
        assert status == 415, (method, path, data)
        err = data["error"]
        assert "Content-Type" in err["message"] and "-H 'Content-Type: application/json'" in err["message"], err
        assert content_type in err["message"], err
        assert err["code"] == "unsupported_media_type"
        if path.startswith("/openai/"):
            assert err["type"] == "invalid_request_error" and err["param"] is None
    assert (c.list_sessions()["sessions"], c.messages(sid)["messages"]) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Content-Type": "Application/JSON; Charset=UTF-8"},
        {"Content-Type": "application/vnd.example+json"},
        {},  # no Content-Type at all: read as JSON (README: the socket API)
    ],
)
def test_a_body_labelled_json_or_not_labelled_is_read(daemon, headers):
    c = daemon.client()
    sid = c.create_session()["id"]
    body = json.dumps({"role": "user", "content": "hi"}).encode()
    status, data = _raw(daemon, "POST", f"/v1/sessions/{sid}/messages", body, headers)
    assert status == 201 and data["content"] == "hi", data
    status, data = _raw(daemon, "POST", "/v1/sessions", b'{"name": "n"}', headers)
    assert status == 201 and data["name"] == "n", data


@pytest.mark.parametrize(
    "path, body, key",
    [
        ("/v1/sessions/{sid}/messages", b'{"role": "user", "role": "system", "content": "hi"}', "role"),
        ("/v1/sessions/{sid}/messages", b'{"role": "user", "content": "a", "content": "b"}', "content"),
        ("/v1/sessions/{sid}/messages", b'{"role": "user", "content": "hi", "metadata": {"k": 1, "k": 2}}', "k"),
        ("/v1/sessions/{sid}/messages", b'{"r\\u006fle": "system", "role": "user", "content": "hi"}', "role"),
        ("/v1/sessions/{sid}/messages", b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}', "content"),
        ("/v1/sessions/{sid}/messages", b'{"messages": [], "messages": [{"role":"user","content":"a"}]}', "messages"),
        ("/v1/sessions", b'{"name": "a", "name": "b"}', "name"),
        ("/v1/sessions/{sid}", b'{"name": "a", "name": "b"}', "name"),
        ("/openai/v1/chat/completions", b'{"model": "m", "model": "n", "messages": []}', "model"),
    ],
)
def test_a_body_giving_a_key_twice_is_a_400_naming_it(daemon, path, body, key):
    """`{"role": "user", "role": "system"}` was read as its last key said, silently: an app (or a proxy
    adding a field) that gave one twice got a system message stored for a user's. Such a body is refused,
    400 bad_json naming the key, nested ones (metadata's) and escaped spellings of it too; nothing is stored."""
    c = daemon.client()
    sid = c.create_session(name="dups")["id"]
    before = (len(c.list_sessions(limit=1000)["sessions"]), c.messages(sid)["messages"], c.get_session(sid)["name"])
    method = "PATCH" if path == "/v1/sessions/{sid}" else "POST"
    status, data = _raw(
        daemon, method, path.format(sid=sid), body, {"Content-Type": "application/json", SESSION_HEADER: sid}
    )
    assert status == 400, data
    assert data["error"]["code"] == "bad_json" and f"{key!r}" in data["error"]["message"], data
    after = (len(c.list_sessions(limit=1000)["sessions"]), c.messages(sid)["messages"], c.get_session(sid)["name"])
    assert after == before


@pytest.mark.parametrize(
    "body",
    [
        {"role": "user", "content": "role"},  # a value spelled as a key
        {"role": "user", "content": 'say "role" and "content"'},  # quoted keys inside a text
        {"role": "user", "content": "hi", "metadata": {"role": "x", "content": {"role": 1}}},  # the same key, nested
        {"role": "user", "content": "\u00e9t\u00e9 ok"},  # escapes (json.dumps' default ensure_ascii)
        {"role": "user", "content": "hi", "name": None, "tokens": 3, "chat": None, "tool_call_id": None},
    ],
)
def test_a_body_giving_each_key_once_is_read_as_before(daemon, body):
    c = daemon.client()
    sid = c.create_session()["id"]
    status, data = _raw(
        daemon, "POST", f"/v1/sessions/{sid}/messages", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    assert status == 201, data
    got = c.messages(sid)["messages"][-1]
    assert (got["role"], got["content"], got.get("metadata")) == (body["role"], body["content"], body.get("metadata"))


@pytest.mark.parametrize("key", ["", "a" * 256, "caf%C3%A9"], ids=["empty", "long", "not-ascii"])
def test_a_bad_key_asking_what_a_question_recorded_is_refused_in_the_query_s_words(daemon, key):
    """GET /v1/sessions/{id}/complete?key=K refuses a K no question could have been sent with, saying what the
    parameter is. Was: "query parameter key the Idempotency-Key header must be ...", the header's rule glued to
    the parameter's name."""
    daemon.client().create_session(id="s")
    status, body = _raw(daemon, "GET", f"/v1/sessions/s/complete?key={key}", b"", {})
    message = body["error"]["message"]
    assert status == 422 and message.startswith("query parameter key must be"), message
    assert "Idempotency-Key" in message and "header must" not in message, message
