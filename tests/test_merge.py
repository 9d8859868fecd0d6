"""Every kind of operation merges the same way everywhere (issue 19, item 5): the same operations
applied in any order, in any batches, give the same database; concurrent creations of one chat id
converge on every device."""

from __future__ import annotations

import json
import random

from conftest import cli_json, rekeys_at_once, run_cli, wait_for
from freshdb import open_fresh
from sessiond.storage.chats import CHAT_SELECT
from sessiond.storage.database import Database
from sessiond.storage.model import Op, RemoteLog
from sessiond.storage.sessions import SESSION_SELECT

SID = "merge-me"


def _ops() -> dict[str, list[Op]]:
    """Three devices' logs of one session, with every kind of operation and the collisions that matter:
    two concurrent creations of chat `dup`, an update of a chat that reaches a device before the
    chat's creation does, concurrent status changes (an end among them), switches, compaction,
    checkpoints."""

    def op(dev, seq, lam, kind, body, t=1000.0):
        return Op(SID, dev, seq, lam, kind, body, t + lam)

    a = [
        op(
            "dev-a",
            1,
            1,
            "session.create",
            {
                "name": "s",
                "created_at": 1000.0,
                "current_chat": "main",
                "chats": [{"id": "main", "name": "main", "created_at": 1000.0}],
            },
        ),
        op(
            "dev-a",
            2,
            2,
            "chat.create",
            {
                "id": "dup",
                "name": "from A",
                "system_prompt": "You are A.",
                "model": "model-a",
                "settings": {"temperature": 0.1},
                "created_at": 1002.0,
                "policy": {"max_context_tokens": 100},
            },
        ),
        op("dev-a", 3, 3, "chat.update", {"chat": "dup", "name": "A renamed"}),
        op("dev-a", 4, 4, "session.update", {"status": "ended"}),
        op("dev-a", 5, 6, "chat.create", {"id": "late", "name": "late", "settings": {}, "created_at": 1006.0}),
        op(
            "dev-a",
            6,
            9,
            "checkpoint.add",
            {
                "number": 1,
                "hash": "00" * 32,
                "tokens": 0,
                "messages": 0,
                "frontier": {"dev-a": 5},
                "created_at": 1009.0,
                "pk": "11" * 33,
                "signature": "22" * 64,
            },
        ),
    ]
    b = [
        op(
            "dev-b",
            1,
            2,
            "chat.create",
            {
                "id": "dup",
                "name": "from B",
                "system_prompt": "You are B.",
                "model": "model-b",
                "settings": {},
                "created_at": 1002.5,
            },
        ),
        op("dev-b", 2, 3, "session.update", {"current_chat": "dup", "settings": {"top_k": 3}}),
        op("dev-b", 3, 5, "session.update", {"status": "paused", "name": "B's name"}),
        op("dev-b", 4, 6, "chat.update", {"chat": "dup", "compacted": [2, "dev-b", 9]}),
        op("dev-b", 5, 7, "session.update", {"status": "active"}),
    ]
    c = [  # C saw A's chat `late`; a device may read C's log before A's
        op("dev-c", 1, 7, "chat.update", {"chat": "late", "system_prompt": "late prompt", "model": "m-late"}),
        op("dev-c", 2, 8, "session.update", {"current_chat": "late"}),
        op("dev-c", 3, 9, "chat.update", {"chat": "dup", "compacted": None}),
    ]
    return {"dev-a": a, "dev-b": b, "dev-c": c}


async def _dump(db: Database) -> dict:
    """The rows that must converge; a session's `last_activity` left out: this device's own, other devices' writes
    counting from their arrival here (storage/applyremote.py _arrived), not from their writers' stamps."""

    def rows(sql):
        return [
            {k: (json.loads(r[k]) if k in ("stamps",) else r[k]) for k in r.keys() if k != "last_activity"}  # noqa: SIM118 (a Row iterates over values)
            for r in sql
        ]

    return {
        "sessions": rows(await db._all(SESSION_SELECT + " ORDER BY s.id")),  # (with their texts: migration 21)
        "chats": rows(await db._all(CHAT_SELECT + " ORDER BY c.session_id, c.id")),
        "checkpoints": rows(await db._all("SELECT * FROM checkpoints ORDER BY session_id, device_id, number")),
        "ops": rows(await db._all("SELECT * FROM ops ORDER BY session_id, device_id, seq")),
        "logs": rows(await db._all("SELECT * FROM logs ORDER BY session_id, device_id")),
    }


