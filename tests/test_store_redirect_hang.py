"""A read redirected to a server that then gave no answer at all was said as a slow drip: the redirect's own
answer (its status and bytes) was kept as the try's progress, so the hop that never answered read as "its answer
(HTTP 307) was still arriving" (SlowAnswer, "answering too slowly", its fix a longer store_timeout), where no
answer came (StoreTimeout: a store not answering). Each hop's progress is now its own. Two loopback portals: one
redirecting, the other parking every request."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from portalstore import failure_of, served_portal
from sessiond.stores.errors import SlowAnswer, StoreTimeout, describe_failure
from sessiond.stores.http import MAX_REDIRECTS, HttpClient


async def test_a_redirect_to_a_server_that_never_answers_is_no_answer_not_a_slow_one():
    async with served_portal() as front, served_portal() as hung:
        front.faults.redirect = f"http://{hung.authority}"
        hung.faults.hang = asyncio.Event()
        client = HttpClient(f"http://{front.authority}", timeout=1)
        try:  # (a read with no credentials: followed to the other server, a public gateway's way)
            failure = await failure_of(client.request("GET", "/s5/blob/x", retry=False), StoreTimeout)
        finally:
            await client.close()
    said = describe_failure(failure, f"http://{front.authority}")
    assert not isinstance(failure, SlowAnswer), said  # main: "its answer (HTTP 307) was still arriving"
    assert "no answer" in said and "still arriving" not in said, said


async def test_a_read_redirected_along_slow_servers_gives_up_within_one_timeout_in_all():
    # each hop had the whole timeout: five redirects and an answer, each sent just inside it, were one try of
    # 3.6 s where store_timeout says 1 (up to 6x: MAX_REDIRECTS + 1 hops); the try, all its hops, is one bound
    async with contextlib.AsyncExitStack() as stack:
        hops = [await stack.enter_async_context(served_portal()) for _ in range(MAX_REDIRECTS + 1)]
        for here, there in itertools.pairwise(hops):
            here.faults.redirect = f"http://{there.authority}"
        for hop in hops:
            hop.faults.delay = 0.6
        client = HttpClient(f"http://{hops[0].authority}", timeout=1)
        started = time.monotonic()
        try:
            failure = await failure_of(client.request("GET", "/s5/blob/x", retry=False), Exception)
        finally:
            took = time.monotonic() - started
            await client.close()
    said = describe_failure(failure, f"http://{hops[0].authority}")
    assert isinstance(failure, StoreTimeout) and "within 1 s" in said, said  # main: the last hop's 500
    assert took < 2.5, (took, said)  # main: 3.6 s
