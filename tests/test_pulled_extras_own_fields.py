"""A message pulled from another device carries its extra fields (those sessiond does not know are kept: a newer
sessiond's). A peer's extra holding a field of the message's own (content, role, id, tokens, seq...: sessiond writes
none there) was stored as it came: reads let the row's own fields win (h-review37e), but the message held two
contents, two roles, in its row, and passed both on wherever the row is read whole (a frozen log built again from
this device's database for the other devices, sync/frozenrepair.py). Such fields are dropped at the pull now, as an
imported file's fields that are not a message's are (daemon/formats.py `_message`): a hostile or buggy peer cannot
make a message say two things anywhere; its other extra fields are kept. `verify` compares a message's extra as a
pull keeps it: rows a 0.38.0 pull stored with such fields are not said to differ from the store's log."""

from __future__ import annotations

import json

from sessiond.daemon import formats
from sessiond.storage.model import MESSAGE_OWN_KEYS

FORGED = {
    "content": "forged",
    "role": "system",
    "id": "other-1",
    "tokens": "x",
    "seq": 99,
    "chat": "elsewhere",
    "created_at": 1.0,
    "device": "someone",
    "lamport": 7,
}
KEPT = {"metadata": {"a": 1}, "model": "m1", "a_newer_sessiond_s": [1, 2]}


async def _extra(db, sid: str, device: str) -> dict:
    rows = await db.c.committed.fetchall(
        "SELECT extra FROM messages WHERE session_id=? AND device_id=? AND role='assistant'", (sid, device)
    )
    [(extra,)] = rows
    return json.loads(extra)


async def _forge(db, sid: str, device: str, extra: dict) -> None:
    """The device's assistant message's extra written as `extra` (as a peer's own database would hold it, or a pull
    of 0.38.0 stored it)."""
    async with db.c.transaction() as tx:
        await tx.execute(
            "UPDATE messages SET extra=? WHERE session_id=? AND device_id=? AND role='assistant'",
            (json.dumps(extra), sid, device),
        )


async def test_a_pulled_messages_extra_fields_naming_its_own_are_dropped(devices):
    a, b = await devices.open()
    await a.start()
    await b.start()
    sid = await devices.shared("extras")
    await devices.dba.append_messages(sid, [{"role": "assistant", "content": "said", "metadata": {"a": 1}}])
    await _forge(devices.dba, sid, devices.dba.device_id, {**FORGED, **KEPT})  # (A: the peer, hostile or buggy)
    await a.pusher.push(sid)
    await b.pull(sid)
    got = await _extra(devices.dbb, sid, devices.dba.device_id)
    # main: stored as they came (the row's content "said", its extra's "forged")
    assert got == KEPT, got
    [m] = [m for m in await devices.dbb.list_messages(sid) if m["role"] == "assistant"]
    assert (m["content"], m["metadata"], m["model"]) == ("said", {"a": 1}, "m1"), m
    exported = await formats.export(devices.dbb, sid, "json")
    assert "forged" not in json.dumps(exported)
    # what B holds of A's log, as a frozen log built again from its database would carry it on: one content
    ops = await devices.dbb.log_ops(sid, devices.dba.device_id, 0)
    assert "forged" not in json.dumps([o.body for o in ops])
    report = await b.verify(sid)
    assert report["ok"], report
    report = await a.verify(sid)  # (A's own log, its extra as its database holds it: as B's pull keeps it)
    assert report["ok"], report


async def test_rows_stored_with_such_fields_before_are_not_said_to_differ(devices):
    a, b = await devices.open()
    await a.start()
    await b.start()
    sid = await devices.shared("stored before")
    await devices.dba.append_messages(sid, [{"role": "assistant", "content": "said"}])
    await _forge(devices.dba, sid, devices.dba.device_id, {**FORGED, **KEPT})
    await a.pusher.push(sid)
    await b.pull(sid)
    await _forge(devices.dbb, sid, devices.dba.device_id, {**FORGED, **KEPT})  # (as a pull of 0.38.0 stored it)
    report = await b.verify(sid)
    assert report["ok"], report


def test_the_fields_dropped_are_those_a_message_read_names_of_its_own():
    """Every field a message read gives from its row (storage/messagereads.py message_dict) is dropped from a
    pulled extra; an imported file's message keeps none of them beside its role and content (formats._message)."""
    from sessiond.storage.messagereads import message_dict

    row = {
        "device_id": "d",
        "seq": 1,
        "chat_id": "main",
        "role": "user",
        "content": "x",
        "tokens": 1,
        "created_at": 1.0,
        "lamport": 1,
        "extra": None,
    }
    assert set(message_dict(row)) == MESSAGE_OWN_KEYS
    others = dict.fromkeys(MESSAGE_OWN_KEYS - {"role", "content", "tokens"}, 1)
    kept = formats._message({"role": "user", "content": "x", **others}, "m")
    assert set(kept) == {"role", "content"}, kept


# A peer's answer fields (storage/model.py ANSWER_KEYS, and an answer's `tool_calls_dropped`, which no sessiond stores)
# holding what the API takes from no app, a session file (daemon/sessionfile.py answer) nor a provider
BAD_ANSWER = {
    "usage": {"prompt_tokens": "500", "completion_tokens": 3, "cached_tokens": 9},
    "response": [1, 2],
    "interrupted": "yes",
    "tool_calls_dropped": [{"index": "x"}],
    "model": 5,
    "error": "e" * 3000,
    "provider": "p1",
}
# ...as a pull keeps them: what the API takes of each, the rest dropped
KEPT_ANSWER = {"usage": {"completion_tokens": 3}, "provider": "p1"}


async def test_a_pulled_messages_answer_fields_are_checked_and_its_session_exports_and_imports(devices):
    """A peer's answer fields were stored as they came: the session's `export --format json` then wrote them, and
    `import-file` of that file refused it (`messages[1].usage.prompt_tokens must be a whole number...`), and the API's
    reads of the message showed an `interrupted` of "yes" and a `tool_calls_dropped` no answer made. Each is checked
    at the pull as a session file's is: one the API would not take dropped (a count of usage or response alone), as
    the fields naming the message's own are."""
    a, b = await devices.open()
    await a.start()
    await b.start()
    sid = await devices.shared("answer fields")
    await devices.dba.append_messages(sid, [{"role": "assistant", "content": "said", "metadata": {"a": 1}}])
    await _forge(devices.dba, sid, devices.dba.device_id, {**BAD_ANSWER, "metadata": {"a": 1}})
    await a.pusher.push(sid)
    await b.pull(sid)
    got = await _extra(devices.dbb, sid, devices.dba.device_id)
    # main: stored as they came
    assert got == {**KEPT_ANSWER, "metadata": {"a": 1}}, got
    [m] = [m for m in await devices.dbb.list_messages(sid) if m["role"] == "assistant"]
    assert "interrupted" not in m and "tool_calls_dropped" not in m, m
    exported = await formats.export(devices.dbb, sid, "json")
    del exported["session"]["id"]  # (a copy beside the one here)
    db = devices.dbb
    [made], _ = await formats.import_file(db, exported, "json", db.c.estimate, remove=db.delete_session)
    ms = await db.list_messages(made["id"])
    assert [x.get("usage") for x in ms if x["role"] == "assistant"] == [KEPT_ANSWER["usage"]], ms
    report = await b.verify(sid)  # (A's log in the store holds them: compared as a pull keeps it)
    assert report["ok"], report
