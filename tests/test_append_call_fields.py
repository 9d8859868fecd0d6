"""A call's provider fields (`call_fields`: Gemini 3's thought signature) given with an append through the
native API: POST /v1/sessions/{id}/messages, a batch, the append stream (GET /v1/appends), the Python clients
and `sessiond add --call-fields`. An app that asked Gemini 3 itself and records its answer through sessiond
keeps the signature, so that the next `complete` through sessiond sends the call signed (Gemini refuses a
call of the turn without it). The fields name no provider (the app's, which sessiond does not know): they go
with the calls to any, as a file's do. Checked as an import checks them; another device gets them too."""

from __future__ import annotations

import json

import pytest

import test_model
from conftest import cli_json, run_cli, wait_for
from servers.openai_server import signature
from sessiond.client import ApiError, AsyncClient, Client
from test_thought_signatures import _sent_calls, two  # noqa: F401 (two: a fixture)

CALL = {"id": "call_app", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
EXTRA = {"google": {"thought_signature": signature("call_app")}}
FIELDS = {"call_app": {"extra_content": EXTRA}}

# test_model's fixtures: the loopback provider and daemons whose default provider it is
provider, setup = test_model.provider, test_model.setup


def _turn() -> list[dict]:
    """An app's turn as it recorded it: its question, the model's signed call, the tool's result."""
    return [
        {"role": "user", "content": "weather in x?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL], "call_fields": FIELDS},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_app", "name": "lookup"},
    ]


async def _append_async(home: str, sid: str, msgs: list[dict]) -> None:
    async with AsyncClient(home) as ac:
        for m in msgs:
            await ac.append(sid, m.pop("role"), m.pop("content"), **m)


def _record(home: str, sid: str, via: str) -> None:
    """The app's turn appended `via` the POST (one message a request), the append stream (every append but
    a client's first), a batch, or the asyncio client."""
    import asyncio

    msgs = _turn()
    if via == "batch":
        Client(home).append_many(sid, msgs)
    elif via == "async":
        asyncio.run(_append_async(home, sid, msgs))
    else:
        c = Client(home, append_stream=via == "stream")
        for m in msgs:
            c.append(sid, m.pop("role"), m.pop("content"), **m)
        c.close()


@pytest.mark.parametrize("via", ["post", "stream", "batch", "async"])
def test_an_app_s_signed_call_appended_through_the_api_goes_back_signed(two, via):  # noqa: F811
    """The native append API had no `call_fields`: an app that asked Gemini 3 itself could record its call
    only without the signature, and the turn's next `complete` through sessiond was refused by Gemini
    ("Function call is missing a thought_signature"). The fields are kept now, read back, exported, and
    sent with the call."""
    d, loop, other = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    _record(d.home, sid, via)
    [kept] = [m for m in c.messages(sid)["messages"] if m.get("tool_calls")]
    assert kept["tool_calls"] == [CALL] and kept["call_fields"] == FIELDS, kept
    assert "provider" not in kept, kept  # whose they are is not known: the app's
    data = c.export(sid, "json")
    [exported] = [m for m in data["messages"] if m.get("tool_calls")]
    assert exported["call_fields"] == FIELDS, exported
    answer = c.complete(sid)  # the turn goes on through sessiond: its call sent back signed
    assert answer["content"].startswith("echo"), answer
    assert _sent_calls(loop)[0]["extra_content"] == EXTRA
    # as a file's, they go to any provider the session asks (none is named with them)
    c.complete(sid, "and now?", provider="other")
    assert _sent_calls(other)[0]["extra_content"] == EXTRA


def test_a_session_s_initial_messages_keep_their_calls_fields(two):  # noqa: F811
    """A session's initial messages are MessageIn too: an app's signed call among them keeps its fields, sent
    with the call before the session's own messages."""
    d, loop, _ = two
    c = d.client()
    s = c.create_session(model="echo-1", initial_messages=_turn())
    assert s["initial_messages"][1]["call_fields"] == FIELDS, s["initial_messages"]
    assert c.complete(s["id"], "and now?")["content"].startswith("echo")
    assert _sent_calls(loop)[0]["extra_content"] == EXTRA


def test_a_single_append_s_answer_echoes_the_fields_it_kept(two):  # noqa: F811
    d, _, _ = two
    c = d.client()
    sid = c.create_session()["id"]
    a = c.append(sid, "assistant", "", tool_calls=[CALL], call_fields=FIELDS)
    assert a["tool_calls"] == [CALL] and a["call_fields"] == FIELDS, a


BAD = [
    # (call_fields, tool_calls, what the refusal says)
    ({"call_x": {"extra_content": EXTRA}}, [CALL], "call_fields names 'call_x', which is not the id of one of"),
    (FIELDS, None, "call_fields names 'call_app', which is not the id of one of the message's calls"),
    ({"call_app": {"function": {}, "x": 1}}, [CALL], "holds function: a call's own fields are in the call"),
    ({"call_app": {"x": "y" * (65 << 10)}}, [CALL], "is larger than 64 KiB as JSON"),
    ({"call_app": {}}, [CALL], "must be an object of a provider's own fields of the call"),
    ({"call_app": "sig"}, [CALL], "call_fields"),
    ("sig", [CALL], "call_fields"),
]


@pytest.mark.parametrize("via", ["post", "stream", "batch"])
def test_bad_call_fields_are_refused_naming_the_problem_and_nothing_is_stored(two, via):  # noqa: F811
    """Checked as `import-file` checks a session file's (daemon/toolcalls.py): only ids of the message's own
    calls, each an object of fields beside id, type and function, at most 64 KiB as JSON; a refusal (422,
    naming the field and the problem) stores nothing."""
    d, _, _ = two
    c = Client(d.home, append_stream=via == "stream")
    sid = c.create_session()["id"]
    c.append(sid, "user", "first")  # (the client's first append is a POST; the stream takes the others)
    before = c.messages(sid)["messages"]
    for fields, calls, says in BAD:
        m = {"role": "assistant", "content": "", "call_fields": fields, **({"tool_calls": calls} if calls else {})}
        with pytest.raises(ApiError) as e:
            if via == "batch":
                c.append_many(sid, [{"role": "user", "content": "q"}, m])
            else:
                c.append(sid, m.pop("role"), m.pop("content"), **m)
        assert e.value.status == 422 and says in e.value.message, (fields, e.value.message)
        if via == "batch":
            assert "messages[1].call_fields" in e.value.message, e.value.message
    assert c.messages(sid)["messages"] == before  # nothing stored
    c.close()


def _deep(levels: int) -> str:
    """A call's fields nested `levels` objects deep: deeper than a stored message's fields may be."""
    return '{"a": ' * levels + "1" + "}" * levels


def test_add_records_a_call_s_fields_from_the_command_line(two):  # noqa: F811
    """`sessiond add` had no way to give a call's provider fields: --call-fields ID JSON (repeated, one per
    call) gives them, as the API's call_fields; `--json` answers the message as ever, with them."""
    d, loop, _ = two
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    run_cli(d.home, "add", sid, "--role", "user", "weather in x?", check=True)
    a = cli_json(
        d.home, "add", sid, "--role", "assistant", "--tool-call-with-id", "call_app", "lookup", "{}",
        "--call-fields", "call_app", json.dumps({"extra_content": EXTRA}),
    )  # fmt: skip
    assert a["role"] == "assistant" and a["tool_calls"] == [CALL] and a["call_fields"] == FIELDS, a
    run_cli(d.home, "add", sid, "--role", "tool", "--tool-call-id", "call_app", "sunny", check=True)
    answer = d.client().complete(sid)
    assert answer["content"].startswith("echo"), answer
    assert _sent_calls(loop)[0]["extra_content"] == EXTRA
    stored = d.client().messages(sid)["messages"]
    for argv, code, says in (
        (["--call-fields", "call_app", "{nope"], 2, "--call-fields call_app: FIELDS_JSON is not valid JSON"),
        (["--call-fields", "call_app", "[1]"], 2, "--call-fields call_app: FIELDS_JSON must be a JSON object"),
        # what the daemon refuses is a usage error too, named as the option typed (README: exit codes), not the
        # API's `call_fields['call_app'] ...` with exit 1
        (["--call-fields", "call_app", "{}"], 2, "--call-fields call_app must be an object of a provider's own"),
        (["--call-fields", "call_app", '{"id": 1}'], 2, "--call-fields call_app holds id: a call's own fields"),
        (["--call-fields", "call_x", '{"a": 1}'], 2, "--call-fields names 'call_x', which is not the id of one"),
        (["--call-fields", "call_x", '{"a": 1}'], 2, "--tool-call-with-id"),  # and how a call gets its id
        (["--call-fields", "call_app", json.dumps({"x": "y" * (65 << 10)})], 2, "--call-fields call_app is larger"),
        (["--call-fields", "call_app", _deep(40)], 2, "--call-fields call_app"),
        (["--call-fields", "call_app", '{"a": 1}', "--call-fields", "call_app", '{"b": 1}'], 2, "given twice"),
        (["--call-fields", "call_app"], 2, "expected 2 arguments"),
    ):
        res = run_cli(
            d.home, "add", sid, "--role", "assistant", "--tool-call-with-id", "call_app", "f", "{}", *argv, "--json"
        )
        assert res.returncode == code, (argv, res)
        assert says in (res.stdout + res.stderr), (argv, says, res)
        if code == 2:
            assert json.loads(res.stdout)["error"]["code"] == "usage", (argv, res.stdout)
    assert d.client().messages(sid)["messages"] == stored


@pytest.fixture
def make(setup):
    return setup[0]


def test_a_call_s_appended_fields_reach_another_device(make, provider, store_dir):
    """A shared session's log carries the fields an app appended: the other device reads them (its `complete`
    sends the call signed), and an app's append there reaches the first device with them."""
    p, _ = provider
    p.faults.signed = True
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]
    ca.append_many(sid, _turn())
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    [kept] = [m for m in cb.messages(sid)["messages"] if m.get("tool_calls")]
    assert kept["tool_calls"] == [CALL] and kept["call_fields"] == FIELDS, kept
    assert cb.complete(sid)["content"].startswith("echo")
    assert _sent_calls(p)[0]["extra_content"] == EXTRA
    # and back: B's app's signed call reaches A with its fields
    theirs = {"call_b": {"extra_content": {"google": {"thought_signature": signature("call_b")}}}}
    cb.append(sid, "assistant", "", tool_calls=[{**CALL, "id": "call_b"}], call_fields=theirs)
    wait_for(
        lambda: ca.messages(sid)["messages"][-1].get("call_fields") == theirs,
        timeout=20,
        what="B's call's fields on A",
    )


