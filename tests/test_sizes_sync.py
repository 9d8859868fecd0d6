"""What a session holds syncs, whatever its size, or is refused up front: every value an app or a model can
put into a session is either pushed to the store (each object at most 1 MiB) and read back by the other
device as it was, or refused before anything is stored. Real daemons on one folder store: A writes and
shares read-write, B imports and follows."""

from __future__ import annotations

import json

import pytest

import test_model
from conftest import relay_served, run_cli
from sessiond.client import ApiError
from test_expiry_on_time import _cpu_seconds
from test_tool_calls_streamed import App, tc
from waiting import wait_for

provider, setup = test_model.provider, test_model.setup


def synced_to(a, b, sid: str) -> None:
    """A's session pushed, and B holding exactly what A holds (its messages, as each device's API gives them)."""
    ca, cb = a.client(), b.client()
    assert ca.sync(sid, wait=True, timeout=60)["complete"]

    def same() -> bool:
        cb.sync(sid, wait=True, timeout=30)
        return cb.messages(sid, limit=100_000)["messages"] == ca.messages(sid, limit=100_000)["messages"]

    try:
        wait_for(same, timeout=60)
    except AssertionError:
        raise AssertionError(f"B does not hold A's session: {cb.sync(sid)['sessions'][sid]}") from None


def test_a_model_s_answer_of_more_calls_than_a_message_holds_syncs(setup, provider, tmp_path):
    """A model answering with more tool calls than one message holds (1,000, api/messages.MAX_TOOL_CALLS):
    each call was checked alone, so all 1,001 were recorded in one message, which every other device's pull
    refuses as an append of 1,001 calls is refused (daemon/remote_checks.py): the session stopped syncing to
    them for good. Now the answer keeps the first 1,000 calls and drops the rest, saying so, as it drops a
    malformed call."""
    make, p, _ = setup
    url = f"file://{tmp_path}/store"
    a, b = make(url), make(url)
    n = 1001
    p.faults.script = [(tc(i, "{}", id=f"call_{i}", name="f"), None) for i in range(n)] + [({}, "tool_calls")]
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    App(a, sid).ended()
    (answer,) = [m for m in ca.messages(sid)["messages"] if m["role"] == "assistant"]
    assert len(answer["tool_calls"]) == 1000
    synced_to(a, b, sid)


MIB = 1 << 20


def test_session_metadata_and_preferences_past_1_mib_are_refused_up_front(make_daemon, tmp_path):
    """A session's metadata and preferences lived in its row, which every write to the session rewrote: 20 MB
    of metadata was taken (and synced), and then each append took ~90 ms instead of ~1 (100 MB: ~400 ms, a
    PATCH 4 s), the daemon answering nothing meanwhile (kept beside the row since schema 21; every change of one
    is still an operation carrying it whole to every device). Now each is at most 1 MiB as JSON (UTF-8): more is
    refused (422 `invalid`, the field, the limit and its size named) by create, PATCH and import-file alike,
    changing nothing; a document belongs in a message."""
    d = make_daemon(f"file://{tmp_path}/store").start()
    c = d.client()
    big = {"doc": "é" * (MIB // 2)}  # 2 bytes a character in UTF-8: 1 MiB and 10 bytes as JSON
    for field in ("metadata", "preferences"):
        with pytest.raises(ApiError) as err:
            c.create_session(name="big", **{field: big})
        e = err.value
        assert (e.status, e.code) == (422, "invalid"), e
        assert field in e.message and "1 MiB" in e.message and f"{MIB + 10:,}" in e.message, e.message
        assert e.details == {"field": field, "limit": MIB, "size": MIB + 10}
    assert c.list_sessions()["sessions"] == []
    sid = c.create_session(name="small", metadata={"a": 1})["id"]
    with pytest.raises(ApiError) as err:
        c.update_session(sid, metadata=big)
    assert err.value.code == "invalid" and "metadata" in err.value.message
    assert c.get_session(sid)["metadata"] == {"a": 1}
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"format": "sessiond.session.v1", "session": {"name": "f", "metadata": big}}))
    res = run_cli(d.home, "import-file", str(path), "--json")
    assert res.returncode != 0, res.stdout
    said = json.loads(res.stdout)["error"]
    assert said["code"] == "invalid" and "metadata" in said["message"] and "1 MiB" in said["message"], said
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]


