"""The blocking client's event stream (GET /v1/events): close() from any thread ends the iteration, quietly."""

from __future__ import annotations

import threading

from sessiond.client import Client


def test_a_stream_closed_between_two_reads_ends_its_iteration(daemon):
    c = Client(daemon.home)
    stream = c.event_stream()
    sid = c.create_session(name="events")["id"]
    it = iter(stream)
    first = next(it)  # the create's event
    assert first.get("session") == sid
    stream.close()  # while the reader is between two reads (it was an AttributeError: the response's fp gone)
    assert list(it) == []


def test_a_stream_closed_from_another_thread_wakes_its_reader(daemon):
    c = Client(daemon.home)
    stream = c.event_stream()
    seen: list[dict] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            seen.extend(stream)
        except BaseException as e:  # (what the thread would have died of)
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    sid = c.create_session(name="events")["id"]
    stream.close()
    t.join(timeout=10)
    assert not t.is_alive() and errors == []
    assert all(ev.get("session") in (None, sid) for ev in seen)
