"""Tool calls kept end to end: an assistant message's `tool_calls` and a tool message's `tool_call_id`
(and `name`) through the native append API, the OpenAI-compatible endpoint (the request's history and the
model's answer, whole and streamed), the history sent to the model, exports and imports, and another
device's copy of the session (real daemons, the loopback provider of tests/servers/openai_server.py)."""

from __future__ import annotations

import json
import threading

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx
import openai
import pytest

import test_model
from conftest import cli_json, run_cli, wait_for
from sessiond.client import ApiError

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


# test_model's fixtures: the loopback provider (`provider`), and daemons whose default provider it is
# (`setup`: (make, provider, server))
provider, setup = test_model.provider, test_model.setup


@pytest.fixture
def make(setup):
    return setup[0]


def _shape(m: dict) -> dict:
    """A stored message as the OpenAI shape has it."""
    return {k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if k in m}


def _app(d, sid: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://localhost/openai/v1",
        api_key="unused",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=d.socket)),
        max_retries=0,
        default_headers={"X-Sessiond-Session": sid},
    )


def _agent(make) -> tuple:
    """A daemon, its client, a new session of model echo-1 and an OpenAI SDK app talking to it through it."""
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    return d, c, sid, _app(d, sid)


# ------------------------------------------------------------------------------------------ native API
def test_native_append_keeps_tool_calls_and_refuses_malformed_ones(make):
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "what is f?")
    a = c.append(sid, "assistant", "", tool_calls=[CALL])
    assert a["tool_calls"] == [CALL]
    c.append(sid, "tool", "42", tool_call_id="call_1", name="f")
    c.append_many(
        sid,
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": '{"x": 1}'}},
                    {"id": "call_3", "type": "function", "function": {"name": "h", "arguments": ""}},
                ],
            },
            {"role": "tool", "content": "a", "tool_call_id": "call_2"},
            {"role": "tool", "content": "b", "tool_call_id": "call_3"},
        ],
    )
    stored = [_shape(m) for m in c.messages(sid)["messages"]]
    assert stored[:3] == [
        {"role": "user", "content": "what is f?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"},
    ]
    assert [t["id"] for t in stored[3]["tool_calls"]] == ["call_2", "call_3"]
    before = c.messages(sid)["messages"]
    bad = [
        ("user", [CALL], "only an assistant"),
        ("assistant", [], "tool_calls must not be empty"),
        ("assistant", [{**CALL, "id": ""}], "tool_calls[0].id"),
        ("assistant", [{**CALL, "type": "code"}], "tool_calls[0].type"),
        ("assistant", [{"id": "c", "type": "function"}], "tool_calls[0].function"),
        ("assistant", [{**CALL, "function": {"name": "f", "arguments": {}}}], "tool_calls[0].function.arguments"),
        ("assistant", [{**CALL, "function": {"name": "", "arguments": "{}"}}], "tool_calls[0].function.name"),
        ("assistant", [{**CALL, "extra": 1}], "tool_calls[0]: unknown field(s) 'extra'"),
        ("assistant", "call_1", "tool_calls"),
    ]
    for role, calls, says in bad:
        with pytest.raises(ApiError) as e:
            c.append(sid, role, "", tool_calls=calls)
        assert e.value.status == 422 and says in e.value.message, (calls, e.value.message)
        with pytest.raises(ApiError) as e:
            c.append_many(sid, [{"role": role, "content": "", "tool_calls": calls}])
        assert e.value.status == 422 and says in e.value.message, (calls, e.value.message)
    assert c.messages(sid)["messages"] == before  # nothing stored
    # `sessiond log` shows the calls and which call a tool message answers
    text = run_cli(d.home, "log", sid, check=True).stdout
    assert "f({})" in text and "call_1" in text and 'g({"x": 1})' in text, text
    assert ":\n\n-> " not in text and ":\n-> f({})" in text, text  # calls alone: no blank line before them
    assert cli_json(d.home, "log", sid)["messages"][1]["tool_calls"] == [CALL]


