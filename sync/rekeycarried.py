"""How far a kept writer carried a dropped writer's log past a rekey's notice (docs/FORMATS.md §6, "Carried
past the notice").

A kept writer that pulled a dropped writer after the rekeying device froze its log, before the notice was out,
freezes that log again where it read it, taking the notice (rekeyfreeze.applied_past): the new members slot
carries the later freeze, and every device of the new generation holds what the dropped writer wrote up to it.
The dropped writer cannot open the new slot (it has not got the new key): by the notice's "s" alone it would
count what every device holds as held here only. So the kept writer, once the new slot holds its freeze (it
has switched), writes the old slot one revision on, the notice as it was, with an entry in its list "c" per
log it froze later, signed by its own head key:

    {"g": signature, "k": dropped writer's head key, "p": signer's head key, "s": last seq carried}

over DAG-CBOR {"h": the notice's hash, "k", "s", "ty": "sessiond/carried"}. A dropped writer takes an entry
only if its signer is a writer the notice boxes (one of the new generation the notice, checked as the rekey's
author's own, names) and the signature holds: as strict as the notice's own "s". An entry it cannot verify
is ignored, and it counts more as held here (it errs toward keeping). Sessiond before it ignores "c". And what
a dropped writer is told it wrote past how far it was carried (left_here).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..storage.database import Database
from ..storage.testhooks import pause_for_tests
from ..stores import StaleHead
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.registry import RegistryEntry
from . import dagcbor
from .context import SyncContext
from .crypto import members_key
from .errors import ImportError_, describe
from .members import Members, announce_key
from .membersobject import SALT_LEN, encoded_keeping, members_object, seal_members
from .rekeyproof import carried_seq, notice_hash

log = logging.getLogger("sessiond.sync")

T_CARRIED = "sessiond/carried"


def carried_message(notice: dict, head_pk: bytes, seq: int) -> bytes:
    """What an entry's signature is over: DAG-CBOR {"h": BLAKE3 of the notice, "k", "s", "ty"}."""
    return dagcbor.encode({"h": notice_hash(notice), "k": head_pk, "s": seq, "ty": T_CARRIED})


def carried_entry(head_key: SigningKey, notice: dict, head_pk: bytes, seq: int) -> dict:
    """The entry saying that this device (`head_key`, a writer `notice` keeps) carried the log of head key
    `head_pk` over up to `seq`."""
    signature = head_key.sign(carried_message(notice, head_pk, seq)).signature
    return {"g": signature, "k": head_pk, "p": b"\xed" + bytes(head_key.verify_key), "s": seq}


def merge_carried(have: Iterable[dict], more: Iterable[dict]) -> list[dict]:
    """One entry per (dropped writer, signer): the one carrying furthest; in the order of their keys."""
    out: dict[tuple[bytes, bytes], dict] = {}
    for e in [*have, *more]:
        key = (bytes(e["k"]), bytes(e["p"]))
        if key not in out or e["s"] > out[key]["s"]:
            out[key] = dict(e)
    return [out[k] for k in sorted(out)]


def _holds(notice: dict, e: dict) -> bool:
    """Whether entry `e` is signed by a writer `notice` boxes (kept), for this notice."""
    boxed = {bytes(b["k"]) for b in notice.get("b", []) if isinstance(b, dict) and isinstance(b.get("k"), bytes)}
    if bytes(e["p"]) not in boxed:
        return False
    try:
        VerifyKey(bytes(e["p"])[1:]).verify(carried_message(notice, bytes(e["k"]), e["s"]), bytes(e["g"]))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def carried_past(notice: dict, entries: Sequence[dict], me: bytes) -> int | None:
    """How far `notice`'s rekey carried the log of head key `me` over: the furthest of its "s" and of the entries
    of the old slot's "c" that hold (signed by a writer it keeps, for this notice); None if none says."""
    seqs = [e["s"] for e in entries if bytes(e["k"]) == me and _holds(notice, e)]
    if (seq := carried_seq(notice, me)) is not None:
        seqs.append(seq)
    return max(seqs, default=None)


