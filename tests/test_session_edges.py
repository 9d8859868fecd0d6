"""The session features at their edges, through the API and the CLI of a real daemon: limits a status change
must keep, forks of chats that compacted, and the ways out an error names working as written."""

from __future__ import annotations

import os
import shlex

import pytest

from conftest import DaemonProc, cli_json, run_cli, wait_for
from sessiond.client import ApiError


def _limited(home: str, config: str) -> DaemonProc:
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(config)
    return DaemonProc(home).start()


def test_resume_keeps_the_active_session_limits(home):
    # paused sessions do not count as active; resuming one is making it active again, so it must fit the
    # limits as a new one would, or pause-create-resume walks past them
    d = _limited(home, "max_active_sessions = 2\nmax_active_sessions_per_user = 1\n")
    try:
        c = d.client()
        a = c.create_session(user="ann")["id"]
        c.pause(a)
        b = c.create_session(user="ann")["id"]
        with pytest.raises(ApiError) as e:
            c.resume(a)
        assert e.value.status == 429 and e.value.code == "limit_reached" and "per_user" in e.value.message
        assert c.get_session(a)["status"] == "paused"  # refused: nothing changed
        c.pause(b)
        assert c.resume(a)["status"] == "active"  # room again
        other = c.create_session(user="bob")["id"]  # the daemon's two
        c.pause(other)
        c.create_session()
        res = run_cli(home, "resume", other)
        assert res.returncode != 0 and "max_active_sessions" in res.stderr, res.stderr
        assert c.get_session(other)["status"] == "paused"
        c.end(other)  # ending a paused session is not a resume: no limit to pass
        assert c.get_session(other)["status"] == "ended"
    finally:
        d.stop()


def test_fork_of_a_chat_that_compacted_keeps_its_context(daemon):
    c = daemon.client()
    sid = c.create_session(max_context_tokens=100)["id"]  # compacts past 80, down to 40
    c.append(sid, "system", "rules", tokens=10)
    ids = [c.append(sid, "user", f"m{i}", tokens=30)["id"] for i in range(5)]
    early = c.context(sid)  # (read now: what the context was after the last message below)
    assert early["compacted_messages"] > 0
    # at the last message: the whole history (170 tokens, past the budget) and the context as it is
    fk = c.fork(sid, ids[-1], new_id="late")
    assert fk["message_count"] == 6 and fk["tokens_used"] == 160
    src, got = c.context(sid), c.context("late")
    for k in ("active_messages", "active_tokens", "compacted_messages", "messages"):
        assert got[k] == src[k], (k, got, src)
    assert [m["content"] for m in c.messages("late")["messages"]] == ["rules", "m0", "m1", "m2", "m3", "m4"]
    # at a message before the chat first compacted: nothing of it compacted yet
    assert c.fork(sid, ids[1], new_id="early")["message_count"] == 3
    assert c.context("early")["compacted_messages"] == 0 and c.context("early")["active_tokens"] == 70
    # at one between two compactions: the context as it stood after that message
    c.uncompact(sid)
    mid = c.fork(sid, ids[3], new_id="mid")
    assert mid["message_count"] == 5
    cut = c.context("mid")
    assert cut["compacted_messages"] > 0 and cut["active_tokens"] <= 80
    c.append("mid", "user", "goes on", tokens=30)  # and the fork's budget goes on from there
    assert c.context("mid")["active_tokens"] <= 80


def test_fork_of_a_session_past_its_quota(daemon):
    # the history a fork copies was accepted once; the quota applies to what is added after it
    h = daemon.home
    sid = cli_json(h, "new", "--token-quota", "100")["id"]
    last = [cli_json(h, "add", sid, "--role", "user", "--tokens", "40", f"m{i}")["id"] for i in range(2)][-1]
    cli_json(h, "set", sid, "--token-quota", "50")  # lowered below what is used
    fk = cli_json(h, "fork", sid, "--at", last)
    assert fk["tokens_used"] == 80 and cli_json(h, "quota", fk["id"])["level"] == "exhausted"