def test_another_device_s_call_fields_are_checked_as_an_append_s():
    """Another device's messages are checked as the API checks an app's (issue 19), and their `call_fields`
    were not checked at all: a device could sync fields naming no call of the message, a call's own fields,
    or past 64 KiB, which this device's API refuses. They are refused now, naming the message, as a page's
    tool_calls on a message not an assistant's are (test_formats: the checks of a pulled log, before anything
    is applied)."""
    from sessiond.daemon.remote_checks import remote_log
    from sessiond.storage.errors import Invalid
    from sessiond.storage.model import RemoteLog

    def log(extra: dict) -> RemoteLog:
        row = ("s", "main", "dev", 7, 7, "assistant", "", 0, 1.0, json.dumps(extra))
        return RemoteLog("dev", [row], [], 7)

    remote_log(log({"tool_calls": [CALL], "call_fields": FIELDS}))  # as this device keeps them: taken
    for extra, says in (
        ({"tool_calls": [CALL], "call_fields": {"call_x": {"a": 1}}}, "names 'call_x', which is not the id of one"),
        ({"call_fields": FIELDS}, "names 'call_app', which is not the id of one of the message's calls"),
        ({"tool_calls": [CALL], "call_fields": {"call_app": {"id": "x"}}}, "holds id: a call's own fields"),
        ({"tool_calls": [CALL], "call_fields": {"call_app": {"x": "y" * (65 << 10)}}}, "larger than 64 KiB"),
        ({"tool_calls": [CALL], "call_fields": {"call_app": {}}}, "must be an object of a provider's own fields"),
        ({"tool_calls": [CALL], "call_fields": ["sig"]}, "call_fields must be an object"),
    ):
        with pytest.raises(Invalid) as e:
            remote_log(log(extra))
        assert e.value.message.startswith("message 7: call_fields") and says in e.value.message, e.value.message


