"""A dropped writer let back in with a new write code while one of its own pulls was still checking the notice
that left it out (check_exclusion reads the store: up to its timeout): the check, ending after the import, marked
the session revoked again. Its writes were refused ("rekeyed without this device") for good, on a generation
whose slot lists it, until yet another code was imported. (CI-like load: test_sync_races' let-back-in writer.)"""

from __future__ import annotations

import os

from conftest import wait_for
from test_rekey_forgery import _device, _messages, _three_writers
from test_sync_races import _hold


def test_a_check_that_ends_after_a_new_code_was_imported_leaves_the_writer_let_back_in(make_daemon, store_dir):
    r, _, d, sid = _three_writers(make_daemon, store_dir)
    r.client().rekey(sid, drop=[_device(d)])
    d.client().sync(sid, wait=True, timeout=10)
    assert d.client().get_session(sid)["access"] == "revoked"
    left_out, marked = _hold(d, "rekey.left_out", "rekey.marked")
    d.client().sync(sid)  # D's pull finds the notice again, and is held before its check of it
    wait_for(lambda: os.path.exists(left_out), timeout=30, what="D's pull held before its check")
    d.client().import_code(r.client().share(sid, write=True)["code"])
    assert d.client().get_session(sid)["access"] == "write"
    os.remove(left_out)  # the check goes on, and ends (its mark, if any, committed) at rekey.marked
    wait_for(lambda: os.path.exists(marked), timeout=30, what="the check's end")
    assert d.client().get_session(sid)["access"] == "write"
    os.remove(marked)
    d.client().append(sid, "assistant", "D let back in")
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "D let back in" in _messages(r, sid), timeout=30)