def test_quota_error_names_commands_that_run(daemon):
    h = daemon.home
    sid = cli_json(h, "new", "--token-quota", "10", "--id", "q")["id"]
    mid = cli_json(h, "add", sid, "--role", "user", "--tokens", "6", "first")["id"]
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "6", "second")
    assert res.returncode != 0
    commands = [c for c in res.stderr.split("`")[1::2] if c.startswith("sessiond ")]
    assert {c.split()[1] for c in commands} == {"set", "clone", "fork"}, res.stderr
    for command in commands:  # each, with its placeholders filled in, is a command that works
        argv = shlex.split(command.replace("MESSAGE_ID", mid).replace(" N", " 20"))[1:]
        run_cli(h, *argv, check=True)


def test_fork_of_an_unknown_session_says_so(daemon):
    res = run_cli(daemon.home, "fork", "nosuch", "--at", "abc-1")
    assert res.returncode != 0 and "no session 'nosuch'" in res.stderr, res.stderr


def test_a_session_that_expires_gets_its_final_checkpoint(home):
    # expiry ends a session as `end` does: with a signed checkpoint of everything in it
    d = _limited(home, "cleanup_interval = 0.3\n")
    try:
        c = d.client()
        # each given its expiry once it has its message (made with it, a slow append could meet it: refused)
        sid = c.create_session()["id"]
        c.append(sid, "user", "the last word", tokens=3)
        c.update_session(sid, expires_in=1)
        paused = c.create_session()["id"]
        c.append(paused, "user", "on hold", tokens=2)
        c.pause(paused)  # paused past its idle timeout: ended too
        c.update_session(paused, idle_timeout=1)
        wait_for(lambda: all(c.get_session(s)["status"] == "ended" for s in (sid, paused)), timeout=15)
        for s, tokens in ((sid, 3), (paused, 2)):
            cps = wait_for(lambda s=s: c.checkpoints(s)["checkpoints"], timeout=10, what="the final checkpoint")
            assert cps[-1]["messages"] == 1 and cps[-1]["tokens"] == tokens
            assert c.verify_proof(s, cps[-1])["ok"]
    finally:
        d.stop()


def test_set_turns_automatic_compaction_back_on(daemon):
    h = daemon.home
    sid = cli_json(h, "new", "--max-context-tokens", "100", "--no-auto-compact")["id"]
    assert cli_json(h, "show", sid)["policy"]["auto_compact"] is False
    cli_json(h, "add", sid, "--role", "user", "--tokens", "70", "a")
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "20", "b", "--json")
    assert res.returncode != 0 and '"context_overflow"' in res.stdout
    assert cli_json(h, "set", sid, "--auto-compact")["policy"] == {"max_context_tokens": 100, "auto_compact": True}
    cli_json(h, "add", sid, "--role", "user", "--tokens", "20", "b")  # compacts now, as by default
    assert cli_json(h, "context", sid)["compacted_messages"] == 1
    assert cli_json(h, "set", sid, "--no-auto-compact")["policy"]["auto_compact"] is False


def test_fork_at_a_message_of_another_chat_goes_on_in_that_chat(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "main 1")
    c.create_chat(sid, id="side")
    at = c.append(sid, "user", "side 1", chat="side")["id"]
    c.append(sid, "user", "main 2")  # the session's current chat is still main
    assert c.get_session(sid)["current_chat"] == "main"
    fk = c.fork(sid, at)
    assert fk["current_chat"] == "side"  # where the fork point is: the next message follows it
    assert [m["content"] for m in c.messages(fk["id"])["messages"]] == ["side 1"]
    assert [m["content"] for m in c.messages(fk["id"], all_chats=True)["messages"]] == ["main 1", "side 1"]
    assert c.get_session(sid)["current_chat"] == "main"  # the source is left as it was


def test_a_fork_holds_no_chat_made_after_its_fork_point(daemon):
    """The fork is the session as it stood at the message: a chat made later (and its settings) is not
    in it; one made before, even with nothing in it yet, is."""
    c = daemon.client()
    sid = c.create_session()["id"]
    c.create_chat(sid, id="early", system_prompt="made before")
    at = c.append(sid, "user", "first")["id"]
    c.append(sid, "assistant", "second")
    c.create_chat(sid, id="later", system_prompt="made after")
    c.append(sid, "user", "x", chat="later")
    fk = c.fork(sid, at)
    assert sorted(ch["id"] for ch in c.list_chats(fk["id"])["chats"]) == ["early", "main"]
    assert [m["content"] for m in c.messages(fk["id"], all_chats=True)["messages"]] == ["first"]


