"""A daemon that takes the connection and answers nothing (stuck): subscribing to its change events is a
DaemonNotAnswering within the client's timeout, as every other call is, in both clients; not a wait forever
(the stream's body may then be quiet for as long as it likes: only its head is timed)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sessiond.client import AsyncClient, Client, DaemonNotAnswering
from unixproxy import hung_listener


@pytest.fixture
def hung(tmp_path):
    """The path of a socket whose server takes each connection and never answers."""
    path = str(tmp_path / "hung.sock")
    with hung_listener(path):
        yield path


@pytest.mark.parametrize("how", ["events", "event_stream"])
def test_events_of_a_hung_daemon_are_a_timeout(hung, how):
    out: list = []

    def subscribe() -> None:
        try:
            getattr(Client(socket=hung, timeout=0.3), how)()
            out.append("subscribed")
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=subscribe, daemon=True)
    t.start()
    t.join(10)
    assert out, "still waiting for the daemon's answer after 10 s (the client's timeout: 0.3 s)"
    assert isinstance(out[0], DaemonNotAnswering) and "did not answer within 0.3 s" in str(out[0]), out


@pytest.mark.parametrize("how", ["events", "event_stream"])
async def test_async_events_of_a_hung_daemon_are_a_timeout(hung, how):
    async with AsyncClient(socket=hung, timeout=0.3) as ac:

        async def subscribe():
            return await getattr(ac, how)()  # (events() is awaited, event_stream() a coroutine)

        with pytest.raises(DaemonNotAnswering, match=r"did not answer within 0\.3 s"):
            await asyncio.wait_for(subscribe(), 10)
