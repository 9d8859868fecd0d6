"""Whether another notice over a rekey's own in the old slot is a kept writer's rekey that came first (Rekeyer.resume):
the check a resume makes of a notice past the revision its own was sent for, before it gives its rekey up for it."""

from __future__ import annotations

from ..stores import Store
from .context import SyncContext
from .errors import ImportError_
from .fetch import BEHIND
from .rekeyproof import NotCheckedYet, check_exclusion


async def by_kept(
    ctx: SyncContext,
    sid: str,
    notice: dict | None,
    store: Store,
    members: list[dict],
    record: dict,
    old_announce: bytes,
) -> bool:
    """Whether `notice` (another than this device's rekey `record`'s, in the old slot past the revision that
    rekey's notice was sent for) is the rekey of a writer `record` keeps: the old slot lists its author under
    one head key, one of those, and its log claims it (or went on under a key this device does not hold), as a
    pull checks it (rekeyproof.check_exclusion; under the keys held here and the one `record` makes: a kept
    writer that took this rekey's notice went on under it). Such a writer does not write over a notice (a dropped
    one would: it is left out of the new generation), and its own rekey's notice may be past that revision
    without this one's ever taken: written again by its author's retry, or by a device that took it with what it
    carried over (rekeycarried). That rekey came first (was: this one finished, its notice in no store: the
    device left alone on its key). A notice its named author does not claim is a dropped writer's forgery
    written over this one's (was: this rekey given up for it, a notice no device takes: the session jammed)."""
    author = notice.get("d") if notice is not None else None
    heads = {bytes(m["head_pk"]) for m in members if author is not None and m.get("device_id") == author}
    if notice is None or len(heads) != 1 or not heads <= {bytes(m["k"]) for m in record.get("m", [])}:
        return False
    keys = ctx.keys
    peers = await ctx.db.peers(sid)
    try:
        await check_exclusion(
            store, sid, notice, old_announce=old_announce, members=members, me=keys.head_pk(sid),
            keys=[bytes(record["k"]), *keys.session_keys(sid)],
            known_revs={bytes(p["head_pk"]): p["rev"] for p in peers},
            behind={bytes(p["head_pk"]): p["rev"] for p in peers if p["last_error"] == BEHIND},
            timeout=ctx.timeout, walks=ctx.db.syncstate.claims_walks,
        )  # fmt: skip
    except ImportError_ as exc:
        if exc.kind == "rekey_unconfirmed" and not isinstance(exc, NotCheckedYet):  # (its author does not claim it)
            return False
        if exc.kind != "rekey_conflict":  # (a store failing, a head forged: the next pull looks again)
            raise
    return True
