"""A history whose tool calls are not each answered by a tool's result, sent to a model. OpenAI's API
refuses (400) a request whose assistant message's calls are not each followed by a tool message naming
the call, at the history's end too. The loopback provider (tests/servers/openai_server.py) refuses it as
OpenAI does; sessiond must not send what it must refuse."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest

import test_model
from conftest import cli_json, run_cli
from sessiond.client import ApiError
from test_tool_calls import _app

# test_model's fixtures: the loopback provider (`provider`), and daemons whose default provider it is
provider, setup = test_model.provider, test_model.setup


@pytest.fixture
def make(setup):
    return setup[0]


CALL_F = {"name": "lookup", "arguments": "{}"}


def _call(cid: str, name: str = "lookup") -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": "{}"}}


def test_asking_for_the_next_answer_of_a_call_no_result_answers_yet_is_refused_naming_it(make, provider):
    """A session whose last message is the model's tool call (`sessiond add --tool-call`, an app's append),
    asked for the model's next answer with no question (POST /v1/sessions/ID/complete without content):
    the request ended in a call no result answers, and the provider refused it (a 400 passed on as
    provider_rejected, naming nothing the user could do in sessiond). Now it is refused before anything is
    sent (409 tool_call_unanswered), naming each unanswered call's id and the command that adds its result,
    and nothing is recorded. With its result added, the same request is sent and answered."""
    p, _ = provider
    d = make()
    c = d.client()
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    c.append(sid, "user", "what is the weather?")
    cli_json(
        d.home, "add", sid, "--role", "assistant",
        "--tool-call-with-id", "call_a", "lookup", "{}", "--tool-call-with-id", "call_b", "f", "{}",
    )  # fmt: skip
    c.append(sid, "tool", "sunny", tool_call_id="call_a")
    before, asked = c.messages(sid)["messages"], len(p.requests)
    for stream in (False, True):
        with pytest.raises(ApiError) as e:
            if stream:
                list(c.complete_stream(sid))
            else:
                c.complete(sid)
        err = e.value
        assert (err.status, err.code) == (409, "tool_call_unanswered"), (err.status, err.code, err.message)
        assert "call_b" in err.message and "call_a" not in err.message, err.message
        assert f"sessiond add {sid} --role tool --tool-call-id=call_b" in err.message, err.message
        assert err.details.get("tool_call_ids") == ["call_b"], err.details
    assert len(p.requests) == asked  # nothing sent
    assert c.messages(sid)["messages"] == before  # nothing recorded
    # its result added: sent, each call before its result, and answered
    run_cli(d.home, "add", sid, "--role", "tool", "--tool-call-id", "call_b", "42", check=True)
    a = c.complete(sid)
    assert a["content"] == "echo: what is the weather?"
    assert [m.get("tool_call_id") for m in p.requests[-1]["messages"]] == [None, None, "call_a", "call_b"]


def test_a_question_after_a_call_no_result_answers_is_sent_with_the_call_answered_so(make, provider):
    """`sessiond ask` with a question after such a call: the question follows the call, so the call is sent
    answered `(no result of this call was recorded)` (README, "Talk to a model"), which OpenAI's API takes."""
    p, _ = provider
    d = make()
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    cli_json(d.home, "add", sid, "--role", "assistant", "--tool-call-with-id", "call_x", "lookup", "{}")
    res = run_cli(d.home, "ask", sid, "never mind", check=True)
    assert "echo: never mind" in res.stdout
    sent = p.requests[-1]["messages"]
    assert sent[1:] == [
        {"role": "tool", "tool_call_id": "call_x", "content": "(no result of this call was recorded)"},
        {"role": "user", "content": "never mind"},
    ], sent


def _history(c, sid: str) -> list:
    return [(m["role"], m.get("tool_call_id")) for m in c.messages(sid)["messages"]]


def test_an_app_s_call_without_an_id_or_a_malformed_tool_call_id_is_refused_naming_it(make, provider):
    """An app's history (the OpenAI-compatible endpoint) with a call that has no id: OpenAI's API refuses it
    (400, a missing parameter), and sessiond refused it (422) as `messages[3].tool_calls[0].id must be a
    string`, which says neither that it is missing nor what it is for, OpenAI's `param` null. A tool's
    message whose tool_call_id is not a string of 1 to 200 characters was stored without it, as if it
    answered no call, and sent on with it. Now both are refused before anything is stored or sent, the
    message and `param` naming the message's index and the field."""
    p, _ = provider
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [_call("call_1")]}]
    for bad, field, said in (
        ({"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": CALL_F}]},
         "messages[3].tool_calls[0].id", "is missing"),
        ({"role": "tool", "content": "42", "tool_call_id": 7}, "messages[3].tool_call_id", "must be a string"),
        ({"role": "tool", "content": "42", "tool_call_id": "c" * 201}, "messages[3].tool_call_id", "must be a string"),
    ):  # fmt: skip
        with pytest.raises(openai.UnprocessableEntityError) as e:
            history = [*msgs, {"role": "tool", "tool_call_id": "call_1", "content": "1"}, bad]
            _app(d, sid).chat.completions.create(model="echo-1", messages=history)
        err = e.value.body
        assert f"{field} {said}" in err["message"] and err["param"] == field, err
    assert p.requests == [] and c.messages(sid)["messages"] == []


