"""The claim the log design rests on (storage/apply.py, issue 14 "Habits"): applying the same operations
in any order gives the same database.

Hypothesis writes the logs of two or three devices working on one session: messages, chat creations,
session updates (fields, pause/resume/end, the current chat), chat updates (compaction and its undo,
renames), checkpoints, with the devices now and then catching up with each other (their Lamport
clocks and what they know of each other's chats). Every device's log is then delivered to two fresh
databases in two different orders, in batches of varying size, through Database.apply_remote, as
pulls deliver them. The only order kept is each device's own (a pull reads a log from its start, in
seq order); across devices anything goes, since a follower reads the members' heads one after the
other while they move. The two databases must then hold the same user-visible state.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from freshdb import SHM, fresh_copy
from sessiond.storage.database import Database
from sessiond.storage.model import Op, RemoteLog

SID = "01converge0000000000000000"
DEVICES = ["a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3c3"]
T0 = 1_700_000_000.0


class _Device:
    def __init__(self, name: str):
        self.name = name
        self.seq = 0
        self.lamport = 0
        self.chats = {"main"}  # the chats this device knows of
        self.own: set[str] = set()  # the chats it created
        self.checkpoints = 0
        self.log: list[Op] = []

    def op(self, kind: str, body: dict, t: float) -> Op:
        self.seq += 1
        self.lamport += 1
        op = Op(SID, self.name, self.seq, self.lamport, kind, body, t)
        self.log.append(op)
        return op


@st.composite
def histories(draw, collide: bool = False, cross_updates: bool = False):
    """The devices' logs. With `collide`, devices may create a chat of an id another device created
    without knowing of it (two chats of one id, with different names and settings); without, every
    chat id is created once. With `cross_updates`, a device may change (compact, rename) a chat that
    another device created; without, only its own chats and the session's first chat."""
    n = draw(st.integers(2, 3))
    devs = [_Device(DEVICES[i]) for i in range(n)]
    everyone: list[Op] = []
    created: set[str] = {"main"}
    first = devs[0].op(
        "session.create",
        {
            "name": "s",
            "created_at": T0,
            "current_chat": "main",
            "settings": {},
            "tags": [],
            "chats": [
                {"id": "main", "name": "main", "system_prompt": None, "model": None, "settings": {}, "created_at": T0}
            ],
        },
        T0,
    )
    everyone.append(first)
    for d in devs[1:]:  # the others import the session
        d.lamport = first.lamport
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.sampled_from(
                    [
                        "message",
                        "message",
                        "chat",
                        "chat",
                        "chat_update",
                        "chat_update",
                        "session_update",
                        "status",
                        "checkpoint",
                        "catch_up",
                        "catch_up",
                    ]
                ),
                st.integers(0, 1 << 16),
            ),
            min_size=1,
            max_size=30,
        )
    )
    for i, (who, action, x) in enumerate(steps):
        d = devs[who]
        t = T0 + 1 + i
        known = sorted(d.chats)
        if action == "catch_up" or (action == "chat_update" and cross_updates and x % 2):
            # the device pulls everyone's logs so far (often just before changing a chat: that is
            # how it comes to change another device's chat)
            d.lamport = max([d.lamport] + [o.lamport for o in everyone])
            d.chats |= created
            known = sorted(d.chats)
        if action == "catch_up":
            continue
        if action == "message":
            body = {
                "chat": known[x % len(known)],
                "role": ["user", "assistant", "system"][x % 3],
                "content": f"m{i} from {d.name[:2]}",
                "tokens": x % 7 or None,
            }
            op = d.op("message.add", body, t)
        elif action == "chat":
            if collide:
                cid = ["c1", "c2"][x % 2]
                if cid in d.chats:
                    continue  # a device never creates a chat it knows exists (the API refuses it)
            else:
                cid = f"{d.name[:2]}-{d.seq + 1}"
            op = d.op(
                "chat.create",
                {
                    "id": cid,
                    "name": f"{cid} by {d.name[:2]}",
                    "system_prompt": None,
                    "model": ["m1", "m2", None][x % 3],
                    "settings": {"temperature": x % 5},
                    "created_at": t,
                },
                t,
            )
            d.chats.add(cid)
            d.own.add(cid)
            created.add(cid)
        elif action == "chat_update":
            if cross_updates:  # mostly a chat of another device, when it knows of one
                theirs = sorted(d.chats - d.own - {"main"})
                pool = theirs if theirs and (x >> 1) % 4 else known
            else:
                pool = sorted(c for c in d.chats if c == "main" or c in d.own)
            chat = pool[(x >> 3) % len(pool)]
            msgs = [o for o in everyone + d.log if o.kind == "message.add"]
            choice = (x >> 6) % 3
            if choice == 0 and msgs:  # compaction: a cutoff at some message
                m = msgs[(x >> 8) % len(msgs)]
                body = {"chat": chat, "compacted": [m.lamport, m.device_id, m.seq]}
            elif choice == 1:  # undo compaction
                body = {"chat": chat, "compacted": None}
            else:
                body = {"chat": chat, "name": f"renamed {x % 11}", "settings": {"top_k": x % 9}}
            op = d.op("chat.update", body, t)
        elif action == "session_update":
            fields = [
                {"name": f"name {x % 13}"},
                {"settings": {"temperature": x % 3}},
                {"tags": [f"t{x % 4}"]},
                {"metadata": {"k": x % 6}},
                {"current_chat": known[x % len(known)]},
                {"policy": {"token_quota": 1000 + x % 5}},
                {"name": f"n{x % 3}", "tags": []},
            ]
            op = d.op("session.update", fields[x % len(fields)], t)
        elif action == "status":
            op = d.op("session.update", {"status": ["paused", "active", "ended"][x % 3]}, t)
        else:  # checkpoint
            d.checkpoints += 1
            op = d.op(
                "checkpoint.add",
                {
                    "number": d.checkpoints,
                    "hash": f"{x:064x}",
                    "tokens": x % 100,
                    "messages": x % 10,
                    "frontier": {d.name: d.seq},
                    "created_at": t,
                    "pk": "ed" + f"{x:064x}",
                    "signature": f"{x:0128x}",
                },
                t,
            )
        everyone.append(op)
    return [d.log for d in devs]