async def _apply_in_batches(path: str, batches: list[tuple[str, list[Op]]]) -> dict:
    db = await open_fresh(path)  # (a copy of one migrated database: freshdb.py)
    try:
        for dev, ops in batches:
            await db.apply_remote(SID, {dev: RemoteLog(dev, [], ops, max(o.seq for o in ops))})
        return await _dump(db)
    finally:
        await db.close()


def _interleavings(logs: dict[str, list[Op]], rnd: random.Random) -> list[tuple[str, list[Op]]]:
    """The logs cut into random runs, interleaved at random (each device's runs in its own order), after
    the session's creation (a device applies nothing of a session before it has imported it)."""
    first = ("dev-a", logs["dev-a"][:1])
    rest = {d: list(ops) for d, ops in logs.items()}
    rest["dev-a"] = rest["dev-a"][1:]
    out = [first]
    while any(rest.values()):
        dev = rnd.choice([d for d, ops in rest.items() if ops])
        n = rnd.randint(1, len(rest[dev]))
        out.append((dev, rest[dev][:n]))
        rest[dev] = rest[dev][n:]
    return out


async def test_the_same_operations_in_any_order_give_the_same_database(tmp_path):
    logs = _ops()
    # every log whole, in one batch: operations applied in the global order
    db = await Database.open(str(tmp_path / "ref.db"))
    try:
        await db.apply_remote(SID, {d: RemoteLog(d, [], ops, len(ops)) for d, ops in logs.items()})
        reference = await _dump(db)
    finally:
        await db.close()
    chats = {c["id"]: c for c in reference["chats"]}
    # the later creation of `dup` by (Lamport clock, device id) wins the fields it sets: B's (2, dev-b)
    # is after A's (2, dev-a); A's rename (3) and B's compaction (6) are later still, C's undo (9) last
    assert (chats["dup"]["name"], chats["dup"]["system_prompt"], chats["dup"]["model"]) == (
        "A renamed",
        "You are B.",
        "model-b",
    )
    assert json.loads(chats["dup"]["policy"]) == {} and chats["dup"]["compacted"] is None
    # C's update of chat `late` is kept even where it arrives before the chat's creation
    assert (chats["late"]["system_prompt"], chats["late"]["model"]) == ("late prompt", "m-late")
    session = reference["sessions"][0]
    assert session["status"] == "ended"  # an end is final: a concurrent pause or resume does not undo it
    assert (session["name"], session["current_chat"]) == ("B's name", "late")
    rnd = random.Random(19)
    for i in range(40):
        batches = _interleavings(logs, rnd)
        got = await _apply_in_batches(str(tmp_path / f"t{i}.db"), batches)
        assert got == reference, [(d, [o.seq for o in ops]) for d, ops in batches]


def _quiet(make_daemon, url: str):
    """A daemon that pulls only when asked (`sync`) or after pushing its own change: two of them can make
    concurrent changes for certain, neither seeing the other's first."""
    import os

    d = make_daemon(url)
    os.makedirs(d.home, mode=0o700)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write("sync_interval = 3600\npoll_interval = 3600\n")
    return d.start()


def test_concurrent_creations_of_one_chat_id_converge(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b = _quiet(make_daemon, url), _quiet(make_daemon, url)
    sid = cli_json(a.home, "new", "--name", "shared")["id"]
    code = cli_json(a.home, "share", sid, "--write")["code"]
    run_cli(b.home, "import", input=code, check=True)
    run_cli(b.home, "add", sid, "--role", "user", "B joins", check=True)  # B's push makes it a member
    for d in (b, a):
        cli_json(d.home, "sync", "--wait")
    # each creates chat `dup` before it has seen the other's
    for d, name in ((a, "A"), (b, "B")):
        r = run_cli(
            d.home,
            "chat",
            "new",
            sid,
            "--id",
            "dup",
            "--name",
            f"from {name}",
            "--system",
            f"You are {name}.",
            "--model",
            f"model-{name}",
        )
        assert r.returncode == 0, r.stderr

    def chat(d):
        chats = {c["id"]: c for c in cli_json(d.home, "chat", "ls", sid)["chats"]}
        return {k: chats["dup"][k] for k in ("name", "system_prompt", "model", "settings", "policy", "created_at")}

    def converged():
        for d in (a, b):
            cli_json(d.home, "sync", "--wait")
        return chat(a) == chat(b)

    wait_for(converged, timeout=30, interval=0.2)
    assert chat(a)["name"] in ("from A", "from B")
    assert chat(a)["system_prompt"] == chat(a)["name"].replace("from ", "You are ") + "."


# ---------------------------------------------------------------------------------------------- rekey
import pytest  # noqa: E402

from sessiond.client import ApiError  # noqa: E402

REKEY_STEPS = (
    "rekey:pending",
    "rekey:claimed",
    "rekey:published",
    "rekey:rotated",
    "rekey:switched",
    "rekey:announced",
)


def _messages(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=10_000)["messages"]]


