"""Whether a store lost (or lies about) what this device pushed of a session: the check behind `Pusher.repair`,
which `sessiond sync` runs for each session before it pushes.

A store lost this device's log when it lacks its head, the manifest the head names, or an object the recorded
level tree points to (or verify found one missing further down: `ctx.repair`). A head read refused as a lie
(stores/errors.py LyingServer: served below a revision this process saw, HeadRolledBack; or forged or damaged),
or served below the revision this device published, is one too: the store lost this device's head or lies about
it, and a push publishes it again above the highest revision this device published. The whole log is pushed
again only if the store lacks an object of it too (a host restored from a backup lost those pushed since): one
that holds them all (a store that lies about heads only, a cache in front of it serving an old record) is
given a new head over them, not the whole log at every sync that finds the head so again. A store that does
not answer (a timeout, unreachable, a 5xx) is not one that lost data: its push says what it met.

A store of a mirror is asked once it holds everything written so far: a write to it under way (another session's
push) is waited for (`writes_ended`), at most the sync's timeout, as it may lack what is being written while another
store holds it. The wait is before the session's push lock is taken (Pusher.repair), so a push or `rm` of the
session meanwhile is not held by it. One not caught up when checked (under the lock: a write begun again since,
writes waiting in its outbox) is asked all the same: holding the log whole, it holds it whatever is under way (a
store busy at every sync, another session pushing all the time, would otherwise never be looked at); lacking some of
it, it may have that on the way, and is unchecked, as a store that does not answer (or one down, not asked): no loss
is found there this time, and doctor's warning of a head published again is kept until a sync finds every store
holding it. A check that leaves a
store so while that warning stands is noted (`deferred` in the mend: the store, why, how many checks in a row; kept
with it in the database, storage/headlies.py HeadMends, a restart keeping it too), for doctor to say the check was
deferred (a store busy with writes at every sync: the warning would stay with no word of why), not that it found
the store lacking. A check that looks at every store, or finds a loss, drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from ..storage.redact import shown_url
from ..stores import StoreError
from ..stores.bounded import bounded
from ..stores.errors import HeadRolledBack, LyingServer
from ..stores.registry import RegistryError
from .context import SyncContext
from .heads import levels_from_cbor, manifest_hash_of
from .mirror import MirrorStore


@dataclass
class Lack:
    """What a store lacks of this device's log of a session: objects (`how` None), or its head served `how`
    ("rolled back", "forged or damaged") by the store `store`; `published`: the revision this device published,
    `served`: the one the store served (None: not known); `head_only`: the store holds every object of the log
    (what the recorded level tree names): its head alone is published again, not the whole log."""

    store: str = ""
    how: str | None = None
    published: int = 0
    served: int | None = None
    head_only: bool = False

    def said(self) -> str:
        if self.how is None:
            return "the store lacks objects of this device's log; pushing all of it again"
        served = f" (revision {self.served})" if self.served is not None else ""
        again = (
            "publishing its head again above that revision (the store holds the log's objects)"
            if self.head_only
            else "pushing the log again, its head above that revision"
        )
        return (
            f"the store {shown_url(self.store)} served the head of this device's log {self.how}{served}, this device"
            f" having published revision {self.published}: the store lost it (its host restored a backup) or lies;"
            f" {again}"
        )


async def _checked(ctx: SyncContext, sid: str) -> dict | None:
    """The sync state of `sid` if its store is to be asked (a head published, nothing pending, its key here)."""
    state = await ctx.db.sync_state(sid)
    if not state["head_rev"] or state["pending"] or ctx.keys.session_key(sid) is None:
        return None
    return state


async def writes_ended(ctx: SyncContext, sid: str) -> None:
    """Wait, at most the sync's timeout, for the writes under way to the stores of the mirror of `sid` that
    store_lacks_log would ask (module doc). Called without the session's push lock: nothing is held meanwhile."""
    if sid in ctx.repair or await _checked(ctx, sid) is None:
        return
    mirror = await ctx.store_for(sid)
    if not isinstance(mirror, MirrorStore):
        return
    deadline = time.monotonic() + ctx.timeout
    for st in _written(mirror):
        idle = mirror.health[st.url].idle
        if not idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), max(0.01, deadline - time.monotonic()))


def _written(mirror: MirrorStore) -> list:
    return [s for s in mirror.stores if not (s.read_only or mirror.health[s.url].read_only)]


