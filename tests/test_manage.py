"""Session management as LLM SDKs know it, through the CLI and the API of a real daemon (issue 5)."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import DaemonProc, cli_json, run_cli, wait_for
from sessiond.client import ApiError


def sh(home, *args, **kw):
    return cli_json(home, *args, **kw)


def test_tokens_quota_and_levels(daemon):
    h = daemon.home
    sid = sh(h, "new", "--token-quota", "100")["id"]
    m = sh(h, "add", sid, "--role", "user", "abcdefgh")  # no count given: the estimator's 8/4 = 2
    assert m["tokens"] == 2
    assert sh(h, "add", sid, "--role", "assistant", "--tokens", "68", "x")["tokens"] == 68  # the app's count wins
    q = sh(h, "quota", sid)
    assert (q["tokens_used"], q["remaining"], q["level"]) == (70, 30, "warning")
    sh(h, "add", sid, "--role", "user", "--tokens", "20", "y")
    assert sh(h, "quota", sid)["level"] == "critical"
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "11", "too much")
    # only ways out that work: compaction frees context, not quota (tokens_used never goes down)
    assert (
        res.returncode == 1
        and "compact" not in res.stderr
        and "clone" in res.stderr
        and "--token-quota" in res.stderr
        and f"sessiond fork --home {h} {sid} --at MESSAGE_ID" in res.stderr  # the command as the CLI takes it
    ), res.stderr
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "11", "too much", "--json")
    assert json.loads(res.stdout)["error"]["code"] == "quota_exceeded"
    assert sh(h, "quota", sid)["tokens_used"] == 90  # the refused append changed nothing
    sh(h, "set", sid, "--token-quota", "200")
    sh(h, "add", sid, "--role", "user", "--tokens", "11", "fits now")
    sh(h, "add", sid, "--role", "user", "--tokens", "99", "to the brim")
    assert sh(h, "quota", sid)["level"] == "exhausted"
    sh(h, "set", sid, "--token-quota", "150")  # lowered below what was used (so can a model's answer pass it)
    q = sh(h, "quota", sid)
    assert (q["tokens_used"], q["remaining"], q["level"]) == (200, 0, "exhausted")  # not -50 left
    assert "200 of 150 tokens used (50 over): exhausted" in run_cli(h, "quota", sid).stdout


def test_an_append_refused_by_a_quota_lowered_below_its_use_says_the_quota_is_exhausted(daemon):
    """A quota lowered below the tokens already used refuses every append, one of 0 tokens too: the refusal
    says the quota is exhausted (used X of Y), not that 'these messages need 0 more'."""
    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    c.append(sid, "user", "x", tokens=80)
    c.update_session(sid, token_quota=50)
    for tokens in (0, 5):
        with pytest.raises(ApiError) as info:
            c.append(sid, "user", "y", tokens=tokens)
        err = info.value
        assert err.status == 429 and err.code == "quota_exceeded", err
        assert "need 0" not in err.message and "exhausted" in err.message, err.message
        assert "used 80 of its 50 tokens (30 over)" in err.message, err.message
    c.update_session(sid, token_quota=90)
    with pytest.raises(ApiError) as info:
        c.append(sid, "user", "y", tokens=20)  # room left, not enough: how many they need
    assert "used 80 of its 90 tokens; this message needs 20 more" in info.value.message, info.value.message
    with pytest.raises(ApiError) as info:  # several: what they need together
        c.append_many(
            sid, [{"role": "user", "content": "y", "tokens": 6}, {"role": "user", "content": "z", "tokens": 6}]
        )
    assert "used 80 of its 90 tokens; these 2 messages need 12 more" in info.value.message, info.value.message


def test_compaction_keeps_history(daemon):
    h = daemon.home
    sid = sh(h, "new", "--max-context-tokens", "100")["id"]  # compacts past 80, down to 40
    sh(h, "add", sid, "--role", "system", "--tokens", "10", "rules")
    ids = [sh(h, "add", sid, "--role", "user", "--tokens", "15", f"m{i}")["id"] for i in range(6)]
    ctx = sh(h, "context", sid)
    assert ctx["active_tokens"] <= 80 and ctx["compacted_messages"] > 0
    assert len(sh(h, "log", sid)["messages"]) == 7  # the history keeps everything
    c = daemon.client()
    active = c.messages(sid)["messages"]
    assert active[0]["content"] == "rules"
    un = sh(h, "uncompact", sid)
    assert un["compacted_messages"] == 0 and un["active_tokens"] == 100
    co = sh(h, "compact", sid, "--target-tokens", "30")
    assert co["active_tokens"] <= 30 and co["compacted_upto"] in ids
    # compaction off: refused with context_overflow, nothing written
    sid2 = sh(h, "new", "--max-context-tokens", "50", "--no-auto-compact")["id"]
    sh(h, "add", sid2, "--role", "user", "--tokens", "30", "a")
    res = run_cli(h, "add", sid2, "--role", "user", "--tokens", "30", "b", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "context_overflow"
    assert f"sessiond compact --home {h} {sid2}" in json.loads(res.stdout)["error"]["message"]  # a command that runs
    assert len(sh(h, "log", sid2)["messages"]) == 1
    # a chat with its own budget
    chat = sh(h, "chat", "new", sid2, "--name", "roomy", "--max-context-tokens", "1000")["id"]
    assert daemon.client().list_chats(sid2)["chats"][1]["policy"] == {"max_context_tokens": 1000}
    c.append(sid2, "user", "b", tokens=30, chat=chat)


def test_a_message_past_the_whole_budget_with_compaction_off_is_not_told_to_compact(daemon):
    """A message larger than the chat's whole budget cannot fit however the chat is compacted: with automatic
    compaction off it is refused as it is with it on (these messages alone exceed the budget: raise it,
    or send less), not told to compact a chat that holds nothing (was: "holds 0 tokens of context; 125 more
    would pass its budget ... Compact it", advice that cannot help)."""
    c = daemon.client()
    sid = c.create_session(max_context_tokens=60, auto_compact=False)["id"]
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "big", tokens=125)
    said = e.value.message
    assert e.value.code == "context_overflow" and "alone (125 tokens) exceed" in said, said
    assert "sessiond compact" not in said and "--max-context-tokens N" in said, said
    assert c.messages(sid)["messages"] == []


