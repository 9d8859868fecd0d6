"""A share code whose session id is that of a different session made here moments ago, before that session's
first push wrote its key: the import was taken as one of the same session (with no key here, nothing compared the
two) and wrote the code's history into the session here, two conversations merged under one id. It is refused as
the import over a session with a key here is (409 conflict), and the session here is left as it was."""

from __future__ import annotations

import os

from conftest import flag_dir
from sessiond.client import ApiError
from waiting import wait_for


def test_a_code_for_another_session_of_an_id_made_here_before_its_first_push_is_refused(make_daemon, store_dir):
    a = make_daemon("file://" + store_dir).start()
    ca = a.client()
    sid = ca.create_session(name="the code's", initial_messages=[{"role": "user", "content": "theirs"}])["id"]
    ca.append(sid, "user", "a message of the code's session")
    code = ca.share(sid)["code"]

    flag = os.path.join(flag_dir(), "push")
    b = make_daemon("file://" + store_dir, env={"SESSIOND_TEST_PAUSE": f"push.begin:{flag}"}).start()
    cb = b.client()
    cb.create_session(id=sid, name="mine", initial_messages=[{"role": "user", "content": "mine"}])
    cb.append(sid, "user", "a message of mine")
    wait_for(lambda: os.path.exists(flag), timeout=20)  # its first push held before its key is made
    before = cb.messages(sid, all_chats=True)["messages"]
    try:
        try:
            cb.import_code(code)
        except ApiError as exc:
            assert exc.status == 409 and exc.code == "conflict", (exc.status, exc.code, exc.message)
            assert "sessiond export" in exc.message, exc.message
        else:
            raise AssertionError("the code of another session with this id was imported over the one here")
        assert cb.get_session(sid)["name"] == "mine"
        assert cb.messages(sid, all_chats=True)["messages"] == before
    finally:
        os.unlink(flag)
    assert cb.sync(sid, wait=True, timeout=20)["complete"]  # let go, its push goes on: its own session
    assert [m["content"] for m in cb.messages(sid, all_chats=True)["messages"]] == ["a message of mine"]
