"""A session held here because its own exported file was imported (`import-file` of `export --format json` keeps
its id, and makes a new session: created here, by this device) and whose share code is then imported: refused, as
two sessions cannot merge under one id, but said as what it is (a copy from a file of the code's session, a
separate session, and the way on), not as "a different session", which confuses a user who knows it is the same
conversation. A session of that id made here otherwise is still refused as a different one."""

from __future__ import annotations

from sessiond.client import ApiError


def _refusal(c, code: str) -> ApiError:
    try:
        c.import_code(code)
    except ApiError as exc:
        return exc
    raise AssertionError("the code was imported over the session held here")


def test_a_code_over_a_copy_of_its_session_imported_from_a_file_says_so_and_the_way_on(make_daemon, store_dir):
    a = make_daemon("file://" + store_dir).start()
    b = make_daemon("file://" + store_dir).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="ours", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    ca.append(sid, "user", "a message before the export")
    exported = ca.export(sid, "json")
    ca.append(sid, "user", "a message after it")
    code = ca.share(sid)["code"]
    assert [s["id"] for s in cb.import_file(exported, "json")["sessions"]] == [sid]  # (its id kept)
    before = cb.messages(sid, all_chats=True)["messages"]
    err = _refusal(cb, code)
    said = err.message
    assert err.status == 409 and err.code == "conflict", (err.status, err.code, said)
    assert "different session" not in said, said
    assert "imported from a file" in said and "copy" in said and "separate session" in said, said  # what it is
    assert f"sessiond rm {sid}" in said and f"sessiond export {sid}" in said, said  # the way on
    assert cb.messages(sid, all_chats=True)["messages"] == before  # nothing changed

    # another session made here under the code's id is still a different session
    other = ca.create_session(name="theirs")["id"]
    cb.create_session(id=other, name="mine")
    said = _refusal(cb, ca.share(other)["code"]).message
    assert "a different session" in said and "a copy" not in said, said
