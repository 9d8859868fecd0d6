"""The walk down an author's older manifests for its claim of a rekey notice that its current manifest no longer keeps
(rekeyproof._sightings: the author rekeyed CLAIMS_KEPT times since), bounded per pull.

Each manifest links the one before (its `prev`, docs/FORMATS.md §4), which the hash chain from the author's signed
head vouches for, until the author's gc frees it (after its grace, 24 h by default): CLAIMS_WALK manifests at most.
One call walks for WALK_SECONDS at most: a thousand manifests on a store answering in 50 ms took 53 s (0.5 s on a
folder store), the pull that checked the notice stuck so long. A walk cut short is kept (`_CUT`, by author and notice:
where it stopped, the manifest it began at, the claims of the manifest after), and the next call goes on there once
its own walk from the author's head, moved since or not, meets the manifest that walk began at, or one whose prev link
names it (the author's gc frees the manifests its head moved on from, that one too) (the manifests since are read
first: a later one decides as the walk down from the head would have it; then one at least past where it stopped,
whatever they took: an author pushing as fast as a pull reads stops it no more). The result of a whole walk is kept by
the head's manifest it began at (`_WALKED`): a notice refused is checked again at every pull, and the chain down from
one manifest does not change (but for its older manifests freed: no claim found there then either), so a pull while
the author's head stands reads that manifest only; not a walk that ended at a manifest it could not read (freed by the
author's gc, or missing for a while: a store catching up), whose end the next walk from the same head asks for first
(`_SHORT`: read again only once that manifest is back; one there that it reads but cannot take, a newer sessiond's, is
the chain's end from that head); one that ended so short of where one kept as finding the claim began keeps that row
too. Read-only but for `kept`: a pull's cuts are kept in the database too (storage/claimswalks.py, one statement each
time a walk is cut short; once a pull's walk found the claim, cut short before or not, that in their place, until the
session's key changes; one that ended finding none, that too, or where it ended at a manifest it could not read: a walk
from a head moved since reads the manifests since, then goes on from there, not down the whole chain again at each push
of the author's), so that the first pull after a restart goes on where the walk stopped, not from the author's
head (on a slow store with many manifests, minutes of slices at every start), nor walks again one done before its
notice was taken. A walk left behind (the slot holding another notice, a generation the session left) is no walk under
way: dropped as the next walk of its session begins or its keys switch, and `under_way` names only the walk the last
check cut short."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from blake3 import blake3

from ..storage.claimswalks import ClaimsWalks
from ..stores import Store, StoreError, check_object
from ..stores.cid import CIDV1_RAW_BLAKE3
from ..stores.errors import failing
from . import dagcbor
from .bounded import LRU
from .errors import ImportError_, store_failed
from .fetch import ManifestSealed, walk_manifests
from .manifest import CLAIMS_KEPT, Manifest

# an author's older manifests read for a claim of a notice its current one no longer keeps, at most
CLAIMS_WALK = 1000
# seconds one call (one pull's check of the notice) walks at most; at least one manifest past where the last stopped
WALK_SECONDS = 2.0
_WALKED: LRU[tuple, bool] = LRU(256)
# a walk from a head that ended at a manifest it could not read (_WALKED's key -> that manifest's hash): the next from
# the same head reads whether that one is back, not the rest
_SHORT: LRU[tuple, bytes] = LRU(256)


@dataclass(frozen=True)
class _Cut:
    """A walk cut short: it began at the manifest `top` (the author's head then), and goes on at `at` (hash,
    revision), `read` manifests down from `top`; `after`: the claims of the manifest before `at` in the walk.
    `found` (kept in the database only): a walk from `top` that ended, whether it found the claim (`at` and `after`
    unused)."""

    top: bytes
    at: tuple[bytes, int]
    after: list[dict] | None
    read: int
    found: bool | None = None


# the walks cut short, newest first (one that began at a later head, not yet down to where the one before began)
_CUT: LRU[tuple, list[_Cut]] = LRU(256)
# by session: the walk its last check of the notice in its slot left cut short (none: the check needed no walk, or
# ended it, or refused the notice before it). A walk of another notice, of keys since changed or of a generation
# the session left, is no walk under way: no pull goes on with it
_NOW: LRU[str, tuple] = LRU(256)


def _walk_id(slot: tuple) -> bytes:
    """A walk's key in the database: a digest of its store, author and claim. Not of the keys it opens under (the
    notice's new key, those of the rekeys after it this device reads, and its own): the chain of the author's signed
    manifests and the claims in it are the same whatever opens them, and those keys change while the notice stands
    (a rekey after it, or a read of one of those slots failing on a slow store), the walk's row then dropped as left
    behind (was: what the walk found lost, walked again from the head past manifests freed since, refused for good)."""
    url, _sid, pk, o, h, a, _keys = slot
    return blake3(dagcbor.encode([url, pk, o, h, a])).digest()


def _walk_id_037(slot: tuple) -> bytes:
    """A walk's key in the database as sessiond 0.37.0 kept it (a digest of the keys too): its row taken over under
    `_walk_id` (_left_behind), so that a walk found before the upgrade is not walked again from the head."""
    url, _sid, pk, o, h, a, keys = slot
    return blake3(dagcbor.encode([url, pk, o, h, a, sorted(keys)])).digest()


def _encoded(cuts: list[_Cut]) -> bytes:
    return dagcbor.encode(
        [{"t": c.top, "m": c.at[0], "r": c.at[1], "f": c.after, "n": c.read, "d": c.found} for c in cuts]
    )


def _decoded(data: bytes | None) -> list[_Cut]:
    """The cuts kept (none if none or unreadable: the walk begins again at the author's head)."""
    if data is None:
        return []
    try:
        cuts = [
            _Cut(bytes(c["t"]), (bytes(c["m"]), int(c["r"])), c["f"], int(c["n"]), c.get("d"))
            for c in dagcbor.decode(data)
        ]
    except (TypeError, ValueError, KeyError, AttributeError):
        return []
    ok = all((c.after is None or isinstance(c.after, list)) and c.found in (None, True, False) for c in cuts)
    return cuts if ok else []


def under_way(sid: str) -> bool:
    """Whether the walk of the last check of the notice in `sid`'s members slot was cut short and goes on at the next
    pull (its refusal, rekey_unconfirmed, a state that passes by itself: doctor_fixes.pull_fix says so). Not a walk
    left behind by a later check: of another notice, under other keys, of an older generation."""
    slot = _NOW.get(sid)
    return slot is not None and slot in _CUT


def checking(sid: str) -> None:
    """A check of the notice in `sid`'s members slot begins (rekeyconfirm.NoticeCheck.confirm): the walk of the last
    one is under way only if this one goes on with it (claimed_before)."""
    _NOW.pop(sid)


def forget(sid: str) -> None:
    """`sid`'s keys switch (a notice taken, a new code imported): every walk of its cut short is of a generation it
    leaves, dropped in memory. The database's rows go with the switch itself (SyncState.switch_slot, a rejoin's), not
    before it: a kill in between kept the walk that found the claim, which a restart would walk again from the head
    (past manifests freed since: the notice refused for good)."""
    _NOW.pop(sid)
    for slot in _CUT.held():
        if slot[1] == sid:
            _CUT.pop(slot)


async def _left_behind(slot: tuple, wid: bytes, kept: ClaimsWalks | None) -> None:
    """The walks of `slot`'s session left behind as a walk for `slot` goes (another notice of the slot, a generation
    the session left: no check goes on with them; in memory, the same under other keys too, its row in `kept` the
    same walk's), dropped, in memory and in `kept`: but for the same walk on another store (a mirror's, each walked
    on its own)."""
    sid, same = slot[1], slot[2:]
    for other in _CUT.held():
        if other[1] == sid and other[2:] != same:
            _CUT.pop(other)
    if kept is not None:
        # (a row of sessiond 0.37.0's under this walk's id of then, taken over: one statement, before the rest go)
        if (old := await kept.get(sid, _walk_id_037(slot))) is not None and await kept.get(sid, wid) is None:
            await kept.put(sid, wid, old)
        walks = {wid, *(_walk_id(s) for s in _CUT.held() if s[1] == sid)}
        await kept.keep_only(sid, walks)


def _met(cuts: list[_Cut], mhash: bytes | None) -> int | None:
    """Which of `cuts` began at the manifest `mhash`, if any."""
    return next((i for i, c in enumerate(cuts) if c.top == mhash), None) if mhash is not None else None


def _below(man: Manifest) -> bytes | None:
    """The hash of the manifest `man`'s prev link names (None: none)."""
    prev = man.prev
    return prev[len(CIDV1_RAW_BLAKE3) :] if prev is not None and prev.startswith(CIDV1_RAW_BLAKE3) else None


async def claimed_before(
    store: Store,
    sid: str,
    pk: bytes,
    device: str,
    keys: list[bytes],
    claim: dict,
    timeout: float,
    *,
    bounded: bool = True,
    progress: Callable[[int, int], None] | None = None,
    kept: ClaimsWalks | None = None,
) -> bool | None:
    """Whether an older manifest of the author `pk`'s log claims the notice `claim` names ({o, a, h}); None: not
    known yet, the walk cut short by WALK_SECONDS (the next call goes on); not `bounded` (an import's check, which
    has no next pull, its user waiting on it), walked whole. Ends at the first manifest gone, damaged
    or sealed under none of `keys`. A store that fails fails it. `progress(done, total)`: each manifest read (of
    CLAIMS_WALK at most), and the walk's end (done == total), for an import's bar (the walk takes ~50 s on a store
    answering in 50 ms). `kept`: where the cuts are kept beside this process's memory (a pull's: the database's).

    An older manifest holds the claims its author took back too (a rekey that gave up or lost the slot to another
    notice withdraws its claim; one that started over claims its new notice in place of the first: sync/rekey.py),
    whose notices a store may still hold and serve: the first claim of the slot met down the chain decides, and
    counts only if it left the log by its cap, the manifest after it full and every claim before it gone too."""
    slot = (store.url, sid, pk, claim["o"], claim["h"], claim["a"], frozenset(keys))
    wid = _walk_id(slot)
    if bounded:
        await _left_behind(slot, wid, kept)
    cuts = list(_CUT.get(slot) or [])
    loaded: bytes | None = None  # (the walk's row as read: not written again unchanged)
    if not cuts and kept is not None and bounded:  # (after a restart, or a walk that ended: what it kept)
        cuts = _decoded(loaded := await kept.get(sid, wid))
    was_cut = bool(cuts)
    began = {c.top for c in cuts if c.found}  # (what walks before found: a row found since is another walk's)
    deadline = time.monotonic() + WALK_SECONDS if bounded else float("inf")
    walked: tuple | None = None  # (the walk from this head: _WALKED)
    top = b""
    after: list[dict] | None = None  # the claims of the manifest after the one read (read before it)
    read = fresh = 0  # manifests down from the head; read by this call past those read before
    start: tuple[bytes, int] | None = None
    found = decided = False  # (decided: by a claim of the slot met, not the chain's end)
    below: bytes | None = None  # the manifest the walk reads next, once past the head's
    nxt: tuple[bytes, int] | None = None  # (that one's hash and revision)
    gone: bytes | None = None  # the one it could not read (missing or damaged), where it ended
    try:
        while True:
            walk = walk_manifests(store, sid, keys, pk, device, timeout=timeout, limit=CLAIMS_WALK - read, start=start)
            start = None
            async with contextlib.aclosing(walk):
                async for at, mhash, _k, man in walk:
                    if walked is None:
                        walked, top = (slot, mhash), mhash
                        if (known := _WALKED.get(walked)) is not None:
                            return known
                        if (gone := _SHORT.get(walked)) is not None:
                            if not await _back(store, gone, timeout):
                                return False
                            _SHORT.pop(walked)
                            gone = None  # (back: where the walk ends is this walk's to say)
                    met = _met(cuts, mhash)
                    if met is None:
                        if fresh and time.monotonic() >= deadline:
                            if (known := _WALKED.get(walked)) is not None:
                                # another check's walk from this head ended meanwhile (a verify's, which doctor runs,
                                # beside a pull's): it decides, its row stands (was: this cut written over the row
                                # that found the claim; a kill before the next pull, and the restart went on from
                                # the cut, past manifests the author's gc freed since: refused for good)
                                return known
                            now = [_Cut(top, (mhash, at), after, read), *cuts]
                            if kept is not None and await _found_meanwhile(kept, sid, wid, _encoded(now), began):
                                return True  # (its row found meanwhile, written after the check just above)
                            _CUT[slot] = now
                            _NOW[sid] = slot
                            return None
                        fresh, read = fresh + 1, read + 1
                        if progress is not None:
                            progress(read, CLAIMS_WALK)
                        i = next((i for i, c in enumerate(man.claims) if c["o"] == claim["o"]), None)
                        if i is not None:
                            c = man.claims[i]
                            # another notice of the slot, or a claim taken back, decides as much as the notice's own
                            if (
                                c["h"] == claim["h"]
                                and c["a"] == claim["a"]
                                and after is not None
                                and len(after) >= CLAIMS_KEPT
                            ):
                                found = not any(o in after for o in man.claims[: i + 1])
                            decided = True
                            break
                        after, below = man.claims, _below(man)
                        nxt = (below, at - 1) if below is not None else None
                        # the manifest next down, where a walk kept began, met as surely as read: this one's prev link
                        # vouches for it, and the author's gc may have freed it since its head moved on (was: the walk
                        # ended there, at a manifest gone, and refused the notice what it found before was kept for)
                        if (met := _met(cuts, below)) is None:
                            continue
                    # where a walk cut short began: on from where it stopped
                    cut, cuts = cuts[met], cuts[met + 1 :]
                    if cut.found is not None:  # (where a walk that ended began: what it found, kept)
                        found, read = cut.found, read + cut.read
                        break
                    start, after, read = cut.at, cut.after, read + cut.read
                    below, nxt = cut.at[0], cut.at
                    fresh = 0  # (one past it at least: the manifests since, however many, are no progress)
                    break
            if start is None:
                break
    except ImportError_ as exc:  # (ManifestSealed too: older than every key here)
        if exc.kind == "store":
            raise
        if not isinstance(exc, ManifestSealed):  # (a sealed one stays so under these keys: the chain's end)
            gone = below
    finally:
        if progress is not None:  # (ended, however: the bar closes)
            progress(CLAIMS_WALK, CLAIMS_WALK)
    # read, its hash right, but not taken (a newer sessiond's, or damaged within by its author): no store catching up
    # brings another, the chain's end from this head, as one sealed is (was: taken for one missing, _back found it
    # there at every next pull, and every pull walked again down to it). One that reads now was missing at the walk's
    # read and is back (a store catching up): no end, the walk goes on there at the next pull, as at one missing still
    # (was: taken for one read but not taken, its end kept as the chain's in memory and in the database, refused
    # for good)
    if (
        gone is not None
        and nxt is not None
        and await _back(store, gone, timeout)
        and not await _takes(store, sid, keys, pk, device, nxt, timeout)
    ):
        gone = None
    _CUT.pop(slot)
    # what a walk before found, which this one did not reach (a manifest above it missing for a while, on a store
    # catching up; a head served rolled back): kept, and this walk's end not taken for the chain's (was: the row
    # dropped, the head's result kept in memory, and once the store held those manifests again a walk went on past
    # where that one began, down to manifests the author's gc freed since: the notice refused for good)
    unmet = [c for c in cuts if c.found] if not found and not decided else []
    if kept is not None and bounded and walked is not None:
        # what the walk from this head found kept by the manifest it began at, its end too (the claim found, in place of
        # any cuts, until the session's key changes (SyncState.switch_slot): not kept, a kill before the notice is
        # taken walked again from the head, past manifests the author's gc freed since, and refused the notice for
        # good; none found, or the chain's end: the same from this manifest whatever follows); one that ended at a
        # manifest it could not read (the author's gc freed it, or a store catching up) where it ended, to go on from
        # there, and what walks before found that it did not reach. The next walk from a head moved since reads the
        # manifests since and goes on there (was: a walk that found nothing kept nothing, and every push of the
        # author's walked the whole chain again at the next pull, for as long as the notice stood in the slot)
        if found or (not unmet and (decided or gone is None or nxt is None)):
            now = [_Cut(top, (top, 0), None, read, found)]
        else:
            now = ([_Cut(top, nxt, after, read)] if gone is not None and nxt is not None else []) + unmet
        if (encoded := _encoded(now) if now else None) != loaded:
            if found:
                await kept.put(sid, wid, _encoded(now))
            elif await _found_meanwhile(kept, sid, wid, encoded, began):
                return True  # (this walk's end, short of the claim, is no chain's end: nothing cached)
    elif (
        was_cut
        and kept is not None
        # (None found: dropped, walked again after a restart, as a head moved since is: a manifest missing for a
        # while, on a store catching up, refuses no notice for good.)
        and await _found_meanwhile(kept, sid, wid, _encoded(unmet) if unmet else None, began)
    ):
        return True
    if walked is not None:
        # a walk ended at a manifest it could not read: the next from this head asks whether that one is back first
        # (was: short of what was found, every pull walked again all the manifests down to it, its row written again;
        # short of the claim with nothing found before, its end cached as the chain's: once the store held that
        # manifest again, every pull while the author's head stood refused the notice unread, a quiet author's for
        # good, its gc freeing the rest meanwhile)
        if gone is not None:
            _SHORT[walked] = gone
        else:  # (ended at the chain's own end: as a walk that decided, the same from this head whatever follows)
            _WALKED[walked] = found
    return found


async def _found_meanwhile(kept: ClaimsWalks, sid: str, wid: bytes, encoded: bytes | None, began: set[bytes]) -> bool:
    """`encoded` kept as the walk's row (None: dropped), unless another walk of the same notice found the claim while
    this one read the store (a `verify`'s, which doctor runs, beside a pull's: not under its generation lock): that
    row stands, read in the write's transaction, and decides (was: the pull's walk, begun before, ended at a manifest
    it could not read (the author's gc freed it since the verify read it, or a store catching up) and wrote where it
    ended over the row found; the notice refused, and after a kill the restart went on from that end, at the manifest
    freed: refused for good)."""
    return not await kept.put_unless(
        sid, wid, encoded, lambda row: any(c.found and c.top not in began for c in _decoded(row))
    )


async def _takes(
    store: Store, sid: str, keys: list[bytes], pk: bytes, device: str, at: tuple[bytes, int], timeout: float
) -> bool:
    """Whether the manifest `at` (hash, revision) of the author `pk`'s chain, which a walk could not read, reads now
    (as the walk reads it: its bytes, a key of `keys`, its fields): a store that fails fails it."""
    try:
        walk = walk_manifests(store, sid, keys, pk, device, timeout=timeout, limit=1, start=at)
        async with contextlib.aclosing(walk):
            async for _ in walk:
                return True
    except ImportError_ as exc:
        if exc.kind == "store":
            raise
    return False


async def _back(store: Store, mhash: bytes, timeout: float) -> bool:
    """Whether the manifest `mhash`, which a walk from the same head could not read, is back in `store` (a store
    catching up): a store that fails fails it, as the walk would."""
    try:
        async with asyncio.timeout(timeout):
            check_object(mhash, await store.get(mhash))
    except (TimeoutError, StoreError, OSError) as exc:  # (missing or damaged still: not back)
        if failing(exc):
            raise store_failed(exc, store.url) from None
        return False
    return True