def test_add_records_tool_calls_and_results_from_the_command_line(make):
    """`sessiond add` could record neither a model's tool call nor a tool's result (the API, the clients and
    import-file take them): --tool-call NAME ARGS_JSON (repeated; --tool-call-with-id ID NAME ARGS_JSON to
    give the id, else one is made), --tool-call-id ID and --name for a tool's result; bad input is a usage
    error naming the option, and nothing is stored."""
    d = make()
    sid = cli_json(d.home, "new")["id"]
    a = cli_json(
        d.home, "add", sid, "--role", "assistant", "--tool-call", "lookup", '{"q": "weather"}',
        "--tool-call-with-id", "call_9", "f", "{}",
    )  # fmt: skip
    assert a["role"] == "assistant" and a["content"] == "" and len(a["tool_calls"]) == 2, a
    made, given = a["tool_calls"]
    assert given == CALL | {"id": "call_9"}
    assert made["function"] == {"name": "lookup", "arguments": '{"q": "weather"}'} and made["type"] == "function"
    assert made["id"].startswith("call_") and len(made["id"]) > 10, made
    # with text beside the call
    b = cli_json(d.home, "add", sid, "--role", "assistant", "--tool-call", "g", '{"x": [1]}', "let me look")
    assert b["content"] == "let me look" and b["tool_calls"][0]["function"]["arguments"] == '{"x": [1]}'
    r = cli_json(d.home, "add", sid, "--role", "tool", "--tool-call-id", made["id"], "--name", "lookup", "sunny")
    assert _shape(r) == {"role": "tool", "content": "sunny", "tool_call_id": made["id"], "name": "lookup"}
    res = run_cli(d.home, "add", sid, "--role", "tool", "--tool-call-id", "call_9", "-", input="42\n", check=True)
    assert res.stdout.strip()  # the new message's id
    stored = d.client().messages(sid)["messages"]
    assert [_shape(m) for m in stored[:3]] == [_shape(a), _shape(b), _shape(r)]
    assert _shape(stored[3]) == {"role": "tool", "content": "42", "tool_call_id": "call_9"}
    # bad input: a clear usage error (exit 2) naming the option, and nothing stored
    for argv, says in (
        (["--role", "assistant", "--tool-call", "f", "{nope"], "--tool-call f: ARGS_JSON is not valid JSON"),
        (["--role", "assistant", "--tool-call", "f", "[1]"], "--tool-call f: ARGS_JSON must be a JSON object"),
        (["--role", "assistant", "--tool-call", "", "{}"], "--tool-call: the function's NAME is empty"),
        (["--role", "assistant", "--tool-call", "f" * 201, "{}"], "--tool-call"),
        (["--role", "assistant", "--tool-call-with-id", "", "f", "{}"], "--tool-call-with-id: the call's ID is empty"),
        (["--role", "user", "--tool-call", "f", "{}"], "only an assistant's message carries tool calls"),
        (["--role", "user", "--tool-call-id", "call_9", "x"], "--tool-call-id: only a tool's result"),
        (["--role", "tool", "--tool-call-id", "", "x"], "--tool-call-id"),
        (["--role", "tool", "--tool-call-id", "c", "--name", "", "x"], "--name is empty"),
        (["--role", "assistant", "--tool-call", "f"], "expected 2 arguments"),
        (["--role", "tool", "--tool-call-id", "call_9"], "the message is empty"),
    ):
        res = run_cli(d.home, "add", sid, *argv, "--json")
        assert res.returncode == 2, (argv, res)
        assert says in (res.stdout + res.stderr), (argv, says, res)
    assert d.client().messages(sid)["messages"] == stored
    # --name is the API's name, on any role (a participant's name on a user's message)
    assert cli_json(d.home, "add", sid, "--role", "user", "--name", "ann", "hi")["name"] == "ann"


