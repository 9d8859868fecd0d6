"""An empty system prompt is no system prompt: `sessiond new --system ""` stored null while `sessiond set
--system ""` (and the API's create and PATCH, of a session or a chat) stored "", so the same intent showed
as two values (`show`, `--json`, an export, another device). The daemon stores an empty one as null now,
wherever it is given, and every copy of the session says the same."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli


def test_an_empty_system_prompt_is_stored_as_none_everywhere(daemon):
    c = daemon.client()
    h = daemon.home
    made = c.create_session(system_prompt="")
    assert made["system_prompt"] is None
    sid = c.create_session(system_prompt="be brief")["id"]
    assert c.update_session(sid, system_prompt="")["system_prompt"] is None
    assert c.create_chat(sid, id="two", system_prompt="")["system_prompt"] is None
    c.update_chat(sid, "two", system_prompt="terse")
    assert c.update_chat(sid, "two", system_prompt="")["system_prompt"] is None
    assert c.get_session(sid)["system_prompt"] is None
    assert [ch["system_prompt"] for ch in c.list_chats(sid)["chats"]] == [None, None]

    # the CLI: new and set (and chat new and chat set) agree
    new = cli_json(h, "new", "--system", "")
    assert new["system_prompt"] is None
    other = cli_json(h, "new", "--system", "x")["id"]
    assert cli_json(h, "set", other, "--system", "")["system_prompt"] is None
    assert cli_json(h, "chat", "new", other, "--id", "c2", "--system", "")["system_prompt"] is None
    cli_json(h, "chat", "set", other, "c2", "--system", "y")
    assert cli_json(h, "chat", "set", other, "c2", "--system", "")["system_prompt"] is None

    # an export says null too, as it does of a session never given one
    res = run_cli(h, "export", other, "--format", "json")
    assert res.returncode == 0, res.stderr
    exported = json.loads(res.stdout)
    assert exported["session"]["system_prompt"] is None
    assert {ch["id"]: ch["system_prompt"] for ch in exported["chats"]} == {"main": None, "c2": None}
