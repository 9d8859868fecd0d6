"""Gemini 3's thought signatures: each of its calls carries one (OpenAI-compatible API: the call's
`extra_content: {"google": {"thought_signature"}}`), and it refuses (400) a later request whose history holds
the call without it. sessiond keeps a call's provider fields with its message (`call_fields`) and sends them
back with the call to the provider that gave them, never to another (Gemini's API, as others, refuses a
field it does not know)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import imported_back, run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded, signature
from test_tool_calls import _app


@pytest.fixture
def two(make_daemon):
    """A daemon with providers 'loop' (the default, its calls signed, strict) and 'other', each its own server."""
    (p1, s1), (p2, s2) = serve_threaded(Provider()), serve_threaded(Provider())
    p1.faults.signed = True
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{s1.port}/v1", start=False, default_provider="loop")
    with open(os.path.join(d.home, "config.toml"), "a") as f:
        f.write(f'[providers.other]\nbase_url = "http://127.0.0.1:{s2.port}/v1"\n')
    yield d.start(), p1, p2
    s1.stop()
    s2.stop()


def _sent_calls(p: Provider) -> list:
    """The calls of the history the provider's last request held."""
    return [c for m in p.requests[-1]["messages"] for c in m.get("tool_calls") or ()]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_calls_signature_goes_back_to_its_provider_and_to_no_other(two, streamed):
    """The signature was left out of the recorded call, and the next question of the turn (after the tool's
    result) was refused by Gemini 3: `provider_rejected`, "Function call is missing a thought_signature"."""
    d, loop, other = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    loop.faults.call_unasked = "lookup"  # the model calls a tool
    if streamed:
        run_cli(d.home, "ask", sid, "weather in x?", check=True)
    else:
        c.complete(sid, "weather in x?")
    [call] = [t for m in c.messages(sid)["messages"] for t in m.get("tool_calls") or ()]
    assert set(call) == {"id", "type", "function"}, call  # the call as sessiond keeps it, in OpenAI's shape
    c.append(sid, "tool", "sunny", tool_call_id=call["id"], name="lookup")
    loop.faults.call_unasked = None
    answer = c.complete(sid)  # the turn goes on: its call is sent back signed
    assert answer["content"].startswith("echo"), answer
    sent = _sent_calls(loop)
    assert sent[0]["extra_content"] == {"google": {"thought_signature": signature(call["id"])}}, sent
    # another provider is sent the call without the fields it does not know
    c.complete(sid, "and now?", provider="other")
    sent = _sent_calls(other)
    assert [set(x) for x in sent] == [{"id", "type", "function"}], sent


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_call_an_app_was_answered_through_the_openai_endpoint_keeps_its_signature(two, streamed):
    """An app's question through the OpenAI-compatible endpoint: the app is passed the call as the provider
    gave it (its signature too), and the session records the signature, so that the turn can go on from
    `sessiond ask` or POST /complete."""
    d, loop, _ = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "weather in x?"}]
    app = _app(d, sid)
    if streamed:
        with app.chat.completions.stream(model="echo-1", messages=msgs, tools=tools) as s:
            given = s.get_final_completion().choices[0].message.tool_calls[0]
    else:
        given = app.chat.completions.create(model="echo-1", messages=msgs, tools=tools).choices[0].message.tool_calls[0]
    assert given.model_extra.get("extra_content") == {"google": {"thought_signature": signature(given.id)}}
    c.append(sid, "tool", "sunny", tool_call_id=given.id, name="lookup")
    c.complete(sid)
    assert _sent_calls(loop)[0]["extra_content"] == {"google": {"thought_signature": signature(given.id)}}


def test_a_calls_fields_past_their_bound_are_not_kept_and_the_call_is(two):
    """A provider's fields of a call larger than 64 KiB as JSON are not kept (the message's extra stays
    small); the call is recorded as ever, and one of ordinary size beside it keeps its own."""
    d, loop, _ = two
    loop.faults.signed = False
    big = {"google": {"thought_signature": "x" * (65 << 10)}}
    small = {"google": {"thought_signature": "s"}}

    def call(i: int, extra: dict) -> dict:
        fn = {"name": "lookup", "arguments": "{}"}
        return {"tool_calls": [{"index": i, "id": f"c{i}", "type": "function", "function": fn, "extra_content": extra}]}

    loop.faults.script = [(call(0, big), None), (call(1, small), None), ({}, "tool_calls")]
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    run_cli(d.home, "ask", sid, "weather?", check=True)
    [answer] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert [t["id"] for t in answer["tool_calls"]] == ["c0", "c1"], answer
    assert answer["call_fields"] == {"c1": {"extra_content": small}}, answer.get("call_fields")


