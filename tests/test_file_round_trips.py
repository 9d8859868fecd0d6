"""A session out to a file and back in (`export`, then `import-file`), end to end through the CLI against one
daemon for the module: what the file says is what comes back, and what refuses a file names what to do."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from conftest import DaemonProc, run_cli, started_with, wait_for, write_config
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture(scope="module")
def d():
    tmp = tempfile.mkdtemp(prefix="sd-rt-")
    proc = DaemonProc(os.path.join(tmp, "home")).start()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def exported(d, sid: str, tmp_path, *args: str) -> str:
    f = tmp_path / f"{sid}.json"
    run_cli(d.home, "export", sid, "-o", str(f), "--force", *args, check=True)  # (a session exported again: replaced)
    return str(f)


def test_openai_export_of_a_chat_gives_the_settings_and_context_its_model_is_asked_with(d, tmp_path):
    """A chat's own settings override the session's one by one when its model is asked (daemon/complete.py);
    the export replaced all of the session's with the chat's, so a chat with its own temperature lost the
    session's top_p, top_k and max_tokens. The initial messages lost their name too."""
    c = d.client()
    sid = c.create_session(
        model="gpt-x",
        settings={"temperature": 0.3, "top_p": 0.9, "top_k": 5, "max_tokens": 100, "provider": "default"},
        initial_messages=[{"role": "user", "content": "hi", "name": "alice"}],
    )["id"]
    side = c.create_chat(sid, name="side", settings={"temperature": 0.9})["id"]
    c.append(sid, "user", "in side", chat=side)
    out = json.loads(open(exported(d, sid, tmp_path, "--format", "openai", "--chat", side)).read())
    assert out["model"] == "gpt-x"
    assert {k: out.get(k) for k in ("temperature", "top_p", "top_k", "max_tokens")} == {
        "temperature": 0.9,
        "top_p": 0.9,
        "top_k": 5,
        "max_tokens": 100,
    }
    assert "provider" not in out
    assert out["messages"] == [
        {"role": "user", "content": "hi", "name": "alice"},
        {"role": "user", "content": "in side"},
    ]


def test_a_session_file_whose_id_differs_only_in_case_names_the_session_that_is_here(d, tmp_path):
    """The refusal said the file's own id was on this device and to `sessiond rm` it: no such session."""
    c = d.client()
    c.create_session(id="case-here")
    data = json.loads(open(exported(d, "case-here", tmp_path)).read())
    data["session"]["id"] = "CASE-HERE"
    f = tmp_path / "twin.json"
    f.write_text(json.dumps(data))
    res = run_cli(d.home, "import-file", str(f))
    assert res.returncode == 1, res.stderr
    assert "'case-here'" in res.stderr and f"sessiond rm --home {d.home} case-here" in res.stderr, res.stderr
    assert "sessiond rm CASE-HERE" not in res.stderr
    with pytest.raises(ApiError):
        c.get_session("CASE-HERE")


def _round_trip(d, sid: str, tmp_path) -> dict:
    """Export `sid`, delete it, import the file: the session back, with the same messages."""
    c = d.client()
    before = c.messages(sid, all_chats=True)["messages"]
    f = exported(d, sid, tmp_path)
    c.delete_session(sid)
    res = run_cli(d.home, "import-file", f, "--json")
    assert res.returncode == 0, res.stdout
    back = json.loads(res.stdout)["sessions"][0]
    assert back["id"] == sid
    after = c.messages(sid, all_chats=True)["messages"]
    assert [(m["chat"], m["role"], m["content"]) for m in after] == [
        (m["chat"], m["role"], m["content"]) for m in before
    ]
    return back


def test_a_session_past_its_lowered_quota_imports_back_and_keeps_its_quota(d, tmp_path):
    """Its quota was lowered below what it had used (allowed); the import refused its own messages as
    `quota_exceeded`, naming `sessiond set ID` for a session the failed import had deleted."""
    c = d.client()
    sid = c.create_session(id="over-quota")["id"]
    c.append(sid, "user", "one two three", tokens=12)
    c.update_session(sid, policy={"token_quota": 3})
    back = _round_trip(d, sid, tmp_path)
    assert back["tokens_used"] == 12 and back["policy"]["token_quota"] == 3
    with pytest.raises(ApiError) as e:  # the quota holds for what comes next
        c.append(sid, "user", "more")
    assert e.value.code == "quota_exceeded"


