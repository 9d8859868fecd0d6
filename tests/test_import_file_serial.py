"""Two `sessiond import-file` runs at once: the daemon takes them one at a time, so that the second
compares the export with what the first wrote. Before, both compared it with the sessions as they stood
before either (daemon/reimports.py), and both appended the same new messages to a session imported
before: each message of the app's conversation doubled."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import popen_cli, wait_for
from test_reimport import FORMATS, contents, fixture, listed


def _import(d, path) -> subprocess.Popen:
    """`sessiond import-file PATH --json` started, on the ChatGPT export at `path`."""
    args = ["import-file", str(path), "--format", "chatgpt", "--json", "--home", d.home]
    return popen_cli(args, env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_imports_of_one_export_at_once_append_its_new_messages_once(make_daemon, tmp_path):
    sorted_flag, queued_flag = tmp_path / "sorted", tmp_path / "queued"
    pause = f"import-file.sorted:{sorted_flag},import-file.queued:{queued_flag}"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": pause})
    d.start()
    name, continued = FORMATS["chatgpt"]
    first = fixture(name)
    (tmp_path / "a.json").write_text(json.dumps(first))
    imp = _import(d, str(tmp_path / "a.json"))
    wait_for(sorted_flag.exists, timeout=60, interval=0.01, what="the first import sorted out")
    sorted_flag.unlink()
    out, err = imp.communicate(timeout=60)
    assert imp.returncode == 0, err
    sid = json.loads(out)["sessions"][0]["id"]
    before, sessions = contents(d, sid), listed(d)
    later = [continued(first[0], "One more question?", "One more answer."), *first[1:]]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(later))
    runs = []
    try:
        runs.append(_import(d, str(path)))
        # the first holds at the point where it has compared the export with what is here
        wait_for(sorted_flag.exists, timeout=60, interval=0.01, what="the first import sorted out")
        runs.append(_import(d, str(path)))

        def second_arrived() -> bool:  # queued behind the first, or (before) compared too, with the same
            return queued_flag.exists() or sorted_flag.read_text().count("\n") >= 2

        wait_for(second_arrived, timeout=60, interval=0.01, what="the second import under way")
        queued_flag.unlink(missing_ok=True)

        def both_done() -> bool:
            sorted_flag.unlink(missing_ok=True)  # each one held there goes on (the second, once the first ended)
            return all(p.poll() is not None for p in runs)

        wait_for(both_done, timeout=120, interval=0.02, what="both imports ended")
    finally:
        sorted_flag.unlink(missing_ok=True)
        queued_flag.unlink(missing_ok=True)
        outs = [p.communicate(timeout=60) for p in runs]
    assert all(p.returncode == 0 for p in runs), outs
    first_run, second_run = (json.loads(o) for o, _ in outs)
    assert [(a["session"], a["messages"]) for a in first_run["appended"]] == [(sid, 2)]
    # the second saw what the first appended: the conversation is up to date, nothing appended or made
    assert second_run["appended"] == [] and second_run["sessions"] == [], second_run
    assert (sid, "up_to_date") in [(s["session"], s["reason"]) for s in second_run["skipped"]]
    assert contents(d, sid) == [*before, ("user", "One more question?"), ("assistant", "One more answer.")]
    assert listed(d) == sessions  # nothing made twice either
    assert not os.path.exists(sorted_flag)