def test_search_finds_a_call_s_name_and_arguments_and_a_delete_leaves_no_trace(make, tmp_path):
    """`sessiond search` and GET /v1/search did not look at tool calls: an agent's call of get_weather for
    a city was found by neither. Now they are indexed; `rm` takes them out of the index and the files."""
    from test_sqlite_temp import _files_holding

    d = make()
    c = d.client()
    keep = c.create_session(name="kept")["id"]
    sid = c.create_session(name="gone")["id"]
    word = "qzxvbnmlkjhgfdsapoiuytrewq"  # found nowhere else in the home (checked by its tail, below)
    c.append(keep, "user", "nothing to see")
    a = c.append(
        sid,
        "assistant",
        "",
        tool_calls=[{**CALL, "function": {"name": "get_weather", "arguments": json.dumps({"city": word})}}],
    )
    [hit] = c.search(word)["hits"]
    assert hit["id"] == a["id"] and "get_weather" in hit["snippet"], hit
    assert [h["id"] for h in c.search("get_weather")["hits"]] == [a["id"]]
    out = cli_json(d.home, "search", word)
    assert [h["id"] for h in out["hits"]] == [a["id"]]
    assert _files_holding(d.home, word[-16:].encode())  # (the test's premise: it can see the index's words)
    run_cli(d.home, "rm", sid, check=True)
    assert c.search(word)["hits"] == [] and c.search("get_weather")["hits"] == []
    wait_for(lambda: not _files_holding(d.home, word[-16:].encode()), timeout=20)
    assert c.search("nothing")["hits"]


# ------------------------------------------------------------------------------------------ OpenAI endpoint
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_endpoint_keeps_the_history_s_and_the_answer_s_tool_calls(make, provider, stream):
    p, _ = provider
    d, c, sid, app = _agent(make)
    msgs = [{"role": "user", "content": "look it up"}]
    # the model answers with a call of the tool it is offered, and nothing else
    if stream:
        chunks = list(app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS, stream=True))
        parts: dict = {}
        for ch in chunks:
            for t in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                got = parts.setdefault(t.index, {"id": t.id, "name": t.function.name, "arguments": ""})
                got["arguments"] += t.function.arguments or ""
        [call] = parts.values()
        answer = {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"]},
        }
    else:
        r = app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
        [t] = r.choices[0].message.tool_calls
        answer = {
            "id": t.id,
            "type": "function",
            "function": {"name": t.function.name, "arguments": t.function.arguments},
        }
    assert answer["function"] == {"name": "lookup", "arguments": json.dumps({"q": "look it up"})}
    stored = c.messages(sid)["messages"]
    assert _shape(stored[-1]) == {"role": "assistant", "content": "", "tool_calls": [answer]}
    assert stored[-1]["model"] == "echo-1" and stored[-1]["tokens"] > 0
    # the app sends the call back with its result: the history matches, only the result is new
    msgs += [{"role": "assistant", "content": None, "tool_calls": [answer]}]
    msgs += [{"role": "tool", "tool_call_id": answer["id"], "content": "42"}]
    r = app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
    assert r.choices[0].message.content == "echo: look it up"  # (its answer to a tool's result: text)
    assert [_shape(m) for m in c.messages(sid)["messages"]] == [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": "", "tool_calls": [answer]},
        {"role": "tool", "content": "42", "tool_call_id": answer["id"]},
        {"role": "assistant", "content": "echo: look it up"},
    ]
    # a history whose call differs from the stored one is new from there on
    other = {**answer, "id": "call_other"}
    msgs2 = [msgs[0], {"role": "assistant", "content": None, "tool_calls": [other]}]
    msgs2 += [{"role": "tool", "tool_call_id": "call_other", "content": "7"}]
    app.chat.completions.create(model="echo-1", messages=msgs2)
    after = [_shape(m) for m in c.messages(sid)["messages"]]
    assert after[4:] == [
        {"role": "assistant", "content": "", "tool_calls": [other]},
        {"role": "tool", "content": "7", "tool_call_id": "call_other"},
        {"role": "assistant", "content": "echo: look it up"},
    ]


