"""Telling a real rekey notice from a forged one (docs/FORMATS.md §6, "Rekey").

A rekey notice sits in the session's *old* members slot, which every writer of the old generation can
sign: a writer the rekey dropped could overwrite the notice with one of its own, naming keys it chose.
What a dropped device cannot make is another device's head: so the device that rekeys first adds a
*claim* to the manifest its own head points to ({o: old announce key, a: new announce key, h: the
notice's hash}), and only then publishes the notice, which names it ("d"). A device taking a notice
checks, before it switches, that

* the device the notice names is a member of the old generation and its manifest claims this very
  notice, and
* no other member's manifest claims another notice of the same generation, and every member's manifest
  opens under a key this device holds or is given by the notice (or the notices after it): a member
  whose log moved to a key the notice does not give went to another generation, so two rekeys compete.
  A member whose head is still the one this device found sealed when it joined (under a key from before
  that, the member away through an earlier rekey: `behind`) has not moved since, and contradicts nothing.

Either failure leaves the device where it is and says so. A notice with no box for this device (a rekey
that leaves it out) is checked as far as it can be without the new key (check_exclusion) before the
device takes itself for revoked; a share code whose members slot holds a notice is refused with what the
same check makes of it (refused_code: the code revoked by a rekey, or a notice no device takes). Read-only:
nothing here writes anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from blake3 import blake3
from nacl.public import SealedBox
from nacl.signing import SigningKey

from ..storage.claimswalks import ClaimsWalks
from ..stores import Store
from . import dagcbor, rekeywalk
from .errors import ImportError_
from .fetch import ManifestSealed, read_manifest
from .manifest import CLAIMS_KEPT
from .membersobject import SEQ_MAX, member_name
from .rekeywalk import claimed_before
from .sharecode import ShareCode

# how many rekeys after the one being taken are followed to find the keys members' logs moved to: a device
# away through more than these (each a user's rekey) is told to import a new share code (check_notice)
CHAIN_MAX = 64

# (store, sid, session key, announce public key) -> (revision, members, notice): Members.read_members
ReadSlot = Callable[[Store, str, bytes, bytes], Awaitable[tuple[int, list[dict], dict | None]]]
# the links of a chain of rekeys, as read (check_notice `links`): (store URL, session key, announce key) of a slot
# -> (key, announce key) its notice's box for this device gives
Links = dict[tuple[str, bytes, bytes], tuple[bytes, bytes]]


class NotCheckedYet(ImportError_):
    """rekey_unconfirmed for a notice whose author's claim is not known yet (a walk of its older manifests cut
    short: the next check goes on with it), not found missing."""


def fork_way(sid: str) -> str:
    """The way on past a rekey notice no device takes (one a writer wrote, naming an author that does not
    claim it: docs/SECURITY.md, "A writer and the rekey"). It stays in the members slot, so no device pulls
    past it or rekeys past it, and no share code of the slot imports, a new one neither: a new session."""
    return (
        f"if it stays so (no device takes such a notice, and no device can replace it: a new share code of {sid}"
        f" names the same slot), go on in a new session: `sessiond fork {sid} --at LAST` (LAST: the id"
        f" `sessiond log {sid} --last 1` shows) on a device you trust, then `sessiond share NEW --write` (NEW:"
        f" the fork's id) for each device to keep"
    )


def unnamed_author(author: object) -> str:
    """Who may have written a notice naming no member as its author (`author`: its "d"): sessiond before
    claims wrote none; a "d" naming no member is a writer's."""
    if author is None:
        return "made by an older sessiond, or written by a writer without a rekey of its own"
    return "written by a writer without a rekey of its own"


def no_author_way(author: object, sid: str, took: str) -> str:
    """The way on past such a notice: a new share code from a device that took it, if an older sessiond
    may have made it; else the fork (fork_way). `took`: which device ("took it": the rekey; "the rekey kept")."""
    fork = fork_way(sid)
    if author is None:
        return f"A rekey by an older sessiond: import a new share code from a device that {took}; else {fork}"
    return fork[0].upper() + fork[1:]


def notice_hash(notice: dict) -> bytes:
    """BLAKE3 of the notice map's DAG-CBOR encoding: what a claim names."""
    return blake3(dagcbor.encode(notice)).digest()


def same_notice(notice: dict, record: dict) -> bool:
    """Whether `notice`, read from a members slot, is the one of this device's rekey `record`."""
    return notice_hash(notice) == notice_hash(dagcbor.decode(record["n"]))