def test_compacting_a_chat_with_no_budget_asks_for_the_target_in_the_callers_words(daemon):
    """The API's refusal names its field, the CLI's its option (was: the API's named --target-tokens)."""
    c = daemon.client()
    sid = c.create_session()["id"]
    with pytest.raises(ApiError) as e:
        c.compact(sid)
    assert e.value.status == 422 and "target_tokens" in e.value.message, e.value.message
    assert "--" not in e.value.message, e.value.message
    res = run_cli(daemon.home, "compact", sid)
    assert res.returncode == 2 and "--target-tokens" in res.stderr and "target_tokens" not in res.stderr, res.stderr
    assert sh(daemon.home, "compact", sid, "--target-tokens", "10")["compacted_messages"] == 0


def test_clone_and_fork(daemon):
    h = daemon.home
    c = daemon.client()
    sid = c.create_session(
        name="orig",
        system_prompt="sp",
        model="m",
        settings={"top_k": 5},
        tags=["t"],
        initial_messages=[{"role": "user", "content": "hi"}],
        token_quota=500,
    )["id"]
    c.create_chat(sid, name="second", system_prompt="other")
    ids = [c.append(sid, "user", f"m{i}")["id"] for i in range(5)]
    cl = sh(h, "clone", sid, "--name", "copy")
    assert cl["name"] == "copy" and cl["system_prompt"] == "sp" and cl["settings"] == {"top_k": 5}
    assert cl["provenance"] == {"kind": "clone", "session": sid} and cl["policy"]["token_quota"] == 500
    assert cl["initial_messages"][0]["content"] == "hi"
    assert c.get_session(cl["id"])["message_count"] == 0 and len(c.list_chats(cl["id"])["chats"]) == 2
    fk = sh(h, "fork", sid, "--at", ids[2], "--id", "forked")
    assert fk["id"] == "forked" and fk["provenance"] == {
        "kind": "fork",
        "session": sid,
        "message": ids[2],
        "copied_tokens": 3,  # m0, m1, m2: a token each (stats count them once, in the source)
    }
    assert [m["content"] for m in c.messages("forked")["messages"]] == ["m0", "m1", "m2"]
    assert "provenance" in run_cli(h, "show", "forked", "--json").stdout
    res = run_cli(h, "fork", sid, "--at", "nope-1")
    assert res.returncode == 1 and "no message" in res.stderr
    # a mistyped session id is named as such, not as a message or chat it "has no" of
    for argv in (["fork", sid + "x", "--at", ids[0]], ["chat", "switch", sid + "x", "main"]):
        res = run_cli(h, *argv)
        assert res.returncode == 1 and f"no session '{sid}x'" in res.stderr, res.stderr


