"""A writer that joined a session on some stores of a mirror at the revision of a rekey's notice (rekey.py).

A writer joins by writing the members slot a revision on, listing itself. On one store, a rekey's notice sent for the
same revision is refused (StaleHead) and made again from the slot that lists the joiner. A mirror's stores each decide
on their own: one takes the notice, another the joiner's write, of one revision; of the two, the one the mirror ranks
first is what every device reads. The notice ranked first, the rekey wrote it again a revision on to every store as it
was made, with no box for the joiner: left out of a rekey that dropped no one, it took itself for revoked. Here the
joiner is found, so that the notice is made again with it boxed, as on one store.
"""

from __future__ import annotations

from nacl.signing import SigningKey

from . import dagcbor
from .errors import ImportError_
from .members import Members, SlotRead
from .membersobject import member_device, member_entries
from .mirror import highest
from .mirrorstrict import EveryStore
from .rekeynotice import RekeyNotices
from .rekeyproof import open_box


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


def made_before(sid: str, notice: dict, record: dict, head_pk: bytes, head_key: SigningKey) -> bool:
    """Whether `notice`, in the old slot in place of the one `record` holds, is one this rekey made before it (the same
    keys: its box for this device, head key `head_pk`, gives the record's new key and announce key; no other device
    has them but those it boxed): a notice made again for a writer that joined, killed before it was out, the first
    still the highest. Written over with the record's, as this rekey's own (was: taken for another device's rekey
    that came first, the rekey given up and its claim withdrawn, the slot left holding a notice no device takes)."""
    try:
        box = open_box(notice, head_pk, head_key, sid)
    except ImportError_:
        return False
    return box is not None and bytes(box["k"]) == record["k"] and bytes(box["a"]) == notice.get("a") == record["a"]


def with_kept(listed: list[dict], record: dict) -> list[dict]:
    """`listed` and the writers `record` keeps (its "m") it lacks, after them: the old slot's writers with a writer
    that joined and that a notice made again boxes."""
    known = {bytes(m["head_pk"]) for m in listed}
    kept = [{"head_pk": bytes(m["k"]), "device_id": member_device(m.get("d"))} for m in record["m"]]
    return [*listed, *(m for m in kept if m["head_pk"] not in known)]
