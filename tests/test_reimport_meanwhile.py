"""A session continued here while an export's re-import is under way: the import compared the export with
the session before it made the file's other sessions, and appended the app's new messages only after. Before,
they were appended all the same, after what was said here meanwhile: the session's history mixed the two
conversations in an order neither had. Now the comparison is made again just before the append; a session
that changed so is left as it is, and the import says so (and exits non-zero): importing the file again
makes the app's conversation a session of its own (a diverged one)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import popen_cli, wait_for
from test_reimport import FORMATS, contents, fixture


@pytest.mark.parametrize("point", ["import-file.sorted", "import-file.tail"])
def test_a_session_continued_here_during_a_reimport_is_not_given_the_apps_tail_after_it(make_daemon, tmp_path, point):
    """`point`: where the import is held while the session is continued here: once it compared the export with
    the sessions (before it made the others), or once it compared the session again, as it appends to it (the
    check and the append one transaction: nothing comes in between)."""
    flag = tmp_path / "held"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"{point}:{flag}"})
    d.start()
    name, continued = FORMATS["chatgpt"]
    first = fixture(name)

    def run(path, held: bool = point == "import-file.sorted") -> subprocess.Popen:
        """The import started; held at `point` (only one that appends to a session reaches the tail's)."""
        args = ["import-file", str(path), "--format", "chatgpt", "--json", "--home", d.home]
        proc = popen_cli(args, env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if held:
            wait_for(flag.exists, timeout=60, interval=0.01, what=f"the import held at {point}")
        return proc

    (tmp_path / "a.json").write_text(json.dumps(first))
    imp = run(tmp_path / "a.json")
    flag.unlink(missing_ok=True)
    out, err = imp.communicate(timeout=60)
    assert imp.returncode == 0, err
    sid = json.loads(out)["sessions"][0]["id"]
    before = contents(d, sid)

    later = [continued(first[0], "Asked in the app?", "Answered in the app."), *first[1:]]
    (tmp_path / "b.json").write_text(json.dumps(later))
    imp = run(tmp_path / "b.json", held=True)
    try:
        d.client().append(sid, "user", "Asked here meanwhile.")  # after the comparison, before the append
    finally:
        flag.unlink()
    out, err = imp.communicate(timeout=60)
    # the session holds what was said here, and nothing of the app's after it
    assert contents(d, sid) == [*before, ("user", "Asked here meanwhile.")]
    res = json.loads(out)
    assert res["appended"] == [], res
    assert [(s["session"], s["reason"]) for s in res["skipped"] if s["session"] == sid] == [(sid, "refused")]
    assert imp.returncode == 1, err
    # imported again: the app's conversation parts from the session here, so it is made a session of its own
    imp = run(tmp_path / "b.json")
    flag.unlink(missing_ok=True)
    out, err = imp.communicate(timeout=60)
    assert imp.returncode == 0, err
    again = json.loads(out)
    assert [x["session"] for x in again["diverged"]] == [sid], again
    new = again["diverged"][0]["new_session"]
    assert contents(d, new)[-2:] == [("user", "Asked in the app?"), ("assistant", "Answered in the app.")]
    assert contents(d, sid) == [*before, ("user", "Asked here meanwhile.")]
