"""An SDK's retry of an OpenAI-endpoint request that made a session, kept after the request failed (openai_compat.py).

A request naming no session (no X-Sessiond-Session) makes one. When the provider fails it before any answer (a 5xx,
a 429, a timeout: what OpenAI's SDKs retry by themselves) or its app leaves first (its SDK's timeout), the session it
made is deleted with its question (openai_cut.drop_made), so that the retry, the same request still naming no session
(the SDK never reads the failure's header naming it), makes the one session that holds the question. But one another
app wrote to meanwhile, or shared, is kept; and the retry then made a second session, holding the question again.
Such a kept session is remembered here for a while, and the retry goes on in it: the same request, told a retry by the
official SDKs' `x-stainless-retry-count` (1 and up on each retry; the same body, byte for byte) or by an
`Idempotency-Key` header the app sends with every try of a request (the OpenAI SDKs send none of their own: an app
gives one in `extra_headers`), with the same body (the key sent again with another is another request's). Its
history matches what the session holds (openai_history.py): the question is not recorded twice. Kept in memory (a
retry comes seconds later; the daemon's stop tells the SDKs not to retry), for KEEP seconds, MOST of them.

A body is no one request's, though: two apps (one endpoint key, nothing else telling them apart) beginning with the
same words ("hi") send the same bytes, and when the provider fails both (it is down), B's retry is not A's. Going on
in A's session it recorded B's exchange in A's conversation (seen by whoever A's session is shared with, the reason
it was kept) and named A's session to B. So the first tries of each body are noted (FIRSTS bodies, KEEP seconds): a
body that more than one first try sent (before or after the one kept) names no kept session; its retry makes one, as
before this was kept (the question in two sessions, not one app's words in another's). A first try's note is read
while it is under way and KEEP seconds after its end (`ended`), not from its start: one under way longer (the OpenAI
SDK's own timeout is 600 s, KEEP) was no longer told apart at its end, its own retry making a second session and
another app's going on in it. An Idempotency-Key, which an app makes its own, still names its request."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict

from aiohttp import web

from ..api.idempotency import IDEMPOTENCY_HEADER

KEEP = 600.0  # seconds a kept session waits for its request's retry (the SDKs' backoff: seconds)
MOST = 256  # such sessions remembered (the oldest forgotten past it)
FIRSTS = 4096  # bodies whose first tries are noted (the oldest forgotten past it: their retries make sessions)
# (the request's item: its body's digest, and which first try of that body it is)
FIRST_TRY = web.RequestKey("sessiond.first_try", tuple)
UNDER_WAY = math.inf  # a note's time while its first try is under way: read until KEEP after its end
RETRY_COUNT = "x-stainless-retry-count"  # what the official SDKs (Stainless-generated) send: 0, then 1, 2, ...


def _keys(request: web.Request, raw: bytes) -> list[tuple[str, str]]:
    """What names this request's tries: its Idempotency-Key, if it gives one, and its body."""
    keys = [("body", hashlib.sha256(raw).hexdigest())]
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key:
        keys.insert(0, ("key", hashlib.sha256(key.encode()).hexdigest()))
    return keys


def _a_retry(request: web.Request) -> bool:
    count = request.headers.get(RETRY_COUNT, "")
    return count.isascii() and count.isdigit() and int(count) > 0


class Retries:
    def __init__(self) -> None:
        # a key naming a request's tries -> (until when, session, chat, which first try of its body made it, the body's
        # digest)
        self._kept: OrderedDict[tuple[str, str], tuple[float, str, str, int, str]] = OrderedDict()
        # a body's digest -> its first tries (when each ended, UNDER_WAY until then; which) in the last KEEP seconds,
        # two at most (two: not one's)
        self._firsts: OrderedDict[str, list[tuple[float, int]]] = OrderedDict()
        self._count = 0

    def _first_try(self, request: web.Request, body: str) -> int:
        """Note `request`, a first try (no SDK retry), of the body whose digest is `body`: which one it is."""
        if FIRST_TRY in request:
            return request[FIRST_TRY][1]
        self._count += 1
        request[FIRST_TRY] = (body, self._count)
        now = time.monotonic()
        tries = [t for t in self._firsts.pop(body, []) if t[0] > now - KEEP]
        self._firsts[body] = [*tries, (UNDER_WAY, self._count)][-2:]
        while len(self._firsts) > FIRSTS:
            self._firsts.popitem(last=False)
        return self._count

    def ended(self, request: web.Request) -> None:
        """`request` ended (answered, failed, its app gone): if it was a first try, its note is read KEEP from now."""
        noted = request.get(FIRST_TRY)
        if noted is None:
            return
        body, first = noted
        if (tries := self._firsts.get(body)) is not None:
            now = time.monotonic()
            self._firsts[body] = [(now if n == first else t, n) for t, n in tries]

    def _only(self, body: str, first: int) -> bool:
        """Whether the first try `first` is the only one of its body lately (its retry, then, its own)."""
        now = time.monotonic()
        return [n for t, n in self._firsts.get(body, []) if t > now - KEEP] == [first]

    def kept(self, request: web.Request, raw: bytes, sid: str, chat: str) -> None:
        """The request `raw` (its body), which made session `sid`, failed; the session is kept, its question in
        `chat`: its retry goes on there."""
        keys = _keys(request, raw)
        first = self._first_try(request, keys[-1][1])  # (noted as it was asked: retried)
        if keys[-1][1] in self._firsts:  # (forgotten, FIRSTS others begun since: its retry makes a session)
            self._firsts.move_to_end(keys[-1][1])  # (remembered as long as the session is)
        for k in keys:
            self._kept[k] = (time.monotonic() + KEEP, sid, chat, first, keys[-1][1])
            self._kept.move_to_end(k)
        while len(self._kept) > MOST:
            self._kept.popitem(last=False)

    def retried(self, request: web.Request, raw: bytes) -> tuple[str, str] | None:
        """The session and chat the first try of this request (naming no session) made and kept, if it is a retry of
        one: by its Idempotency-Key, else, an SDK's retry, by its body. Each retry's (one that fails too is retried
        again; and a later request of the same body, its first try's session deleted, asks what this one kept)."""
        keys = _keys(request, raw)
        body = keys[-1][1]
        if not _a_retry(request):
            self._first_try(request, body)
        if not request.headers.get(IDEMPOTENCY_HEADER):
            if not _a_retry(request):
                return None
        else:
            keys = keys[:1]  # (a key given names the request: another key's request of the same body is another's)
        now = time.monotonic()
        for k in keys:
            found = self._kept.get(k)
            if found is not None and found[0] <= now:
                del self._kept[k]
            # a retry is its request sent again, the same body (a key sent again with another names another request)
            elif found is not None and found[4] == body and (k[0] == "key" or self._only(body, found[3])):
                return found[1], found[2]
        return None