def carried_seq(notice: dict, me: bytes) -> int | None:
    """How far a rekey's notice says it carried the log of head key `me` over (its "s": FORMATS.md §6), or
    None when it does not say (a notice of an earlier sessiond, one naming other devices only, a log it could
    not freeze). One past what a log's seq can be (SQLite's integers), which no sessiond wrote: taken as none."""
    carried = notice.get("s")
    seq = None
    if isinstance(carried, list):
        seq = next((c.get("s") for c in carried if isinstance(c, dict) and c.get("k") == me), None)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
        return None
    return seq


def open_box(notice: dict, head_pk: bytes, head_key: SigningKey, sid: str) -> dict | None:
    """This device's box of a notice, opened: {"a", "k", "w"?}; None if the notice has no box for it.
    Raises ImportError_ if there is one that does not open."""
    box = next((b.get("x") for b in notice.get("b", []) if isinstance(b, dict) and b.get("k") == head_pk), None)
    if box is None:
        return None
    try:
        secret = dagcbor.decode(SealedBox(head_key.to_curve25519_private_key()).decrypt(bytes(box)))
        if not (isinstance(secret.get("k"), bytes) and len(secret["k"]) == 32 and isinstance(secret.get("a"), bytes)):
            raise ValueError("not a rekey secret")
    except Exception:
        raise ImportError_(
            "damaged",
            f"the rekey notice of session {sid} has a box for this device that cannot be opened: ask a device that"
            f" took the rekey for a new share code of {sid}, and import it (`sessiond import < code.txt`)",
        ) from None
    return secret


def kept_but_left_out(left: str) -> str:
    """What a device a rekey left out is told it keeps and how it gets back in; `left`: what it wrote that the
    rekey did not carry over, said (Rekeyer._left_here), or ''."""
    back = "; what it wrote goes out with its log then" if left else ""
    return (
        f"it keeps what it has but receives nothing new{left} (import a new share code from a device that kept"
        f" it: `sessiond import`{back})"
    )


async def check_notice(
    store: Store,
    sid: str,
    notice: dict,
    *,
    old_announce: bytes,
    members: list[dict],
    me: bytes,
    head_key: SigningKey,
    keys: list[bytes],
    new_key: bytes,
    new_announce: bytes,
    known_revs: dict[bytes, int],
    read_slot: ReadSlot,
    timeout: float,
    behind: dict[bytes, int] | None = None,
    left_here: Callable[[dict], Awaitable[str]] | None = None,
    links: Links | None = None,
    walks: ClaimsWalks | None = None,
) -> None:
    """Refuse (ImportError_) a notice its author's head does not claim, or one another member's log
    contradicts. `members`: the old generation's (from the slot the notice is in); `me`: this device's
    head public key; `keys`: the session keys this device holds; `new_key`, `new_announce`: what its box
    gave; `known_revs`: the revision of each member's head this device has seen (a lower one is a replay);
    `behind`: the members whose head this device found under an older key than its own, at that revision;
    `left_here`: what this device wrote that a later rekey leaving it out did not carry over, said (given that
    rekey's notice: Rekeyer._left_here), for the refusal that says it was left out; `walks`: where a walk of the
    author's older manifests cut short is kept (rekeywalk.claimed_before)."""
    author = notice.get("d")
    names = {m["device_id"] for m in members if m["device_id"] is not None}  # (a member of no known id is no author)
    if not isinstance(author, str) or author not in names:
        raise ImportError_(
            "rekey_unconfirmed",
            f"the rekey notice of session {sid} does not name a device of the session as its author "
            f"({unnamed_author(author)}); this device keeps its key. " + no_author_way(author, sid, "took it"),
        )
    later, left_by, cut = await _later_keys(store, sid, new_key, new_announce, me, head_key, read_slot, links)
    keys = [new_key, *later, *keys]
    claimed, moved, contradicting = await _sightings(
        store, sid, notice, author, old_announce, members, me, keys, known_revs, behind or {}, timeout, walks=walks
    )
    if moved and cut and not contradicting:
        # (the chain goes on past what is followed: the members' logs may well be under a key further on)
        raise ImportError_(
            "rekey_unconfirmed",
            f"session {sid} was rekeyed more than {CHAIN_MAX} times since this device last took its key, more"
            f" than it follows to check the first of those rekeys; this device keeps what it has. Ask a device"
            f" that took the last rekey for a new share code of {sid}, and import it here"
            f" (`sessiond import < code.txt`)",
        )
    if moved and left_by is not None and not contradicting:
        # the members went on to a generation after the notice's, which this device was left out of
        left = await left_here(left_by) if left_here is not None else ""
        raise ImportError_(
            "revoked",
            f"session {sid} was rekeyed again without this device after a rekey that kept it: "
            + kept_but_left_out(left),
        )
    if moved or contradicting or not claimed:
        others = sorted(set(moved + contradicting) - {author})
        raise ImportError_(
            "rekey_conflict",
            f"session {sid} has a rekey notice by device {author}, but device(s) {', '.join(others) or author} "
            f"went on under other keys: two devices claim to have rekeyed it (one of them may be a device "
            f"that was dropped). This device takes neither and keeps what it has. Ask a device you trust "
            f"for a new share code, then `sessiond rm {sid}` and import it",
        )


