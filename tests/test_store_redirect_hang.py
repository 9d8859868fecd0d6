"""A read redirected to a server that then gave no answer at all was said as a slow drip: the redirect's own
answer (its status and bytes) was kept as the try's progress, so the hop that never answered read as "its answer
(HTTP 307) was still arriving" (SlowAnswer, "answering too slowly", its fix a longer store_timeout), where no
answer came (StoreTimeout: a store not answering). Each hop's progress is now its own. Two loopback portals: one
redirecting, the other parking every request."""

from __future__ import annotations

import asyncio

from portalstore import failure_of, served_portal
from sessiond.stores.errors import SlowAnswer, StoreTimeout, describe_failure
from sessiond.stores.http import HttpClient


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