def test_a_chat_past_its_lowered_budget_imports_back(d, tmp_path):
    """A chat without automatic compaction whose budget was lowered below its context: the import refused
    its messages as `context_overflow`, naming `sessiond compact` for a session that is not there."""
    c = d.client()
    sid = c.create_session(id="over-budget", policy={"max_context_tokens": 20, "auto_compact": False})["id"]
    for _ in range(3):
        c.append(sid, "user", "x", tokens=5)
    c.update_session(sid, policy={"max_context_tokens": 10})
    _round_trip(d, sid, tmp_path)
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "more", tokens=5)
    assert e.value.code == "context_overflow"


def test_an_expired_session_imports_back_and_is_ended(d, tmp_path):
    """An exported session that had expired: the import refused it as `expired`, saying to `sessiond clone`
    a session the failed import had deleted. It comes back with its history, and ends, as it was."""
    c = d.client()
    sid = c.create_session(id="gone-by")["id"]
    c.append(sid, "user", "before the end")
    c.update_session(sid, expires_in=1)  # once it has its message (made with it, a slow append met the expiry)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", what="the session ended at its expiry")
    _round_trip(d, sid, tmp_path)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", what="the imported session ended")


def test_export_refuses_a_chat_for_a_format_that_holds_every_chat(d, tmp_path):
    """`--chat` picks the chat of an OpenAI export; with json or markdown it was ignored without a word, and
    the whole session came out where one chat was asked for."""
    c = d.client()
    sid = c.create_session()["id"]
    side = c.create_chat(sid, name="side")["id"]
    for fmt in ("json", "markdown"):
        res = run_cli(d.home, "export", sid, "--format", fmt, "--chat", side)
        assert res.returncode == 2 and "--chat" in res.stderr and res.stdout == "", res.stderr
        with pytest.raises(ApiError) as e:
            c.export(sid, fmt, side)
        assert e.value.status == 422 and "openai" in e.value.message
    assert c.export(sid, "openai", side)["messages"] == []


def test_a_paused_session_imports_back_paused(d, tmp_path):
    """A session paused by hand came back `active` from its own export: the file's status was not read."""
    c = d.client()
    sid = c.create_session(id="paused-by-hand")["id"]
    c.append(sid, "user", "wait for me")
    c.pause(sid)
    back = _round_trip(d, sid, tmp_path)
    assert back["status"] == "paused"
    assert c.get_session(sid)["status"] == "paused"
    with pytest.raises(ApiError) as e:  # as paused as it was: it takes no message until resumed
        c.append(sid, "user", "more")
    assert e.value.status == 409 and "resume" in e.value.message
    c.resume(sid)
    c.append(sid, "user", "more")


def test_an_ended_session_imports_back_ended_with_its_final_checkpoint(d, tmp_path):
    """A session ended by hand (not expired) came back `active` from its own export, taking messages again.
    It comes back ended, as `end` leaves one: its chats final, and a final checkpoint of its conversation
    signed by this device."""
    c = d.client()
    sid = c.create_session(id="ended-by-hand")["id"]
    c.append(sid, "user", "the question")
    c.append(sid, "assistant", "the answer")
    c.end(sid)
    back = _round_trip(d, sid, tmp_path)
    assert back["status"] == "ended"
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "more")
    assert e.value.status == 409
    with pytest.raises(ApiError) as e:
        c.create_chat(sid, name="side")
    assert e.value.status == 409
    device = c.status()["device_id"]
    final = wait_for(
        lambda: [p for p in c.checkpoints(sid)["checkpoints"] if p["device"] == device and p["messages"] == 2],
        what="the imported ended session's final checkpoint",
    )
    assert c.verify_proof(sid, final[-1])["ok"]


