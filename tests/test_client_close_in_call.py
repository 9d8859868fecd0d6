"""Client.close() from a signal handler of the thread that is inside a call (an app's SIGTERM handler, say)
closes that call's connection under it. The call failed with "cannot connect to ...: Bad file descriptor",
neither done_unknown nor naming its idempotency_key: the app could not tell whether its append landed, nor
send it again safely. It now fails as the clients' other unknown outcomes do, naming the key; sent again
with it, the append is done once."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from sessiond.client import ClientError
from waiting import wait_for


@pytest.fixture
def held_end(make_daemon, tmp_path):
    """A daemon whose end of a session holds its batch's commit while FLAG is there: an append that comes
    meanwhile joins that batch, its answer waiting for the commit. (daemon, FLAG)"""
    flag = str(tmp_path / "commit.end")
    return make_daemon(env={"SESSIOND_TEST_PAUSE": f"commit.end:{flag}"}).start(), flag


def _when_waiting_for_an_answer(thread_id: int, sig: int) -> threading.Thread:
    """A thread sending `sig` to this process once thread `thread_id` waits for the daemon's answer (its request
    sent whole: the POST's head, or the append stream's frame)."""

    def waiting() -> bool:
        frame = sys._current_frames().get(thread_id)
        return frame is not None and frame.f_code.co_name in ("read_head", "_take")

    def go() -> None:
        wait_for(waiting, timeout=20, what="the append waiting for its answer")
        os.kill(os.getpid(), sig)

    t = threading.Thread(target=go)
    t.start()
    return t


@pytest.mark.parametrize("before", [0, 1], ids=["post", "append-stream"])
def test_close_from_a_signal_handler_during_an_append_names_its_idempotency_key(held_end, before):
    d, flag = held_end
    c = d.client()
    sid = c.create_session(name="s")["id"]
    other = c.create_session(name="ended")["id"]
    for _ in range(before):  # the client's first append is a POST, the next go on its append stream
        c.append(sid, "user", "before")
    ending = threading.Thread(target=lambda: d.client().end(other))
    ending.start()
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the end's commit held")
        previous = signal.signal(signal.SIGUSR1, lambda *_: c.close())
        try:
            sender = _when_waiting_for_an_answer(threading.get_ident(), signal.SIGUSR1)
            with pytest.raises(ClientError) as caught:
                c.append(sid, "user", "held", idempotency_key="held-1")
            sender.join(timeout=20)
        finally:
            signal.signal(signal.SIGUSR1, previous)
    finally:
        if os.path.exists(flag):
            os.remove(flag)
        ending.join(timeout=30)
    err = caught.value
    assert err.done_unknown and err.idempotency_key == "held-1", str(err)
    assert f"close() was called during POST /v1/sessions/{sid}/messages" in str(err), str(err)
    assert "idempotency_key='held-1'" in str(err), str(err)
    again = c.append(sid, "user", "held", idempotency_key="held-1")  # the client opens new connections
    messages = c.messages(sid)["messages"]
    assert [m["content"] for m in messages] == ["before"] * before + ["held"]  # done once
    assert messages[-1]["id"] == again["id"]
    c.close()