def test_checkpoints_end_and_proofs(daemon, tmp_path):
    h = daemon.home
    sid = sh(h, "new", "--checkpoint-interval", "50")["id"]
    for i in range(6):
        sh(h, "add", sid, "--role", "user", "--tokens", "20", f"message {i}")
        if i in (2, 4):  # at 60 and 100 tokens; each waited for, so no later append folds into it
            wait_for(lambda: len(sh(h, "checkpoints", sid)["checkpoints"]) == i // 2)
    cp = sh(h, "checkpoint", sid)
    assert cp["number"] == 3 and cp["messages"] == 6 and cp["tokens"] == 120 and len(cp["hash"]) == 64
    end = sh(h, "end", sid)
    assert end["status"] == "ended" and end["tokens_used"] == 120
    assert end["snapshot"]["revision"] >= 1 and end["snapshot"]["manifest_ipfs_cid"].startswith("b")
    assert end["checkpoints"][-1] == cp  # nothing since: no second, identical one
    assert len(end["checkpoints"]) == 3
    proof_file = tmp_path / "end.json"
    proof_file.write_text(json.dumps(end))
    res = run_cli(h, "verify-proof", sid, str(proof_file))
    assert res.returncode == 0 and res.stdout.count("ok      checkpoint") == 3, res.stdout
    bad = dict(end["checkpoints"][0])
    bad["tokens"] += 1
    proof_file.write_text(json.dumps(bad))
    res = run_cli(h, "verify-proof", sid, str(proof_file))
    assert res.returncode == 1 and "signature" in res.stdout
    other = sh(h, "new")["id"]
    sh(h, "add", other, "--role", "user", "different history")
    proof_file.write_text(json.dumps({**end["checkpoints"][0], "session": other}))
    assert run_cli(h, "verify-proof", other, str(proof_file)).returncode == 1


def test_limits(home):
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(
            "max_active_sessions = 3\nmax_active_sessions_per_user = 1\nmax_chats_per_session = 2\n"
            "max_messages_per_chat = 3\n"
        )
    d = DaemonProc(home).start()
    try:
        c = d.client()
        s = c.create_session(user="u1")["id"]
        with pytest.raises(ApiError) as e:
            c.create_session(user="u1")
        assert e.value.status == 429 and e.value.code == "limit_reached" and "per_user" in e.value.message
        c.create_session(user="u2")
        c.create_session()
        with pytest.raises(ApiError) as e:
            c.create_session()
        assert "max_active_sessions" in e.value.message
        c.create_chat(s, name="two")
        with pytest.raises(ApiError) as e:
            c.create_chat(s, name="three")
        assert "max_chats_per_session" in e.value.message
        c.append_many(s, [{"role": "user", "content": "x"}] * 3)
        with pytest.raises(ApiError) as e:
            c.append(s, "user", "fourth")
        assert "max_messages_per_chat" in e.value.message
    finally:
        d.stop()


def test_expiry_idle_timeout_and_cleanup(home):
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("cleanup_interval = 0.3\n")
    d = DaemonProc(home).start()
    try:
        h = home
        a = sh(h, "new", "--expires-in", "1s")["id"]
        b = sh(h, "new", "--idle-timeout", "1s")["id"]
        keep = sh(h, "new")["id"]
        wait_for(lambda: sh(h, "show", a)["status"] == "ended" and sh(h, "show", b)["status"] == "ended", timeout=10)
        assert sh(h, "show", keep)["status"] == "active"
        sh(h, "add", keep, "--role", "user", "x")
        sh(h, "sync", "--wait")
        key = os.path.join(h, "keys", "sessions", keep + ".key")
        assert os.path.exists(key)
        dry = sh(h, "cleanup", "--older-than", "0s", "--dry-run")
        assert {s["id"] for s in dry["sessions"]} == {a, b, keep} and not dry["deleted"]
        assert sh(h, "stats")["sessions"] == 3  # (the dry run found all three older than now: no wait)
        res = sh(h, "cleanup", "--older-than", "0s", "--yes")
        assert res["deleted"] and sh(h, "stats")["sessions"] == 0
        assert not os.path.exists(key)  # crypto-shredded: the store's copy is unreadable now
    finally:
        d.stop()


def test_statistics(daemon):
    c = daemon.client()
    s1 = c.create_session(user="ann")["id"]
    c.append(s1, "user", "q", tokens=3)
    time.sleep(0.05)  # the scenario, not a wait: the answer comes 50 ms after the question
    c.append(s1, "assistant", "a", tokens=5)
    c.create_session(user="bob")
    st = daemon.client().stats(s1)
    assert st["messages"] == 2 and st["tokens"] == 8 and st["chats"] == 1
    assert st["per_chat"][0]["avg_response_seconds"] >= 0.04
    assert c.stats(user="ann")["tokens"] == 8 and c.stats(user="bob")["messages"] == 0
    all_ = sh(daemon.home, "stats")
    assert all_["sessions"] == 2 and {u["user"] for u in all_["users"]} == {"ann", "bob"}
    res = run_cli(daemon.home, "stats", s1, "--user", "bob")  # it answered for s1, --user ignored
    assert res.returncode == 2 and "not both" in res.stderr
    with pytest.raises(ApiError) as e:  # both filters, on a session of no user: said so, not "None's"
        c.stats(c.create_session()["id"], user="ann")
    assert e.value.status == 404 and "has no user" in e.value.message and "None" not in e.value.message


CHATGPT = [
    {
        "title": "Branchy",
        "id": "conv1",
        "current_node": "n4",
        "mapping": {
            "root": {"id": "root", "message": None, "parent": None, "children": ["n1"]},
            "n1": {
                "id": "n1",
                "parent": "root",
                "children": ["n2"],
                "message": {"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["Hi"]}},
            },
            "n2": {
                "id": "n2",
                "parent": "n1",
                "children": ["n3", "b3"],
                "message": {"author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["Hello!"]}},
            },
            "n3": {
                "id": "n3",
                "parent": "n2",
                "children": ["n4"],
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["Tell me a joke"]},
                },
            },
            "n4": {
                "id": "n4",
                "parent": "n3",
                "children": [],
                "message": {"author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["A joke."]}},
            },
            "b3": {
                "id": "b3",
                "parent": "n2",
                "children": [],
                "message": {
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["Tell me a poem"]},
                },
            },
        },
    }
]


def test_plain_formats(daemon, tmp_path):
    h = daemon.home
    c = daemon.client()
    sid = c.create_session(system_prompt="Be kind.", model="gpt-x", settings={"temperature": 0.5})["id"]
    c.append(sid, "user", "hello")
    c.append(sid, "assistant", "hi!")
    oa = sh(h, "export", sid, "--format", "openai")
    assert oa["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi!"},
    ]
    assert oa["model"] == "gpt-x" and oa["temperature"] == 0.5
    f = tmp_path / "oa.json"
    f.write_text(json.dumps(oa))
    new = sh(h, "import-file", str(f), "--format", "openai")["sessions"][0]
    assert new["system_prompt"] == "Be kind." and new["message_count"] == 2 and new["model"] == "gpt-x"
    full = tmp_path / "full.json"
    run_cli(h, "export", sid, "--format", "json", "-o", str(full), check=True)
    data = json.loads(full.read_text())
    data["session"]["id"] = "copy-of-it"
    full.write_text(json.dumps(data))
    again = sh(h, "import-file", str(full), "--format", "json")["sessions"][0]
    assert again["id"] == "copy-of-it" and again["message_count"] == 2 and again["settings"] == {"temperature": 0.5}
    g = tmp_path / "conversations.json"
    g.write_text(json.dumps(CHATGPT))
    made = sh(h, "import-file", str(g), "--format", "chatgpt")["sessions"]
    main, branch = made
    assert main["name"] == "Branchy"
    assert [m["content"] for m in c.messages(main["id"])["messages"]] == ["Hi", "Hello!", "Tell me a joke", "A joke."]
    assert [m["content"] for m in c.messages(branch["id"])["messages"]] == ["Hi", "Hello!", "Tell me a poem"]
    assert branch["provenance"]["kind"] == "fork" and branch["provenance"]["session"] == main["id"]
    before = c.stats()["sessions"]
    for bad, fmt, expect in (
        ("[1, 2]", "openai", "messages[0]"),
        ('{"messages": []}', "openai", "non-empty"),
        ('[{"role": "user", "content": [{"type": "image_url"}]}]', "openai", "image_url"),
        ('{"format": "nope"}', "json", "not a sessiond session file"),
        ('[{"mapping": {}, "current_node": "x"}]', "chatgpt", "current_node"),
        ('[{"current_node": "a", "mapping": {"a": {"parent": "a"}}}]', "chatgpt", "cycle"),
        ("not json", "openai", "not JSON"),
    ):
        f.write_text(bad)
        res = run_cli(h, "import-file", str(f), "--format", fmt)
        assert res.returncode != 0 and expect in res.stderr, (bad, res.stderr)
    assert c.stats()["sessions"] == before  # nothing imported


