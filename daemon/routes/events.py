"""Server-sent events: every change, as it happens."""

import asyncio
import json

from aiohttp import web

from .common import daemon_of


async def events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    queue = d.events.subscribe()
    try:
        await resp.write(b": sessiond events\n\n")
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if ev is None:
                break
            await resp.write(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode())
    except ConnectionResetError:
        pass  # the app went away
    finally:  # a CancelledError (the daemon stopping, the app gone) goes on up: swallowing it hangs shutdown
        d.events.unsubscribe(queue)
    return resp
