"""A checkpoint's `tokens` and a session's `tokens_used` are two counts, as the README says: a proof's is
the sum of the token counts of the messages it covers (what anyone holding them recomputes when checking
it), while the session's, which its quota, its statistics and its checkpoint interval count, adds a model's
answers' prompt tokens (the context sent with each question). (The README said nothing of it: a checkpoint
after an answer looked short of the session's count.)"""

from __future__ import annotations

import pytest

from conftest import started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
    server.stop()


def test_a_proof_counts_message_tokens_and_the_session_prompt_tokens_too(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", checkpoint_interval=1_000_000)["id"]
    answer = c.complete(sid, "one two three")
    prompt = answer["usage"]["prompt_tokens"]
    assert prompt > 0
    messages = c.messages(sid)["messages"]
    held = sum(m["tokens"] for m in messages)
    proof = c.checkpoint(sid)
    assert proof["tokens"] == held
    used = c.get_session(sid)["tokens_used"]
    assert used == held + prompt
    assert c.quota(sid)["tokens_used"] == used
    assert c.stats(session=sid)["tokens"] == used


def test_the_checkpoint_interval_counts_prompt_tokens_too(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "short", tokens=1)
    answer = c.complete(sid, "again")
    interval = c.get_session(sid)["tokens_used"] + 1  # one more token than it holds, its prompt tokens counted
    assert interval > sum(m["tokens"] for m in c.messages(sid)["messages"]) + 1  # (the messages alone: far off)
    c.update_session(sid, checkpoint_interval=interval)
    before = len(c.checkpoints(sid)["checkpoints"])
    c.append(sid, "user", "past it", tokens=2)
    wait_for(lambda: len(c.checkpoints(sid)["checkpoints"]) == before + 1, timeout=30, what="the interval's checkpoint")
    assert answer["usage"]["prompt_tokens"] > 0


def test_a_user_recomputes_a_live_sessions_proofs_as_the_formats_document_says(daemon):
    """docs/FORMATS.md §8, followed from what the CLI prints: every chat's messages (`log --all --json`),
    compacted ones too, in their listed order, hashed as [device, seq, chat id, role, content, fields], fields
    the message's name, tool_call_id, tool_calls and call_fields it has; the session's setting (`show --json`'s
    system prompt and initial messages, `chat ls --json`'s chats' prompts) ahead of them. Each proof
    `checkpoints --json` lists is recomputed, and its signature checked, with nothing of sessiond's but its
    DAG-CBOR encoder. (Version 1 left the tool calls, names and prompts out: a proof did not change with them.)"""
    import blake3
    from nacl.signing import VerifyKey

    from conftest import cli_json
    from sessiond.sync import dagcbor

    h = daemon.home
    sid = cli_json(
        h, "new", "--model", "echo-1", "--checkpoint-interval", "5", "--max-context-tokens", "60",
        "--system", "answer in one word", "--initial", '[{"role": "user", "content": "be kind", "name": "host"}]',
    )["id"]  # fmt: skip
    cli_json(h, "chat", "new", sid, "--id", "side", "--name", "aside", "--system", "the side chat's prompt")
    for i in range(6):
        cli_json(h, "add", sid, "--role", "user", "--tokens", "4", f"question {i}", *(["--chat", "side"] * (i % 2)))
    cli_json(h, "add", sid, "--role", "user", "--name", "alice", "what is q?")
    cli_json(
        h, "add", sid, "--role", "assistant", "--tool-call-with-id", "call_7", "look", '{"q": 1}',
        "--call-fields", "call_7", '{"extra_content": {"google": {"thought_signature": "sig"}}}',
    )  # fmt: skip
    cli_json(h, "add", sid, "--role", "tool", "--tool-call-id", "call_7", "--name", "look", "42")
    cli_json(h, "ask", sid, "one more")
    cli_json(h, "compact", sid, "--target-tokens", "0")
    cli_json(h, "checkpoint", sid)
    messages = cli_json(h, "log", sid, "--all", "--json")["messages"]
    assert [(m["lamport"], m["device"], m["seq"]) for m in messages] == sorted(
        (m["lamport"], m["device"], m["seq"]) for m in messages
    )
    assert any(m.get("tool_calls") for m in messages) and any(m.get("call_fields") for m in messages)
    shown = cli_json(h, "show", sid)
    chats = cli_json(h, "chat", "ls", sid)["chats"]
    setting = {
        "system_prompt": shown["system_prompt"],
        "initial_messages": shown["initial_messages"],
        "chats": {c["id"]: c.get("system_prompt") for c in chats},
    }
    assert setting["chats"] == {"main": None, "side": "the side chat's prompt"}
    setting_hash = blake3.blake3(dagcbor.encode(setting)).digest()
    proofs = cli_json(h, "checkpoints", sid)["checkpoints"]
    assert len(proofs) >= 3 and all(p["v"] == 2 for p in proofs)
    for proof in proofs:
        chain, n, tokens = b"\x00" * 32, 0, 0
        for m in messages:
            if m["seq"] > proof["frontier"].get(m["device"], 0):
                continue
            fields = {k: m[k] for k in ("name", "tool_call_id", "tool_calls", "call_fields") if k in m}
            item = dagcbor.encode([m["device"], m["seq"], m["chat"], m["role"], m["content"], fields])
            chain, n, tokens = blake3.blake3(chain + item).digest(), n + 1, tokens + (m.get("tokens") or 0)
        whole = blake3.blake3(setting_hash + chain).digest()
        assert (whole.hex(), n, tokens) == (proof["hash"], proof["messages"], proof["tokens"]), proof
        signed = dagcbor.encode({k: v for k, v in proof.items() if k != "signature"})
        VerifyKey(bytes.fromhex(proof["pk"])[1:]).verify(signed, bytes.fromhex(proof["signature"]))


def test_show_and_stats_say_the_session_count_is_tokens_used(daemon):
    """`show` said "messages: 2 (N tokens)" and `stats` "2 messages, N tokens", N the session's tokens used,
    its model's prompt tokens included: far more than the messages `log` lists hold, so a user adding them up
    found the numbers did not agree. Both now say "tokens used"; the messages' own sum is what a checkpoint
    counts."""
    from conftest import cli_json, run_cli

    h = daemon.home
    sid = cli_json(h, "new", "--model", "echo-1")["id"]
    assert run_cli(h, "ask", sid, "one two three").returncode == 0
    used = cli_json(h, "show", sid)["tokens_used"]
    held = sum(m["tokens"] for m in cli_json(h, "log", sid)["messages"])
    assert used > held
    show = run_cli(h, "show", sid).stdout
    assert f"messages:      2 ({used} tokens used" in show, show
    stats = run_cli(h, "stats", sid).stdout
    assert f"2 messages, {used} tokens used;" in stats, stats


def test_a_checkpoint_asked_again_with_nothing_new_says_the_one_made_stands(daemon):
    """`sessiond checkpoint` twice with nothing written between: the daemon makes no second proof of the same
    conversation and answers the first; the CLI printed it as if just made. It says that one stands."""
    from conftest import cli_json, run_cli

    h = daemon.home
    sid = cli_json(h, "new", "--system", "s")["id"]
    cli_json(h, "add", sid, "--role", "user", "hello")
    made = run_cli(h, "checkpoint", sid, check=True).stdout
    assert made.startswith("checkpoint #1 ") and "stands" not in made, made
    again = run_cli(h, "checkpoint", sid, check=True).stdout
    assert "no new checkpoint" in again and "#1" in again and "nothing changed" in again, again
    assert cli_json(h, "checkpoint", sid)["number"] == 1  # --json: the proof, as before
    cli_json(h, "add", sid, "--role", "user", "more")
    assert run_cli(h, "checkpoint", sid, check=True).stdout.startswith("checkpoint #2 ")


def test_a_checkpoint_made_on_a_device_holding_another_s_of_the_same_conversation_is_said_made(tmp_path):
    """`sessiond checkpoint` told a proof it made from the one it held already by number and hash alone; the
    number is each device's own, and the hash the conversation's: on B, holding A's checkpoint #1 of the same
    conversation (pulled), B's own first checkpoint, #1 with that hash, was said 'no new checkpoint: nothing
    changed since this one, which stands', though it was just made."""
    from conftest import cli_json, follower_pair, run_cli

    store = tmp_path / "store"
    store.mkdir()
    a, b, sid = follower_pair(f"file://{store}", tmp_path)
    try:
        mine = cli_json(a.home, "checkpoint", sid)
        assert cli_json(a.home, "sync", sid, "--wait")["complete"]
        assert cli_json(b.home, "sync", sid, "--wait")["complete"]
        assert [p["device"] for p in cli_json(b.home, "checkpoints", sid)["checkpoints"]] == [mine["device"]]
        said = run_cli(b.home, "checkpoint", sid, check=True).stdout
        theirs = cli_json(b.home, "checkpoints", sid)["checkpoints"]
        assert len(theirs) == 2, theirs  # B's own was made
        assert "no new checkpoint" not in said and said.startswith("checkpoint #"), (said, theirs)
    finally:
        a.stop()
        b.stop()
