"""What a rekey carries over of the writers it drops: their logs frozen as their heads name them (rekey.py, at
its start), again for those this device's own pull took past that meanwhile, and, by a kept writer taking the
notice, where it read those it applied past the notice's freeze (docs/FORMATS.md §6)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from ..stores import Store
from .context import SyncContext
from .crypto import key_fingerprint
from .errors import ImportError_, describe
from .fetch import ManifestSealed, freeze_log, read_manifest
from .frozen import merge_frozen
from .members import Members
from .membersobject import member_name
from .rekeyproof import carried_seq, notice_hash

log = logging.getLogger("sessiond.sync")


async def freeze_dropped(
    ctx: SyncContext, store: Store, sid: str, dropped: list[dict]
) -> tuple[list[dict], dict[bytes, int]]:
    """The dropped writers' logs, frozen (fetch.freeze_log), and the last seq of each carried over, by
    head key (0: none, as it had pushed nothing). A log that cannot be frozen (damaged, or sealed under a
    key this device never held) is left out, said in the log: the writer being dropped must not be able
    to stop its own revocation. Its seq is left out too: how far the kept devices read its log is not
    known here, and a 0 would have the writer say that all it ever wrote is held there only. A store
    that fails fails the rekey (it is retried)."""
    out, seqs = [], {}
    for m in dropped:
        try:
            f = await freeze_log(store, sid, ctx.keys.session_keys(sid), m, timeout=ctx.timeout)
        except ImportError_ as exc:
            if exc.kind == "store":
                raise
            log.warning("a dropped writer's log is not carried over", extra={"session": sid, "error": describe(exc)})
            continue
        if f is not None:
            out.append(f[0])
        seqs[bytes(m["head_pk"])] = f[1] if f is not None else 0
    return out, seqs


async def pulled_past(ctx: SyncContext, sid: str, dropped: list[dict], seqs: dict[bytes, int]) -> list[dict]:
    """The dropped writers whose logs this device applied past where this rekey froze them (`seqs`): its
    follower applied a head newer than the one the freeze read (the stores of a mirror apart). Frozen again,
    the rekey carries what this device holds (else it alone would). A pull applies nothing while the rekey
    holds the session's rekey lock, nor after it on the generation the rekey ended (follower.Follower._pull)."""
    peers = {bytes(p["head_pk"]): p["applied_seq"] for p in await ctx.db.peers(sid)}
    return [m for m in dropped if (pk := bytes(m["head_pk"])) in seqs and peers.get(pk, 0) > seqs[pk]]


async def applied_past(
    ctx: SyncContext, sid: str, store: Store, notice: dict, dropped: list[dict]
) -> list[tuple[dict, int]]:
    """The logs of the writers `notice` drops that this device applied past where the rekey froze them (the
    notice's "s"), frozen where this device read them (fetch.freeze_log at its peer row's revision): it
    pulled them while the rekeying device, having frozen them, had not published its notice yet. Written
    into the new members slot (a later freeze of a head is the one kept: frozen.merge_frozen), so that every
    device of the new generation, and every import, takes what this device holds; else it alone would.
    A log that cannot be frozen so is said in the log and left out; a store that fails fails the take. Each with
    the last seq it carries over (the dropped writer learns it from the old slot: rekeycarried)."""
    peers = {bytes(p["head_pk"]): p for p in await ctx.db.peers(sid)}
    out = []
    for m in dropped:
        p, carried = peers.get(bytes(m["head_pk"])), carried_seq(notice, bytes(m["head_pk"]))
        if p is None or carried is None or p["applied_seq"] <= carried or not p["rev"]:
            continue
        keys = ctx.keys.session_keys(sid)
        try:
            f = await freeze_log(store, sid, keys, m, timeout=ctx.timeout, rev=p["rev"])
        except ImportError_ as exc:
            if exc.kind == "store":
                raise
            f = None
            log.warning("a dropped writer's log as read here is not carried over: %s", describe(exc))
        if f is None:
            log.warning(
                "what this device applied of a dropped writer past the rekey's freeze is not carried over",
                extra={"session": sid, "device": member_name(m)},
            )
            continue
        out.append(f)
    return out


# Store reads (a writer's manifest, an old slot one of its claims names) dropped_before makes at most for the rekeys of
# the slot's other writers: the slot is any writer's to write, and one filled with made-up members would else have
# each one's manifest read and up to CLAIMS_KEPT old slots per member. (This device's own claims: CLAIMS_KEPT at most.)
OTHERS_READS = 48


