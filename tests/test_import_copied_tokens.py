"""`import-file` of a fork exported by 0.36.0. A fork says how many tokens of history it copied (its provenance's
`copied_tokens`), which the statistics of several sessions subtract so that the source's history counts once
(storage/stats.py). 0.36.0 counted a copied answer its tokens and its prompt's, not the completion tokens billed past
its own (several answers asked, OpenAI's `n`, one recorded), which its quota counts since 0.37.0 (migration 33):
migration 34 recounted such forks in homes, but a 0.36.0 export file brought its old count in, kept as the file said
it, and `stats` counted those tokens twice. The import recounts it from the fork's own copy of the history, the
file's first messages: a count that is 0.36.0's of them, and not the quota's, is made the quota's."""

from __future__ import annotations

import copy

from sessiond.daemon import formats

QUESTION = {"id": "dev0-1", "chat": "main", "role": "user", "content": "which?", "tokens": 5}
# an answer of three asked: its own tokens 9, the completion tokens billed 27
ANSWER = {
    "id": "dev0-2",
    "chat": "main",
    "role": "assistant",
    "content": "this",
    "tokens": 9,
    "usage": {"prompt_tokens": 5, "completion_tokens": 27},
}
LATER = {"id": "dev0-3", "chat": "main", "role": "user", "content": "and then?", "tokens": 4}
THEN, NOW = 5 + 9 + 5, 5 + 27 + 5  # the copy as 0.36.0 counted it, as the quota does


def _file(sid: str, provenance: dict | None, messages: list[dict]) -> dict:
    session = {"id": sid, "name": sid, "created_at": 1_700_000_000.0}
    if provenance is not None:
        session["provenance"] = provenance
    chats = [{"id": "main", "name": "main", "created_at": 1_700_000_000.0}]
    return {"format": formats.JSON_FORMAT, "session": session, "chats": chats, "messages": messages}


async def _imported(db, data: dict) -> dict:
    [made], _ = await formats.import_file(db, copy.deepcopy(data), "json", db.c.estimate, remove=db.delete_session)
    return made


async def test_a_forks_copied_tokens_counted_by_0_36_0_are_recounted_at_its_import(db):
    source = await _imported(db, _file("source36", None, [QUESTION, ANSWER]))
    fork_at = {"kind": "fork", "session": "source36", "message": "dev0-2"}
    fork = await _imported(db, _file("fork36", {**fork_at, "copied_tokens": THEN}, [QUESTION, ANSWER, LATER]))
    assert fork["provenance"]["copied_tokens"] == NOW, fork["provenance"]
    # the total of both: each message's tokens once, where they were spent
    total = (await db.stats())["tokens"]
    assert total == source["tokens_used"] + fork["tokens_used"] - NOW == NOW + 4, total


async def test_a_count_made_since_or_of_other_messages_is_kept_as_the_file_says(db):
    fork_at = {"kind": "fork", "session": "elsewhere", "message": "dev0-2"}
    msgs = [QUESTION, ANSWER, LATER]
    for sid, copied in (("since", NOW), ("none", 0), ("other", 7)):
        made = await _imported(db, _file(sid, {**fork_at, "copied_tokens": copied}, msgs))
        assert made["provenance"]["copied_tokens"] == copied, (sid, made["provenance"])


async def test_a_count_made_since_is_kept_where_a_later_run_is_0_36_0s_of_the_same_number(db):
    """A fork made since 0.37.0 counts its copy as the quota does (NOW here, of QUESTION and ANSWER). Its own messages
    after the copy may bring 0.36.0's count of a longer run of the file's first messages to that same number (here the
    two after the copy, 4 + 14 tokens: 19 + 18 = 37): the import took the file's count for 0.36.0's of that longer run
    and made it the quota's of it (55), so `stats` subtracted history the fork never copied. A count that is the
    quota's of a run of the file's first messages is the one made since: kept as the file says it."""
    fork_at = {"kind": "fork", "session": "elsewhere", "message": "dev0-2"}
    own = {**LATER, "id": "dev0-4", "content": "and more", "tokens": NOW - THEN - LATER["tokens"]}
    made = await _imported(db, _file("since38", {**fork_at, "copied_tokens": NOW}, [QUESTION, ANSWER, LATER, own]))
    assert made["provenance"]["copied_tokens"] == NOW, made["provenance"]
