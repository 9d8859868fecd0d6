"""A tool call's arguments are the model's JSON text, kept as a string and not read when appended. Arguments
nested deeper than Python's JSON reader goes (a few thousand brackets: an app's or a model's) made every later
question of that chat a 500, "internal error": the history's calls are read, to send them as OpenAI's API takes
them (daemon/sendable.py), and the reader's RecursionError went up. Such arguments are sent as text that is no
JSON object is (`{"input": the text}`), and the question is answered."""

from __future__ import annotations

import json

DEEP = "[" * 5000 + "]" * 5000


def test_a_question_after_a_call_with_deeply_nested_arguments_is_answered(served_openai):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "go")
    call = {"id": "d1", "type": "function", "function": {"name": "f", "arguments": DEEP}}
    c.append(sid, "assistant", "", tool_calls=[call])
    c.append(sid, "tool", "done", tool_call_id="d1")
    assert c.complete(sid, "next")["content"] == "echo: next"
    (sent,) = [m for m in p.requests[-1]["messages"] if m.get("tool_calls")]
    assert json.loads(sent["tool_calls"][0]["function"]["arguments"]) == {"input": DEEP}
    assert c.messages(sid)["messages"][1]["tool_calls"][0]["function"]["arguments"] == DEEP  # kept as given
