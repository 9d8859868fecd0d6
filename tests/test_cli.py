"""The `sessiond` command line, as a person and a script would use it."""
from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli


def test_start_new_add_log_stop(home):
    res = run_cli(home, "start")
    assert res.returncode == 0, res.stderr
    assert "started" in res.stdout
    try:
        again = run_cli(home, "start")
        assert again.returncode == 0 and "already running" in again.stdout
        st = run_cli(home, "status", check=True).stdout
        assert "socket:" in st and "device:" in st and "sessions: 0" in st
        sid = run_cli(home, "new", "--name", "cli", "--system", "Be kind.", "--model", "m1", "--user", "u1",
                      "--tag", "a", "--tag", "b", "--temperature", "0.3", check=True).stdout.strip()
        assert sid
        run_cli(home, "add", sid, "--role", "user", "hello there", check=True)
        run_cli(home, "add", sid, "--role", "assistant", "-", input="from stdin\nsecond line", check=True)
        log = run_cli(home, "log", sid, check=True).stdout
        assert "hello there" in log and "from stdin\nsecond line" in log
        data = cli_json(home, "log", sid)
        assert [m["content"] for m in data["messages"]] == ["hello there", "from stdin\nsecond line"]
        show = cli_json(home, "show", sid)
        assert show["system_prompt"] == "Be kind." and show["settings"] == {"temperature": 0.3}
        assert show["tags"] == ["a", "b"] and show["message_count"] == 2
        ls = run_cli(home, "ls", check=True).stdout
        assert sid in ls and "cli" in ls
        assert [s["id"] for s in cli_json(home, "ls", "--user", "u1")["sessions"]] == [sid]
        assert cli_json(home, "ls", "--user", "nobody")["sessions"] == []
        chat = run_cli(home, "chat", "new", sid, "--name", "second", "--switch", check=True).stdout.strip()
        chats = cli_json(home, "chat", "ls", sid)["chats"]
        assert [c["current"] for c in chats] == [False, True] and chats[1]["id"] == chat
        run_cli(home, "chat", "switch", sid, "main", check=True)
        assert cli_json(home, "show", sid)["current_chat"] == "main"
        assert cli_json(home, "pause", sid)["status"] == "paused"
        res = run_cli(home, "add", sid, "--role", "user", "nope")
        assert res.returncode == 1 and "resume" in res.stderr
        assert cli_json(home, "resume", sid)["status"] == "active"
        assert cli_json(home, "set", sid, "--name", "renamed")["name"] == "renamed"
        assert cli_json(home, "end", sid)["status"] == "ended"
        run_cli(home, "rm", sid, check=True)
        res = run_cli(home, "show", sid)
        assert res.returncode == 1 and "no session" in res.stderr
    finally:
        stop = run_cli(home, "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert run_cli(home, "stop").returncode == 0  # stopping a stopped daemon is not an error


def test_no_daemon_says_how_to_start_one(home):
    res = run_cli(home, "ls")
    assert res.returncode == 3
    assert "no sessiond daemon" in res.stderr and "sessiond start" in res.stderr
    res = run_cli(home, "status", "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["error"]["code"] == "daemon_not_running"


def test_home_from_environment(daemon):
    res = run_cli(None, "new", "--id", "via-env", env={"SESSIOND_HOME": daemon.home})
    assert res.returncode == 0 and res.stdout.strip() == "via-env"


@pytest.mark.parametrize("args", [
    ["frobnicate"], ["new", "--temperature", "hot"], ["add"], ["add", "x", "--role", "wizard", "t"],
    ["new", "--expires-in", "soon"], ["log"],
])
def test_bad_arguments_exit_2(home, args):
    res = run_cli(home, *args)
    assert res.returncode == 2, res


def test_errors_from_the_daemon_exit_nonzero_with_json(daemon):
    res = run_cli(daemon.home, "show", "missing", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["error"]["code"] == "not_found"
    res = run_cli(daemon.home, "new", "--id", "bad id!")
    assert res.returncode == 1 and "session id" in res.stderr
    res = run_cli(daemon.home, "new", "--metadata", "{oops")
    assert res.returncode == 2 and "--metadata is not valid JSON" in res.stderr
    res = run_cli(daemon.home, "add", "x", "--role", "user", "-", input=b"\xff\xfe")
    assert res.returncode == 2 and "UTF-8" in res.stderr


def test_every_command_has_json(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    for args in (["status"], ["ls"], ["show", sid], ["chat", "ls", sid], ["log", sid], ["sync", "--wait"],
                 ["verify"], ["add", sid, "--role", "user", "x"], ["key", "export"]):
        res = run_cli(daemon.home, *args, "--json")
        assert res.returncode == 0, (args, res.stderr)
        json.loads(res.stdout)


def test_help_lists_commands(home):
    res = run_cli(None, "--help")
    assert res.returncode == 0
    for name in ("daemon", "start", "stop", "status", "new", "ls", "show", "rm", "chat", "add", "log", "sync",
                 "verify", "key"):
        assert name in res.stdout


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=st.lists(st.one_of(st.sampled_from(["new", "add", "log", "import", "share", "export", "import-file",
                                                "verify-proof", "cleanup", "--json", "--role", "user", "-",
                                                "--older-than", "--format", "chatgpt", "key", "import", "--at"]),
                               st.text(max_size=12)), max_size=6),
       stdin=st.binary(max_size=64))
def test_cli_survives_garbage(home, argv, stdin, monkeypatch):
    """Arbitrary arguments and standard input: an exit code and a message, never a traceback."""
    import io
    import sys as _sys

    from sessiond.cli.main import main

    monkeypatch.setattr(_sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), errors="strict"))
    code = main([*argv, "--home", home] if argv and not argv[0].startswith("-") else argv)
    assert isinstance(code, int)