def _signed_turn(c, loop: Provider) -> tuple[str, dict]:
    """A session whose model called a tool, its call signed (recorded with its `call_fields`), and the tool's
    result after it: (its id, the call)."""
    sid = c.create_session(model="echo-1")["id"]
    loop.faults.call_unasked = "lookup"
    c.complete(sid, "weather in x?")
    loop.faults.call_unasked = None
    [call] = [t for m in c.messages(sid)["messages"] for t in m.get("tool_calls") or ()]
    c.append(sid, "tool", "sunny", tool_call_id=call["id"], name="lookup")
    return sid, call


@pytest.mark.parametrize("fmt", ["json", "openai"])
def test_an_exported_session_imported_back_keeps_its_calls_signatures(two, tmp_path, fmt):
    """`export --format json` and `openai` left a call's provider fields out, so the session imported back
    (`import-file`) sent the call unsigned, and Gemini 3 refused the turn's next request (`provider_rejected`,
    "Function call is missing a thought_signature")."""
    d, loop, _ = two
    c = d.client()
    sid, call = _signed_turn(c, loop)
    extra = {"google": {"thought_signature": signature(call["id"])}}
    path = tmp_path / f"s.{fmt}"
    run_cli(d.home, "export", sid, "--format", fmt, "-o", str(path), check=True)
    data = json.loads(path.read_text())
    if fmt == "json":
        [answer] = [m for m in data["messages"] if m.get("tool_calls")]
        assert answer["call_fields"] == {call["id"]: {"extra_content": extra}}, answer
        del data["session"]["id"]  # (imported beside the session it was exported from)
        path.write_text(json.dumps(data))
    else:  # in the call, as the provider gave it (a request to it carries it so)
        [sent] = [t for m in data["messages"] for t in m.get("tool_calls") or ()]
        assert sent == {**call, "extra_content": extra}, sent
    [nid] = run_cli(d.home, "import-file", str(path), "--format", fmt, check=True).stdout.split()
    [kept] = [m for m in c.messages(nid)["messages"] if m.get("tool_calls")]
    assert kept["tool_calls"] == [call] and kept["call_fields"] == {call["id"]: {"extra_content": extra}}, kept
    answer = c.complete(nid)  # the turn goes on from the imported session: its call sent back signed
    assert answer["content"].startswith("echo"), answer
    assert _sent_calls(loop)[0]["extra_content"] == extra


def _signed_history() -> tuple[dict, dict, list[dict]]:
    """An app's own history holding a call of its own, signed: (the call's provider fields, the call as
    sessiond keeps it, the history)."""
    extra = {"google": {"thought_signature": signature("call_app")}}
    call = {"id": "call_app", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    msgs = [
        {"role": "user", "content": "weather in x?"},
        {"role": "assistant", "content": None, "tool_calls": [{**call, "extra_content": extra}]},
        {"role": "tool", "tool_call_id": "call_app", "content": "sunny"},
    ]
    return extra, call, msgs


def test_a_call_in_an_app_s_own_history_keeps_its_signature(two):
    """An app's history through the OpenAI-compatible endpoint holding a call the session had not recorded
    (the app's own, signed): the call was stored without its fields, so the next request sessiond built from
    its record (`ask`, POST /complete) sent it unsigned, and Gemini 3 refused it. The fields are kept now (as
    a model's answer's are), and the app's history, sent again with them, still matches the record."""
    d, loop, _ = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    extra, call, msgs = _signed_history()
    app = _app(d, sid)
    said = app.chat.completions.create(model="echo-1", messages=msgs).choices[0].message.content
    [kept] = [m for m in c.messages(sid)["messages"] if m.get("tool_calls")]
    assert kept["tool_calls"] == [call] and kept["call_fields"] == {"call_app": {"extra_content": extra}}, kept
    # the app asks again with the same history, its call with the same fields: it matches, only the answer is new
    app.chat.completions.create(model="echo-1", messages=msgs)
    stored = c.messages(sid)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "assistant"], stored
    # the turn goes on from sessiond's own record: the app's call is sent with its fields
    answer = c.complete(sid)
    assert answer["content"] == said, answer
    assert _sent_calls(loop)[0]["extra_content"] == extra


