"""Client.close() from one thread while others share the client (as the README allows: their calls take turns
on its connection): a call under way gets its answer, and the next call opens a new connection. Before, the
socket was closed under the call, which failed as "cannot connect ...: Bad file descriptor" though its append
had reached the daemon and was stored."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest

from sessiond.client import Client, ClientError
from unixproxy import hung_listener
from waiting import wait_for


def test_close_from_another_thread_leaves_each_call_answered(daemon):
    c = Client(daemon.home, timeout=10)
    sid = c.create_session(name="s")["id"]
    stop = threading.Event()
    acked: list[str] = []
    errors: list[BaseException] = []

    def appender(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                c.append(sid, "user", f"{t}-{i}")
                acked.append(f"{t}-{i}")
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(20):  # closed under them, again and again
            wait_for(lambda n=n: len(acked) > 10 * n, what="appends meanwhile")
            c.close()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    c.close()
    assert errors == []
    with Client(daemon.home) as reader:
        stored = Counter(m["content"] for m in reader.messages(sid, limit=10000)["messages"])
    assert stored == Counter(acked)


def test_close_from_a_signal_handler_during_a_call_of_its_own_thread_does_not_wait_for_itself(tmp_path):
    """The call's thread takes its turn; a signal handler in that thread (SIGTERM's, an app shutting down)
    that closes the client must not wait for that turn: the call ends with a ClientError at once."""
    path = str(tmp_path / "hung.sock")
    c = Client(socket=path, timeout=20)
    before = signal.signal(signal.SIGALRM, lambda *_: c.close())
    try:
        with hung_listener(path):
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            started = time.monotonic()
            with pytest.raises(ClientError):
                c.status()
            assert time.monotonic() - started < 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