def test_a_follower_sees_an_expired_session_ended_when_its_owner_deletes_it(make_daemon, store_dir):
    # delete_expired deletes the owner's copy; the devices it was shared with keep theirs, and must see
    # it ended (a read-only follower cannot end it itself), not active for ever
    url = "file://" + store_dir
    a, b = make_daemon(url), make_daemon(url).start()
    os.makedirs(a.home, mode=0o700)
    with open(os.path.join(a.home, "config.toml"), "w") as f:
        f.write("cleanup_interval = 0.3\ndelete_expired = true\n")
    a.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session()["id"]
    ca.append(sid, "user", "before the end", tokens=4)
    cb.import_code(ca.share(sid)["code"])
    assert cb.get_session(sid)["status"] == "active"
    # the expiry set once B has it: made with 2 s, a slow share and import met it (B imported it ended)
    ca.update_session(sid, expires_in=1)
    wait_for(lambda: sid not in {s["id"] for s in ca.list_sessions()["sessions"]}, timeout=15, what="A deletes it")

    def ended_on_b():
        cb.sync(sid, wait=True, timeout=5)
        return cb.get_session(sid)["status"] == "ended"

    wait_for(ended_on_b, timeout=15, what="B sees it ended")
    cps = cb.checkpoints(sid)["checkpoints"]  # with its final checkpoint, which B can check
    assert cps and cps[-1]["messages"] == 1 and cb.verify_proof(sid, cps[-1])["ok"]


def test_append_names_a_chat_by_name_as_every_other_route_does(daemon):
    # MessageIn: "`chat` (id or name)"; log, context, compact, switch and ask all take a name
    c = daemon.client()
    sid = c.create_session()["id"]
    research = c.create_chat(sid, name="research")["id"]
    assert research != "research"
    one = c.append(sid, "user", "one", chat="research", idempotency_key="k-1")
    assert one["chat"] == research
    again = c.append(sid, "user", "one", chat="research", idempotency_key="k-1")  # a retry: the same answer
    assert again["id"] == one["id"]
    batch = c.append_many(sid, [{"role": "user", "content": "two"}], chat="research")
    assert batch["chat"] == research
    mixed = c.append_many(
        sid, [{"role": "user", "content": "three", "chat": "research"}, {"role": "user", "content": "m"}]
    )
    assert mixed["count"] == 2
    assert [m["content"] for m in c.messages(sid, chat="research")["messages"]] == ["one", "two", "three"]
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["m"]
    m = cli_json(daemon.home, "add", sid, "--role", "user", "--chat", "research", "four")
    assert m["chat"] == research
    res = run_cli(daemon.home, "add", sid, "--role", "user", "--chat", "nowhere", "x")
    assert res.returncode != 0 and "has no chat 'nowhere'" in res.stderr
    assert len(c.messages(sid, all_chats=True)["messages"]) == 5  # the refusal stored nothing
    res = run_cli(daemon.home, "add", "nosuch", "--role", "user", "--chat", "research", "x")
    assert res.returncode != 0 and "no session 'nosuch'" in res.stderr, res.stderr


def test_context_overflow_names_the_ways_out(daemon):
    h = daemon.home
    sid = cli_json(h, "new", "--max-context-tokens", "10", "--id", "small")["id"]
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "50", "too big for any context")
    assert res.returncode != 0 and f"`sessiond set --home {h} {sid} --max-context-tokens N`" in res.stderr, res.stderr
    cli_json(h, "set", sid, "--max-context-tokens", "100", "--no-auto-compact")
    cli_json(h, "add", sid, "--role", "user", "--tokens", "70", "a")
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "20", "b")
    assert res.returncode != 0 and f"`sessiond set --home {h} {sid} --auto-compact`" in res.stderr, res.stderr
    assert f"`sessiond compact --home {h} {sid} --chat main`" in res.stderr


