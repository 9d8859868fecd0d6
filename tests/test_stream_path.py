"""What stands between a provider's first token and the app (issue 16, bench/complete.py): the provider
client in-process against the loopback provider (tests/servers/openai_server.py). The endpoints that use
it are tested end to end in test_model.py."""

from __future__ import annotations

import asyncio

import pytest

from conftest import wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.daemon.providers import Providers


@pytest.fixture(scope="module")
def loop_provider():
    p, server = serve_threaded(Provider())
    yield p, server
    server.stop()


def _providers(server) -> Providers:
    return Providers({"loop": {"base_url": f"http://127.0.0.1:{server.port}/v1"}}, "loop")


BODY = {"model": "echo-1", "messages": [{"role": "user", "content": "a b"}]}


def test_a_stream_read_to_its_end_gives_its_connection_back(loop_provider):
    p, server = loop_provider
    p.faults.eof_delay = 0.05  # the body's end comes after [DONE], as through a proxy that flushes late

    async def go():
        ps = _providers(server)
        try:
            for _ in range(2):
                chunks = [c async for c in ps.stream(ps.get(None), BODY)]
                assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
                    "echo: a b"
                )
                await ps.settled()
        finally:
            await ps.close()

    try:
        asyncio.run(go())
    finally:
        p.faults.eof_delay = 0.0
    assert p.peers[-1] == p.peers[-2]  # the second request opened no new connection


def test_a_stream_left_early_closes_its_connection(loop_provider):
    p, server = loop_provider
    p.faults.delay = 0.05  # still generating when the app goes
    stopped = p.streams_stopped

    async def go():
        ps = _providers(server)
        try:
            chunks = ps.stream(ps.get(None), {**BODY, "messages": [{"role": "user", "content": "1 2 3 4 5 6"}]})
            await chunks.__anext__()
            await chunks.aclose()  # the app went away: the generation must stop, the connection with it
            async for _ in ps.stream(ps.get(None), BODY):
                pass
        finally:
            await ps.close()

    try:
        asyncio.run(go())
    finally:
        p.faults.delay = 0.0
    assert p.peers[-1] != p.peers[-2]
    wait_for(lambda: p.streams_stopped == stopped + 1, timeout=5)  # the provider saw the app go