def test_a_paused_or_ended_session_file_imports_into_a_home_at_its_active_limit(make_daemon, tmp_path):
    """A home at max_active_sessions refused the file of a paused or ended session as one more active
    session ("pause, end or delete one first"), though it comes back paused or ended: neither counts. The
    limit holds when it would become active: resuming the paused one is refused."""
    src = make_daemon().start()
    c = src.client()
    for sid, stop in (("was-paused", c.pause), ("was-ended", c.end)):
        c.create_session(id=sid)
        c.append(sid, "user", "hello")
        stop(sid)
    files = {sid: exported(src, sid, tmp_path) for sid in ("was-paused", "was-ended")}
    full = started_with(make_daemon, max_active_sessions=1)
    h = full.client()
    h.create_session(id="the-active-one")
    for sid, status in (("was-paused", "paused"), ("was-ended", "ended")):
        res = run_cli(full.home, "import-file", files[sid], "--json")
        assert res.returncode == 0, res.stdout
        assert json.loads(res.stdout)["sessions"][0]["status"] == status
    with pytest.raises(ApiError) as e:
        h.resume("was-paused")
    assert e.value.code == "limit_reached"
    c.create_session(id="now-active")
    res = run_cli(full.home, "import-file", exported(src, "now-active", tmp_path), "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "limit_reached", res.stdout


def test_a_compacted_chat_imports_back_compacted_where_it_was(d, tmp_path):
    """The file names each chat's compaction cutoff (`compacted_upto`), but the import left every chat
    uncompacted: the whole history was the active context again, sent to the model on the next question
    and counted against the chat's budget. Each chat comes back compacted at the same message (under its
    new id)."""
    c = d.client()
    sid = c.create_session(id="compacted")["id"]
    side = c.create_chat(sid, name="side")["id"]
    for i in range(6):
        c.append(sid, "user", f"main {i}", tokens=10)
        c.append(sid, "user", f"side {i}", tokens=10, chat=side)
    c.compact(sid, target_tokens=25)
    c.compact(sid, chat=side, target_tokens=45)
    before = {chat: c.context(sid, chat) for chat in ("main", side)}
    back = _round_trip(d, sid, tmp_path)
    assert back["id"] == sid
    contents = {m["id"]: m["content"] for m in c.messages(sid, all_chats=True)["messages"]}
    for chat, was in before.items():
        now = c.context(sid, chat)
        assert (now["active_messages"], now["active_tokens"], now["compacted_messages"]) == (
            was["active_messages"],
            was["active_tokens"],
            was["compacted_messages"],
        ), chat
        assert now["compacted_upto"] is not None and contents[now["compacted_upto"]] == (
            "main 3" if chat == "main" else "side 1"
        )
    data = json.loads(open(exported(d, sid, tmp_path)).read())
    data["chats"][0]["compacted_upto"] = "no-such-message"
    f = tmp_path / "bad-cut.json"
    f.write_text(json.dumps(data))
    res = run_cli(d.home, "import-file", str(f))
    assert res.returncode == 1 and "chats[0].compacted_upto 'no-such-message'" in res.stderr, res.stderr


def test_a_models_answers_import_back_with_their_usage_and_what_they_cost(make_daemon, tmp_path):
    """An answer recorded by `ask` keeps its model, provider, usage and response times, and costs the quota
    its prompt tokens too; the export wrote none of them, so the round trip gave back bare assistant messages:
    the session's tokens used fell by every prompt the model was sent (its quota as good as reset), and
    `sessiond stats` had no answers to time."""
    p, server = serve_threaded(Provider())
    try:
        d = make_daemon()
        os.makedirs(d.home, mode=0o700, exist_ok=True)
        with open(os.path.join(d.home, "config.toml"), "w") as f:
            f.write(f'default_provider = "loop"\n[providers.loop]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n')
        c = d.start().client()
        sid = c.create_session(id="answered", model="echo-1", system_prompt="Be terse.")["id"]
        run_cli(d.home, "ask", sid, "hello there", check=True)
        before = c.get_session(sid)
        [answer] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
        assert answer["usage"]["prompt_tokens"] > 0  # (what makes the tokens used more than the messages')
        stats = c.stats(sid)["per_chat"][0]
        _round_trip(d, sid, tmp_path)
        assert c.get_session(sid)["tokens_used"] == before["tokens_used"]
        [back] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
        for k in ("model", "provider", "usage", "response"):
            assert back[k] == answer[k], k
        assert c.stats(sid)["per_chat"][0]["answers"] == stats["answers"] == 1
        assert c.stats(sid)["per_chat"][0]["avg_answer_seconds"] == stats["avg_answer_seconds"]
    finally:
        server.stop()


def test_a_file_past_the_chat_and_message_limits_is_refused_naming_the_file(make_daemon, tmp_path):
    """A home's max_chats_per_session did not hold for import-file (a file of 3 chats came in where 2 is the
    limit), while its max_messages_per_chat refused the file with an append's words: 'chat main of session
    X holds 0 messages ... Start another chat or clone the session', a session the failed import had
    deleted. Both now refuse the file before anything is written, saying what in the file is past which
    limit."""
    src = make_daemon().start()
    c = src.client()
    c.create_session(id="many-chats")
    for name in ("two", "three"):
        c.create_chat("many-chats", name=name)
    c.create_session(id="long-chat")
    c.append_many("long-chat", [{"role": "user", "content": f"m{i}"} for i in range(5)])
    full = started_with(make_daemon, max_chats_per_session=2, max_messages_per_chat=3)
    for sid, says in (
        ("many-chats", "session 'many-chats' has 3 chats, more than this daemon's max_chats_per_session (2)"),
        (
            "long-chat",
            "session 'long-chat' has 5 messages in chat 'main', more than this daemon's max_messages_per_chat (3)",
        ),
    ):
        res = run_cli(full.home, "import-file", exported(src, sid, tmp_path), "--json")
        err = json.loads(res.stdout)["error"]
        assert res.returncode == 1 and err["code"] == "limit_reached", res.stdout
        assert says in err["message"] and "clone" not in err["message"], err["message"]
        with pytest.raises(ApiError):
            full.client().get_session(sid)


def test_a_session_imports_back_with_its_creation_time(d, tmp_path):
    """Its chats kept their creation times but the session took the import's, so a restored archive listed
    every session as made today, each made after its own chats."""
    c = d.client()
    sid = c.create_session(id="made-before")["id"]
    c.append(sid, "user", "hello")
    before = c.get_session(sid)
    chats = c.list_chats(sid)["chats"]
    _round_trip(d, sid, tmp_path)
    assert c.get_session(sid)["created_at"] == before["created_at"]
    assert [x["created_at"] for x in c.list_chats(sid)["chats"]] == [x["created_at"] for x in chats]


def test_a_fork_past_the_message_limit_is_refused_naming_the_fork_point(make_daemon):
    """A chat holding more messages than max_messages_per_chat (the limit lowered since): a fork of it was
    refused with an append's words about the fork itself, 'chat main of session NEWID holds 0 messages ...
    Start another chat or clone the session', a session the failed fork had just deleted. It names the
    source, the fork point and what to do."""
    d = make_daemon().start()
    c = d.client()
    sid = c.create_session(id="grew-long")["id"]
    ids = c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(5)])["ids"]
    d.stop()
    write_config(d.home, max_messages_per_chat=3)
    c = d.start().client()
    with pytest.raises(ApiError) as e:
        c.fork(sid, ids[-1], new_id="too-long")
    assert e.value.code == "limit_reached"
    assert "'grew-long'" in e.value.message and ids[-1] in e.value.message, e.value.message
    assert "too-long" not in e.value.message and "holds 0" not in e.value.message, e.value.message
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]
    assert c.fork(sid, ids[2], new_id="short-enough")["message_count"] == 3