class _Events:
    """The daemon's change events of one type, collected by a thread from the moment this is made."""

    def __init__(self, c, kind: str):
        self.seen: list[dict] = []
        self._stream = c.events(reconnect=False)  # (subscribed once this returns)

        def read():
            for ev in self._stream:
                if ev["type"] == kind:
                    self.seen.append(ev)

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def wait(self, n: int = 1) -> list[dict]:
        wait_for(lambda: len(self.seen) >= n, what=f"{n} events")
        return self.seen

    def close(self) -> None:
        self._stream.close()
        self._thread.join(10)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_model_s_call_without_an_id_is_recorded_with_one_the_app_gets_too(make, provider, stream):
    """A provider's tool call with no id (some servers give none) was only logged: the answer was recorded
    empty, and the call lost. Now it is recorded with an id made for it, which the app's answer carries
    too (whole: in the call; streamed: in the call's first delta), so the history the app sends back with
    the tool's result matches the session's."""
    p, _ = provider
    p.faults.call_without = "id"
    d, c, sid, app = _agent(make)
    msgs = [{"role": "user", "content": "look it up"}]
    if stream:
        chunks = list(app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS, stream=True))
        deltas = [t for ch in chunks if ch.choices for t in (ch.choices[0].delta.tool_calls or [])]
        ids = [t.id for t in deltas if t.id]
        assert len(ids) == 1, deltas
        given = ids[0]
    else:
        r = app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
        given = r.choices[0].message.tool_calls[0].id
    assert given and given.startswith("call_") and len(given) > 10, given
    stored = c.messages(sid)["messages"]
    call = {"id": given, "type": "function", "function": {"name": "lookup", "arguments": '{"q": "look it up"}'}}
    assert _shape(stored[-1]) == {"role": "assistant", "content": "", "tool_calls": [call]}
    # the app goes on with the call it was given and the tool's result: the session's history, matched
    msgs += [{"role": "assistant", "content": None, "tool_calls": [call]}]
    msgs += [{"role": "tool", "tool_call_id": given, "content": "42"}]
    app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
    got = [_shape(m) for m in c.messages(sid)["messages"]]
    assert (
        got[:3]
        == [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "42", "tool_call_id": given},
        ]
        and len(got) == 4
    ), got
    # ... and on the native route (`ask`), the same
    p.faults.call_unasked = "lookup"
    a = c.complete(sid, "and again")
    assert a["tool_calls"][0]["id"].startswith("call_") and a["tool_calls"][0]["function"]["name"] == "lookup"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_model_s_call_without_a_name_is_reported_and_its_text_recorded(make, provider, stream):
    """A provider's tool call with no function name cannot be acted on: it was left out with a warning in
    the log only, which no app or user reads. The answer's text is recorded (as before), and the call's
    loss is said: an `answer.tool_call_dropped` event (session, chat, the answer's id, the call's index
    and why), the log (without the call's arguments), the native answer's `tool_calls_dropped`, and a
    line of `sessiond ask` on standard error."""
    from secretcheck import logs

    p, _ = provider
    p.faults.call_without, p.faults.call_text = "name", "Let me look that up."
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    events = _Events(c, "answer.tool_call_dropped")
    try:
        app = _app(d, sid)
        msgs = [{"role": "user", "content": "the private question"}]
        if stream:
            list(app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS, stream=True))
        else:
            app.chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
        stored = c.messages(sid)["messages"]
        assert _shape(stored[-1]) == {"role": "assistant", "content": "Let me look that up."}
        [ev] = events.wait()
        assert ev["session"] == sid and ev["chat"] == "main" and ev["message"] == stored[-1]["id"], ev
        assert ev["calls"] == [{"index": 0, "reason": "the call has no function name"}], ev
        # the native route: said in the answer, and by `sessiond ask`
        p.faults.call_unasked = "lookup"
        if stream:
            res = run_cli(d.home, "ask", sid, "the private question", check=True)
            assert "Let me look that up." in res.stdout
            assert "tool call 0 is not recorded: the call has no function name" in res.stderr, res.stderr
        else:
            a = c.complete(sid, "the private question")
            assert a["content"] == "Let me look that up." and "tool_calls" not in a
            assert a["tool_calls_dropped"] == [{"index": 0, "reason": "the call has no function name"}]
        assert len(events.wait(2)) == 2
    finally:
        events.close()
    said = logs(d.home)
    assert "no function name" in said and sid in said
    assert "private question" not in said  # (the call's arguments: the user's words)