def _key(d, sid):
    import os

    with open(os.path.join(d.home, "keys", "sessions", sid + ".key"), "rb") as f:
        return f.read()


def _shared_pair(make_daemon, store_dir, env_a=None):
    url = "file://" + store_dir
    a, b = make_daemon(url, env=env_a).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="rekeyed")["id"]
    ca.append(sid, "user", "before")
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append(sid, "assistant", "B joins")  # B's push makes it a member (a writer)
    cb.sync(wait=True)
    ca.sync(wait=True)
    wait_for(lambda: "B joins" in _messages(a, sid), timeout=15)
    return a, b, sid


@pytest.mark.parametrize("step", REKEY_STEPS)
def test_a_rekey_killed_at_any_step_finishes_after_a_restart(make_daemon, store_dir, step):
    a, b, sid = _shared_pair(make_daemon, store_dir, env_a={"SESSIOND_CRASH_AT": step})
    old = _key(a, sid)
    r = run_cli(a.home, "rekey", sid)
    assert r.returncode != 0  # the daemon died in the middle
    a.proc.wait(timeout=15)
    a.env.pop("SESSIOND_CRASH_AT")
    a.start()
    # the rekey is finished at start: this device is on a new key, and the other writer follows it
    wait_for(lambda: _key(a, sid) != old, timeout=15)
    a.client().append(sid, "user", "after the rekey")
    wait_for(lambda: "after the rekey" in _messages(b, sid), timeout=20)
    assert _key(b, sid) == _key(a, sid) != old
    b.client().append(sid, "assistant", "B after the rekey")
    wait_for(lambda: "B after the rekey" in _messages(a, sid), timeout=20)
    for d in (a, b):
        assert cli_json(d.home, "verify")["ok"], d.home
        st = d.client().sync(sid, wait=True, timeout=10)
        assert not st["sessions"][sid].get("pull_error"), st


def test_rekey_refuses_an_unknown_device_to_drop(make_daemon, store_dir):
    a, b, sid = _shared_pair(make_daemon, store_dir)
    old = _key(a, sid)
    with pytest.raises(ApiError) as e:
        a.client().rekey(sid, drop=["notadevice"])
    assert e.value.status == 422 and "notadevice" in str(e.value)
    assert _key(a, sid) == old  # nothing changed
    res = a.client().rekey(sid, drop=[b.client().status()["device_id"]])
    assert res["kept"] == [] and res["dropped"] == [b.client().status()["device_id"]]


def test_concurrent_rekeys_answer_a_conflict_or_succeed(make_daemon, store_dir):
    a, b, sid = _shared_pair(make_daemon, store_dir)
    results = rekeys_at_once(sid, {"a": a, "b": b})
    for r in results.values():  # never an internal error: a result, or a clear 409
        assert isinstance(r, dict) or (r.status == 409 and r.code == "conflict"), r
    # and afterwards both devices write and read each other under one key
    a.client().append(sid, "user", "A after")
    b.client().append(sid, "assistant", "B after")

    def both():
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
        return all({"A after", "B after"} <= set(_messages(d, sid)) for d in (a, b))

    wait_for(both, timeout=30, interval=0.2)
    assert _key(a, sid) == _key(b, sid)


def test_ending_an_ended_session_adds_no_checkpoint(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello")
    first = cli_json(daemon.home, "end", sid)
    assert len(first["checkpoints"]) == 1
    again = cli_json(daemon.home, "end", sid)
    assert again["status"] == "ended" and again["checkpoints"] == first["checkpoints"]
    assert len(c.checkpoints(sid)["checkpoints"]) == 1
