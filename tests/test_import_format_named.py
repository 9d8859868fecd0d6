"""An import-file whose format the daemon cannot tell from the data's shape was refused "name it: --format
openai, json, ...": the CLI's option, which an app on the socket API has not. The refusal names the request's
`format` field too (and the CLI's option), and nothing is imported."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


def test_a_format_not_told_names_the_field_an_app_gives(daemon):
    c = daemon.client()
    with pytest.raises(ApiError) as exc:
        c.import_file({"title": "a note", "text": "not a chat"})
    err = exc.value
    assert err.status == 422 and err.code == "invalid"
    assert '"format"' in err.message and "--format" in err.message, err.message
    assert c.list_sessions()["sessions"] == []


def test_a_session_file_given_as_openai_is_refused_once_not_twice_over(daemon, tmp_path):
    """`import-file F --format openai` of a sessiond session file said the way on twice in one message: "the file is
    shaped as a sessiond session file (export --format json) (--format json), not as --format openai: import it with
    --format json, or leave --format out (read as openai: this is a sessiond session file, not OpenAI chat messages:
    import it in the json format (...)". The daemon's own refusal names the format and the way on: said once."""
    import json

    from conftest import cli_json, run_cli

    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    run_cli(daemon.home, "add", sid, "--role", "user", "hello", check=True)
    path = tmp_path / "s.json"
    run_cli(daemon.home, "export", sid, "-o", str(path), check=True)
    run_cli(daemon.home, "rm", sid, check=True)
    res = run_cli(daemon.home, "import-file", str(path), "--format", "openai", "--json")
    assert res.returncode == 1, res
    message = json.loads(res.stdout)["error"]["message"]
    assert message.count("--format json") == 1 and message.count("sessiond session file") == 1, message
    assert cli_json(daemon.home, "ls")["sessions"] == []
