"""Checkpoints whose hash covers the whole conversation (docs/FORMATS.md §8, version 2): a proof of v1 hashed
each message's device, seq, chat, role and content only, so two conversations that differed in a tool call's
arguments, a message's name, a tool answer's call id, or the system prompt got the same hash, and a user
relying on the proof to show what was said had no proof of those. A v2 proof (`"v": 2`) hashes them too;
a proof without `v` is v1 and verifies as before; a version this sessiond does not know is refused by name by
verify-proof, and kept, unchecked, by a pull and an import."""

from __future__ import annotations

import json

import pytest

CALL = {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": 1}'}}


def _session(c, *, arguments: str = '{"q": 1}', system_prompt: str = "be brief", name: str = "alice") -> str:
    sid = c.create_session(system_prompt=system_prompt, initial_messages=[{"role": "user", "content": "start"}])["id"]
    c.append(sid, "user", "what is q?", tokens=3, name=name)
    call = {**CALL, "function": {**CALL["function"], "arguments": arguments}}
    c.append(sid, "assistant", "", tokens=2, tool_calls=[call])
    c.append(sid, "tool", "42", tokens=1, tool_call_id="call_1")
    return sid


@pytest.mark.parametrize(
    "change",
    [
        {"arguments": '{"q": 2}'},
        {"system_prompt": "be long"},
        {"name": "bob"},
    ],
    ids=["tool-call-arguments", "system-prompt", "name"],
)
def test_two_sessions_that_differ_in_more_than_text_get_different_hashes(daemon, change):
    c = daemon.client()
    one, two = _session(c), _session(c, **change)
    p1, p2 = c.checkpoint(one), c.checkpoint(two)
    assert (p1["messages"], p1["tokens"]) == (p2["messages"], p2["tokens"])
    assert p1.get("v") == p2.get("v") == 2
    assert p1["hash"] != p2["hash"]
    # each verifies against its own session
    assert c.verify_proof(one, p1)["ok"] and c.verify_proof(two, p2)["ok"]


def test_a_proof_of_an_unknown_version_is_refused_by_name(daemon):
    c = daemon.client()
    sid = _session(c)
    proof = c.checkpoint(sid)
    res = c.verify_proof(sid, {**proof, "v": 3})
    assert not res["ok"]
    assert "version 3" in res["problem"] and "update sessiond" in res["problem"], res
    # a v2 proof whose `v` is taken away no longer verifies (v is signed, and v1 hashes less)
    assert not c.verify_proof(sid, {k: x for k, x in proof.items() if k != "v"})["ok"]


# ---------------------------------------------------------------------------------------------- across devices
TOOL_TURN = [
    {"role": "user", "content": "what is q?", "name": "alice", "tokens": 3},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [CALL],
        "call_fields": {"call_1": {"extra_content": {"google": {"thought_signature": "c2ln", "n": 1.5}}}},
        "tokens": 2,
    },
    {"role": "tool", "content": "42", "tool_call_id": "call_1", "tokens": 1},
]


async def _tool_session(db) -> str:
    sid = (await db.create_session({"name": "tools", "system_prompt": "be brief"}))["id"]
    await db.append_messages(sid, TOOL_TURN)
    return sid


async def _tamper_tool_call(db, sid: str) -> None:
    """The tool call's arguments rewritten in `db` behind sessiond's back (its content, count and tokens kept)."""
    changed = {"tool_calls": [{**CALL, "function": {"name": "look", "arguments": '{"q": 666}'}}]}
    import json

    async with db.c.transaction() as tx:
        await tx.execute(
            "UPDATE messages SET extra=? WHERE session_id=? AND role='assistant'", (json.dumps(changed), sid)
        )


async def test_a_tool_call_changed_in_a_synced_log_fails_the_import(devices):
    """A's log carries a tool call other than the one its checkpoint proved: B's import refuses the session
    (version 1 took it: the hash did not cover tool calls)."""
    from sessiond.sync.share import ImportError_

    a, b = await devices.open()
    await a.start()
    sid = await _tool_session(devices.dba)
    proof = await a.make_checkpoint(sid)
    assert proof["v"] == 2
    await _tamper_tool_call(devices.dba, sid)  # before the log is pushed: it goes out changed
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    with pytest.raises(ImportError_) as e:
        await b.import_code(code, None)
    assert e.value.kind == "checkpoint" and "history was changed" in str(e.value), e.value
    assert await devices.dbb.session_ids() == []  # nothing written