def _remote(log: list[Op]) -> RemoteLog:
    """One device's operations as a pull hands them to apply_remote: messages as rows, the rest as Ops."""
    out = RemoteLog(log[0].device_id, [], [], log[-1].seq)
    for o in log:
        if o.kind == "message.add":
            b = o.body
            out.messages.append(
                (
                    SID,
                    b["chat"],
                    o.device_id,
                    o.seq,
                    o.lamport,
                    b["role"],
                    b["content"],
                    b.get("tokens"),
                    o.created_at,
                    None,
                )
            )
        else:
            out.ops.append(o)
    return out


def _schedule(
    logs: list[list[Op]], rnd: random.Random, by_device: list[int] | None = None
) -> list[dict[str, list[Op]]]:
    """An order of delivery: batches (one apply_remote each) of the next few operations of one or
    more devices, each device's in its own order. The session's creation comes first (the import).
    With `by_device`, the devices' logs one after another in that order (in batches of 1-3); else
    interleaved at random."""
    rest = [list(lg) for lg in logs]
    batches: list[dict[str, list[Op]]] = [{logs[0][0].device_id: [rest[0].pop(0)]}]
    while any(rest):
        batch: dict[str, list[Op]] = {}
        if by_device is not None:
            pick = [next(i for i in by_device if rest[i])]
        else:
            pick = rnd.sample(range(len(rest)), rnd.randint(1, len(rest)))
        for i in pick:
            k = rnd.randint(1, 3)
            if rest[i]:
                batch[rest[i][0].device_id] = rest[i][:k]
                del rest[i][:k]
        if batch:
            batches.append(batch)
    return batches


def _two_orders(logs: list[list[Op]], seed: int, interleave: bool) -> tuple[list, list]:
    """The devices' logs one after another, first to last; and either last to first or interleaved."""
    rnd = random.Random(seed)
    n = len(logs)
    one = _schedule(logs, rnd, list(range(n)))
    two = _schedule(logs, rnd, None if interleave else list(reversed(range(n))))
    return one, two


async def _dump(db: Database) -> dict:
    """Every user-visible row (the per-field clocks, `stamps`, are bookkeeping and left out, and so is a session's
    `last_activity`: this device's own, other devices' writes counting from their arrival here, not from their
    writers' stamps (storage/applyremote.py _arrived); an idle expiry's end is an operation, the same everywhere)."""

    async def q(sql: str) -> list:
        return await db.reader.execute_fetchall(sql)

    out = {}
    for table, order in (
        ("sessions", "id"),
        ("chats", "session_id, id"),
        ("messages", "session_id, lamport, device_id, seq"),
        ("checkpoints", "device_id, number"),
        ("ops", "device_id, seq"),
        ("logs", "device_id"),
    ):
        names = [r[1] for r in await q(f"PRAGMA table_info({table})")]
        keep = ", ".join(c for c in names if c not in ("stamps", "last_activity"))
        out[table] = [
            tuple(bytes(v).hex() if isinstance(v, (bytes, memoryview)) else v for v in r)
            for r in await q(f"SELECT {keep} FROM {table} ORDER BY {order}")
        ]
    out["context"] = [json.dumps(await db.context(SID, c["id"]), sort_keys=True) for c in await db.list_chats(SID)]
    return out