def test_an_app_s_tool_message_without_tool_call_id_goes_on_to_the_provider_as_sent(make, provider):
    """An app's tool message with no tool_call_id (it answers no call) is kept, as an append keeps one, and
    the request goes on as the app sent it: a server that takes it (Ollama's does) answers; OpenAI's API,
    and the loopback provider, refuse it, and that 400 reaches the app as the SDK's BadRequestError."""
    p, _ = provider
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    msgs = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "orphan"}]
    with pytest.raises(openai.BadRequestError) as e:
        _app(d, sid).chat.completions.create(model="echo-1", messages=msgs)
    assert "tool_call_id" in str(e.value)
    assert p.requests[-1]["messages"] == msgs
    assert _history(c, sid) == [("user", None), ("tool", None)]


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def test_a_streamed_call_s_id_given_in_a_later_delta_is_the_one_recorded_and_passed_on(make, provider):
    """A provider that streams a call's id in a later delta than its first (the name and arguments began
    without it): sessiond gave the call an id of its own at the first delta and kept it, so the session
    recorded that id, not the provider's, and the app was passed both (the OpenAI SDK's stream helper
    joins the two into one id that is neither). Now the call's deltas are held until its id comes (or
    the model ends the calls: then one is made) and passed on with it in the call's first delta, once:
    the app, the session and the provider name the call alike."""
    p, _ = provider
    p.faults.call_id_late = True
    d = make()
    c = d.client()
    msgs = [{"role": "user", "content": "look it up"}]

    def recorded(sid: str) -> list:
        return [t["id"] for m in c.messages(sid)["messages"] for t in m.get("tool_calls") or ()]

    sid = c.create_session(model="echo-1")["id"]
    with _app(d, sid).chat.completions.stream(model="echo-1", messages=msgs, tools=TOOLS) as s:
        final = s.get_final_completion()
    [got] = final.choices[0].message.tool_calls
    assert got.id == "call_1" and got.function.arguments == '{"q": "look it up"}', got
    assert recorded(sid) == ["call_1"]
    # the chunks as the app gets them: the id once, in the call's first delta
    sid = c.create_session(model="echo-1")["id"]
    chunks = list(_app(d, sid).chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS, stream=True))
    deltas = [t for ch in chunks if ch.choices for t in ch.choices[0].delta.tool_calls or ()]
    assert [t.id for t in deltas] == ["call_1"] + [None] * (len(deltas) - 1), deltas
    assert deltas[0].function.name == "lookup" and recorded(sid) == ["call_1"]
    # a call whose id never comes, in a stream that ends without a finish_reason: given one at the end
    p.faults.call_id_late, p.faults.call_without, p.faults.finish_chunk = False, "id", False
    sid = c.create_session(model="echo-1")["id"]
    chunks = list(_app(d, sid).chat.completions.create(model="echo-1", messages=msgs, tools=TOOLS, stream=True))
    deltas = [t for ch in chunks if ch.choices for t in ch.choices[0].delta.tool_calls or ()]
    made = deltas[0].id
    assert made.startswith("call_") and [t.id for t in deltas[1:]] == [None] * (len(deltas) - 1), deltas
    assert recorded(sid) == [made]
    p.faults.call_id_late, p.faults.call_without, p.faults.finish_chunk = True, None, True
    # the native route (`sessiond ask`) records the provider's id too
    p.faults.call_unasked = "lookup"
    sid = c.create_session(model="echo-1")["id"]
    run_cli(d.home, "ask", sid, "look", check=True)
    assert recorded(sid) == ["call_1"]