class Dropped(NamedTuple):
    """What dropped_before found: of the devices asked to drop that are no writer, those a rekey dropped before
    (`found`), and of them those the rekey of this device that made the current key gave no key (`own`); `capped`:
    some were not found within OTHERS_READS reads of the other writers' rekeys (not looked for past it)."""

    found: list[str]
    own: list[str]
    capped: bool


class _Reads:
    """The store reads left for the other writers' rekeys (OTHERS_READS)."""

    def __init__(self, left: int):
        self.left, self.capped = left, False

    def take(self) -> bool:
        if self.left <= 0:
            self.capped = True
            return False
        self.left -= 1
        return True


async def dropped_before(
    ctx: SyncContext,
    members: Members,
    store: Store,
    sid: str,
    drop: Sequence[str],
    others: set[str],
    frozen: list[dict],
    claims: Callable[[str], Awaitable[list[dict]]],
    writers: Sequence[dict] = (),
) -> Dropped:
    """Of the devices a rekey was asked to `drop` that are no writer of the session (not in `others`), those a rekey
    dropped before (a drop asked again after a kill cut its answer, finished from its record; or done long before),
    and of them those the rekey of this device's that made the session's current key dropped. Found by: a writer
    its notice has no box for of the generation one of this device's own rekeys ended (its `claims`, the latest
    first); a frozen log of theirs (`frozen`, the slot's, and those noted here), named by its device id or the start
    of its head key as `--drop` takes it; or, read only while some are not found so, the same of the rekeys of the
    slot's other `writers` (the claims of each one's current manifest: a rekey this device took, which dropped a
    writer that never pushed, of which no frozen log tells), OTHERS_READS store reads at most (`capped` past them).
    Each claim names the old slot, which lists the generation its rekey ended, its notice boxing those kept. Never
    this device. A store that fails fails it.

    Only the rekey of this device's that made the current key, which boxed it no key (`own`: it dropped it, or the
    device was no writer of the slot that rekey read), tells that the device reads nothing written since,
    and only if nothing let it back in since (shut_out_since: the caller rekeys nothing again then): a frozen log,
    another writer's log and the slots it leads to are any current writer's to write, and a device another rekey,
    or an earlier one of this device's, dropped may have been given a code since."""
    names = [d for d in dict.fromkeys(drop) if d not in others]
    if not names:
        return Dropped([], [], False)
    me = ctx.keys.head_pk(sid)
    keys = ctx.keys.session_keys(sid)
    remote = await ctx.db.remote(sid)
    current = bytes(remote["announce_pk"]) if remote is not None else None
    read: set[bytes] = set()  # (old slots read: one rekey's, claimed by its author and by no other)
    boxed: dict[bytes, set[bytes]] = {}  # (this device's rekeys read: the head keys each boxed, by the key it began)
    seen: dict[str, set[bytes]] = {}  # (the head keys each name has in the slots read)
    by = await _dropped_by(members, store, sid, keys, me, await claims(sid), set(names), read, boxed=boxed, seen=seen)
    frozen = merge_frozen(frozen, await members.known_frozen(sid))
    gone = {n for f in frozen if bytes(f["k"]) != me for n in (str(f["d"]), bytes(f["k"]).hex()[:16])}
    for f in frozen:
        for n in {str(f["d"]), bytes(f["k"]).hex()[:16]} & set(names):
            seen.setdefault(n, set()).add(bytes(f["k"]))
    found = set(by) | {n for n in names if n in gone}
    reads = _Reads(OTHERS_READS)
    for w in writers:
        if found >= set(names):
            break
        if w["head_pk"] != me:
            if not reads.take():  # (its manifest)
                break
            pk = bytes(w["head_pk"])
            claimed = await _claims_of(ctx, store, sid, keys, pk)
            found |= set(await _dropped_by(members, store, sid, keys, pk, claimed, set(names) - found, read, me, reads))
    # the rekey here that made the current key boxed it none (dropped it, or it was no writer then: a drop asked again
    # after a code issued since the first, which that rekey was for): _boxed_none
    kept = boxed.get(current) if current is not None else None
    own = [] if kept is None else await _boxed_none(ctx, sid, [n for n in names if n in found], kept, writers, seen)
    return Dropped([n for n in names if n in found], own, reads.capped and not found >= set(names))


