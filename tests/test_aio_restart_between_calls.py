"""The daemon restarted between two of an app's calls: AsyncClient's next call is answered, as Client's is,
also when the app's loop was busy meanwhile (it had not yet read the daemon's close of the kept-alive
connection). A request that cannot be repeated (a create, a pause) must not go on a connection the daemon
already closed: it would fail as 'may or may not have been done' though nothing had been sent."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("call", ["create_session", "pause"])
async def test_async_a_call_after_a_restart_the_busy_loop_did_not_see_is_answered(daemon, call):
    async with daemon.aclient() as ac:
        sid = (await ac.create_session(name="s"))["id"]  # its connection kept alive
        daemon.restart()  # the loop blocked meanwhile: the daemon's close of that connection is not read yet
        if call == "create_session":
            assert (await ac.create_session(name="t"))["name"] == "t"
        else:
            assert (await ac.pause(sid))["status"] == "paused"


def test_a_call_after_a_restart_is_answered(daemon):
    with daemon.client() as c:
        sid = c.create_session(name="s")["id"]
        daemon.restart()
        assert c.create_session(name="t")["name"] == "t"
        assert c.pause(sid)["status"] == "paused"
