"""kill -9 in the middle of an export imported again: its new conversations are made (hidden until the last
one, then shown together), then each conversation's new messages are appended to the session an earlier
import made of it, one transaction each. Killed between the two, the new sessions are there whole and the
tails not at all; the import run again appends the tails once, makes nothing twice, and verify and doctor
are clean."""

from __future__ import annotations

import json
import subprocess

from conftest import PY, cli_json, run_cli, wait_for
from test_reimport import chatgpt_continued, contents, fixture, listed


def test_a_reimport_killed_between_its_new_sessions_and_its_tails_is_finished_by_running_it_again(
    make_daemon, tmp_path
):
    first = fixture("chatgpt_conversations.json")
    (tmp_path / "a.json").write_text(json.dumps(first[1:]))  # "Haiku"
    flag = tmp_path / "paused"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"import-file.tail:{flag}"}).start()
    (made,) = cli_json(d.home, "import-file", str(tmp_path / "a.json"), "--format", "chatgpt")["sessions"]
    sid, before = made["id"], contents(d, made["id"])
    later = [chatgpt_continued(first[1], "One more question?", "One more answer."), first[0]]  # and a new one
    path = tmp_path / "b.json"
    path.write_text(json.dumps(later))
    cmd = [PY, "-m", "sessiond.cli.main", "import-file", str(path), "--format", "chatgpt", "--home", d.home]
    imp = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(flag.exists, timeout=30, what="the import at its tails, its new session made")
        d.kill()  # SIGKILL: the tail not appended
    finally:
        imp.communicate(timeout=30)
    assert imp.returncode != 0  # not acknowledged
    d.env.pop("SESSIOND_TEST_PAUSE")
    d.start()
    sessions = listed(d)
    made_new = {s: contents(d, s) for s in sessions if s != sid}
    assert made_new and all(made_new.values())  # the new conversation's sessions (a branch's fork too), whole
    assert contents(d, sid) == before  # the tail: not at all
    again = cli_json(d.home, "import-file", str(path), "--format", "chatgpt")
    assert again["sessions"] == [], again  # nothing made twice
    assert [(a["session"], a["messages"]) for a in again["appended"]] == [(sid, 2)]
    assert contents(d, sid) == [*before, ("user", "One more question?"), ("assistant", "One more answer.")]
    assert listed(d) == sessions and {s: contents(d, s) for s in made_new} == made_new
    cli_json(d.home, "sync", "--wait")
    assert cli_json(d.home, "verify")["ok"]
    assert run_cli(d.home, "doctor", "--json").returncode == 0