async def _boxed_none(
    ctx: SyncContext, sid: str, names: list[str], kept: set[bytes], writers: Sequence[dict], seen: dict[str, set[bytes]]
) -> list[str]:
    """Of `names`, those the rekey here that made the current key boxed no key (`kept`: the head keys its notice, which
    this device claims, boxed). The old slot that rekey read names the writers, and any writer of that generation can
    write it one revision on (the notice as it was, a writer left off the list or named otherwise): so a name counts
    only if no head key it has anywhere here (a slot read, a log pulled, a frozen log) is boxed, and only while every
    key boxed is a writer of the current slot (which that rekey wrote listing them all: one missing, the slot read
    now was written without a device that reads; none counts)."""
    listed = {bytes(w["head_pk"]) for w in writers} | {ctx.keys.head_pk(sid)}
    if not kept <= listed:
        return []
    known: dict[str, set[bytes]] = {n: set(seen.get(n, ())) for n in names}
    for p in await ctx.db.peers(sid):
        for n in {p["device_id"], bytes(p["head_pk"]).hex()[:16]} & set(names):
            known[n].add(bytes(p["head_pk"]))
    return [n for n in names if not (known[n] & kept) and not any(k.hex()[:16] == n for k in kept)]


async def shut_out_since(ctx: SyncContext, sid: str, rev: int) -> bool:
    """Whether nothing since the rekey of this device's that made `sid`'s current key could have let a device it
    dropped back in, as far as this device can tell: no share code was issued here under the current key (the share
    log's fingerprint of the key each code opens: a read or write code the dropped device may hold), and the members
    slot the rekey read (revision `rev`) is the one this device last wrote or read, or later (a store serving an
    older one hides a writer let back in since, by another writer's code)."""
    remote, key = await ctx.db.remote(sid), ctx.keys.session_key(sid)
    if remote is None or key is None or rev < remote["members_rev"]:
        return False
    fp = key_fingerprint(key)
    return not any(bytes(r["key_fp"]) == fp for r in await ctx.db.share_log.list(sid))


async def _dropped_by(
    members: Members,
    store: Store,
    sid: str,
    keys: list[bytes],
    author: bytes,
    claimed: list[dict],
    names: set[str],
    read: set[bytes],
    me: bytes | None = None,
    reads: _Reads | None = None,
    boxed: dict[bytes, set[bytes]] | None = None,
    seen: dict[str, set[bytes]] | None = None,
) -> dict[str, bytes]:
    """Of `names`, the writers of the generations the rekeys `claimed` by `author` ended that their notices have no
    box for (dropped_before), each with the announce key of the generation the latest such rekey began; each old
    slot read once (`read`), the latest claims first, while some are not found, and while `reads` has some left.
    `boxed`: filled with the head keys each rekey's notice boxed, by the announce key it began; `seen`: with the head
    keys each of `names` has in the slots read."""
    found: dict[str, bytes] = {}
    for claim in reversed(claimed):
        if set(found) >= names:
            break
        if bytes(claim["o"]) in read:
            continue
        if reads is not None and not reads.take():
            break
        read.add(bytes(claim["o"]))
        try:
            slot = await members.read_apart(store, sid, keys, bytes(claim["o"]))
        except ImportError_ as exc:
            if exc.kind == "store":
                raise
            continue  # (unreadable: not known from it)
        if slot.notice is None or notice_hash(slot.notice) != claim["h"]:
            continue
        kept = {bytes(b["k"]) for b in slot.notice.get("b", [])} | {author, me or author}
        if boxed is not None:
            boxed[bytes(claim["a"])] = kept
        for m in slot.members:
            if seen is not None and member_name(m) in names:
                seen.setdefault(member_name(m), set()).add(bytes(m["head_pk"]))
            if bytes(m["head_pk"]) not in kept and member_name(m) in names:
                found.setdefault(member_name(m), bytes(claim["a"]))
    return found


async def _claims_of(ctx: SyncContext, store: Store, sid: str, keys: list[bytes], pk: bytes) -> list[dict]:
    """The rekey claims of writer `pk`'s current manifest; none if it has no head, or none this device can read (a
    manifest no key here opens, or damaged: said in the log). A store that fails fails it."""
    try:
        man = await read_manifest(store, sid, keys, pk, None, min_rev=0, timeout=ctx.timeout)
    except ManifestSealed:
        return []
    except ImportError_ as exc:
        if exc.kind == "store":
            raise
        log.warning("a writer's rekey claims could not be read", extra={"session": sid, "error": describe(exc)})
        return []
    return [] if man is None else man.claims
