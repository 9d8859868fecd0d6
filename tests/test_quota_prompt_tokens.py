"""A model answer's charge to the session's token quota: its tokens plus the prompt tokens the provider counted
(`usage.prompt_tokens`, storage/model.py charge), counted only as a positive whole number. A pull adds the charge of
the rows it inserted (charge, in Python), or, when some of its rows were here already, counts the session again in
SQL (CHARGE_SUM_SQL), which took any `prompt_tokens` another device wrote (the remote checks do not look at usage):
a string, a fraction, `true`. The same session's quota use, and so its quota level, then depended on which of the two
a pull happened to take: "500" as prompt tokens, nothing at one pull, 500 at the next. And a count past any SQLite
integer (10**30) failed the pull, OverflowError, at every try."""

from __future__ import annotations

import json
import os

import pytest

from sessiond.storage.database import Database
from sessiond.storage.model import PROMPT_TOKENS_MAX, RemoteLog


@pytest.mark.parametrize("prompt", ["500", 12.5, True, [3], -4, 7, 10**30])
async def test_a_recount_charges_what_an_append_or_a_pull_charges(tmp_path, prompt):
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({"policy": {"token_quota": 1000}}))["id"]
        peer = "peer-device"
        extra = json.dumps({"usage": {"prompt_tokens": prompt}})

        def rows(seqs):
            return [(sid, "main", peer, s, 100 + s, "assistant", f"pulled {s}", 1, 1.0, extra) for s in seqs]

        async def used() -> int:
            return (await db.get_session(sid))["tokens_used"]

        await db.apply_remote(sid, {peer: RemoteLog(peer, rows([1]), [], 1)})  # new rows: charge() each
        first = await used()
        await db.apply_remote(sid, {peer: RemoteLog(peer, rows([1, 2]), [], 2)})  # 1 again: counted again in SQL
        want = 2 * first
        assert await used() == want, (prompt, first, await used())
        assert first == 1 + (prompt if type(prompt) is int and 0 < prompt <= PROMPT_TOKENS_MAX else 0)
    finally:
        await db.close()


def test_a_level_of_a_use_below_nothing_is_safe():
    """A session's use below 0 (tokens another device wrote past the remote checks, as an older or hostile sessiond
    might: this device's own database calls): the level of none, not a StopIteration out of the append or pull."""
    from sessiond.storage.quotalevel import warning_level

    assert warning_level(-5, 100) == "safe"
    assert warning_level(95, 100) == "critical"


@pytest.mark.parametrize(
    "extra",
    [
        {"tokens": 100, "usage": {"prompt_tokens": 3}},
        {"tokens": "x", "usage": {"prompt_tokens": 3}},
        {"tokens": None, "usage": {"completion_tokens": 2}},
        {"tokens": 1.5, "usage": {"completion_tokens": 9}},
    ],
)
async def test_a_pulled_rows_extra_does_not_stand_for_its_tokens(tmp_path, extra):
    """A message's tokens are its row's column: another device's extra fields holding a "tokens" of their own (which
    sessiond never writes there; the remote checks do not look) were charged in place of the column by a pull that
    added its new rows' charges (row_charge spread the extra over the column), and by the column in SQL at a
    recount: one session's quota use then depended on which a pull took, 103 or 8 for one message; a string there
    failed every pull of the session (TypeError), a fraction made its use a fraction."""
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({"policy": {"token_quota": 1000}}))["id"]
        peer = "peer-device"

        def rows(seqs):
            return [
                (sid, "main", peer, s, 100 + s, "assistant", f"pulled {s}", 5, 1.0, json.dumps(extra)) for s in seqs
            ]

        async def used() -> int:
            return (await db.get_session(sid))["tokens_used"]

        await db.apply_remote(sid, {peer: RemoteLog(peer, rows([1]), [], 1)})  # new rows: charge() each
        first = await used()
        usage = extra["usage"]
        billed = usage.get("completion_tokens", 0)
        assert first == max(5, billed) + usage.get("prompt_tokens", 0), first
        assert type(first) is int
        await db.apply_remote(sid, {peer: RemoteLog(peer, rows([1, 2]), [], 2)})  # 1 again: counted again in SQL
        assert await used() == 2 * first
    finally:
        await db.close()


async def test_a_pulled_rows_extra_does_not_stand_for_its_own_fields(tmp_path):
    """Another device's extra fields holding a message's own fields (its content, role, chat, tokens, id: sessiond
    keeps none there) overrode the row's as the message was read (GET .../messages showed the extra's content
    under the row's id, another id) and as it was copied by a fork (the fork held the extra's content, and a
    string for tokens failed it, TypeError). The row's own fields stand; the extra's others are kept."""
    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.create_session({}))["id"]
        peer = "peer-device"
        forged = {"content": "forged", "role": "user", "tokens": "x", "id": "other-1", "seq": 99, "metadata": {"a": 1}}
        row = (sid, "main", peer, 1, 101, "assistant", "said", 5, 1.0, json.dumps(forged))
        await db.apply_remote(sid, {peer: RemoteLog(peer, [row], [], 1)})
        [m] = await db.list_messages(sid)
        assert (m["id"], m["role"], m["content"], m["tokens"], m["seq"]) == (f"{peer}-1", "assistant", "said", 5, 1), m
        assert m["metadata"] == {"a": 1}
        assert (await db.get_message(sid, m["id"]))["content"] == "said"
        fork = await db.fork(sid, m["id"])
        [c] = await db.list_messages(fork["id"])
        assert (c["role"], c["content"], c["tokens"], c["metadata"]) == ("assistant", "said", 5, {"a": 1}), c
    finally:
        await db.close()
