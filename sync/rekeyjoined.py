"""A writer that joined a session on some stores of a mirror at the revision of a rekey's notice (rekey.py).

A writer joins by writing the members slot a revision on, listing itself. On one store, a rekey's notice sent for the
same revision is refused (StaleHead) and made again from the slot that lists the joiner. A mirror's stores each decide
on their own: one takes the notice, another the joiner's write, of one revision; of the two, the one the mirror ranks
first is what every device reads. The notice ranked first, the rekey wrote it again a revision on to every store as it
was made, with no box for the joiner: left out of a rekey that dropped no one, it took itself for revoked. Here the
joiner is found, so that the notice is made again with it boxed, as on one store.
"""

from __future__ import annotations

from . import dagcbor
from .errors import ImportError_
from .members import Members, SlotRead
from .membersobject import member_entries
from .mirror import highest
from .mirrorstrict import EveryStore
from .rekeynotice import RekeyNotices


async def joined_apart(
    members: Members, slot: object, sid: str, key: bytes, announce: bytes, listed: list[dict]
) -> SlotRead | None:
    """The members slot of `sid` (announce key `announce`, opened with `key`) as a store of the mirror `slot` holds it
    apart from the highest one the last every-store read found, with no notice, listing writers that `listed` (the
    writers the highest names) does not: read again from that store. None on one store, or when there is none. A
    store's entry that does not open (damaged, forged) names no joiner; a store that fails fails it."""
    if not isinstance(slot, EveryStore):
        return None
    pk = b"\xed" + announce
    entries = slot.read.get(pk, [])
    got = [e for e in entries if e is not None]
    if not got:
        return None
    top = highest(got)
    known = {bytes(m["head_pk"]) for m in listed}
    for store, entry in zip(slot.read_from.get(pk, []), entries):
        if entry is None or (entry.revision, entry.data) == (top.revision, top.data):
            continue
        try:
            read = await members.read_apart(store, sid, key, announce)
        except ImportError_:
            continue
        if read.notice is None and {bytes(m["head_pk"]) for m in read.members} - known:
            return read
    return None


def with_joined(listed: list[dict], read: SlotRead) -> list[dict]:
    """`listed` and the writers of `read` it lacks, after them."""
    known = {bytes(m["head_pk"]) for m in listed}
    return [*listed, *(m for m in read.members if bytes(m["head_pk"]) not in known)]


def rekeyed_with_joined(
    notices: RekeyNotices, sid: str, record: dict, listed: list[dict], read: SlotRead
) -> list[dict]:
    """A resumed rekey's `record` whose notice (old slot's writers `listed`) is to be written again over a store holding
    `read` (joined_apart): its notice made again, the same keys, with a box for each writer `read` adds (the new
    generation's writers, its "m", with them). Returns the writers the notice's slot lists. (Not for a record that
    kept no other writer, an `unshare` or every other writer dropped: one that joined is no more kept than they
    were.)"""
    added = with_joined(listed, read)[len(listed) :]
    record["m"] = [*record["m"], *member_entries(added)]
    frozen = dagcbor.decode(record["n"]).get("f", [])  # (the frozen logs the notice claimed: claimed again)
    record["n"] = dagcbor.encode(notices.notice(sid, record, frozen))
    return [*listed, *added]
