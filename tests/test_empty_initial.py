"""`sessiond add` refuses an empty message (nothing takes a message out of a session's history again), but
`sessiond new --initial` took one, and it went with every question after. `new` refuses it now the same way
(a usage error naming the message by its place in --initial), and nothing is created. An assistant's
message that carries tool calls and no text stays allowed, as in `add`. The API takes an empty content in
both (an append and a session's initial messages alike), as OpenAI's does."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli


def test_new_refuses_an_empty_initial_message_and_creates_nothing(daemon):
    h = daemon.home
    for initial in (
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ""}],
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "  \n"}],
    ):
        res = run_cli(h, "new", "--initial", json.dumps(initial))
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert "--initial[1] is empty" in res.stderr, res.stderr
        res = run_cli(h, "new", "--initial", json.dumps(initial), "--json")
        assert res.returncode == 2
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and "--initial[1] is empty" in err["message"], err
    assert cli_json(h, "ls")["sessions"] == []  # nothing made

    # an assistant's tool call with no text is a message, as `add` takes it
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    made = cli_json(h, "new", "--initial", json.dumps([{"role": "assistant", "content": "", "tool_calls": [call]}]))
    assert made["initial_messages"][0]["tool_calls"] == [call]
    # and the API still takes an empty content, as its append does
    c = daemon.client()
    assert c.create_session(initial_messages=[{"role": "user", "content": ""}])["initial_messages"][0]["content"] == ""