async def check_exclusion(
    store: Store,
    sid: str,
    notice: dict,
    *,
    old_announce: bytes,
    members: list[dict],
    me: bytes,
    keys: list[bytes],
    known_revs: dict[bytes, int],
    timeout: float,
    behind: dict[bytes, int] | None = None,
    importing: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    walks: ClaimsWalks | None = None,
) -> str:
    """For a notice with no box for this device (a rekey that leaves it out): the author it names, once
    checked as far as this device can without the new key; refuses (ImportError_) one whose author is no
    other member of the old slot, or whose author's head, still readable here, does not claim it, or that
    another member's head contradicts (claiming a rekey of the same slot). An author's head sealed under a
    key this device does not hold went on to a new generation, as a real rekey's author does once it has
    switched. Arguments as for check_notice. What this cannot tell apart: a writer that holds the write
    secret and claims its own notice has made a rekey (docs/SECURITY.md, "A writer and the rekey").
    `importing`: the check is an import's, of a code of the slot (what the import leaves here, said in its
    refusal); such a device is not a member, and has no key or access of the session to keep; `progress`: the walk
    of the author's older manifests, as it goes (rekeywalk.claimed_before)."""
    author = notice.get("d")
    others = {m["device_id"] for m in members if m["head_pk"] != me and m["device_id"] is not None}
    if not isinstance(author, str) or author not in others:
        raise ImportError_(
            "rekey_unconfirmed",
            f"a rekey notice of session {sid} leaves this device out but names no other device of the session "
            f"as its author ({unnamed_author(author)}): this device keeps its key and its access, and looks again at"
            f" its next pull. " + no_author_way(author, sid, "the rekey kept"),
        )
    # (a member gone on under a key this device is not given: a kept writer that switched, or the author)
    _, _, contradicting = await _sightings(
        store,
        sid,
        notice,
        author,
        old_announce,
        members,
        me,
        keys,
        known_revs,
        behind or {},
        timeout,
        left_out=True,
        whole=importing is not None,
        progress=progress,
        walks=walks,
    )
    if contradicting and importing is not None:
        raise ImportError_(
            "rekey_conflict",
            f"session {sid} cannot be imported with this code ({importing}): its members slot holds a rekey notice"
            f" that names device {author} as its author, but device(s) {', '.join(sorted(contradicting))} claim"
            f" another rekey of the session (two devices claim to have rekeyed it; one of them may be a device that"
            f" was dropped), and the code leads to neither. Ask a device you trust for a new share code of {sid},"
            f" made after the rekey by a device that took it, and import that one: `sessiond import < code.txt`",
        )
    if contradicting:
        raise ImportError_(
            "rekey_conflict",
            f"a rekey notice of session {sid} leaves this device out and names device {author}, but device(s) "
            f"{', '.join(sorted(contradicting))} claim another rekey of the session: this device takes neither "
            f"and keeps its key and its access. Ask a device you trust for a new share code",
        )
    return author


