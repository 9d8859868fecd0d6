"""Arguments the CLI checks itself: a value out of the daemon's range is a usage error (exit 2, JSON code
"usage") naming the option as typed and its range in words, never the API's field name."""

from __future__ import annotations

import json
import subprocess

from conftest import cli_json, run_cli


def _usage(res: subprocess.CompletedProcess) -> str:
    """The message of a usage error answered in JSON (exit 2, code "usage")."""
    assert res.returncode == 2, res
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "usage", err
    assert "Traceback" not in res.stderr
    return err["message"]


def test_usage_exits_say_usage_in_json(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    for argv, says in (
        (["import", "--code-file", "/nonexistent"], "/nonexistent"),
        (["set", sid], "nothing to change"),
        (["new", "--metadata", "{bad"], "--metadata"),
        (["set", sid, "--name", "x", "--unset", "name"], "contradict"),
    ):
        assert says in _usage(run_cli(daemon.home, *argv, "--json")), argv
    res = run_cli(daemon.home, "add", sid, "--role", "user", "-", "--json", input=b"\xff")
    assert "not UTF-8" in _usage(res)
