"""What a delete here lets go in the store of a session no other device can read (`sessiond rm`, a clean-up's or
an expiry's delete): one never shared nor imported here (no members slot: no code of it was ever made, so no
other device ever held its key, and its key goes with the delete). Its log's objects that its head names (the
last manifest, its pages, nodes and parts objects) were no gc candidate: only what the log had let go before
was, and nothing reads a deleted session's head again, so they stayed in the store for good. The delete notes
them as candidates in its own transaction (storage/sessions.py `let_go`): `sessiond gc` frees them after its
grace, as ever only those no current head of a session here names. A shared session keeps them: importing its
code again brings all of it back."""

from __future__ import annotations

import logging

from ..stores.bounded import bounded
from .context import SyncContext
from .errors import describe
from .gc import UNREADABLE, Collector
from .heads import levels_from_cbor

log = logging.getLogger("sessiond.sync")


async def let_go_at_delete(ctx: SyncContext, collector: Collector, sid: str) -> tuple[str, frozenset[bytes]] | None:
    """The store (its URL) and the objects of this device's log of `sid` that a delete here lets go; None for a
    shared session (or one imported here), and for one never published (the store not asked then). Read from its
    head in the store within one store timeout; the store failing that read, the pages and nodes of the level tree
    this device recorded for it (what its nodes and parts objects name, and its manifest, then stay there)."""
    if await ctx.db.remote(sid) is not None:
        return None
    state = await ctx.db.sync_state(sid)
    if not state["head_rev"] and state["pending"] is None:
        return None  # never published (what a push put before that is a candidate already): the store not asked
    store = await ctx.store_for(sid)
    out: set[bytes] = set()
    try:
        await bounded(collector.head_objects(store, sid, ctx.keys.head_pk(sid), out), ctx.timeout)
    except (*UNREADABLE, ValueError) as exc:
        log.warning("a deleted session's head could not be read to let its objects go: %s", describe(exc))
        try:
            out |= {e.ref.hash for lv in levels_from_cbor(state["tree"]) for e in lv}
        except (ValueError, KeyError, TypeError):  # (a tree that does not decode: nothing known)
            pass
    return (store.url, frozenset(out)) if out else None
