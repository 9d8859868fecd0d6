"""What a delete here lets go in the store of a session no other device can read (`sessiond rm`, a clean-up's or
an expiry's delete): one never shared nor imported here (no members slot: no code of it was ever made, so no
other device ever held its key, and its key goes with the delete). Its log's objects that its head names (the
last manifest, its pages, nodes and parts objects) were no gc candidate: only what the log had let go before
was, and nothing reads a deleted session's head again, so they stayed in the store for good. The delete notes
them as candidates in its own transaction (storage/sessions.py `let_go`): `sessiond gc` frees them after its
grace, as ever only those no current head of a session here names. A shared session keeps them: importing its
code again brings all of it back.

The head is read within LET_GO_WAIT, not a whole store timeout: `rm` waits for it. Whatever the store answers, what
this device recorded of a push cut short (its outbox, `sync_state.pending`: a push killed or failed after it put
its pages and manifest, before its head) is let go too: its pages and nodes, its manifest (sealed again here, the
same bytes) and the manifest before it (its `prev`), none of which a head the store holds names."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..storage.redact import shown_store
from ..stores.bounded import bounded
from ..stores.cid import CIDV1_RAW_BLAKE3
from .context import SyncContext
from .crypto import manifest_key, seal
from .errors import describe
from .gc import UNREADABLE, Collector
from .heads import levels_from_cbor
from .revision import Revision

log = logging.getLogger("sessiond.sync")

# The most seconds a delete waits for the store's head (rm answers after it): a store that hangs or crawls is not
# waited out for a whole store timeout; the store failing it, what this device recorded is let go instead.
LET_GO_WAIT = 3.0


@dataclass(frozen=True)
class LetGo:
    """What a delete here lets go in the store `store` (its URL): `hashes`, gc candidates from the delete on; and
    `unread`, why the store's head could not be read (None: it was), what it names then staying for good."""

    store: str
    hashes: frozenset[bytes]
    unread: str | None = None

    def noted(self) -> tuple[str, frozenset[bytes]] | None:
        """As the delete notes it (storage/sessions.py `let_go`), or None: nothing to note."""
        return (self.store, self.hashes) if self.hashes else None

    def left(self) -> dict | None:
        """As `rm`'s answer names what stays in the store for good (`left_in_store`), or None: nothing does."""
        if self.unread is None:
            return None
        return {
            "store": shown_store(self.store),
            "what": "what its head there names beyond the pages and nodes this device recorded may stay for good: its"
            " last manifest and the parts objects (long messages) its nodes name, if any (the session's key went with"
            " it: nothing here can read its head again to tell them)",
            "why": f"the store's head of it could not be read: {self.unread}",
            "fix": f"`sessiond gc` (after its grace) frees the {len(self.hashes)} other object(s) it let go; to let go"
            " all of a session, `sessiond rm` it while its store answers",
        }


async def let_go_at_delete(ctx: SyncContext, collector: Collector, sid: str) -> LetGo | None:
    """What a delete here of `sid` lets go of this device's log in its store; None for a shared session (or one
    imported here), and for one never published (the store not asked then). Read from its head in the store within
    LET_GO_WAIT (and a push cut short: _cut_short); the store failing that read, the pages and nodes of the level tree
    this device recorded for it (what its nodes and parts objects name, and its last manifest, then stay there: said
    in the log, and in `rm`'s answer, LetGo.left)."""
    if await ctx.db.remote(sid) is not None:
        return None
    state = await ctx.db.sync_state(sid)
    if not state["head_rev"] and state["pending"] is None:
        return None  # never published (what a push put before that is a candidate already): the store not asked
    store = await ctx.store_for(sid)
    out = _cut_short(ctx, sid, state["pending"])
    unread = None
    try:
        failing = await store.failing_now()  # (a folder store's folder gone: known without asking)
        if failing is not None:
            raise failing
        await bounded(collector.head_objects(store, sid, ctx.keys.head_pk(sid), out), min(ctx.timeout, LET_GO_WAIT))
    except (*UNREADABLE, ValueError) as exc:
        why = unread = describe(exc) if not isinstance(exc, TimeoutError) else f"no answer within {LET_GO_WAIT:g} s"
        log.warning(
            "a deleted session's head could not be read to let its objects go (its last manifest and the parts"
            " objects its nodes name stay in the store): %s",
            why,
            extra={"session": sid},
        )
        try:
            out |= {e.ref.hash for lv in levels_from_cbor(state["tree"]) for e in lv}
        except (ValueError, KeyError, TypeError):  # (a tree that does not decode: nothing known)
            pass
    return LetGo(store.url, frozenset(out), unread) if out or unread else None


def _cut_short(ctx: SyncContext, sid: str, pending: bytes | None) -> set[bytes]:
    """What a push cut short put, or may have put, that no head names: the pages and nodes of its recorded revision
    (and those a compaction merged), its manifest and the one before it."""
    if not pending:
        return set()
    try:
        made = Revision.recorded(pending)
        out = {e.ref.hash for lv in levels_from_cbor(made.tree) for e in lv} | set(made.merged)
    except (ValueError, KeyError, TypeError):  # (a record that does not decode: nothing known)
        return set()
    if made.prev is not None and made.prev.startswith(CIDV1_RAW_BLAKE3):
        out.add(made.prev[len(CIDV1_RAW_BLAKE3) :])
    keys = ctx.keys.session_keys(sid)
    if keys:  # sealed as the push sealed it (sync/push.py seal_manifest: the same key, the same bytes)
        out.add(seal(made.plain, manifest_key(keys[0], ctx.keys.head_pk(sid), made.rev), pad=False)[1].hash)
    return out
