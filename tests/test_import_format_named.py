"""`import-file --format F` of a file of another app's shape (Open WebUI's export given as `--format claude`,
Claude's as `--format openai`) was refused in the words of F's parser, which say nothing of the format:
"conversations.json: conversation 0.uuid: expected a non-empty string, got null" (the file named as Claude's,
not by its path), "messages[0]: role None is not one of ...". The refusal says the format named is not the
file's, whose shape says which it is, and the way on: that format, or none named. Nothing is imported."""

from __future__ import annotations

import json
import os

from conftest import cli_json, run_cli

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_a_file_imported_as_another_format_is_refused_naming_the_files_own(daemon):
    for name, named, its in (
        ("openwebui_export.json", "claude", "openwebui"),
        ("claude_conversations.json", "openai", "claude"),
        ("claude_conversations.json", "openwebui", "claude"),
        ("chatgpt_conversations.json", "claude", "chatgpt"),
    ):
        path = os.path.join(FIXTURES, name)
        res = run_cli(daemon.home, "import-file", path, "--format", named, "--json")
        assert res.returncode == 1, res
        message = json.loads(res.stdout)["error"]["message"]
        assert f"--format {named}" in message and f"--format {its}" in message, message
        assert "leave --format out" in message, message
        res = run_cli(daemon.home, "import-file", path, "--format", named)
        assert res.returncode == 1 and f"--format {its}" in res.stderr, res
    assert cli_json(daemon.home, "ls")["sessions"] == []  # nothing imported
    # the way named is taken
    made = cli_json(
        daemon.home, "import-file", os.path.join(FIXTURES, "openwebui_export.json"), "--format", "openwebui"
    )
    assert made["sessions"]