def test_everything_travels_by_share_code(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(token_quota=1000, max_context_tokens=100, checkpoint_interval=40)["id"]
    for i in range(6):
        ca.append(sid, "user", f"m{i}", tokens=20)
        if i % 2:  # 40, 80, 120 tokens: a mark passed. Its checkpoint is made after the answer, of what is
            # there then: waited for, so that the next append does not fold into it (no identical second one)
            wait_for(lambda: len(ca.checkpoints(sid)["checkpoints"]) == (i + 1) // 2)
    cb.import_code(ca.share(sid, write=True)["code"])
    assert cb.get_session(sid)["policy"] == ca.get_session(sid)["policy"]
    assert cb.quota(sid) == ca.quota(sid)
    assert cb.context(sid) == ca.context(sid)
    assert cb.checkpoints(sid) == ca.checkpoints(sid)
    for cp in ca.checkpoints(sid)["checkpoints"]:
        assert cb.verify_proof(sid, cp)["ok"]
    b.restart()
    cb = b.client()
    assert cb.context(sid)["compacted_messages"] > 0 and len(cb.checkpoints(sid)["checkpoints"]) == 3


def _session_file(**session) -> dict:
    return {
        "format": "sessiond.session.v1",
        "session": {"id": "from-file", **session},
        "chats": [{"id": "main", "name": "main"}],
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(
    "data,fmt,expect",
    [
        (_session_file(expires_at="tomorrow"), "json", "expires_at"),
        (_session_file(tags="abc"), "json", "tags"),
        (_session_file(settings={"temperature": "hot"}), "json", "settings.temperature"),
        (_session_file(policy={"token_quota": -5}), "json", "token_quota"),
        (_session_file(metadata={"n": 1 << 64}), "json", "metadata"),
        (_session_file(name="\ud800"), "json", "name"),
        (_session_file(id="../../etc"), "json", "session id"),
        ({**_session_file(), "chats": [{"id": "../../etc"}], "messages": []}, "json", "chat id"),
        ({**_session_file(), "chats": [{"id": "main", "settings": {"top_p": 7}}]}, "json", "settings.top_p"),
        (
            {**_session_file(), "messages": [{"role": "user", "content": "x", "tokens": 1e30}]},
            "json",
            "messages[0].tokens",
        ),
        (
            {**_session_file(), "messages": [{"role": "user", "content": "x", "metadata": {"n": -(1 << 70)}}]},
            "json",
            "messages[0].metadata",
        ),
        ({**_session_file(), "session": {"id": "x", "current_chat": "other"}}, "json", "current_chat"),
        ({"messages": [{"role": "user", "content": "x", "tokens": 1e30}]}, "openai", "messages[0].tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "model": 5}, "openai", "model"),
        ([{**CHATGPT[0], "id": 1 << 80}], "chatgpt", "conversation"),
        ([{**CHATGPT[0], "title": 5}], "chatgpt", "title"),
        ([{"current_node": ["n"], "mapping": {}}], "chatgpt", "current_node"),
        ([{"current_node": "a", "mapping": {"a": {"parent": ["b"]}}}], "chatgpt", "parent"),
        (
            [{"current_node": "a", "mapping": {"a": {"message": {"author": "user", "content": {"parts": ["x"]}}}}}],
            "chatgpt",
            "author",
        ),
        (
            [
                {
                    "current_node": "a",
                    "mapping": {"a": {"message": {"author": {"role": "user"}, "content": {"parts": "x"}}}},
                }
            ],
            "chatgpt",
            "parts",
        ),
        ([{"current_node": "a", "mapping": {"a": {"children": 5, "message": None}}}], "chatgpt", "children"),
        ([5], "chatgpt", "conversation 0"),
    ],
)
def test_import_file_is_validated_like_the_api(daemon, tmp_path, data, fmt, expect):
    """Every importer goes through the API's checks: a bad file is a 422 naming the place, and imports nothing."""
    h = daemon.home
    c = daemon.client()
    before = c.stats()["sessions"]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(data))
    res = run_cli(h, "import-file", str(f), "--format", fmt)
    assert res.returncode == 1 and expect in res.stderr and "Traceback" not in res.stderr, res.stderr
    with pytest.raises(ApiError) as e:
        c.import_file(data, fmt)
    assert e.value.status == 422 and expect in e.value.message, e.value.message
    assert c.stats()["sessions"] == before


def test_session_file_round_trip_keeps_message_metadata(daemon, tmp_path):
    c = daemon.client()
    sid = c.create_session(expires_in=3600, tags=["a"])["id"]
    c.append(sid, "user", "hello", metadata={"trace": [1, 2]})
    data = c.export(sid, "json")
    data["session"]["id"] = "round-trip"
    s = c.import_file(data, "json")["sessions"][0]
    assert s["tags"] == ["a"] and s["expires_at"] == data["session"]["expires_at"]
    assert c.messages("round-trip")["messages"][0]["metadata"] == {"trace": [1, 2]}


def test_session_file_of_a_session_here_says_how_to_import_it(daemon, tmp_path):
    """`export -o F` then `import-file F` on the same device: the error says what to do from the CLI
    (it said "choose another id or omit it", which import-file has no option for)."""
    h = daemon.home
    sid = sh(h, "new", "--name", "kept")["id"]
    sh(h, "add", sid, "--role", "user", "x")
    f = str(tmp_path / "s.json")
    run_cli(h, "export", sid, "-o", f, check=True)
    res = run_cli(h, "import-file", f)
    assert res.returncode == 1 and f"sessiond rm --home {h} {sid}" in res.stderr and '"id"' in res.stderr, res.stderr
    assert [s["id"] for s in sh(h, "ls")["sessions"]] == [sid]  # nothing imported
    run_cli(h, "rm", sid, check=True)
    assert sh(h, "import-file", f)["sessions"][0]["id"] == sid  # as the message says: restored


def test_verify_proof_needs_proofs(daemon, tmp_path):
    h = daemon.home
    sid = sh(h, "new")["id"]
    sh(h, "add", sid, "--role", "user", "x")
    f = tmp_path / "p.json"
    for bad, expect in (
        ("[]", "no checkpoint proofs"),
        ('{"checkpoints": []}', "no checkpoint proofs"),
        ('{"checkpoints": 5}', "checkpoints"),
        ("5", "proof"),
        ("[1]", "proof"),
    ):
        f.write_text(bad)
        res = run_cli(h, "verify-proof", sid, str(f))
        assert res.returncode != 0 and expect in res.stderr and "Traceback" not in res.stderr, (bad, res.stderr)
    with pytest.raises(ApiError) as e:
        daemon.client().verify_proof(sid, 5)
    assert e.value.status == 422


def test_a_session_poisoned_before_validation_can_be_fixed(home):
    """A session stored by an older sessiond with an integer DAG-CBOR cannot hold: the daemon makes its
    unpushed operations pushable again, and `set --metadata` replaces the value."""
    import asyncio

    from sessiond.storage.database import Database

    os.makedirs(home, mode=0o700)
    d = DaemonProc(home).start()
    sid = sh(home, "new", "--name", "ok")["id"]
    d.stop()

    async def poison():
        db = await Database.open(os.path.join(home, "sessions.db"))
        try:
            bad = (
                await db.create_session(
                    {
                        "name": "poisoned",
                        "metadata": {"n": 1 << 64, "ok": 1},
                        "settings": {"temperature": 0.5},
                        "initial_messages": [{"role": "user", "content": "hi", "tokens": 1 << 70}],
                    }
                )
            )["id"]
            await db.append_messages(
                bad, [{"role": "user", "content": "x", "tokens": 1, "metadata": {"big": -(1 << 65)}}]
            )
            return bad
        finally:
            await db.close()

    bad = asyncio.run(poison())
    d.start()
    try:
        res = run_cli(home, "sync", "--wait", "--timeout", "20")
        assert res.returncode == 0, res.stdout + res.stderr
        assert sh(home, "show", bad)["initial_messages"][0]["tokens"] == str(1 << 70)  # (beside the row: migration 21)
        sh(home, "set", bad, "--metadata", '{"n": 1}')
        assert sh(home, "show", bad)["metadata"] == {"n": 1}
        res = run_cli(home, "sync", "--wait", "--timeout", "20")
        assert res.returncode == 0, res.stdout + res.stderr
        assert sh(home, "verify")["ok"]
        assert sh(home, "show", sid)["name"] == "ok"
    finally:
        d.stop()


def test_set_one_setting_keeps_the_others(daemon):
    h = daemon.home
    sid = sh(h, "new", "--temperature", "0.7")["id"]
    sh(h, "set", sid, "--top-p", "0.5")
    assert sh(h, "show", sid)["settings"] == {"temperature": 0.7, "top_p": 0.5}
