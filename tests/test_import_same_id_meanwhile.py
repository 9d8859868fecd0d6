"""Two share codes of two different sessions under one id (made on two devices), imported on a third device
at the same time; or one code imported while a session of its id is made here: the import looked for a session
of that id before fetching the logs only, so one that arrived meanwhile (the other import, `new --id`) took the
code's history, two conversations merged under one id. Under the session's lock it looks again: a session that
arrived meanwhile must be the very same one, else 409 conflict and nothing written to it."""

from __future__ import annotations

import os
import tempfile
import threading

from sessiond.client import ApiError
from waiting import wait_for


def _device_with(make_daemon, where, sid: str, text: str) -> tuple[str, str]:
    """A device of its own store (a folder in `where`) that made session `sid` (one message, `text`): its
    store url and share code."""
    url = "file://" + tempfile.mkdtemp(prefix="sd-store-", dir=where)
    c = make_daemon(url).start().client()
    c.create_session(id=sid, name=text)
    c.append(sid, "user", text)
    return url, c.share(sid)["code"]


def _held(make_daemon, where) -> tuple:
    flag = os.path.join(where, "import")
    d = make_daemon(None, env={"SESSIOND_TEST_PAUSE": f"import.fetched:{flag}"}).start()
    return d, flag


def _arrivals(flag: str) -> int:
    try:
        with open(flag) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def _import(d, code: str, store: str, out: dict, key: str) -> None:
    try:
        out[key] = d.client().import_code(code, store=store)  # a client (connection) of its own
    except ApiError as exc:
        out[key] = exc


def _texts(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, all_chats=True)["messages"]]


def test_two_codes_of_two_sessions_under_one_id_imported_at_once_do_not_merge(make_daemon, tmp_path):
    sid = "clash-at-once"
    url_a, code_a = _device_with(make_daemon, tmp_path, sid, "A's")
    url_b, code_b = _device_with(make_daemon, tmp_path, sid, "B's")
    d, flag = _held(make_daemon, tmp_path)
    c = d.client()
    out: dict = {}
    ts = [
        threading.Thread(target=_import, args=(d, code_a, url_a, out, "a")),
        threading.Thread(target=_import, args=(d, code_b, url_b, out, "b")),
    ]
    for t in ts:
        t.start()
    try:
        wait_for(lambda: _arrivals(flag) >= 2, timeout=30)  # both fetched, neither applied
    finally:
        os.unlink(flag)
    for t in ts:
        t.join(60)
    refused = [k for k, v in out.items() if isinstance(v, ApiError)]
    assert len(refused) == 1, out
    exc = out[refused[0]]
    assert exc.status == 409 and exc.code == "conflict", (exc.status, exc.code, exc.message)
    kept = "a" if refused == ["b"] else "b"
    assert _texts(c, sid) == ["A's" if kept == "a" else "B's"]
    assert c.get_session(sid)["name"] == ("A's" if kept == "a" else "B's")


def test_a_code_imported_while_a_session_of_its_id_is_made_here_does_not_merge(make_daemon, tmp_path):
    sid = "clash-meanwhile"
    url_a, code_a = _device_with(make_daemon, tmp_path, sid, "A's")
    d, flag = _held(make_daemon, tmp_path)
    c = d.client()
    out: dict = {}
    t = threading.Thread(target=_import, args=(d, code_a, url_a, out, "a"))
    t.start()
    try:
        wait_for(lambda: _arrivals(flag) >= 1, timeout=30)
        c.create_session(id=sid, name="mine")
        c.append(sid, "user", "mine")
    finally:
        os.unlink(flag)
    t.join(60)
    exc = out["a"]
    assert isinstance(exc, ApiError), exc
    assert exc.status == 409 and exc.code == "conflict", (exc.status, exc.code, exc.message)
    assert c.get_session(sid)["name"] == "mine"
    assert _texts(c, sid) == ["mine"]


def test_a_code_imported_while_a_file_of_a_session_of_its_id_is_imported_here_does_not_take_it(make_daemon, tmp_path):
    """The file's session, hidden until its import ends, was taken for what a failed import left, deleted,
    and the code's session made in its place."""
    sid = "clash-file"
    url_a, code_a = _device_with(make_daemon, tmp_path, sid, "A's")
    b = make_daemon(None).start().client()
    b.create_session(id=sid, name="the file's")
    b.append(sid, "user", "the file's")
    data = b.export(sid)
    flag = os.path.join(tmp_path, "batch")
    d = make_daemon(None, env={"SESSIOND_TEST_PAUSE": f"import-file.batch:{flag}"}).start()
    c = d.client()
    out: dict = {}

    def import_file() -> None:
        try:
            out["file"] = d.client().import_file(data, "json")
        except ApiError as exc:
            out["file"] = exc

    t = threading.Thread(target=import_file)
    t.start()
    try:
        wait_for(lambda: _arrivals(flag) >= 1, timeout=30)  # the file's session made, hidden, not yet shown
        try:
            c.import_code(code_a, store=url_a)
        except ApiError as exc:
            assert exc.status == 409 and exc.code == "conflict", (exc.status, exc.code, exc.message)
        else:
            raise AssertionError("the code was imported over the file's session being imported")
    finally:
        os.unlink(flag)
    t.join(60)
    assert not isinstance(out["file"], ApiError), out["file"]
    assert c.get_session(sid)["name"] == "the file's"
    assert _texts(c, sid) == ["the file's"]
