"""A provider's stream cut mid-answer (provider_stream_cut) kept what arrived, marked interrupted, but its
error named no way on. It now names the kept part's message and the way to have the model answer again, in
the message (`sessiond ask ID --chat CHAT --again`) and in `details` (`message_id`, `api`); the way, followed,
answers the chat (which ends in the interrupted part) anew."""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli
from sessiond.client import ApiError


def test_a_stream_cut_names_the_kept_part_and_the_way_to_ask_again(echo_daemon):
    d, p = echo_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    chat = c.get_session(sid)["current_chat"]
    p.faults.cut_after = 2
    with pytest.raises(ApiError) as exc:
        "".join(c.complete_stream(sid, "one two three four"))
    p.faults.cut_after = None
    err = exc.value
    part = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert len(part) == 1 and part[0]["interrupted"] is True, part
    assert err.code == "provider_stream_cut", err
    assert part[0]["id"] in err.message and f"sessiond ask {sid} --chat {chat} --again" in err.message, err.message
    assert err.details["message_id"] == part[0]["id"], err.details
    assert err.details["api"] == [f"POST /v1/sessions/{sid}/complete {json.dumps({'chat': chat})}"], err.details
    # the way on, followed: the model answers the chat again; the kept part stays, a whole answer after it
    res = run_cli(d.home, "ask", sid, "--chat", chat, "--again")
    assert res.returncode == 0, res.stderr
    after = [m for m in cli_json(d.home, "log", sid)["messages"] if m["role"] == "assistant"]
    assert [m.get("interrupted", False) for m in after] == [True, False], after


def test_ask_says_the_daemons_way_on_once(echo_daemon):
    d, p = echo_daemon
    sid = d.client().create_session(model="echo-1")["id"]
    p.faults.cut_after = 2
    res = run_cli(d.home, "ask", sid, "one two three four")
    assert res.returncode == 1 and res.stderr.count("what arrived is recorded as message") == 1, res.stderr
    assert f"sessiond ask --home {d.home} {sid} --chat" in res.stderr and "--again`" in res.stderr, res.stderr