def _nested(levels: int) -> dict:
    """A call's fields whose innermost value is `levels` objects down from them."""
    x: object = "sig"
    for _ in range(levels - 1):
        x = {"n": x}
    return {"extra_content": x}


def test_call_fields_the_api_takes_reach_another_device_however_deep(make, provider, store_dir):
    """The API took a call's fields nested as deep as any JSON it takes (32 levels, counted from the fields),
    but another device checks a message's stored fields as one document, the calls' fields two levels down
    in it (call_fields, the call's id): fields nested 31 or 32 deep, taken here, made every other device
    refuse this device's whole log at that message, as if it were damaged (an import of the session refused,
    a pull stuck before it). The API refuses them now, saying so, nothing stored; as deep as every device
    takes, they reach the other device."""
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]
    for levels in (31, 32):
        with pytest.raises(ApiError) as e:
            ca.append(sid, "assistant", "", tool_calls=[CALL], call_fields={"call_app": _nested(levels)})
        assert e.value.status == 422 and "call_fields" in str(e.value) and "nested too deeply" in str(e.value)
    assert ca.messages(sid)["messages"] == []
    deep = {"call_app": _nested(30)}
    ca.append(sid, "assistant", "", tool_calls=[CALL], call_fields=deep)
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    [kept] = [m for m in cb.messages(sid)["messages"] if m.get("tool_calls")]
    assert kept["call_fields"] == deep