def test_a_history_with_a_tool_call_from_the_walkthrough(make):
    """The walkthrough's request: a call with null content, its result; stored as sent."""
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    _app(d, sid).chat.completions.create(model="echo-1", messages=msgs)
    stored = [_shape(m) for m in c.messages(sid)["messages"]]
    assert stored[:3] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    # a malformed call is refused in OpenAI's shape, and nothing is stored
    with pytest.raises(openai.UnprocessableEntityError) as e:
        _app(d, sid).chat.completions.create(
            model="echo-1", messages=[*msgs, {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}]
        )
    assert "tool_calls[0]" in str(e.value)
    assert [_shape(m) for m in c.messages(sid)["messages"]] == stored


def test_a_stream_s_parallel_tool_call_deltas_are_put_together():
    from sessiond.daemon.toolcalls import Assembled, of_answer

    def ch(*deltas):
        return {"choices": [{"index": 0, "delta": {"tool_calls": list(deltas)}}]}

    a = Assembled()
    assert not a.add({"choices": [{"delta": {"content": "x"}}]}) and a.calls() is None
    assert a.add(ch({"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}))
    a.add(ch({"index": 1, "id": "c1", "type": "function", "function": {"name": "g", "arguments": '{"a"'}}))
    a.add(ch({"index": 0, "function": {"arguments": '{"x":'}}, {"index": 1, "function": {"arguments": ": 2}"}}))
    a.add(ch({"index": 0, "function": {"name": "f", "arguments": " 1}"}}))  # a name given again is not doubled
    assert a.calls() == [
        {"id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "c1", "type": "function", "function": {"name": "g", "arguments": '{"a": 2}'}},
    ]
    # a whole answer's calls: a provider's additions left out, arguments given as an object kept as text, a
    # call with no id given one (in the answer's own call too), one with no name or of another type dropped,
    # said by index and why
    given = [
        {**CALL, "index": 0},
        {"id": "c", "function": {"name": "h", "arguments": {"k": 1}}},
        {"function": {"name": "z"}},
        {"id": "n", "type": "function", "function": {"arguments": '{"secret": 1}'}},
        {"id": "t", "type": "code", "function": {"name": "y", "arguments": '{"secret": 1}'}},
    ]
    got = of_answer(given)
    made = given[2]["id"]
    assert made.startswith("call_") and got.calls == [
        CALL,
        {"id": "c", "type": "function", "function": {"name": "h", "arguments": '{"k": 1}'}},
        {"id": made, "type": "function", "function": {"name": "z", "arguments": ""}},
    ]
    assert got.dropped == [
        {"index": 3, "reason": "the call has no function name"},
        {"index": 4, "reason": "the call is malformed (type)"},
    ]
    # a stream's call given no id at its first delta waits for it: given later, it is moved into the first
    # delta (the chunk passed on), once; never given, one is made there when the calls end
    a = Assembled()
    first = ch({"index": 0, "type": "function", "function": {"name": "f", "arguments": "{"}})
    assert a.add(first) and a.waiting()
    late = ch({"index": 0, "id": "call_1", "function": {"arguments": "}"}})
    assert a.add(late) and not a.waiting() and a.calls() == [CALL]
    assert first["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"
    assert "id" not in late["choices"][0]["delta"]["tool_calls"][0]
    a = Assembled()
    first = ch({"index": 0, "type": "function", "function": {"name": "f", "arguments": "{"}})
    assert a.add(first) and a.add(ch({"index": 0, "function": {"arguments": "}"}})) and a.waiting()
    a.name_the_rest()
    made = first["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert not a.waiting() and made.startswith("call_") and a.calls() == [{**CALL, "id": made}]


def test_the_history_sent_to_the_model_carries_the_calls_and_exports_round_trip(make, provider):
    p, _ = provider
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "hi")
    c.append(sid, "assistant", "", tool_calls=[CALL])
    c.append(sid, "tool", "42", tool_call_id="call_1", name="f")
    c.complete(sid, "and?")
    sent = p.requests[-1]["messages"]
    assert sent[:3] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"},
    ]
    # export --format openai: a call and its result, as OpenAI's API takes them as context
    assert c.export(sid, "openai")["messages"][:3] == sent[:3]
    # ... and back in: import-file of it, and of the json export, keeps them
    for fmt in ("openai", "json"):
        data = c.export(sid, fmt)
        if fmt == "json":
            del data["session"]["id"]  # (imported beside the session it was exported from)
        nid = c.import_file(data, fmt)["sessions"][0]["id"]
        got = [_shape(m) for m in c.messages(nid)["messages"]]
        assert got[:3] == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f"},
        ], fmt
    md = c.export(sid, "markdown")["markdown"]
    assert "call\\_1" in md and "f({})" in md


def test_a_compaction_that_sets_a_call_aside_sets_its_result_aside_too(make, provider):
    p, _ = provider
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "old", tokens=10)
    c.append(sid, "assistant", "", tool_calls=[CALL], tokens=10)
    c.append(sid, "tool", "42", tool_call_id="call_1", tokens=1)
    c.append(sid, "user", "kept", tokens=1)
    c.compact(sid, target_tokens=2)  # the call is set aside, its result would not be
    c.complete(sid)
    # a result answering no call is refused by OpenAI's API: it is not sent
    assert p.requests[-1]["messages"] == [{"role": "user", "content": "kept"}]


# ------------------------------------------------------------------------------------------ two devices
def test_tool_calls_reach_another_device(make, provider, store_dir):
    p, _ = provider
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]
    ca.append(sid, "user", "hi")
    ca.append(sid, "assistant", "", tool_calls=[CALL])
    ca.append(sid, "tool", "42", tool_call_id="call_1", name="f")
    # and a model's call, recorded through the OpenAI-compatible endpoint
    msgs = [_shape(m) for m in ca.messages(sid)["messages"]] + [{"role": "user", "content": "look"}]
    _app(a, sid).chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS)
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    want = [_shape(m) for m in ca.messages(sid)["messages"]]
    assert [_shape(m) for m in cb.messages(sid)["messages"]] == want
    assert want[1]["tool_calls"] == [CALL] and want[-1]["tool_calls"][0]["function"]["name"] == "lookup"
    # B sends the calls on to the model with the history it read, each before its result
    cb.append(sid, "tool", "found", tool_call_id=want[-1]["tool_calls"][0]["id"])
    cb.complete(sid)
    sent = p.requests[-1]["messages"]
    assert [m.get("tool_calls") or m.get("tool_call_id") for m in sent] == [
        None,
        [CALL],
        "call_1",
        None,
        want[-1]["tool_calls"],
        want[-1]["tool_calls"][0]["id"],
    ]
    # and back: B's call reaches A
    cb.append(sid, "assistant", "", tool_calls=[{**CALL, "id": "call_b"}])
    wait_for(
        lambda: ca.messages(sid)["messages"][-1].get("tool_calls") == [{**CALL, "id": "call_b"}],
        timeout=20,
        what="B's tool call on A",
    )