async def test_a_tool_call_changed_after_the_import_fails_verify(devices):
    a, b = await devices.open()
    await a.start()
    sid = await _tool_session(devices.dba)
    proof = await a.make_checkpoint(sid)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    assert (await b.verify_proof(sid, proof))["ok"]
    await _tamper_tool_call(devices.dbb, sid)
    res = await b.verify_proof(sid, proof)
    assert not res["ok"] and "history was changed" in res["problem"], res


async def test_version_1_proofs_still_verify_beside_version_2_ones(devices):
    """A checkpoint made by sessiond before version 2 (no `v`, the v1 rules) verifies here and on an importing
    device, beside this sessiond's version 2 ones; a system prompt changed after a v2 checkpoint leaves it
    holding (it hashes the prompt as its frontier's operations left it) and changes the next one's hash."""
    from sessiond.sync.checkpoint import make_proof

    a, b = await devices.open()
    await a.start()
    db = devices.dba
    sid = await _tool_session(db)
    old = make_proof(
        sid, db.device_id, 1, await db.conversation(sid), await db.devices(sid), 1700000000.5, a.keys.head_key(sid),
        version=1,
    )  # fmt: skip
    assert "v" not in old
    await db.add_checkpoint(sid, old)  # in A's log, as sessiond before version 2 wrote it
    new = await a.make_checkpoint(sid)
    assert new["v"] == 2 and new["number"] == 2 and new["hash"] != old["hash"]
    await db.update_session(sid, {"system_prompt": "be long"})
    await db.append_messages(sid, [{"role": "user", "content": "and now?", "tokens": 1}])
    later = await a.make_checkpoint(sid)
    listed = await db.checkpoints(sid)
    assert [c.get("v") for c in listed] == [None, 2, 2] and listed[0] == old
    for p in listed:
        assert (await a.verify_proof(sid, p))["ok"], p
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)  # checks every checkpoint, of each version
    assert await devices.dbb.checkpoints(sid) == listed
    for p in (old, new, later):
        res = await b.verify_proof(sid, p)
        assert res["ok"] and res["v"] == p.get("v", 1), res


def _signed_as_newer(proof: dict, key) -> dict:
    """`proof` as a newer sessiond's (version 3, with a field this one does not know), signed over all of it."""
    from sessiond.sync import dagcbor

    newer = {k: x for k, x in proof.items() if k != "signature"} | {"v": 3, "salt": "new"}
    return newer | {"signature": key.sign(dagcbor.encode(newer)).signature.hex()}


async def _shared_with_a_newer_proof(devices) -> tuple[str, dict, str]:
    """A (opened) started, a session of its own with a checkpoint of this version and one of version 3 after it,
    shared read-only: (session, the newer proof, the code)."""
    a, db = devices.a, devices.dba
    await a.start()
    sid = await _tool_session(db)
    known = await a.make_checkpoint(sid)
    newer = _signed_as_newer({**known, "number": known["number"] + 1}, a.keys.head_key(sid))
    await db.add_checkpoint(sid, newer)
    return sid, newer, (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]


async def test_a_proof_of_a_newer_version_is_kept_by_an_import_as_by_a_pull(devices):
    """An import checks every checkpoint of the session and refuses it, writing nothing, when one fails. One of a
    version this sessiond does not know (the code of a device with a newer sessiond) refused the whole session,
    while a pull of the same log keeps it and its proof: an older device could not import a newer one's code.
    The import now sets such a proof aside, as a pull does: the session imported, its messages and the proofs
    this sessiond knows checked, the newer one kept whole (listed with its version, verify-proof saying to
    update) and named in the import's answer."""
    a, b = await devices.open()
    sid, newer, code = await _shared_with_a_newer_proof(devices)
    db = devices.dba
    res = await b.import_code(code, None)
    assert res["session"] == sid and res["unchecked_checkpoints"] == [
        {"device": newer["device"], "number": newer["number"], "v": 3}
    ], res
    here, there = await devices.dbb.conversation(sid), await db.conversation(sid)
    assert [(*m[:6], json.loads(m[6] or "null")) for m in here] == [(*m[:6], json.loads(m[6] or "null")) for m in there]
    kept = await devices.dbb.checkpoints(sid)
    assert kept == await db.checkpoints(sid) and kept[-1]["v"] == 3 and kept[-1]["salt"] == "new"
    res = await b.verify_proof(sid, kept[-1])
    assert not res["ok"] and "version 3" in res["problem"] and "update sessiond" in res["problem"], res
    assert (await b.verify_proof(sid, kept[0]))["ok"]


