"""`sessiond export ID -o FILE` wrote the file and printed nothing (exit 0), where the other commands that
change something say what they did (`rm`: "deleted ID", `import-file`: the ids): a user could not tell from
the screen that anything was written, or where. It says what it wrote, and where, for every format; written
into a stream (`-o /dev/stdout`, a named pipe, a shell's `>(gzip > F)`), it adds nothing to what it wrote."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli


def test_export_to_a_file_says_what_it_wrote_and_where(daemon, tmp_path):
    sid = cli_json(daemon.home, "new", "--name", "said")["id"]
    run_cli(daemon.home, "add", sid, "--role", "user", "hello", check=True)
    for fmt in ("json", "openai", "markdown"):
        target = tmp_path / f"s.{fmt}"
        res = run_cli(daemon.home, "export", sid, "--format", fmt, "-o", str(target), check=True)
        assert target.exists() and "hello" in target.read_text()
        assert str(target) in res.stdout and sid in res.stdout and fmt in res.stdout, res.stdout
        assert res.stdout.count("\n") == 1, res.stdout  # one line
    # replaced with --force: said so too
    res = run_cli(daemon.home, "export", sid, "-o", str(tmp_path / "s.json"), "--force", check=True)
    assert str(tmp_path / "s.json") in res.stdout, res.stdout
    # --json as before
    res = run_cli(daemon.home, "export", sid, "-o", str(tmp_path / "t.json"), "--json", check=True)
    assert json.loads(res.stdout) == {"written": str(tmp_path / "t.json")}


def test_export_into_standard_output_by_its_name_adds_nothing_to_it(daemon):
    sid = cli_json(daemon.home, "new", "--name", "streamed")["id"]
    res = run_cli(daemon.home, "export", sid, "-o", "/dev/stdout", check=True)
    assert json.loads(res.stdout)["session"]["name"] == "streamed"  # the export alone: still JSON
    res = run_cli(daemon.home, "export", sid, "--format", "markdown", "-o", "/dev/stdout", check=True)
    assert "wrote" not in res.stdout and "streamed" in res.stdout, res.stdout


def test_export_into_standard_output_by_its_name_with_json_is_one_json_document(daemon):
    """`export ID -o /dev/stdout --json` wrote the export into standard output, then `{"written": "/dev/stdout"}`
    after it: two JSON documents, which no JSON reader takes. Written into standard output (by its name, as
    `-o -`), the export is the command's output, alone."""
    sid = cli_json(daemon.home, "new", "--name", "streamed")["id"]
    res = run_cli(daemon.home, "export", sid, "-o", "/dev/stdout", "--json", check=True)
    assert json.loads(res.stdout)["session"]["name"] == "streamed", res.stdout