def test_a_file_of_more_sessions_than_the_active_limit_is_refused_saying_so(make_daemon, tmp_path):
    """A file of 3 conversations into an empty home with max_active_sessions = 2 was refused as 'this daemon
    already has 2 active sessions; pause, end or delete one first', while `sessiond ls` showed none: the 2 were
    the file's own, hidden until the import ends (and then deleted). The refusal says the file holds more
    sessions than the room left."""
    d = started_with(make_daemon, max_active_sessions=2)
    convs = [
        {
            "uuid": f"u{i}",
            "name": f"conversation {i}",
            "chat_messages": [{"uuid": f"m{i}", "sender": "human", "text": "hi", "content": []}],
        }
        for i in range(3)
    ]
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps(convs))
    res = run_cli(d.home, "import-file", str(f), "--json")
    err = json.loads(res.stdout)["error"]
    assert res.returncode == 1 and err["code"] == "limit_reached", res.stdout
    assert "already has 2 active sessions" not in err["message"], err["message"]
    assert "the file holds 3 sessions" in err["message"] and "room for 2" in err["message"], err["message"]
    assert d.client().list_sessions()["sessions"] == []
    f.write_text(json.dumps(convs[:2]))
    run_cli(d.home, "import-file", str(f), check=True)


def _moved(src, dst, sid: str, tmp_path) -> dict:
    """Export `sid` from the daemon `src` and import the file into `dst`: (the file, the session there)."""
    data = json.loads(open(exported(src, sid, tmp_path)).read())
    f = tmp_path / f"{sid}-moved.json"
    f.write_text(json.dumps(data))
    res = run_cli(dst.home, "import-file", str(f), "--json")
    assert res.returncode == 0, res.stdout
    return data