async def store_lacks_log(ctx: SyncContext, sid: str) -> Lack | None:
    """What the store lacks of what this device pushed of `sid` (module doc), or None. Cheap: no object is read,
    and nothing waited for (writes_ended waits before: a mirror's store with a write under way that lacks some of
    the log is unchecked)."""
    if sid in ctx.repair:
        return Lack()
    if (state := await _checked(ctx, sid)) is None:
        return None
    store = await ctx.store_for(sid)
    answered = True
    # a mirror: each of its stores written to (a read through the mirror finds the head and every object in
    # whichever store has them, so one store's loss would never show)
    mirror = store if isinstance(store, MirrorStore) else None
    unchecked: tuple[str, str] | None = None  # (the first store left unchecked, and why: _deferred)
    for st in _written(mirror) if mirror else [store]:
        busy = mirror is not None and st not in mirror.caught_up()
        if busy and mirror is not None and mirror.health[st.url].reachable is False:
            answered = False  # (down: unchecked, module doc)
            unchecked = unchecked or (st.url, "it was not answering")
            continue
        try:
            lack = await _asked(ctx, st, sid, state)
        except (TimeoutError, StoreError, OSError):
            answered = False  # a store that does not answer is not one that lost data; the push reports it
            unchecked = unchecked or (st.url, "it did not answer")
            continue
        if lack is not None and busy and mirror is not None:  # (what it lacks may be on its way: unchecked)
            answered = False
            unchecked = unchecked or (st.url, _why_unchecked(mirror, st))
            continue
        if lack is not None:
            await _deferred(ctx, sid, None)  # (a loss found: not deferred; the repair notes what it found)
            return lack
    if answered and ctx.head_mends.pop(sid, None) is not None:  # (the store holds the log whole: a head published
        await ctx.db.syncstate.head_mends.clear(sid)  # again, kept there)
    else:
        await _deferred(ctx, sid, unchecked)
    return None


async def _deferred(ctx: SyncContext, sid: str, unchecked: tuple[str, str] | None) -> None:
    """The mend of `sid` (if any) after a check that left the store `unchecked` ((url, why): one more check deferred
    in a row) or looked at every store it could (None: not deferred), in memory and in its row (HeadMends, one
    transaction; written only when it changes: a sync that checks every store writes nothing)."""
    if (mend := ctx.head_mends.get(sid)) is None:
        return
    before = mend.get("deferred")
    if unchecked is None:
        if before is None:
            return
        mend = {k: v for k, v in mend.items() if k != "deferred"}
    else:
        url, why = unchecked
        checks = (before or {}).get("checks", 0) + 1
        mend = {**mend, "deferred": {"store": url, "why": why, "checks": checks, "at": time.time()}}
    ctx.head_mends[sid] = mend
    await ctx.db.syncstate.head_mends.note(sid, mend)


async def _asked(ctx: SyncContext, st, sid: str, state: dict) -> Lack | None:
    """What the store `st` lacks of this device's log of `sid` as `state` records it (store_lacks_log), or None;
    raises what a store that does not answer raises."""
    published = state["head_rev"]
    lie = Lack(st.url, "forged or damaged", published)
    try:
        head = await bounded(st.get_head(ctx.keys.head_pk(sid)), ctx.timeout)
    except HeadRolledBack as exc:  # below a revision this process saw from the store
        lie.how, lie.served = "rolled back", exc.served
        return await _objects_held(ctx, st, state["tree"], lie)
    except (RegistryError, LyingServer):  # a head there that does not verify (damaged, forged)
        return await _objects_held(ctx, st, state["tree"], lie)
    if head is None:
        return Lack()
    if head.revision < published:
        lie.how, lie.served = "rolled back", head.revision
        return await _objects_held(ctx, st, state["tree"], lie)
    try:
        levels = levels_from_cbor(state["tree"])
        hashes = [manifest_hash_of(head)] + [e.ref.hash for lv in levels for e in lv]
        if await st.first_missing(hashes, timeout=ctx.timeout) is not None:
            return Lack()
    except RegistryError:  # the head's data names no manifest: damaged or forged
        return await _objects_held(ctx, st, state["tree"], lie)
    return None


def _why_unchecked(mirror: MirrorStore, st) -> str:
    """Why a store of `mirror` is not caught up, as a person reads it."""
    h = mirror.health[st.url]
    if h.writing:
        return "a write to it was under way (another session's push)"
    if h.pending:
        return f"{h.pending} write(s) to it were waiting in its outbox"
    return "it was not answering"


async def _objects_held(ctx: SyncContext, store, tree: bytes | None, lie: Lack) -> Lack:
    """`lie` (a head served rolled back or forged by `store`), `head_only` if the store holds every object the
    recorded level tree `tree` names: then a new head over them mends it. Not known (none recorded, the store
    not answering, a tree that does not decode): the whole log is pushed again, as for objects lost."""
    try:
        hashes = [e.ref.hash for lv in levels_from_cbor(tree) for e in lv]
        lie.head_only = bool(hashes) and await store.first_missing(hashes, timeout=ctx.timeout) is None
    except (TimeoutError, StoreError, OSError, RegistryError, ValueError):
        lie.head_only = False
    return lie
