"""Whether another notice over a rekey's own in the old slot is a kept writer's rekey that came first (Rekeyer.resume):
the check a resume makes of a notice past the revision its own was sent for, before it gives its rekey up for it; and,
on a mirror, the refusal of a resume that would give itself up to a notice by a writer it drops."""

from __future__ import annotations

from ..storage.redact import shown_url
from ..stores import Store
from .context import SyncContext
from .errors import ImportError_
from .fetch import BEHIND
from .rekeyproof import NotCheckedYet, check_exclusion, fork_way


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


def dropped_author(notice: dict | None, members: list[dict], record: dict, me: bytes) -> str | None:
    """The device id `notice` names as its author when that is a writer this device's rekey `record` drops: the old
    slot (`members`) lists it, under no head key `record` keeps nor this device's own (`me`). None otherwise (a kept
    writer, this device, an author the slot does not list)."""
    author = notice.get("d") if notice is not None else None
    if not isinstance(author, str):
        return None
    heads = {bytes(m["head_pk"]) for m in members if m.get("device_id") == author}
    if not heads or heads & ({bytes(m["k"]) for m in record.get("m", [])} | {me}):
        return None
    return author


def kept_from_dropped(sid: str, author: str, url: str) -> ImportError_:
    """The refusal of a rekey of `sid` on the mirror `url` whose notice was sent to its stores (its record's `r`, no
    `p`: killed before every store answered, then resumed, or refused as stale by one) and finds another notice the
    highest there, by `author`, a writer that rekey drops (Rekeyer.rekey and .resume): past `r`, or ranked over its own
    at `r`. Neither tells on a mirror whether this
    rekey's notice ever stood in every store (another rekey at once, ranked first, is written again a revision on by
    its author's resume: mirrorstrict.py), so it cannot finish; given up, its pull would take that notice, into a
    generation whose key the writer it drops holds (was: so). The record and its claim are kept: a device that checks
    the other notice finds this claim against it."""
    return ImportError_(
        "rekey_conflict",
        f"this device's rekey of {sid} cannot finish, and is not given up: its notice was sent to the stores of the "
        f"mirror {shown_url(url)}, not taken by every one (or not every one answered), and the old members slot there "
        f"now holds another notice over it, by {author}, a writer this rekey drops. On a mirror that does not tell "
        f"whether this device's notice ever stood in every store (that writer's own rekey at the same time may have "
        f"come first), and giving the rekey up would take that writer's notice: a key the writer it drops holds. The "
        f"rekey is kept, unfinished (each pull of {sid}, a share and a rekey of it are refused so; the other devices "
        f"refuse that notice too, this device's claim against it), and the session stays on its old key, which that "
        f"writer holds; {fork_way(sid)}",
        fork=True,  # (every share code of it names that slot: doctor says the fork, not a code imported)
    )