def test_a_fork_and_a_clone_import_into_another_daemon_with_their_provenance(make_daemon, tmp_path):
    """The file says where the session came from (`provenance`: cloned from, forked from which message), but
    the import dropped it: the session came back with none, and its next export said so too."""
    src, dst = make_daemon().start(), make_daemon().start()
    c = src.client()
    c.create_session(id="origin")
    ids = c.append_many("origin", [{"role": "user", "content": f"m{i}"} for i in range(3)])["ids"]
    c.fork("origin", ids[1], new_id="forked")
    c.clone("origin", new_id="cloned")
    for sid in ("forked", "cloned"):
        data = _moved(src, dst, sid, tmp_path)
        assert data["session"]["provenance"] == c.get_session(sid)["provenance"] is not None
        assert dst.client().get_session(sid)["provenance"] == data["session"]["provenance"], sid
        again = json.loads(open(exported(dst, sid, tmp_path)).read())
        assert again["session"]["provenance"] == data["session"]["provenance"], sid


def test_a_session_file_with_a_malformed_provenance_is_refused_naming_it(d, tmp_path):
    c = d.client()
    c.create_session(id="bad-provenance")
    data = json.loads(open(exported(d, "bad-provenance", tmp_path)).read())
    c.delete_session("bad-provenance")
    for bad, says in (
        ("fork", "session.provenance must be an object"),
        ({"kind": "magic", "session": "x"}, "session.provenance.kind"),
        ({"kind": "fork", "session": 7}, "session.provenance.session"),
        ({"kind": "fork", "session": "x", "message": "nope"}, "session.provenance.message"),
        ({"kind": "clone", "session": "x", "extra": 1}, "session.provenance"),
    ):
        data["session"]["provenance"] = bad
        f = tmp_path / "bad-provenance.json"
        f.write_text(json.dumps(data))
        res = run_cli(d.home, "import-file", str(f))
        assert res.returncode == 1 and says in res.stderr, (bad, res.stderr)
    with pytest.raises(ApiError):
        c.get_session("bad-provenance")


def test_messages_import_into_another_daemon_with_their_own_times(make_daemon, tmp_path):
    """The file gives each message's time (`created_at`), but the import gave every message the import's:
    a restored archive's Markdown export dated the whole conversation today, and `sessiond log` did too (a
    fork keeps its messages' times; a file did not)."""
    src, dst = make_daemon().start(), make_daemon().start()
    c = src.client()
    sid = c.create_session(id="dated")["id"]
    side = c.create_chat(sid, name="side")["id"]
    for i in range(3):
        c.append(sid, "user", f"main {i}")
        c.append(sid, "user", f"side {i}", chat=side)
    before = c.messages(sid, all_chats=True)["messages"]
    _moved(src, dst, sid, tmp_path)
    after = dst.client().messages(sid, all_chats=True)["messages"]
    assert [(m["content"], m["created_at"]) for m in after] == [(m["content"], m["created_at"]) for m in before]
    assert dst.client().export(sid, "markdown")["markdown"] == c.export(sid, "markdown")["markdown"]