def test_metadata_of_1_mib_syncs(make_daemon, tmp_path):
    url = f"file://{tmp_path}/store"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    meta = {"doc": "m" * (MIB - 10)}  # {"doc":"..."}: 1 MiB exactly
    sid = ca.create_session(name="full", metadata=meta, preferences=meta)["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    got = cb.get_session(sid)
    assert got["metadata"] == meta and got["preferences"] == meta


async def test_an_older_version_s_larger_metadata_still_reads(devices):
    """A session an older sessiond made with more metadata than the API now takes syncs as before: the limit
    is on what this device is given, never on what another device's log holds."""
    a, _ = await devices.open()
    await a.start()
    big = {"doc": "x" * (3 * MIB)}
    sid = (await devices.dba.create_session({"name": "old", "metadata": big}))["id"]
    code = (await devices.a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await devices.b.import_code(code, None)
    assert (await devices.dbb.get_session(sid))["metadata"] == big


def test_a_session_of_many_chats_with_long_prompts_imports_in_one_pass(make_daemon, tmp_path):
    """A session made with its chats (a session file, a clone, a fork) is one session.create carrying every
    chat: applying it looked up each chat's early updates in the session's operations, and every such look
    reads the whole of that operation (SQLite reads a large row of the `ops` table whole), then rewrote the
    session's row once per chat (its system prompt with it). 400 chats of 100,000-character prompts under a
    4 MiB system prompt took ~25 s to import from the file and longer again on the device importing the share
    code, the daemon answering nothing meanwhile. Now one look for all the chats, the session's row written
    once: about a second each. Measured as each daemon's CPU time, not the wall clock: on a loaded machine
    (two daemons and pytest -n 2 on 2 cores) the import of the share code took 10.7 s of the clock."""
    url = f"file://{tmp_path}/store"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    chats = [{"id": "main"}] + [
        {"id": f"c{i}", "name": f"chat {i}", "system_prompt": "q" * 100_000} for i in range(400)
    ]
    data = {
        "format": "sessiond.session.v1",
        "session": {"name": "wide", "system_prompt": "s" * (4 * MIB)},
        "chats": chats,
    }
    t0 = _cpu_seconds(a.proc.pid)
    (made,) = ca.import_file(data, "json")["sessions"]
    took_a = _cpu_seconds(a.proc.pid) - t0
    sid = made["id"]
    code = ca.share(sid, write=True)["code"]
    t0 = _cpu_seconds(b.proc.pid)
    cb.import_code(code)
    took_b = _cpu_seconds(b.proc.pid) - t0
    assert cb.list_chats(sid) == ca.list_chats(sid)
    assert took_a < 8 and took_b < 8, (took_a, took_b)


def test_a_message_past_the_content_limit_is_refused_naming_its_size_the_limit_and_what_to_do(daemon, tmp_path):
    """A pasted document over 8,388,608 characters (a 20 MiB one) was refused as "content is longer than 8388608
    characters": neither how long it was nor what to do. Now the size, the limit and the way on (several
    messages), through the API and `sessiond add --json` alike; nothing stored."""
    c = daemon.client()
    sid = c.create_session(name="paste")["id"]
    n = (8 << 20) + 5
    with pytest.raises(ApiError) as err:
        c.append(sid, "user", "z" * n)
    e = err.value
    assert (e.status, e.code) == (422, "invalid"), e
    assert "8,388,613 characters" in e.message and "8,388,608" in e.message and "split" in e.message, e.message
    path = tmp_path / "doc.txt"
    path.write_text("z" * n)
    with open(path) as f:
        res = run_cli(daemon.home, "add", sid, "-", "--role", "user", "--json", input=f.read())
    assert res.returncode != 0
    said = json.loads(res.stdout)["error"]
    assert "8,388,613 characters" in said["message"] and "split" in said["message"], said
    assert c.messages(sid)["messages"] == []


def test_a_session_at_the_api_s_limits_syncs_both_ways_through_a_relay(make_daemon, tmp_path):
    """Everything at its largest the API takes, through `sessiond serve` (which refuses any object over 1 MiB):
    a message of 8,388,608 characters, a tool call's arguments of megabytes with its provider fields at 64 KiB,
    1 MiB of metadata and of preferences, a long prompt, many chats of long names. A pushes it, B imports it
    whole, and B's later append reaches A: no object too large, no pull that cannot read."""
    with relay_served(str(tmp_path / "relay"), "--open-registration", "--quota", "1G") as info:
        a, b = make_daemon(info["url"]).start(), make_daemon(info["url"]).start()
        ca, cb = a.client(), b.client()
        meta = {"doc": "m" * (MIB - 10)}
        sid = ca.create_session(name="n" * 1000, system_prompt="s" * MIB, metadata=meta, preferences=meta)["id"]
        for i in range(100):
            ca.create_chat(sid, id=f"c{i}", name=f"{i:03d}" + "c" * 997)
        ca.append(sid, "user", "u" * (8 << 20))
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "a" * (3 * MIB)}}
        signed = {"call_1": {"extra_content": {"google": {"thought_signature": "t" * 65_000}}}}
        ca.append(sid, "assistant", "", tool_calls=[call], call_fields=signed)
        cb.import_code(ca.share(sid, write=True)["code"])
        got, want = cb.export(sid), ca.export(sid)
        for e in (got, want):
            e["session"].pop("access")
            # (each device's own: another device's writes count as activity from their arrival here, h-clock31)
            e["session"].pop("last_activity")
        assert got == want
        cb.append(sid, "user", "from b")
        wait_for(lambda: ca.messages(sid, last=True, limit=1)["messages"][0]["content"] == "from b", timeout=30)


def test_tags_past_1_mib_are_refused_up_front(daemon):
    """A session's tags had no bound on their number (each at most 100 characters): 256 MiB of them were taken,
    in the session's row as metadata is (above). Now they are held to metadata's 1 MiB as JSON."""
    c = daemon.client()
    tags = [f"{i:06d}" + "t" * 94 for i in range(11_000)]  # 100 characters each: 1.1 MB as JSON
    with pytest.raises(ApiError) as err:
        c.create_session(name="tagged", tags=tags)
    e = err.value
    assert e.code == "invalid" and "tags" in e.message and "1 MiB" in e.message, e.message
    assert e.details["field"] == "tags" and e.details["limit"] == MIB
    assert c.list_sessions()["sessions"] == []
    sid = c.create_session(name="tagged", tags=tags[:10_000])["id"]  # 1,040,001 bytes as JSON
    with pytest.raises(ApiError):
        c.update_session(sid, tags=tags)
    assert len(c.get_session(sid)["tags"]) == 10_000
