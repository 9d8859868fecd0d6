"""An empty name where the API expects a model or a user: `"model": ""` was read as "the session's model"
and `"user": ""` stored a user whose name is empty, which `?user=` (empty) then listed. A request that
names one empty is refused now (422, naming the field and what to do instead: leave it out), changing
nothing; what is already stored so (an older database, a file exported from it, another device's
operations) still lists, shows, exports, imports and syncs as it is. The OpenAI endpoint keeps taking
`model=""` (the official SDK makes a model required; "" there means the session's own)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from conftest import cli_json, openai_app, run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


def _refused(call, field: str) -> str:
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.status == 422 and e.value.code == "invalid", e.value
    assert e.value.message.startswith(f"{field} must not be empty: leave it out"), e.value.message
    return e.value.message


def test_requests_naming_an_empty_model_or_user_are_refused_and_change_nothing(daemon):
    c = daemon.client()
    before = c.list_sessions()["sessions"]
    _refused(lambda: c.create_session(model=""), "model")
    _refused(lambda: c.create_session(user=""), "user")
    assert c.list_sessions()["sessions"] == before  # nothing made
    sid = c.create_session(model="m1", user="ann")["id"]
    _refused(lambda: c.update_session(sid, model=""), "model")
    _refused(lambda: c.update_session(sid, user=""), "user")
    _refused(lambda: c.create_chat(sid, id="two", model=""), "model")
    _refused(lambda: c.update_chat(sid, "main", model=""), "model")
    _refused(lambda: c.complete(sid, "hi", model=""), "model")
    s = c.get_session(sid)
    assert (s["model"], s["user"], s["message_count"]) == ("m1", "ann", 0)
    assert [ch["id"] for ch in c.list_chats(sid)["chats"]] == ["main"]
    assert c.list_chats(sid)["chats"][0]["model"] is None
    # null stays the way to clear one
    assert c.update_session(sid, model=None, user=None)["model"] is None
    # a filter by an empty user: refused, not "the sessions whose user is empty"
    for call in (lambda: c.list_sessions(user=""), lambda: c.stats(user=""), lambda: c.search("x", user="")):
        _refused(call, "query parameter user")


def test_the_cli_names_the_option(daemon):
    h = daemon.home
    res = run_cli(h, "new", "--model", "")
    assert res.returncode == 2 and "--model must not be empty" in res.stderr, res.stderr
    res = run_cli(h, "new", "--user", "", "--json")
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["code"] == "usage", res.stdout
    sid = cli_json(h, "new", "--user", "ann")["id"]
    res = run_cli(h, "set", sid, "--user", "")
    assert res.returncode == 2 and "(--unset user clears it)" in res.stderr, res.stderr
    assert cli_json(h, "show", sid)["user"] == "ann"
    res = run_cli(h, "ls", "--user", "")
    assert res.returncode == 2 and "--user must not be empty" in res.stderr, res.stderr
    assert [s["id"] for s in cli_json(h, "ls")["sessions"]] == [sid]


async def _stored_empty(path: str) -> str:
    """A session with an empty model and user (and a chat with an empty model) written as an older
    sessiond stored them, straight into the database: its id."""
    from sessiond.storage.database import Database

    db = await Database.open(path)
    try:
        s = await db.create_session({"model": "", "user": "", "name": "old"})
        await db.create_chat(s["id"], {"id": "side", "model": ""})
        await db.append_messages(s["id"], [{"role": "user", "content": "kept"}])
        return s["id"]
    finally:
        await db.close()


def test_what_is_stored_empty_still_lists_shows_exports_imports_and_syncs(make_daemon, store_dir, tmp_path):
    a = make_daemon(f"file://{store_dir}")
    os.makedirs(a.home, mode=0o700)
    sid = asyncio.run(_stored_empty(os.path.join(a.home, "sessions.db")))
    a.start()
    c = a.client()
    [s] = c.list_sessions()["sessions"]
    assert (s["id"], s["model"], s["user"]) == (sid, "", "")
    assert cli_json(a.home, "show", sid)["model"] == ""
    assert run_cli(a.home, "ls", check=True).stdout.count("old") == 1
    assert run_cli(a.home, "show", sid, check=True).returncode == 0
    exported = c.export(sid, "json")
    assert exported["session"]["model"] == "" and exported["session"]["user"] == ""
    assert {ch["id"]: ch["model"] for ch in exported["chats"]}["side"] == ""
    for fmt in ("openai", "markdown"):
        c.export(sid, fmt)
    # a file exported so imports again, as it is
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**exported, "session": {k: x for k, x in exported["session"].items() if k != "id"}}))
    [made] = cli_json(a.home, "import-file", str(path))["sessions"]
    assert (made["model"], made["user"]) == ("", "")
    assert {ch["id"]: ch["model"] for ch in c.list_chats(made["id"])["chats"]}["side"] == ""
    # and another device imports it from a share code, its operations checked as another device's are
    b = make_daemon(f"file://{store_dir}").start()
    cb = b.client()
    cb.import_code(c.share(sid, write=True)["code"])
    got = cb.get_session(sid)
    assert (got["model"], got["user"], got["message_count"]) == ("", "", 1)
    assert {ch["id"]: ch["model"] for ch in cb.list_chats(sid)["chats"]}["side"] == ""


def test_the_openai_endpoint_still_takes_an_empty_model_as_the_sessions(make_daemon):
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0", default_provider="loop"
        )
        sid = d.client().create_session(model="echo-2")["id"]
        reply = openai_app(d, sid).chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "echo: hi"
        assert p.requests[-1]["model"] == "echo-2"
    finally:
        server.stop()


def old_none_ann(make_daemon) -> tuple:
    """A daemon holding a session stored with user "" (as an older sessiond did), one with no user and one of
    ann's: (daemon, old, none, ann)."""
    d = make_daemon()
    os.makedirs(d.home, mode=0o700)
    old = asyncio.run(_stored_empty(os.path.join(d.home, "sessions.db")))
    d.start()
    c = d.client()
    return d, old, c.create_session(name="nobody's")["id"], c.create_session(user="ann")["id"]