async def refused_code(
    code: ShareCode,
    store: Store,
    members: list[dict],
    notice: dict,
    my_pk: bytes,
    held: bool,
    timeout: float,
    progress: Callable[[int, int], None] | None = None,
) -> ImportError_:
    """Why a code whose members slot holds a rekey notice does not import: the session was rekeyed after
    the code was made (a new code of it, from a device that took the rekey, imports); or the notice is
    one no device takes (its named author's head, which this code opens, does not claim it:
    check_exclusion), which stays in the slot, a new code of it refused too. Any other refusal
    of the check is the import's error as the check words it (the notice is not known to be a rekey): a
    store that fails while the heads are read (kind store), another member's head claiming a rekey of the
    same slot (rekey_conflict, worded for a device importing: `held`, whether it has a copy of the
    session), a member's head forged or its log damaged. `progress`: the walk of the author's older manifests (up to
    a thousand reads), as it goes."""
    sid = code.session_id
    try:
        await check_exclusion(
            store, sid, notice, old_announce=code.announce_pk, members=members, me=my_pk,
            keys=[code.session_key], known_revs={}, timeout=timeout,
            importing="the copy here is kept as it was" if held else "nothing was imported", progress=progress,
        )  # fmt: skip
    except ImportError_ as exc:
        if exc.kind != "rekey_unconfirmed":  # a store failing, a conflict, a forged or damaged head: itself
            return exc
        author = notice.get("d")
        if author is None:  # sessiond before claims wrote no author: its rekey's new code imports
            return ImportError_(
                "rekey_unconfirmed",
                f"session {sid} cannot be imported with this code: its members slot holds a rekey notice"
                f" that names no device of the session as its author ({unnamed_author(author)}). "
                + no_author_way(author, sid, "took it"),
            )
        why = (
            f"the device it names as its author ({author}) does not claim it (a writer wrote it without a"
            f" rekey of its own, or the author's log has not reached the store yet)"
            if isinstance(author, str) and author in {m["device_id"] for m in members}
            else "it names no device of the session as its author"
        )
        return ImportError_(
            "rekey_unconfirmed",
            f"session {sid} cannot be imported: its members slot holds a rekey notice that no device takes,"
            f" which no share code of it gets past: {why}; " + fork_way(sid),
        )
    return ImportError_(
        "revoked",
        f"this share code was revoked: session {sid} was rekeyed after it was made; ask for a new code",
    )


async def _sightings(
    store: Store,
    sid: str,
    notice: dict,
    author: str,
    old_announce: bytes,
    members: list[dict],
    me: bytes,
    keys: list[bytes],
    known_revs: dict[bytes, int],
    behind: dict[bytes, int],
    timeout: float,
    *,
    left_out: bool = False,
    whole: bool = False,
    progress: Callable[[int, int], None] | None = None,
    walks: ClaimsWalks | None = None,
) -> tuple[bool, list[str], list[str]]:
    """What the old generation's members' heads say of a notice naming `author`: whether the author's
    manifest claims it, the members whose manifest opens under none of `keys` (gone on under another key),
    and the other members whose manifest claims a rekey of the same slot. This device's own head is read
    only as the author's. Refuses (rekey_unconfirmed) a notice whose author's manifest opens and does not
    claim it, or whose author the old slot lists under more than one head key; `left_out`: a notice with no box
    for this device, said so; `whole`: the author's older manifests walked whole (an import's check, which no next
    pull goes on with: rekeywalk.py)."""
    listed = [m for m in members if m["device_id"] == author]
    if len(listed) > 1:  # (check_notice and check_exclusion alike)
        # (a head key is its device's seed's and the session's: one device, one key. The old slot is any old writer's
        # to sign, a dropped one's too, which lists a key of its own under the author's id to claim its notice)
        raise ImportError_(
            "rekey_unconfirmed",
            f"the rekey notice of session {sid} names device {author} as its author, which the old members slot lists"
            f" under {len(listed)} head keys (a writer's forgery: one of them claims the notice for it); this device"
            f" keeps its key and looks again at its next pull; " + fork_way(sid),
        )
    h = notice_hash(notice)
    moved, contradicting = [], []
    claimed = aged = False
    for m in members:
        pk, device = m["head_pk"], m["device_id"]
        if pk == me and device != author:
            continue  # (this device's own claims are its own: only as the author is its head read)
        claims = await _claims(store, sid, pk, device, keys, known_revs.get(pk, 0), behind.get(pk), timeout)
        if claims is None:
            moved.append(member_name(m))
            continue
        mine = [c for c in claims if c["o"] == old_announce]
        if device == author:
            claimed = claimed or any(c["h"] == h and c["a"] == notice.get("a") for c in mine)
            # its log keeps its last CLAIMS_KEPT claims, none of this slot: it rekeyed as many times since
            aged = aged or (len(claims) >= CLAIMS_KEPT and not mine)
        elif mine:
            contradicting.append(member_name(m))
    if not claimed and aged:
        # the author's older manifests, down its head's prev links, while its gc has not freed them
        by = next(m for m in members if m["device_id"] == author)
        claim = {"o": old_announce, "a": notice.get("a"), "h": h}
        before = await claimed_before(
            store, sid, by["head_pk"], author, keys, claim, timeout, bounded=not whole, progress=progress, kept=walks
        )
        if before is None:  # (the walk cut short: rekeywalk.py)
            raise NotCheckedYet(
                "rekey_unconfirmed",
                f"session {sid} was rekeyed more than {CLAIMS_KEPT} times by device {author} since this device last"
                f" took its key: its older manifests are being read for its claim of the first rekey (a pull reads"
                f" them for {rekeywalk.WALK_SECONDS:g} s at most); this device keeps what it has and goes on at its"
                f" next pull",
            )
        claimed = before
    if not claimed and aged:
        # (still refused: a notice its author claims no longer is no more checked than one it never claimed)
        raise ImportError_(
            "rekey_unconfirmed",
            f"session {sid} was rekeyed more than {CLAIMS_KEPT} times by device {author} since this device last took"
            f" its key: the log of {author} keeps the claims of its last {CLAIMS_KEPT} rekeys only, and none of its"
            f" older manifests still in the store claims the first of them (its gc frees them a day after its head"
            f" left them, by default), so this device cannot check it; it keeps what it has. Ask a device that took"
            f" the last rekey for a new share code of {sid}, and import it here (`sessiond import < code.txt`)",
        )
    if not claimed and author not in moved:
        what, kept = ("leaves this device out and names", "its key and access") if left_out else ("names", "its key")
        raise ImportError_(
            "rekey_unconfirmed",
            f"the rekey notice of session {sid} {what} device {author}, whose log does not claim it (forged by a "
            f"writer, or its log has not reached the store yet); this device keeps {kept} and looks again at its "
            f"next pull; " + fork_way(sid),
        )
    return claimed, moved, contradicting


