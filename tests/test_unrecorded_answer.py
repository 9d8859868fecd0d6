"""A model's answer that cannot be recorded (its session ended, deleted with `rm`, or this device left out of a
rekey while the model answered) still reaches the app that paid for it: the refusal keeps its status and code,
and carries the answer (its text, its tool calls, its usage). Was: a whole answer's refusal said only that the
answer was not recorded, its text and tool calls lost; a streamed one's text had reached the app, but not its
tool calls (the socket route's deltas are text only; the calls come with the stored message, which there was
none of). Every way a question is asked: POST /v1/sessions/{id}/complete (whole and streamed; the Python
client's ApiError.answer), the OpenAI-compatible endpoint (its error carries the chat.completion it would have
answered), and `sessiond ask` (prints the answer, says it was not recorded, exit 1; --json carries it)."""

from __future__ import annotations

import json

import openai
import pytest

from asking import in_thread, posted
from conftest import openai_app, run_cli, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a b c"}'}}


@pytest.fixture
def held(make_daemon):
    """A daemon and a model that answers each question only once `p.resume` is set, with a call of the tool
    `lookup` and the text "Let me look.": (daemon, provider)."""
    p, server = serve_threaded(Provider())
    p.faults.held, p.faults.call_unasked, p.faults.call_text = True, "lookup", "Let me look."
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    yield d, p
    p.resume.set()
    server.stop()


def _closed_while_answering(d, p, sid: str, how: str, ask) -> object:
    """`ask()` sent, then (the model answering) the session closed `how` (end, rm), then the model let go:
    what `ask()` answered or raised."""
    out: list = []
    asked = len(p.requests)
    asking = in_thread(ask, out)
    wait_for(lambda: len(p.requests) > asked, timeout=30, what="the model asked")
    if how == "end":
        d.client().end(sid)
    else:
        d.client().delete_session(sid)
    p.resume.set()
    asking.join(timeout=60)
    assert out, "no answer to the question"
    return out[0]


def _posted(d, sid: str, stream: bool) -> tuple[int, str]:
    return posted(d, sid, {"content": "a b c", "stream": stream})


def _is_the_answer(answer: dict) -> None:
    assert answer["role"] == "assistant" and answer["content"] == "Let me look.", answer
    assert answer["tool_calls"] == [CALL], answer
    assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0, answer
    assert answer["model"] == "echo-1" and answer["provider"] == "loop", answer
    assert "id" not in answer, answer  # not a stored message


@pytest.mark.parametrize("how", ["end", "rm"])
def test_a_whole_answer_refused_at_recording_is_in_the_refusal(held, how):
    d, p = held
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    status, text = _closed_while_answering(d, p, sid, how, lambda: _posted(d, sid, False))
    error = json.loads(text)["error"]
    if how == "end":
        assert status == 409 and error["code"] == "conflict" and "ended" in error["message"], (status, error)
        assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
    else:
        assert status == 404 and error["code"] == "not_found", (status, error)
    assert "the model's answer was not recorded" in error["message"], error
    _is_the_answer(error["details"]["answer"])


def test_the_python_client_s_refusal_gives_the_answer(held):
    d, p = held
    sid = d.client().create_session(model="echo-1")["id"]
    e = _closed_while_answering(d, p, sid, "end", lambda: d.client().complete(sid, "a b c"))
    assert isinstance(e, ApiError) and e.status == 409, e
    assert e.answer is not None and e.answer == e.details["answer"], e.details
    _is_the_answer(e.answer)


def test_a_streamed_answer_refused_at_recording_gives_its_calls_in_the_last_event(held):
    """The deltas gave the text; the calls would have come in the stored message: the error event has them."""
    d, p = held
    sid = d.client().create_session(model="echo-1")["id"]
    status, text = _closed_while_answering(d, p, sid, "end", lambda: _posted(d, sid, True))
    assert status == 200 and 'event: delta\ndata: {"content": "Let me look."}' in text, text
    error = json.loads(text.rsplit("event: error\ndata: ", 1)[1])["error"]
    assert error["code"] == "conflict" and error["status"] == 409, error
    assert "the answer above was not recorded" in error["message"], error
    _is_the_answer(error["details"]["answer"])
    # the Python client: the same, on its ApiError
    p.resume.clear()
    sid = d.client().create_session(model="echo-1")["id"]

    def streamed():
        stream = d.client().complete_stream(sid, "a b c")
        return list(stream)

    e = _closed_while_answering(d, p, sid, "end", streamed)
    assert isinstance(e, ApiError) and e.status == 409, e
    _is_the_answer(e.answer)


@pytest.mark.parametrize("how", ["end", "rm"])
def test_the_openai_endpoint_s_refusal_carries_the_completion(held, how):
    """An OpenAI app gets OpenAI's error (400, as before; 404 for a session deleted), with the chat.completion
    it would have had in the error object's `completion`: what the SDK gives as `exc.body`."""
    d, p = held
    sid = d.client().create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    e = _closed_while_answering(
        d,
        p,
        sid,
        how,
        lambda: app.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "a b c"}], tools=tools
        ),
    )
    if how == "end":
        assert isinstance(e, openai.BadRequestError) and e.code == "conflict", e
    else:
        assert isinstance(e, openai.NotFoundError) and e.code == "not_found", e
    assert "the model's answer was not recorded" in e.message, e.message
    completion = e.body["completion"]
    assert completion["object"] == "chat.completion", completion
    message = completion["choices"][0]["message"]
    assert message["content"] == "Let me look." and message["tool_calls"] == [CALL], message
    assert completion["usage"]["completion_tokens"] > 0, completion
    assert openai.types.chat.ChatCompletion.model_validate(completion).choices[0].message.tool_calls


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ask_prints_an_answer_it_could_not_record_and_says_so(held, as_json):
    d, p = held
    sid = d.client().create_session(model="echo-1")["id"]
    args = ["ask", sid, "a b c", *(["--json"] if as_json else [])]
    res = _closed_while_answering(d, p, sid, "end", lambda: run_cli(d.home, *args))
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "the answer above was not recorded" in res.stderr and "ended" in res.stderr, res.stderr
    if as_json:
        out = json.loads(res.stdout)
        assert out["error"]["code"] == "conflict" and "not recorded" in out["error"]["message"], out
        _is_the_answer(out["answer"])
    else:
        assert res.stdout.startswith("Let me look.\n"), res.stdout
        assert 'lookup({"q": "a b c"}) [call_1]' in res.stdout, res.stdout  # the call: nowhere else now