def test_giving_a_session_to_another_user_keeps_their_limit(home):
    d = _limited(home, "max_active_sessions = 3\nmax_active_sessions_per_user = 1\n")
    try:
        c = d.client()
        c.create_session(user="ann")
        bobs = c.create_session(user="bob")["id"]
        with pytest.raises(ApiError) as e:
            c.update_session(bobs, user="ann")  # ann has her one active session
        assert e.value.code == "limit_reached" and "'ann'" in e.value.message
        assert c.get_session(bobs)["user"] == "bob"
        c.update_session(bobs, name="renamed")  # other changes are not limited
        c.pause(bobs)
        assert c.update_session(bobs, user="ann")["user"] == "ann"  # a paused one is not active
        c.create_session()
        cys = c.create_session(user="cy")["id"]  # the daemon's three active: a user change adds none
        assert c.update_session(cys, user="dee")["user"] == "dee"
    finally:
        d.stop()


def test_an_ended_session_refuses_with_the_way_on(daemon):
    h = daemon.home
    sid = cli_json(h, "new", "--id", "done")["id"]
    cli_json(h, "end", sid)
    for action in ("resume", "pause"):
        res = run_cli(h, action, sid)
        assert res.returncode != 0 and "has ended" in res.stderr and f"`sessiond clone --home {h} {sid}`" in res.stderr
    res = run_cli(h, "add", sid, "--role", "user", "x")
    assert res.returncode != 0 and f"`sessiond clone --home {h} {sid}`" in res.stderr, res.stderr


def test_an_ended_sessions_chats_are_final_to_every_route(daemon):
    # `chat set` on an ended session was refused (its chats are final) while a new chat, a compaction and
    # its undo (the same chat.update operation `chat set` writes) went in: each is refused alike, and the
    # refusal changes nothing
    c = daemon.client()
    sid = c.create_session(max_context_tokens=1000)["id"]
    c.create_chat(sid, id="side")
    for i in range(4):
        c.append(sid, "user", f"message {i}", tokens=10)
    c.compact(sid, target_tokens=20)
    c.end(sid)
    chats, context = c.list_chats(sid), c.context(sid)
    for attempt in (
        lambda: c.create_chat(sid, id="late"),
        lambda: c.compact(sid, target_tokens=0),
        lambda: c.uncompact(sid),
        lambda: c.update_chat(sid, "side", name="late"),
    ):
        with pytest.raises(ApiError) as e:
            attempt()
        assert e.value.status == 409 and "has ended" in e.value.message, e.value.message
        assert f"`sessiond clone {sid}`" in e.value.message
    assert c.list_chats(sid) == chats and c.context(sid) == context
    res = run_cli(daemon.home, "chat", "new", sid, "--id", "late")
    assert res.returncode == 1 and "has ended" in res.stderr, res.stderr
    # a paused session's chats still change: it goes on once resumed
    other = c.create_session()["id"]
    c.pause(other)
    assert c.create_chat(other, id="later")["id"] == "later"
    assert c.compact(other, target_tokens=0)["chat"] == "main"


def test_an_ended_session_s_own_fields_still_change(daemon):
    """The README's promise: an ended session's messages and chats are final, its own fields are not (an
    archive renamed, tagged, its expiry, which says how long it is kept, changed); it stays ended."""
    c = daemon.client()
    sid = c.create_session(name="draft")["id"]
    c.end(sid)
    got = c.update_session(sid, name="archived", tags=["done"], expires_in=30 * 86400)
    assert (got["name"], got["tags"], got["status"]) == ("archived", ["done"], "ended")
    assert got["expires_at"] is not None


def test_an_import_must_fit_the_active_session_limits(tmp_path):
    # an imported session that is active is one more active session here: it was let in past the limits
    store = f"file://{tmp_path / 'store'}"
    a = DaemonProc(str(tmp_path / "a"), store).start()
    bh = str(tmp_path / "b")
    os.makedirs(bh, mode=0o700)
    with open(os.path.join(bh, "config.toml"), "w") as f:
        f.write("max_active_sessions = 1\n")
    b = DaemonProc(bh, store).start()
    try:
        ca, cb = a.client(), b.client()
        sid = ca.create_session(name="shared")["id"]
        ca.append(sid, "user", "hello")
        code = ca.share(sid, write=True)["code"]
        mine = cb.create_session(name="b's own")["id"]
        with pytest.raises(ApiError) as e:
            cb.import_code(code)
        assert e.value.status == 429 and e.value.code == "limit_reached" and "max_active_sessions" in e.value.message
        assert [s["id"] for s in cb.list_sessions()["sessions"]] == [mine]  # nothing of it stayed
        assert not os.path.exists(os.path.join(bh, "keys", "sessions", f"{sid}.key"))
        cb.pause(mine)  # room: the same code imports
        assert cb.import_code(code)["session"] == sid
        assert [m["content"] for m in cb.messages(sid)["messages"]] == ["hello"]
    finally:
        a.stop()
        b.stop()