def test_an_app_s_call_fields_past_their_bound_are_not_kept_and_the_call_is(two):
    """As a model's answer's (above): an app's call's fields larger than 64 KiB as JSON are not kept, the
    call is, and the request goes on as the app sent it."""
    d, loop, _ = two
    loop.faults.signed = False
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    fn = {"name": "lookup", "arguments": "{}"}
    big = {"google": {"thought_signature": "x" * (65 << 10)}}
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c0", "type": "function", "function": fn}]},
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
    ]
    msgs[1]["tool_calls"] += [{"id": "c1", "type": "function", "function": fn, "extra_content": big}]
    msgs += [{"role": "tool", "tool_call_id": "c1", "content": "windy"}]
    _app(d, sid).chat.completions.create(model="echo-1", messages=msgs)
    assert loop.requests[-1]["messages"][1]["tool_calls"][1]["extra_content"] == big
    [kept] = [m for m in c.messages(sid)["messages"] if m.get("tool_calls")]
    assert [t["id"] for t in kept["tool_calls"]] == ["c0", "c1"] and "call_fields" not in kept, kept


def test_an_app_s_call_fields_go_back_to_the_provider_it_sent_them_to_and_to_no_other(two):
    """An app's history through the OpenAI-compatible endpoint goes on to the provider the daemon sends the
    request to: the calls' fields it holds are that provider's (the app sent them to it, and it took them).
    They were recorded as no provider's, so a later `ask --provider other` sent them to the other provider
    too, which refuses a field it does not know (OpenAI's API refuses unknown properties of a message). They
    are recorded as the request's provider's now: sent back to it, and to no other."""
    d, loop, other = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    extra, call, msgs = _signed_history()
    _app(d, sid).chat.completions.create(model="echo-1", messages=msgs)  # to 'loop', the default provider
    [kept] = [m for m in c.messages(sid)["messages"] if m.get("tool_calls")]
    assert kept["call_fields"] == {"call_app": {"extra_content": extra}}, kept
    c.complete(sid, "and now?", provider="other")
    sent = _sent_calls(other)
    assert [set(x) for x in sent] == [{"id", "type", "function"}], sent
    assert kept["provider"] == "loop", kept  # (the message says whose they are)
    c.complete(sid, "and here?")  # the provider that took them still gets them
    assert _sent_calls(loop)[0]["extra_content"] == extra


def test_an_app_s_call_fields_no_device_would_take_are_not_kept_and_the_call_is(two, tmp_path):
    """An app's (or a model's) call's fields holding an integer past 64 bits, or nested deeper than a stored
    message's fields may be, were kept: this device's export of the session then did not import (`import-file`
    refused them), and every other device refused its log at that message as damaged (its pulled log is
    checked as the API checks an append). They are not kept now, as fields past 64 KiB are not; the call is,
    and the request goes on as the app sent it."""
    d, loop, _ = two
    loop.faults.signed = False
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    fn = {"name": "lookup", "arguments": "{}"}
    deep: object = "sig"
    for _ in range(31):
        deep = {"n": deep}
    msgs = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": []}]
    for i, extra in enumerate(({"google": {"n": 1 << 70}}, deep)):
        msgs[1]["tool_calls"].append({"id": f"c{i}", "type": "function", "function": fn, "extra_content": extra})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": "sunny"})
    _app(d, sid).chat.completions.create(model="echo-1", messages=msgs)
    [kept] = [m for m in c.messages(sid)["messages"] if m.get("tool_calls")]
    assert [t["id"] for t in kept["tool_calls"]] == ["c0", "c1"] and "call_fields" not in kept, kept
    imported_back(d.home, sid, tmp_path)
