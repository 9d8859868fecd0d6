"""Change events: fanned out to the socket API's server-sent-event subscribers (GET /v1/events), and the
last of them kept so that a subscriber whose connection dropped resumes where it was (Last-Event-ID).

Every event has an id, RUN-SEQ (api/events.py): RUN names this run of the daemon, SEQ goes up by one per event.
The kept events are the last KEEP_EVENTS, each as the bytes a stream sends (one published while no one
subscribed: as it is, made into those bytes only if a resume asks for it, its bytes counted without making
them), fewer if they come to more than event_backlog + KEEP_OVER bytes between them (one is always kept). They
are kept while someone subscribes and for KEEP_FOR seconds after the last subscriber left; not before the first
subscriber of a run (no one can hold an id of it yet) nor after that: then publishing costs what it did before
ids existed, one test. A resume from an id whose events were not all kept (another run, too old, or events that
came while none were kept) starts with one `events.lost` event instead.

A subscriber's stream holds the events not yet written to it, each as the bytes it is sent (made once per
event for every subscriber). One that reads too slowly, or not at all (its connection full: its stream's write
waits), would hold every event that came after (the write's connection_idle_timeout ends it, but only 75 s
after the connection filled): it is dropped once it holds more than config.toml's event_backlog bytes (or
BEHIND events) unsent, and its connection hung up on if it is still full event_keepalive seconds later
(routes/events.py: the comment saying why could not be written). Both caps are inside what is kept for a resume
(BEHIND is half of KEEP_EVENTS; the kept bytes are event_backlog's and KEEP_OVER more, for what was written to
the connection but not read yet, whatever event_backlog is set to), so a resume after the last event it read
gets the rest. (The kept events were bounded by the 100,000 message ids they named, ~3 MB of events: past an
event_backlog of ~3 MB a subscriber dropped and resuming got events.lost.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable

from ..api.events import LOST
from ..storage.clock import wall

KEEP_EVENTS = 10_000
# bytes kept beyond event_backlog: what a stream dropped had written to its connection that its app had not read
# (the socket's buffers, ~200 KiB, the transport's, 64 KiB, an event being written, the app's own buffer)
KEEP_OVER = 2 << 20
KEEP_FOR = 600.0  # seconds the events are kept after the last subscriber left
BEHIND = KEEP_EVENTS // 2  # events a subscriber's stream holds unsent at most: one more drops it (DROPPED)
BACKLOG = 1 << 20  # bytes of events a subscriber's stream holds unsent at most (config.toml's event_backlog)
DROPPED = object()  # what a dropped subscriber's queue then holds, alone: its stream ends saying why

log = logging.getLogger("sessiond")


def sse(event: dict) -> bytes:
    """An event as a stream sends it."""
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _sent(item: bytes | dict) -> bytes:
    """A kept event as a stream sends it."""
    return item if isinstance(item, bytes) else sse(item)


def _size(item: bytes | dict) -> int:
    """A kept event's bytes as a stream sends it, or (one kept as it is) at most that, without making them:
    its message ids' (the bulk of a large event; each as long as the first, the shortest of a batch, and its
    quotes and comma) and 64 for the rest. Never more than it is: what a dropped subscriber had unsent is
    kept whole (fewer bytes counted keep more events, never fewer)."""
    if isinstance(item, bytes):
        return len(item)
    ids = item.get("ids")
    return 64 + (len(ids) * (len(str(ids[0])) + 4) if ids else 0)


class Subscriber:
    """One stream's events not yet written to it (as the bytes it is sent), and how many bytes they are."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held = 0
        self.on_drop: Callable[[], None] | None = None  # called when it is dropped (its stream's hang-up)

    async def get(self) -> bytes | object | None:
        """The next bytes to write; None: the stream ends (the daemon stops); DROPPED: it ends, dropped."""
        item = await self.queue.get()
        if isinstance(item, bytes):
            self.held -= len(item)
        return item


