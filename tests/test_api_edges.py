"""The socket API at its edges, as an app meets them: requests racing each other on one session, and
bad input. Real daemons over their real sockets."""

from __future__ import annotations

import asyncio


async def test_patches_at_once_each_keep_their_fields(daemon):
    """Two apps changing different fields of one session's settings (or policy) at the same moment: each
    PATCH merges into what is stored, so neither change is lost, whichever commits first."""
    clients = [daemon.aclient() for _ in range(4)]
    try:
        for _ in range(3):
            sid = (await clients[0].create_session())["id"]
            await asyncio.gather(
                clients[0].update_session(sid, settings={"temperature": 0.5}),
                clients[1].update_session(sid, settings={"top_k": 5}),
                clients[2].update_session(sid, policy={"token_quota": 100}),
                clients[3].update_session(sid, idle_timeout=1000),
            )
            s = await clients[0].get_session(sid)
            assert s["settings"] == {"temperature": 0.5, "top_k": 5}
            assert s["policy"] == {"token_quota": 100, "idle_timeout": 1000}
    finally:
        for c in clients:
            await c.close()