def test_metadata_the_api_takes_reaches_another_device_however_deep(make, provider, store_dir):
    """As a call's fields (above): a message's metadata is checked by the API as JSON 32 levels deep counted
    from it, by another device as one level into the message's stored fields; metadata 32 deep was taken and
    synced, and every other device refused this device's log at that message. It is refused now (422, naming
    it, nothing stored); 31 deep reaches the other device."""
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]

    def nested(levels: int) -> dict:
        x: object = "v"
        for _ in range(levels):
            x = {"n": x}
        return x  # type: ignore[return-value]

    with pytest.raises(ApiError) as e:
        ca.append(sid, "user", "hi", metadata=nested(32))
    assert e.value.status == 422 and "metadata" in str(e.value) and "nested too deeply" in str(e.value)
    with pytest.raises(ApiError):
        ca.append_many(sid, [{"role": "user", "content": "hi", "metadata": nested(32)}])
    assert ca.messages(sid)["messages"] == []
    ca.append(sid, "user", "hi", metadata=nested(31))
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    assert cb.messages(sid)["messages"][0]["metadata"] == nested(31)


def test_a_session_s_json_fields_the_api_takes_reach_another_device_however_deep(make, provider, store_dir):
    """A session's metadata and preferences, and its initial messages' metadata and calls' fields, are carried
    in its operations (session.create, session.update), which another device checks as one JSON document
    each: one level in for the first two, three and four for the others. The API checked each from itself,
    so a session made or changed with them nested within its bound but past the operation's made every other
    device refuse the session's log at its first operation: an import of it failed, whatever else it held.
    They are refused now (422, naming them, nothing made or changed); within the bound they reach the other
    device."""
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()

    def nested(levels: int) -> dict:
        x: object = "v"
        for _ in range(levels):
            x = {"n": x}
        return x  # type: ignore[return-value]

    def initial(metadata: int, fields: int) -> list[dict]:
        return [
            {"role": "user", "content": "x", "metadata": nested(metadata)},
            {"role": "assistant", "content": "", "tool_calls": [CALL], "call_fields": {"call_app": nested(fields)}},
        ]

    for too_deep in (
        {"metadata": nested(32)},
        {"preferences": nested(32)},
        {"initial_messages": initial(30, 1)},
        {"initial_messages": initial(1, 29)},
    ):
        with pytest.raises(ApiError) as e:
            ca.create_session(model="echo-1", **too_deep)
        assert e.value.status == 422 and "nested too deeply" in str(e.value), (too_deep.keys(), e.value)
    assert ca.list_sessions()["sessions"] == []
    sid = ca.create_session(model="echo-1", metadata=nested(31), initial_messages=initial(29, 28))["id"]
    with pytest.raises(ApiError) as e:
        ca.update_session(sid, preferences=nested(32))
    assert e.value.status == 422 and "nested too deeply" in str(e.value)
    ca.update_session(sid, preferences=nested(31))
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    got = cb.get_session(sid)
    assert got["metadata"] == nested(31) and got["preferences"] == nested(31)
    assert [{k: x for k, x in m.items() if k != "tokens"} for m in got["initial_messages"]] == initial(29, 28)
