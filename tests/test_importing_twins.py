"""A session being imported from a share code is written hidden, in chunks (storage/applyremote.py): listed nowhere,
404 by its id, until the last chunk. What else wants its id meanwhile (a session made here, a file's session, one
whose id differs only in case) is refused as `importing`, with what to do (wait for that import: one that fails
frees the id), not as a session here to delete first, which GET and DELETE answer 404."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_for
from sessiond.client import ApiError

CONTENT = "a message of a typical length, with a few words of text in it"


def _refused(call) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    return e.value


def _held_import(make_daemon, store_dir, tmp_path):
    """A's 2,500-message session shared by code; B's import of it held after its first chunk (the session written
    hidden). (A's client, B's client, sid, the flag that holds it, the thread importing, where its answer goes)."""
    url = "file://" + store_dir
    a = make_daemon(url).start()
    flag = tmp_path / "chunk.held"
    b = make_daemon(url, env={"SESSIOND_TEST_PAUSE": f"import.chunk:{flag}"}).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="long")["id"]
    ca.append_many(sid, [{"role": "user", "content": f"{j} {CONTENT}"} for j in range(2_500)])  # (two chunks)
    code = ca.share(sid)["code"]
    done: dict = {}

    def imported() -> None:
        with b.client() as c:
            done["res"] = c.import_code(code)

    t = threading.Thread(target=imported)
    t.start()
    wait_for(flag.exists, timeout=60, interval=0.01, what="the code's first chunk written, its import held")
    assert _refused(lambda: cb.get_session(sid)).status == 404  # (hidden while its import runs)
    return ca, cb, sid, flag, t, done


def _ended(cb, sid: str, flag, t, done) -> None:
    """The import let go on (held again at each chunk: let go each time), and ended whole."""
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        flag.unlink(missing_ok=True)
        t.join(0.05)
    assert done["res"]["session"] == sid, done
    assert cb.get_session(sid)["message_count"] == 2_500


def test_a_files_session_of_an_id_being_imported_by_code_is_refused_as_importing(make_daemon, store_dir, tmp_path):
    """`sessiond import-file` of a file holding a session of that id (an export of it) was told "this file holds
    session X, which is on this device already: delete it first (`sessiond rm X`)", reason `exists`: `rm X`
    answered 404, and once the code's import ended there was nothing to delete but the session just imported."""
    ca, cb, sid, flag, t, done = _held_import(make_daemon, store_dir, tmp_path)
    try:
        err = _refused(lambda: cb.import_file(ca.export(sid, "json"), "json"))
        # main: reason exists, "delete it first (`sessiond rm X`)"
        assert (err.status, err.code, err.reason) == (409, "conflict", "importing"), (err.reason, err.message)
        assert "being imported" in err.message and "sessiond rm" not in err.message, err.message
        # import-file takes no id: the file's is what to change (main: "or choose another id or omit it")
        assert "choose another id" not in err.message and 'remove the session\'s "id"' in err.message, err.message
    finally:
        _ended(cb, sid, flag, t, done)


def test_an_id_differing_only_in_case_from_one_being_imported_is_refused_as_importing(make_daemon, store_dir, tmp_path):
    """A session made under an id that differs only in case from the one being imported (`new --id`, a file's
    session, another code's) was refused as `case_twin`, "session X already exists on this device": X answered 404
    (hidden till its import ends), and a share code's refusal said to delete it first. It is `importing` now: wait
    for that import (one that fails frees the id), naming both ids."""
    ca, cb, sid, flag, t, done = _held_import(make_daemon, store_dir, tmp_path)
    twin = sid.upper()
    c = make_daemon("file://" + store_dir).start().client()  # another device's session of the twin id, shared
    c.create_session(id=twin, initial_messages=[{"role": "user", "content": "hi"}])
    code = c.share(twin)["code"]
    exported = ca.export(sid, "json")
    exported = {**exported, "session": {**exported["session"], "id": twin}}  # (a file of the twin id)
    try:
        ways = (  # new --id, import-file, import
            lambda: cb.create_session(id=twin),
            lambda: cb.import_file(exported, "json"),
            lambda: cb.import_code(code),
        )
        for i, make in enumerate(ways):
            err = _refused(make)
            # main: reason case_twin, "session X already exists on this device" (and "delete the one here first")
            assert (err.status, err.code, err.reason) == (409, "conflict", "importing"), (err.reason, err.message)
            assert "being imported" in err.message and sid in err.message and twin in err.message, err.message
            assert "sessiond rm" not in err.message and "delete" not in err.message, err.message
            if i:
                assert "choose another id" not in err.message, err.message  # (no id to choose but the file's)
    finally:
        _ended(cb, sid, flag, t, done)
    assert _refused(lambda: cb.create_session(id=twin)).reason == "case_twin"  # (once imported: the twin is here)