class Events:
    """Fan-out of change events to server-sent-event subscribers, and the last ones kept for a resume."""

    def __init__(
        self,
        keep_events: int = KEEP_EVENTS,
        keep_for: float = KEEP_FOR,
        backlog: int = BACKLOG,
    ) -> None:
        self.run = secrets.token_hex(6)  # this run of the daemon: a new one at every start
        self.backlog = backlog
        self.dropped = 0  # subscribers dropped since the start
        self._queues: set[Subscriber] = set()
        self._streams: dict[Subscriber, asyncio.Task] = {}  # the task serving each subscriber
        self._keep_events, self._keep_for = keep_events, keep_for
        self._keep_bytes = backlog + KEEP_OVER  # a dropped stream's unsent events and its connection's, at least
        self._seq = 0  # the last id's SEQ given out
        # the events after SEQ _kept_after, every one of them, in order: as sent, or (one published with no
        # subscriber) as it is, made into what is sent only if a resume asks for it (_sent)
        self._kept: deque[bytes | dict] = deque()
        self._kept_after = 0
        self._kept_bytes = 0  # the bytes of the kept events
        self._keeping = False
        self._unkept = False  # events may have come while none were kept (after KEEP_FOR with no subscriber)
        self._stop_keeping: asyncio.TimerHandle | None = None

    @property
    def subscribers(self) -> int:
        """The streams subscribed now."""
        return len(self._queues)

    @property
    def held(self) -> int:
        """The bytes of events the subscribers' streams hold unsent now."""
        return sum(q.held for q in self._queues)

    def position(self) -> str:
        """The id of the last event: where a stream opened now starts."""
        return f"{self.run}-{self._seq}"

    def subscribe(self, after: tuple[str, int] | None = None) -> tuple[Subscriber, list[bytes]]:
        """A new subscriber (its live events), and what its stream sends first, as it sends it: the kept
        events after the id `after` (run, seq), or one events.lost event if they were not all kept. Raises
        ValueError if `after` names an event of this run still to come."""
        if after is not None and after[0] == self.run and after[1] > self._seq:
            raise ValueError(f"{after[0]}-{after[1]} names no event this daemon sent: its last is {self.position()}")
        self._keep()
        first: list[bytes] = []
        if after is not None:
            run, seq = after
            if run != self.run:
                first = [sse(self._lost(after, "restarted"))]
            elif seq < self._kept_after:
                first = [sse(self._lost(after, "too_old"))]
            else:
                first = [_sent(ev) for ev in itertools.islice(self._kept, seq - self._kept_after, None)]
        q = Subscriber()
        self._queues.add(q)
        task = asyncio.current_task()
        if task is not None:
            self._streams[q] = task
        return q, first

    def unsubscribe(self, q: Subscriber) -> None:
        self._queues.discard(q)
        self._streams.pop(q, None)
        if not self._queues and self._keeping and self._stop_keeping is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._stop_keeping = loop.call_later(self._keep_for, self._forget)

    def _keep(self) -> None:
        """Keep events from now on (a subscriber came)."""
        if self._stop_keeping is not None:
            self._stop_keeping.cancel()
            self._stop_keeping = None
        if not self._keeping:
            self._keeping = True
            if self._unkept:  # what came meanwhile is lost to a resume from an id before it
                self._unkept = False
                self._seq += 1
            self._kept_after = self._seq

    def _forget(self) -> None:
        """KEEP_FOR seconds with no subscriber: stop keeping events (publishing costs one test again)."""
        self._stop_keeping = None
        if self._queues:
            return
        self._keeping, self._unkept = False, True
        self._kept.clear()
        self._kept_bytes = 0

    def _lost(self, after: tuple[str, int], reason: str) -> dict:
        since = f"{after[0]}-{after[1]}"
        if reason == "restarted":
            why = f"event {since} is from another run of the daemon (it restarted since, or is another daemon)"
        else:
            why = (
                f"the events after {since} are no longer kept (the daemon keeps its last {self._keep_events:,}, "
                f"{self._keep_bytes:,} bytes of them at most, for {self._keep_for:g} s after its last subscriber "
                "left)"
            )
        return {
            "type": LOST,
            "reason": reason,
            "last_event_id": since,
            "message": f"{why}: changes may have been missed; read again the state you follow",
            "time": round(wall(), 3),
            "id": self.position(),  # resuming after this is resuming from now
        }

    def publish(self, event: dict) -> None:
        """Every append and push passes here: with no subscriber for KEEP_FOR seconds it costs one test,
        nothing is built; with none now (kept for a resume), nothing is serialized."""
        if not self._keeping:
            return
        self._seq = seq = self._seq + 1
        ev = {**event, "time": round(wall(), 3), "id": f"{self.run}-{seq}"}
        if not self._queues:  # kept as it is: made into what a stream sends only if a resume asks for it
            self._keeps(ev)
            return
        data = sse(ev)
        self._keeps(data)
        for q in list(self._queues):
            size = q.queue.qsize()
            if size and (size >= BEHIND or q.held + len(data) > self.backlog):  # too far behind: dropped
                self._drop(q)
                continue
            q.held += len(data)
            q.queue.put_nowait(data)

    def _keeps(self, item: bytes | dict) -> None:
        """Keep a published event for a resume, the oldest let go past KEEP_EVENTS or the kept bytes."""
        kept = self._kept
        kept.append(item)
        self._kept_bytes += _size(item)
        while len(kept) > self._keep_events or (self._kept_bytes > self._keep_bytes and len(kept) > 1):
            self._kept_bytes -= _size(kept.popleft())
            self._kept_after += 1

    def _drop(self, q: Subscriber) -> None:
        """A subscriber over event_backlog bytes or BEHIND events behind: its events let go (not one of them
        sent past a gap, which a resume after the last one read would miss), its stream ended, saying why
        (DROPPED); a resume from the last event it read gets the rest, or events.lost."""
        self._queues.discard(q)
        self.dropped += 1
        events, held = q.queue.qsize(), q.held
        while not q.queue.empty():
            q.queue.get_nowait()
        q.held = 0
        q.queue.put_nowait(DROPPED)
        if q.on_drop is not None:
            q.on_drop()
        log.warning(
            "an event stream (GET /v1/events) was dropped: its app left %d events (%d bytes) unread, more than "
            "it may hold (event_backlog %d bytes, or %d events); the app may resume after the last event it read",
            events,
            held,
            self.backlog,
            BEHIND,
            extra={"event": "events.dropped"},
        )

    def close(self) -> None:
        for q in list(self._queues):
            q.queue.put_nowait(None)

    async def shutdown(self, grace: float = 1.0) -> None:
        """End every stream: subscribers that read get the end of the stream; a stream still open after
        `grace` seconds (an app that stopped reading, its socket full) is cancelled."""
        if self._stop_keeping is not None:
            self._stop_keeping.cancel()
            self._stop_keeping = None
        self.close()
        tasks = set(self._streams.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