def test_ids_that_differ_only_in_case_are_refused(tmp_path):
    # on a case-insensitive disk (macOS, Windows) "Work" and "work" would share keys/sessions/<id>.key: a
    # share code of one would open the other's snapshots, and deleting one would shred the other's key
    store = f"file://{tmp_path / 'store'}"
    a = DaemonProc(str(tmp_path / "a"), store).start()
    b = DaemonProc(str(tmp_path / "b"), store).start()
    try:
        ca, cb = a.client(), b.client()
        ca.create_session(id="Work")
        for make in (
            lambda: ca.create_session(id="work"),
            lambda: ca.clone("Work", new_id="WORK"),
        ):
            with pytest.raises(ApiError) as e:
                make()
            assert e.value.status == 409 and "only in case" in e.value.message and "'Work'" in e.value.message
        assert [s["id"] for s in ca.list_sessions()["sessions"]] == ["Work"]
        ca.append("Work", "user", "on a")
        code = ca.share("Work", write=True)["code"]
        cb.create_session(id="work")
        assert cb.sync("work", wait=True, timeout=30)["pushed"]  # (its key file made by its first push)
        key = os.path.join(str(tmp_path / "b"), "keys", "sessions", "work.key")
        before = open(key, "rb").read()
        with pytest.raises(ApiError) as e:
            cb.import_code(code)
        assert e.value.status == 409 and "only in case" in e.value.message
        assert open(key, "rb").read() == before  # its key file untouched
        assert [s["id"] for s in cb.list_sessions()["sessions"]] == ["work"]
        cb.delete_session("work")  # then the code imports
        assert cb.import_code(code)["session"] == "Work"
    finally:
        a.stop()
        b.stop()


def test_switching_to_the_current_chat_changes_nothing(daemon):
    """As pausing a paused session: a switch to the chat already current writes no operation (nothing to
    push, no event), and answers the session as it is."""
    import sqlite3

    c = daemon.client()
    sid = c.create_session()["id"]
    c.create_chat(sid, id="c2")
    first = c.switch_chat(sid, "c2")
    db = sqlite3.connect(f"file:{daemon.home}/sessions.db?mode=ro", uri=True)
    try:
        ops = db.execute("SELECT count(*) FROM ops WHERE session_id=?", (sid,)).fetchone()[0]
        again = c.switch_chat(sid, "c2")
        assert db.execute("SELECT count(*) FROM ops WHERE session_id=?", (sid,)).fetchone()[0] == ops
    finally:
        db.close()
    assert again == first and again["current_chat"] == "c2"


def test_a_session_made_with_its_chats_must_fit_max_chats_per_session(tmp_path):
    # `chat new` keeps max_chats_per_session; a session file (import-file) or a clone made with more chats
    # than that must be refused too (limit_reached, nothing of it kept), or the limit is a formality
    big = DaemonProc(str(tmp_path / "big")).start()
    try:
        cb = big.client()
        sid = cb.create_session(id="three-chats", name="three chats")["id"]
        cb.create_chat(sid, id="c2")
        cb.create_chat(sid, id="c3")
        cb.append(sid, "user", "hello")
        exported = cb.export(sid)
    finally:
        big.stop()
    small = _limited(str(tmp_path / "small"), "max_chats_per_session = 2\n")
    try:
        c = small.client()
        with pytest.raises(ApiError) as e:
            c.import_file(exported, "json")
        assert e.value.status == 429 and e.value.code == "limit_reached", e.value
        assert "max_chats_per_session" in e.value.message and "3 chats" in e.value.message, e.value.message
        assert c.list_sessions()["sessions"] == []  # nothing of it stayed
        assert c.stats()["sessions"] == 0
        del exported["chats"][2]  # two chats fit
        exported["messages"] = [m for m in exported["messages"] if m["chat"] != "c3"]
        assert [s["id"] for s in c.import_file(exported, "json")["sessions"]] == ["three-chats"]
        assert [ch["id"] for ch in c.list_chats("three-chats")["chats"]] == ["main", "c2"]
    finally:
        small.stop()