async def _apply(path: str, batches: list[dict[str, list[Op]]]) -> dict:
    db = await Database.open(path)
    try:
        for batch in batches:
            await db.apply_remote(SID, {dev: _remote(ops) for dev, ops in batch.items()})
        return await _dump(db)
    finally:
        await db.close()


def _converges(logs: list[list[Op]], one: list[dict[str, list[Op]]], two: list[dict[str, list[Op]]]) -> None:
    # two fresh databases an example, in memory where the system has a tmpfs (freshdb.py)
    with tempfile.TemporaryDirectory(prefix="sd-conv-", dir=SHM) as tmp:
        fresh_copy(f"{tmp}/one.db")
        fresh_copy(f"{tmp}/two.db")
        a = asyncio.run(_apply(f"{tmp}/one.db", one))
        b = asyncio.run(_apply(f"{tmp}/two.db", two))
        assert a == b, (one, two)


# make test: 50 orders of each (~9 s of CPU less than 100, all in the test's own process: the suite's quick check
# that each property holds); make test-long: CONVERGE_EXAMPLES=300, the search for an order that breaks one
_EXAMPLES = int(os.environ.get("CONVERGE_EXAMPLES", 50))
_SETTINGS = settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the known failures: found, not shrunk (each shrink step opens two databases; the smallest cases are
# the two plain tests below)
_FOUND = settings(_SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)
_SEEDS = st.integers(0, 1 << 32)
_HOW = st.booleans()


@_SETTINGS
@given(logs=histories(), seed=_SEEDS, interleave=_HOW)
def test_any_order_gives_the_same_database(logs, seed, interleave):
    """Messages, chat creations (of distinct ids), session updates and status changes, each device's
    changes to its own chats, and checkpoints: any delivery order, the same database."""
    _converges(logs, *_two_orders(logs, seed, interleave))


# Two kinds of operations that did not converge before (storage/apply.py apply_op), each with a hypothesis
# test and its smallest case: a chat.create of an id another device also created (the first to arrive used
# to win), and a chat.update of another device's chat delivered before that chat.create (the update used to
# find no row and be lost).


@_FOUND
@given(logs=histories(collide=True), seed=_SEEDS, interleave=_HOW)
def test_any_order_gives_the_same_database_with_colliding_chat_ids(logs, seed, interleave):
    _converges(logs, *_two_orders(logs, seed, interleave))


@_FOUND
@given(logs=histories(cross_updates=True), seed=_SEEDS, interleave=_HOW)
def test_any_order_gives_the_same_database_with_changes_to_other_devices_chats(logs, seed, interleave):
    _converges(logs, *_two_orders(logs, seed, interleave))


def _two_devices() -> tuple[_Device, _Device, Op]:
    a, b = _Device(DEVICES[0]), _Device(DEVICES[1])
    create = a.op(
        "session.create",
        {
            "name": "s",
            "created_at": T0,
            "current_chat": "main",
            "chats": [{"id": "main", "name": "main", "settings": {}, "created_at": T0}],
        },
        T0,
    )
    b.lamport = create.lamport
    return a, b, create


def _both_orders(a: _Device, b: _Device, create: Op) -> None:
    """a's log after its first operation, and b's, delivered a first and b first."""
    first = {a.name: [create]}
    rest_a, rest_b = {a.name: a.log[1:]}, {b.name: b.log}
    _converges([a.log, b.log], [first, rest_a, rest_b], [first, rest_b, rest_a])


def test_colliding_chat_creations_converge():
    a, b, create = _two_devices()
    a.op("chat.create", {"id": "c1", "name": "from a", "model": "m1", "settings": {}, "created_at": T0 + 1}, T0 + 1)
    b.op("chat.create", {"id": "c1", "name": "from b", "model": "m2", "settings": {}, "created_at": T0 + 2}, T0 + 2)
    _both_orders(a, b, create)


def test_a_change_to_another_devices_chat_arriving_first_converges():
    a, b, create = _two_devices()
    made = a.op("chat.create", {"id": "c1", "name": "c1", "settings": {}, "created_at": T0 + 1}, T0 + 1)
    b.lamport = made.lamport  # b pulled it
    b.op("chat.update", {"chat": "c1", "name": "renamed by b"}, T0 + 2)
    _both_orders(a, b, create)