def test_a_session_files_checkpoints_come_back_as_one_of_the_importers_that_verifies(make_daemon, tmp_path):
    """The file's checkpoints are its source device's proofs, over that device's message ids and signed by
    its key: nothing on another device verifies them (`verify-proof` there says so), and the import is right
    not to list them as the session's. But it dropped them without a trace: the session, proven where it
    came from, had no checkpoint at all on the device it moved to until its next interval. The importer signs
    one of the whole imported history, which verifies there, and lists no proof of the file's."""
    src, dst = make_daemon().start(), make_daemon().start()
    c = src.client()
    sid = c.create_session(id="proven", system_prompt="be brief")["id"]
    c.append_many(
        sid, [{"role": "user", "content": "question", "name": "al"}, {"role": "assistant", "content": "answer"}]
    )
    c.checkpoint(sid)
    data = _moved(src, dst, sid, tmp_path)
    assert len(data["checkpoints"]) == 1
    h = dst.client()
    device = h.status()["device_id"]
    mine = wait_for(
        lambda: [p for p in h.checkpoints(sid)["checkpoints"] if p["messages"] == 2],
        what="the importer's checkpoint of the imported history",
    )
    assert all(p["device"] == device for p in h.checkpoints(sid)["checkpoints"])
    assert mine[-1]["v"] == 2 and h.verify_proof(sid, mine[-1])["ok"]  # (its prompt and names hashed too)
    assert not h.verify_proof(sid, data["checkpoints"][0])["ok"]  # the source's, against its own copy only
    assert c.verify_proof(sid, data["checkpoints"][0])["ok"]


def test_a_chats_compaction_cutoff_at_another_chats_message_is_refused(d, tmp_path):
    """A file whose chat's `compacted_upto` names a message of another chat was imported with that chat
    compacted up to wherever the other chat's message sorts (all of it, here), its context naming the other
    chat's message as its own cutoff: a state `sessiond compact` never makes."""
    c = d.client()
    sid = c.create_session(id="cross-cut")["id"]
    side = c.create_chat(sid, name="side")["id"]
    c.append(sid, "user", "main 0")
    c.append(sid, "user", "side 0", chat=side)
    c.append(sid, "user", "main 1")
    data = json.loads(open(exported(d, sid, tmp_path)).read())
    c.delete_session(sid)
    data["chats"][0]["compacted_upto"] = data["messages"][1]["id"]  # the side chat's message, in main
    f = tmp_path / "cross-cut.json"
    f.write_text(json.dumps(data))
    res = run_cli(d.home, "import-file", str(f))
    assert res.returncode == 1 and "chats[0].compacted_upto" in res.stderr and side in res.stderr, res.stderr
    with pytest.raises(ApiError):
        c.get_session(sid)


def test_an_answer_an_older_sessiond_recorded_with_more_than_1000_tool_calls_imports_back(d, tmp_path):
    """An older sessiond recorded a model's answer of more than 1,000 tool calls (before MAX_TOOL_CALLS capped
    what an app or a model adds), and its export holds them: import-file refused the file ("tool_calls has
    more than 1000 items") where sync reads the same message from another device's log. A file's messages are
    history, read as sync reads them; an append of as many is still refused."""
    from sessiond.api.messages import MAX_TOOL_CALLS

    c = d.client()
    sid = c.create_session(id="many-calls")["id"]
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    c.append(sid, "assistant", "", tool_calls=[{"id": "call_0", **call}])
    calls = [{"id": f"call_{i}", **call} for i in range(MAX_TOOL_CALLS + 1)]
    with pytest.raises(ApiError) as capped:  # what an app adds now stays capped
        c.append(sid, "assistant", "", tool_calls=calls)
    assert capped.value.status == 422
    for fmt in ("json", "openai"):
        data = json.loads(open(exported(d, sid, tmp_path, "--format", fmt)).read())
        [answer] = [m for m in data["messages"] if m.get("tool_calls")]
        answer["tool_calls"] = calls  # as the older sessiond's export holds them
        f = tmp_path / f"older-{fmt}.json"
        f.write_text(json.dumps(data))
        if fmt == "json":
            c.delete_session(sid)
        res = run_cli(d.home, "import-file", str(f), "--json")
        assert res.returncode == 0, res.stderr
        [new] = json.loads(res.stdout)["sessions"] if fmt == "openai" else [{"id": sid}]
        got = [m for m in c.messages(new["id"])["messages"] if m.get("tool_calls")]
        assert len(got) == 1 and got[0]["tool_calls"] == calls, (fmt, len(got))
