"""An event of GET /v1/events carries the fields the README's table names: an append that passed its session's
checkpoint interval, and an import-file's session.created, carried `checkpoint_due: true` too, the daemon's own
note to itself to sign a checkpoint, which no app is told of. The checkpoint is still made."""

from __future__ import annotations

from sessiond.client import Client
from waiting import wait_for


def _until(stream, kind: str, sid: str) -> dict:
    for event in stream:
        if event["type"] == kind and event.get("session") == sid:
            return event
    raise AssertionError(f"the stream ended before {kind}")


def test_an_append_past_the_checkpoint_interval_carries_no_note_of_the_daemons(daemon):
    c = Client(daemon.home)
    sid = c.create_session(checkpoint_interval=10)["id"]
    stream = c.event_stream()
    try:
        c.append(sid, "user", "x" * 80)  # 20 tokens: past the interval
        event = _until(stream, "messages.appended", sid)
    finally:
        stream.close()
    assert set(event) == {"type", "session", "chat", "ids", "time", "id"}, event
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], what="the interval's checkpoint")


def test_an_imported_files_session_created_carries_no_note_of_the_daemons(daemon):
    c = Client(daemon.home)
    src = c.create_session(name="src")["id"]
    c.append(src, "user", "hello")
    c.end(src)  # signed at its end: the file holds a checkpoint, so the import signs one of its own
    data = c.export(src, "json")
    del data["session"]["id"]  # imported as a new session
    stream = c.event_stream()
    try:
        sid = c.import_file(data)["sessions"][0]["id"]
        event = _until(stream, "session.created", sid)
    finally:
        stream.close()
    assert set(event) == {"type", "session", "time", "id"}, event
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], what="the import's checkpoint")
