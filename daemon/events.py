"""Change events: fanned out to the socket API's server-sent-event subscribers (GET /v1/events)."""

from __future__ import annotations

import asyncio
import time


class Events:
    """Fan-out of change events to server-sent-event subscribers."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue] = set()
        self._streams: dict[asyncio.Queue, asyncio.Task] = {}  # the task serving each subscriber

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        self._queues.add(q)
        task = asyncio.current_task()
        if task is not None:
            self._streams[q] = task
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._queues.discard(q)
        self._streams.pop(q, None)

    def publish(self, event: dict) -> None:
        """Every append and push passes here: with no subscriber it costs one test, nothing is built."""
        if not self._queues:
            return
        event = {**event, "time": round(time.time(), 3)}
        for q in list(self._queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a subscriber that stopped reading is dropped: its stream ends
                self._queues.discard(q)
                q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                pass

    async def shutdown(self, grace: float = 1.0) -> None:
        """End every stream: subscribers that read get the end of the stream; a stream still open after
        `grace` seconds (an app that stopped reading, its socket full) is cancelled."""
        self.close()
        tasks = set(self._streams.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