async def test_the_import_command_names_the_checkpoints_it_set_aside(devices, make_daemon):
    """`sessiond import` says which checkpoints it set aside (the answer's `unchecked_checkpoints`) on standard
    error, after the session's id on standard output; with --json, the answer as the API gave it, the list in it
    and nothing more on standard error. Real imports, by daemons of their own, of a code whose session carries a
    checkpoint of a version this sessiond does not know."""
    from conftest import run_cli

    a, _ = await devices.open()
    sid, newer, code = await _shared_with_a_newer_proof(devices)
    db = devices.dba
    store = "file://" + devices.store_path  # (the folder A pushed to: each daemon's own store)
    set_aside = {"device": newer["device"], "number": newer["number"], "v": 3}

    res = run_cli(make_daemon(store).start().home, "import", input=code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{sid}\n", res.stdout
    notes = res.stderr.splitlines()
    assert notes[0] == f"# imported {sid} (read-only)", notes
    assert notes[1:] == [
        f"# not checked: checkpoint(s) {newer['number']} of device {newer['device']} (version 3), of a version this"
        " sessiond does not know (a newer one made them); kept with the session: update sessiond to verify them"
    ], notes

    res = run_cli(make_daemon(store).start().home, "import", "--json", input=code)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    answer = json.loads(res.stdout)
    assert answer["session"] == sid and answer["unchecked_checkpoints"] == [set_aside], answer

    # a session with none set aside: no such line, and no such key
    plain = (await db.create_session({"name": "plain"}))["id"]
    await a.make_checkpoint(plain)
    code = (await a.share(plain, write=False, passphrase=None, expires_in=None))["code"]
    home = make_daemon(store).start().home
    res = run_cli(home, "import", input=code)
    assert res.returncode == 0 and res.stderr.splitlines() == [f"# imported {plain} (read-only)"], res.stderr
    res = run_cli(home, "import", "--json", input=code)  # (again: brought up to date)
    assert res.returncode == 0 and "unchecked_checkpoints" not in json.loads(res.stdout), res.stdout


async def test_a_failing_proof_beside_a_newer_one_still_refuses_the_import(devices):
    """The proofs this sessiond knows are checked as before: one that does not hold refuses the import, writing
    nothing, though a newer one beside it is set aside."""
    from sessiond.sync.share import ImportError_

    a, b = await devices.open()
    await a.start()
    db = devices.dba
    sid = await _tool_session(db)
    known = await a.make_checkpoint(sid)
    await db.add_checkpoint(sid, _signed_as_newer({**known, "number": known["number"] + 1}, a.keys.head_key(sid)))
    forged = {**known, "number": known["number"] + 2, "messages": known["messages"] + 1}  # (its signature fails)
    await db.add_checkpoint(sid, forged)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    with pytest.raises(ImportError_) as e:
        await b.import_code(code, None)
    assert e.value.kind == "checkpoint" and "do not verify" in str(e.value), str(e.value)
    assert await devices.dbb.session_ids() == [] and b.keys.session_key(sid) is None  # nothing written


async def test_a_pulled_proof_of_a_newer_version_is_kept_whole_and_refused_by_name(devices):
    """A pull does not check checkpoints: one of a newer version arrives with the rest of the log, all of it
    applied, and is listed whole (so that a newer sessiond verifies it); verify-proof says to update."""
    a, b = await devices.open()
    await a.start()
    db = devices.dba
    sid = await devices.shared("pulled", write=False)
    proof = await a.make_checkpoint(sid)
    newer = _signed_as_newer(proof, a.keys.head_key(sid))
    await db.add_checkpoint(sid, {**newer, "number": proof["number"] + 1})  # (its signature no longer holds)
    await db.append_messages(sid, TOOL_TURN)
    await a.push(sid)
    await b.pull(sid)
    assert len(await devices.dbb.conversation(sid)) == 1 + len(TOOL_TURN)
    kept = await devices.dbb.checkpoints(sid)
    assert kept == await db.checkpoints(sid) and kept[-1]["v"] == 3 and kept[-1]["salt"] == "new"
    res = await b.verify_proof(sid, kept[-1])
    assert not res["ok"] and "version 3" in res["problem"] and "update sessiond" in res["problem"], res
    assert (await b.verify_proof(sid, kept[0]))["ok"]