def test_a_question_to_a_model_needs_room_for_its_answer(make_daemon):
    # max_messages_per_chat: a question that fits while its answer would not was recorded, the model asked
    # (its tokens spent), and then the answer refused and lost; it must be refused before anything is sent
    import http.client
    import json
    import socket

    from servers.openai_server import Provider, serve_threaded

    p, server = serve_threaded(Provider())
    try:
        d = make_daemon()
        os.makedirs(d.home, mode=0o700)
        with open(os.path.join(d.home, "config.toml"), "w") as f:
            f.write(
                'max_messages_per_chat = 3\ndefault_provider = "loop"\n'
                f'[providers.loop]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n'
            )
        d.start()
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        c.complete(sid, "one")
        asked = len(p.requests)
        with pytest.raises(ApiError) as e:
            c.complete(sid, "two")
        assert e.value.status == 429 and e.value.code == "limit_reached", e.value
        assert "max_messages_per_chat" in e.value.message and "answer" in e.value.message, e.value.message
        res = run_cli(d.home, "ask", sid, "two")
        assert res.returncode == 1 and "max_messages_per_chat" in res.stderr, (res.returncode, res.stderr)

        class Unix(http.client.HTTPConnection):  # the OpenAI-compatible endpoint, on the socket
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(d.socket)

        conn = Unix("localhost", timeout=30)
        history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "echo: one"}]
        conn.request(
            "POST",
            "/openai/v1/chat/completions",
            json.dumps({"model": "echo-1", "messages": [*history, {"role": "user", "content": "two"}]}),
            {"Content-Type": "application/json", "X-Sessiond-Session": sid},
        )
        answer = conn.getresponse()
        assert answer.status == 429 and b"max_messages_per_chat" in answer.read()
        conn.close()
        assert len(p.requests) == asked  # the model was not asked
        assert [m["content"] for m in c.messages(sid)["messages"]] == ["one", "echo: one"]  # nothing recorded
        c.append(sid, "user", "three")  # a message of its own still fits
        assert len(c.messages(sid)["messages"]) == 3
    finally:
        server.stop()


def test_a_chat_name_that_would_pick_another_chat_is_refused(daemon):
    """A chat is picked by its id or its name, the id first: a chat named with another chat's id could never
    be picked by that name (the other chat was, without a word), and of two chats sharing a name neither
    could; nor could a chat whose name is a new chat's id. Each is refused (409, naming the name and the
    other chat) at create and at rename, nothing written."""
    c = daemon.client()
    sid = c.create_session(id="s")["id"]
    main = c.get_session(sid)["current_chat"]
    side = c.create_chat(sid, id="c1", name="side")
    assert side["name"] == "side"
    before = c.list_chats(sid)["chats"]
    calls = {
        "create named with another's id": (lambda: c.create_chat(sid, name=main), main),
        "create named as another": (lambda: c.create_chat(sid, name="side"), "side"),
        "create with id another's name": (lambda: c.create_chat(sid, id="side"), "side"),
        "create with no name, its id another's name": (lambda: c.create_chat(sid, id="side", name=None), "side"),
        "rename to another's id": (lambda: c.update_chat(sid, "side", name=main), main),
        "rename to another's name": (lambda: c.update_chat(sid, main, name="side"), "side"),
    }
    for what, (call, name) in calls.items():
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 409 and repr(name) in info.value.message, (what, info.value)
    assert c.list_chats(sid)["chats"] == before
    assert c.update_chat(sid, "side", name="side")["name"] == "side"  # its own name again: nothing taken
    assert c.update_chat(sid, "c1", name=None)["name"] == "c1"  # its id as its name
    assert c.create_chat(sid, name="side")["name"] == "side"  # free again
    res = run_cli(daemon.home, "chat", "new", sid, "--name", "c1")
    assert res.returncode != 0 and "'c1'" in res.stderr, res.stderr
