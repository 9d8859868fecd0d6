"""A chat's own provider (its settings' `provider`) could be set only through the API: `sessiond chat new`
and `chat set` had no --provider (and `chat set --unset provider` was refused), though `new` and `set` have
one for a session. They take it now, as the session's commands do, with --json."""

from __future__ import annotations

from conftest import cli_json, run_cli


def test_chat_new_and_set_take_a_provider_and_unset_it(daemon):
    h = daemon.home
    c = daemon.client()
    sid = cli_json(h, "new")["id"]
    made = cli_json(h, "chat", "new", sid, "--id", "two", "--provider", "other")
    assert made["settings"] == {"provider": "other"}, made
    changed = cli_json(h, "chat", "set", sid, "two", "--provider", "third", "--temperature", "0.5")
    assert changed["settings"] == {"provider": "third", "temperature": 0.5}, changed
    cleared = cli_json(h, "chat", "set", sid, "two", "--unset", "provider")
    assert cleared["settings"] == {"temperature": 0.5}, cleared
    assert {ch["id"]: ch["settings"] for ch in c.list_chats(sid)["chats"]}["two"] == {"temperature": 0.5}
    res = run_cli(h, "chat", "set", sid, "two", "--provider", "x", "--unset", "provider")
    assert res.returncode == 2 and "contradict" in res.stderr, res.stderr
    res = run_cli(h, "chat", "set", sid, "two", "--provider", "", "--json")  # an empty name: the API's refusal
    assert res.returncode == 2 and "--provider" in res.stdout, res.stdout