async def _later_keys(
    store: Store,
    sid: str,
    key: bytes,
    announce: bytes,
    me: bytes,
    head_key: SigningKey,
    read_slot: ReadSlot,
    links: Links | None = None,
) -> tuple[list[bytes], dict | None, bool]:
    """The keys of the rekeys after the notice's (the new generation's own notice, and so on), for this
    device: a member may have moved on to them while this device was away. And the notice of the rekey that
    left this device out, if the chain ends in one (None if not); and whether the chain goes on past the
    CHAIN_MAX slots followed. `links`: the links read before (a device taking the notices of a chain one after
    the other checks each by the same slots): each slot found there is not read again, and each slot read here
    whose notice gives this device a key is added. Only a link is kept: the slot where the chain ends (no
    notice, one leaving this device out, unreadable) is read every time, as a rekey since may have added to it.
    A link's slot holds a notice already, which no rekey replaces; and each notice this device takes is read
    from its slot and checked when it is taken."""
    out: list[bytes] = []
    seen = {announce}
    for _ in range(CHAIN_MAX):
        link = (store.url, key, announce)
        known = links.get(link) if links is not None else None
        if known is not None:
            key, announce = known
        else:
            try:
                _rev, _members, notice = await read_slot(store, sid, key, announce)
            except ImportError_:
                break  # not announced yet, or unreadable: no later rekey is known
            if notice is None:
                break
            secret = open_box(notice, me, head_key, sid)
            if secret is None:
                return out, notice, False
            key, announce = bytes(secret["k"]), bytes(secret["a"])
            if links is not None:
                links[link] = (key, announce)
        if announce in seen:
            break  # a chain that loops back (only a writer's forgery can): it ends here
        seen.add(announce)
        out.append(key)
    else:
        return out, None, True
    return out, None, False


async def _claims(
    store: Store,
    sid: str,
    pk: bytes,
    device: str,
    keys: list[bytes],
    min_rev: int,
    behind_rev: int | None,
    timeout: float,
) -> list[dict] | None:
    """The rekey claims of a member's current manifest; [] if it has no head, or if it is the head found
    sealed at `behind_rev` before (not moved since: nothing it holds is newer than this device's key);
    None if its manifest opens under none of `keys`."""
    try:
        man = await read_manifest(store, sid, keys, pk, device, min_rev=min_rev, timeout=timeout)
    except ManifestSealed as exc:
        return [] if behind_rev is not None and exc.rev == behind_rev else None
    return [] if man is None else man.claims