def test_sessions_stored_with_an_empty_user_are_listed_with_no_user(make_daemon):
    """`?user=` (empty) is refused, so the sessions an older sessiond stored with `"user": ""` could not be
    filtered for at all (nor those with no user). `?no_user=true` (`sessiond ls --no-user`) lists the sessions
    that have no user: none set, or an empty one stored so, which means the same. Given with `user`, it is
    refused; `no_user=false` is the same as leaving it out."""
    d, old, none, ann = old_none_ann(make_daemon)
    c = d.client()
    assert [s["id"] for s in c.list_sessions(no_user=True)["sessions"]] == sorted([old, none])
    assert [s["id"] for s in c.list_sessions(no_user=True, limit=1)["sessions"]] == sorted([old, none])[:1]
    assert {s["id"] for s in c.list_sessions(no_user=False)["sessions"]} == {old, none, ann}
    with pytest.raises(ApiError) as e:
        c.list_sessions(user="ann", no_user=True)
    assert e.value.status == 422 and "no_user" in e.value.message and "user" in e.value.message, e.value
    _refused(lambda: c.list_sessions(user=""), "query parameter user")
    assert "no_user=true" in _refused(lambda: c.list_sessions(user=""), "query parameter user")
    assert [s["id"] for s in cli_json(d.home, "ls", "--no-user")["sessions"]] == sorted([old, none])
    res = run_cli(d.home, "ls", "--user", "")
    assert res.returncode == 2 and "--no-user" in res.stderr, res.stderr
    res = run_cli(d.home, "ls", "--user", "ann", "--no-user")
    assert res.returncode == 2 and "not both" in res.stderr, res.stderr