async def left_here(db: Database, sid: str, seq: int | None) -> str:
    """What this device wrote that a rekey leaving it out did not carry over (its writes after the rekey read
    its log, before it learnt of the rekey: its pushes went on to a log no device reads now), said; '' if
    nothing. `seq`: how far the rekey carried its log (carried_past: the notice's "s", FORMATS.md §6, or a kept
    writer's later freeze); None for a notice of an earlier sessiond, which does not say: then said as a
    possibility."""
    if seq is None:
        if not await db.last_seq(sid):
            return ""
        return (
            "; what it wrote after that rekey read its log (the rekey does not say how far it read) is held here"
            " only, not sent to the devices that kept the session"
        )
    ids, messages, other = await db.written_after(sid, seq)
    if not messages and not other:
        return ""
    what = [f"{other} other change{'s' if other != 1 else ''}"] if other else []
    if messages:
        more = ", ..." if messages > len(ids) else ""
        what.insert(0, f"{messages} message{'s' if messages != 1 else ''} ({', '.join(ids)}{more})")
    return (
        f"; {' and '.join(what)} it wrote after that rekey read its log {'are' if messages + other > 1 else 'is'}"
        " held here only, not sent to the devices that kept the session"
    )


async def write_carried(ctx: SyncContext, members: Members, sid: str, record: dict) -> None:
    """Write a kept writer's entries (`record["c"]`: carried_entry, made when it took the notice) to the old
    members slot (its key `record["ck"]`, write secret `record["cw"]`), one revision on, the notice and what
    the slot holds kept as read. Only if the slot still holds the notice they were signed for; given up, said
    in the log, if it does not, cannot be read (damaged) or written (past the cap), or keeps changing: the
    dropped writer then counts more as held here. A store's failure is raised (the caller's record stays, and
    the next pull finishes it)."""
    store = await ctx.store_for(sid)
    key, write = bytes(record["ck"]), bytes(record["cw"])
    ak = announce_key(write)
    for _attempt in range(5):
        try:
            # (its own object: this process's memory of the session's slot is the new slot's, which a verify or a
            # push reads meanwhile, not this one's: Members.read_apart)
            slot = await members.read_apart(store, sid, key, bytes(ak.verify_key))
        except ImportError_ as exc:
            if exc.kind in ("store", "busy"):
                raise
            log.warning("the old members slot cannot be read: %s", describe(exc), extra={"session": sid})
            return
        await pause_for_tests("rekey.carried_read")  # (the tests hold it here: the old slot read, nothing merged)
        mine, notice = list(record["c"]), slot.notice
        if notice is None or not all(_holds(notice, e) for e in mine):
            log.warning("the old members slot no longer holds the notice this device took", extra={"session": sid})
            return
        have = [e for e in slot.carried if _holds(notice, e)]  # (another's, not a forger's)
        merged = merge_carried(have, mine)
        if merged == merge_carried(have, []):
            return  # (written already: a resumed take)
        # (no "f" beside the notice: one there is a dropped writer's, not read, and not written on: parse_members)
        obj = {**members_object(sid, slot.members), "rekey": notice, "c": merged}
        plain = encoded_keeping(obj, slot.unknown)
        salt = os.urandom(SALT_LEN)
        try:
            sealed = seal_members(sid, plain, members_key(key, salt), len(slot.members))
        except ImportError_ as exc:
            log.warning("could not write how far the rekey carried: %s", describe(exc), extra={"session": sid})
            return
        entry = RegistryEntry.create(ak, slot.revision + 1, b"\x1e" + digest(sealed) + salt)
        async with ctx.put_to_name(store, sid, sealed, entry.pk, entry.revision):
            try:
                await bounded(store.set_head(entry), ctx.timeout)
            except StaleHead:
                continue  # written meanwhile (another kept writer's entries): read again and merge
            await ctx.named(store, entry)
        return
    log.warning("could not write how far the rekey carried: the old members slot kept changing", extra={"session": sid})