def test_a_tool_s_output_answering_no_call_is_kept_by_append_and_import_and_sent_as_a_note(make, provider, tmp_path):
    """A tool's message with no tool_call_id (it answers no call) is kept as given by an append (`sessiond
    add --role tool` without --tool-call-id) and by `import-file` (an openai file; ChatGPT's, Claude's and
    llm's exports hold such outputs), as documented; sent to a model, it is a note in the user's turn,
    which OpenAI's API takes (it refuses a tool message with no tool_call_id)."""
    p, _ = provider
    d = make()
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    r = cli_json(d.home, "add", sid, "--role", "tool", "--name", "python", "state reset")
    assert r["role"] == "tool" and "tool_call_id" not in r, r
    f = tmp_path / "chat.json"
    f.write_text(json.dumps([{"role": "user", "content": "hi"}, {"role": "tool", "content": "orphan"}]))
    [made] = cli_json(d.home, "import-file", str(f), "--format", "openai")["sessions"]
    stored = d.client().messages(made["id"])["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in stored] == [("user", None), ("tool", None)]
    for s, said in ((sid, "state reset"), (made["id"], "orphan")):
        run_cli(d.home, "ask", s, "--model", "echo-1", "go on", check=True)
        sent = p.requests[-1]["messages"]
        notes = [m for m in sent if said in (m["content"] or "")]
        assert [m["role"] for m in notes] == ["user"] and "answers no call" in notes[0]["content"], sent


def test_the_command_a_refusal_names_adds_the_result_whatever_the_call_s_id(make, provider):
    """The 409's command for adding a call's result, run as given, in a shell: an app's call id is any text of
    1 to 200 characters (one beginning with `-`, or with a space, as another app's ids may be), and the
    command was `--tool-call-id ID` with the id as it is, which the shell splits and argparse takes for an
    option (`expected one argument`): the way on it names failed. Now the id is quoted for the shell and
    given with `=`, and the command adds the result."""
    p, _ = provider
    d = make()
    c = d.client()
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    cli_json(d.home, "chat", "new", sid, "--id", "side")
    c.append(sid, "user", "what is the weather?", chat="side")
    c.append(sid, "assistant", "", chat="side", tool_calls=[_call("-1 it's")])
    with pytest.raises(ApiError) as e:
        c.complete(sid, chat="side")
    said = e.value.message
    command = said[said.index("`sessiond add") + 1 :].partition("`")[0].replace("TEXT", "42")
    res = subprocess.run(
        ["sh", "-c", command.replace("sessiond ", f"{sys.executable} -m sessiond.cli.main --home {d.home} ", 1)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, (command, res.stderr)
    assert c.messages(sid, chat="side")["messages"][-1]["tool_call_id"] == "-1 it's"
    assert c.complete(sid, chat="side")["content"] == "echo: what is the weather?"


def test_a_result_naming_no_call_of_its_chat_is_refused_naming_the_calls_it_has(make, provider):
    """`sessiond add S --role tool --tool-call-id call_typo 42` (a typo in the id the 409 above names, or the
    result added to the wrong chat) was kept, as a tool's output answering no call, and sent to the model
    as a note while the call went answered `(no result of this call was recorded)`: the result lost to
    its call, for good (no message leaves a session). Now an append (the POST, the append stream, `sessiond
    add`) whose tool message names a call its chat does not have is refused (422), nothing stored, naming
    the chat's latest calls, or the chat that has the call; one answering a call made earlier in its own
    batch is taken, and so is a tool's output with no tool_call_id (it answers no call, as said)."""
    p, _ = provider
    d = make()
    c = d.client()
    sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
    c.append(sid, "user", "what is the weather?")
    c.append(sid, "assistant", "", tool_calls=[_call("call_a"), _call("call_b", "f")])
    before = c.messages(sid)["messages"]
    res = run_cli(d.home, "add", sid, "--role", "tool", "--tool-call-id", "call_typo", "42")
    assert res.returncode != 0
    assert "call_typo" in res.stderr and "call_a, call_b" in res.stderr, res.stderr
    with pytest.raises(ApiError) as e:
        c.append_many(sid, [{"role": "tool", "content": "1", "tool_call_id": "call_a"},
                            {"role": "tool", "content": "2", "tool_call_id": "call_c"}])  # fmt: skip
    assert (e.value.status, e.value.code) == (422, "invalid") and "messages[1]" in e.value.message, e.value.message
    assert e.value.details.get("tool_call_ids") == ["call_a", "call_b"], e.value.details
    # a call of another chat: the refusal names that chat
    cli_json(d.home, "chat", "new", sid, "--id", "side")
    c.append(sid, "assistant", "", tool_calls=[_call("call_s")], chat="side")
    with pytest.raises(ApiError) as e:
        c.append(sid, "tool", "3", tool_call_id="call_s")
    assert "chat 'side'" in e.value.message and "--chat side" in e.value.message, e.value.message
    assert c.messages(sid)["messages"] == before
    # a chat with no calls at all says so
    cli_json(d.home, "chat", "new", sid, "--id", "plain")
    with pytest.raises(ApiError) as e:
        c.append(sid, "tool", "4", tool_call_id="call_x", chat="plain")
    assert "no tool calls" in e.value.message, e.value.message
    # taken: a call's result, one answering a call of its own batch, an output answering no call
    c.append(sid, "tool", "sunny", tool_call_id="call_b")
    c.append_many(sid, [{"role": "assistant", "content": "", "tool_calls": [_call("call_n")]},
                        {"role": "tool", "content": "5", "tool_call_id": "call_n"}])  # fmt: skip
    run_cli(d.home, "add", sid, "--role", "tool", "--chat", "side", "--tool-call-id", "call_s", "6", check=True)
    run_cli(d.home, "add", sid, "--role", "tool", "state reset", check=True)
    assert [m.get("tool_call_id") for m in c.messages(sid)["messages"]][-4:] == ["call_b", None, "call_n", None]
