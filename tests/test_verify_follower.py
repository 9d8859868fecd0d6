"""`verify` on a device that has written nothing of a session it follows (a read-only code: no log of its
own in the store) said "ok ID: revision None, 0 objects, N operations": Python's None for the revision of
a log that does not exist. It now says what it checked: the other devices' operations, none written here."""

from __future__ import annotations

from conftest import run_cli


def test_verify_of_a_followed_session_says_none_written_here_not_none(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="followed")["id"]
    ca.append(sid, "user", "one")
    ca.append(sid, "assistant", "two")
    cb.import_code(ca.share(sid)["code"])  # read-only: B never writes a log of its own

    rep = cb.verify(sid)["sessions"][0]
    assert rep["ok"] and rep["revision"] is None and rep["devices"] == 1, rep
    out = run_cli(b.home, "verify", sid, check=True).stdout
    assert "None" not in out, out
    assert f"ok      {sid}: {rep['operations']} operations of 1 other device checked, none written here" in out, out
    assert ": revision " in run_cli(a.home, "verify", sid, check=True).stdout  # a writer's as before
