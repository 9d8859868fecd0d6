"""Reading the logs of a session's members from the store: a member's head, its manifest, and the
checked operations it lists. Used to import a share code, to follow other devices, and to verify
what they wrote. Nothing here applies anything to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, cast

from ..storage.errors import Invalid
from ..storage.model import RemoteLog
from ..storage.redact import shown_store
from ..stores import ObjectMissing, Store, StoreError, check_object
from ..stores.cid import CIDV1_RAW_BLAKE3
from ..stores.errors import LyingServer, failing
from ..stores.registry import RegistryEntry, RegistryError
from .crypto import DecryptError, manifest_key, open_unpadded
from .errors import FROZEN_PUTTER, ImportError_, bad_log, newer_format, store_failed
from .heads import manifest_hash_of, open_manifest
from .manifest import Manifest, parse_manifest
from .pages import LogError, NewerFormat
from .pull import LogReader


async def fetch_logs(
    store: Store,
    sid: str,
    session_key: bytes | list[bytes],
    members: list[dict],
    *,
    full: bool,
    timeout: float,
    known: dict[bytes, dict] | None = None,
    check: Callable[[RemoteLog], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    heads: dict[bytes, RegistryEntry | None] | None = None,
    behind_ok: bool = False,
) -> tuple[dict[str, RemoteLog], list[dict]]:
    """Fetch and check every member's log (everything, or only what is new). Raises ImportError_
    naming the first problem; nothing is applied by this function. `check` refuses (with Invalid)
    content the API would refuse (the daemon gives its validation: SyncContext.check_remote). `heads`:
    members' heads the caller has just read (a follower's pull), not read again.

    `behind_ok`: a member whose manifest none of the keys opens, and of whose log nothing was applied
    here yet, is a member that has not taken the session's latest rekey (its validly signed head is
    still under the key before it): its log is left for when it has, and its peer row says so
    (`last_error`, BEHIND) instead of the whole fetch failing as a damaged log."""
    logs: dict[str, RemoteLog] = {}
    peers = []
    for m in members:
        pk = m["head_pk"]
        k = (known or {}).get(pk, {})
        try:
            man, lg = await fetch_log(
                store,
                sid,
                session_key,
                pk,
                m.get("device_id"),
                timeout=timeout,
                min_rev=k.get("rev", 0),
                after_seq=0 if full else k.get("applied_seq", 0),
                check=check,
                progress=progress,
                heads=heads,
            )
        except ManifestSealed as exc:
            if not behind_ok or k.get("applied_seq"):
                raise  # a log this device read before went on under a key it does not hold: not a lag
            peers.append(
                {
                    "head_pk": pk,
                    "device_id": m.get("device_id"),
                    "rev": exc.rev,  # read again once its head moves (its push under the new key)
                    "applied_seq": 0,
                    "last_error": BEHIND,
                }
            )
            continue
        if man is None:  # a writer that has not pushed yet: followed from now on, so that its first head is seen
            peers.append(
                {
                    "head_pk": pk,
                    "device_id": m.get("device_id"),
                    "rev": 0,
                    "applied_seq": 0,
                    "last_error": None,
                }
            )
            continue
        have = logs.get(man.device)
        if have is None:
            logs[man.device] = lg
        else:  # two heads of one device (before and after a rekey): INSERT OR IGNORE drops repeats
            have.messages.extend(lg.messages)
            have.ops.extend(lg.ops)
            have.last_seq = max(have.last_seq, lg.last_seq)
        peers.append(
            {"head_pk": pk, "device_id": man.device, "rev": man.rev, "applied_seq": man.last_seq, "last_error": None}
        )
    return logs, peers


# What a member's peer row says while its log is under a key from before the session's latest rekey.
BEHIND = "has not taken the session's latest rekey yet: its messages arrive here once it has"


class ManifestSealed(ImportError_):
    """A member's manifest opens under none of the keys given: its log is under another key (a member
    that has not taken the latest rekey, or one that went on under a key this device does not hold).
    `rev`: the revision of the head it was read from. A damaged log unless the caller allows a member
    behind (fetch_logs' `behind_ok`)."""

    def __init__(self, kind: str, message: str, rev: int):
        super().__init__(kind, message)
        self.rev = rev


async def read_manifest(
    store: Store,
    sid: str,
    session_key: bytes | list[bytes],
    pk: bytes,
    device: str | None,
    *,
    min_rev: int,
    timeout: float,
    heads: dict[bytes, RegistryEntry | None] | None = None,
) -> Manifest | None:
    """A member's current manifest, checked (its head's signature and revision, the manifest's hash, key,
    session, revision and device); None if the member has not pushed anything yet. Raises ImportError_
    naming the problem (ManifestSealed if no key opens it)."""
    name = device or pk.hex()[:16]
    try:
        head = heads[pk] if heads is not None and pk in heads else await read_head(store, sid, pk, name, timeout)
    except (TimeoutError, StoreError, OSError) as exc:
        if failing(exc):  # the store failed to answer: nothing is known of this device's head
            raise store_failed(exc, store.url) from None
        raise
    if head is None:
        return None  # a member that has not pushed anything yet
    if head.revision < min_rev:
        raise _bad(
            "replayed",
            sid,
            name,
            f"the head of device {name} of session {sid} went back to revision "
            f"{head.revision} (this device has seen {min_rev}): a replayed old head",
        )
    with _read_failures(store, sid, name):
        mhash = manifest_hash_of(head)
        async with asyncio.timeout(timeout):  # not wait_for: no task of its own for each read
            ct = await store.get(mhash)
        try:
            plain = open_manifest(ct, mhash, session_key, pk, head.revision)
        except DecryptError as exc:
            said = f"the log of device {name} of session {sid} is damaged: {exc}"
            raise bad_log(ManifestSealed("damaged", said, head.revision), sid, name) from None
        man = parse_manifest(plain, sid=sid, head_pk=pk, rev=head.revision)
        if device is not None and man.device != device:
            raise LogError(f"the manifest names device {man.device}, but the members list says {device}")
    return man


async def read_head(store: Store, sid: str, pk: bytes, name: str, timeout: float) -> RegistryEntry | None:
    """The head `pk` of device `name`'s log of session `sid` (None: none yet). Raises ImportError_ "forged",
    with what mends it, for one that is not validly signed or that a network store's own checks refuse; a
    store's failure as it is."""
    try:
        async with asyncio.timeout(timeout):  # not wait_for: no task of its own for each read (a pull's many)
            return await store.get_head(pk)
    except RegistryError as exc:
        said = f"the head of device {name} of session {sid} is not validly signed: {exc}"
        raise _bad("forged", sid, name, said) from None
    except LyingServer as exc:  # a network store's own head checks: forged, another key's, rolled back
        raise _bad("forged", sid, name, f"the head of device {name} of session {sid} is refused: {exc}") from None


def _bad(kind: str, sid: str, name: str, message: str) -> ImportError_:
    """A member's log of session `sid` by device `name` found bad (`kind`: damaged, forged, replayed), with
    what mends it (errors.bad_log)."""
    return bad_log(ImportError_(kind, message), sid, name)


@contextlib.contextmanager
def _read_failures(store: Store, sid: str, name: str) -> Iterator[None]:
    """What reading a member's log of session `sid` from `store` raises, as ImportError_: the store's
    failure (it said nothing of the log), or the log of device `name` damaged."""
    try:
        yield
    except (TimeoutError, StoreError, OSError) as exc:
        if failing(exc):  # the store failed to answer: the log is not damaged for that
            raise store_failed(exc, store.url) from None
        raise _bad("damaged", sid, name, f"the log of device {name} of session {sid} is damaged: {exc}") from None
    except NewerFormat as exc:  # not damage: this device is the one to mend (no log_of: its writer has nothing to do)
        raise newer_format(f"the log of device {name} of session {sid}", exc) from None
    except (RegistryError, DecryptError, LogError) as exc:
        raise _bad("damaged", sid, name, f"the log of device {name} of session {sid} is damaged: {exc}") from None


async def fetch_log(
    store: Store,
    sid: str,
    session_key: bytes | list[bytes],
    pk: bytes,
    device: str | None,
    *,
    min_rev: int,
    after_seq: int,
    timeout: float,
    as_ops: bool = False,
    check: Callable[[RemoteLog], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    heads: dict[bytes, RegistryEntry | None] | None = None,
) -> tuple[Manifest | None, Any]:
    """One member's log: (manifest, RemoteLog), or with as_ops (manifest, [Op]) for comparing; `check`
    and `heads` as in fetch_logs."""
    man = await read_manifest(store, sid, session_key, pk, device, min_rev=min_rev, timeout=timeout, heads=heads)
    if man is None:
        return None, None
    with _read_failures(store, sid, man.device):
        reader = LogReader(sid, man.device, store, timeout)
        if progress is not None:
            last = man.last_seq
            reader.on_page = lambda seq: progress(seq, last)
        ops = await (reader.ops if as_ops else reader.log)(man.entries(), after_seq)
    if not as_ops and check is not None:  # what the API would refuse is refused from another device too
        try:
            check(cast(RemoteLog, ops))  # reader.log answered, not reader.ops
        except Invalid as exc:
            raise ImportError_(
                "invalid",
                f"the log of device {man.device} of session {sid} holds what this sessiond "
                f"refuses, so nothing of it is applied: {exc.message}",
            ) from None
    return man, ops


# manifests a freeze at an earlier revision reads down its head's prev links at most (freeze_log's `rev`)
FREEZE_WALK = 1000


async def freeze_log(
    store: Store, sid: str, keys: list[bytes], member: dict, *, timeout: float, rev: int | None = None
) -> tuple[dict, int] | None:
    """A writer's log as its head names it now, frozen for a rekey that drops it (docs/FORMATS.md §6): its
    head key, revision, manifest hash and that manifest's own key, which lets the new generation read
    the log up to here and nothing it writes afterwards; and the last seq that manifest holds (what the
    rekey's notice tells the writer). None if it has pushed nothing. Raises ImportError_ as read_manifest
    does, ManifestSealed if its manifest opens under none of `keys` (it cannot be frozen here).

    `rev`: frozen at that revision of its head instead (what this device read of it last), found down the
    manifests' prev links from the current head (each link the revision before); None if the head is behind
    it, or it is not found within FREEZE_WALK manifests."""
    pk = bytes(member["head_pk"])
    walk = walk_manifests(store, sid, keys, pk, member.get("device_id"), timeout=timeout, limit=FREEZE_WALK, rev=rev)
    async with contextlib.aclosing(walk):
        async for at, mhash, mkey, man in walk:
            if rev is None or at == rev:
                return {"d": man.device, "k": pk, "r": at, "h": mhash, "x": mkey}, man.last_seq
    return None


async def walk_manifests(
    store: Store,
    sid: str,
    keys: list[bytes],
    pk: bytes,
    device: str | None,
    *,
    timeout: float,
    limit: int,
    rev: int | None = None,
    start: tuple[bytes, int] | None = None,
) -> AsyncGenerator[tuple[int, bytes, bytes, Manifest], None]:
    """A member's manifests from its current head down their prev links (each the revision before), `limit` at
    most, each as (revision, hash, its key, it checked); none if it has pushed nothing (or its head is behind
    `rev`). Ends at a manifest with no prev link; raises ImportError_ as read_manifest does (a manifest gone from
    the store: `damaged`), ManifestSealed for one that opens under none of `keys`. `start`: (hash, revision) of a
    manifest a walk before met down the chain (the prev link that named it vouches for it): the walk goes on from
    there, the head not read."""
    name = device or pk.hex()[:16]
    with _read_failures(store, sid, name):
        if start is None:
            async with asyncio.timeout(timeout):
                head = await store.get_head(pk)
            if head is None or (rev is not None and head.revision < rev):
                return  # it has pushed nothing (or not that far)
            start = manifest_hash_of(head), head.revision
        mhash, at = start
        for _ in range(limit):
            async with asyncio.timeout(timeout):
                ct = check_object(mhash, await store.get(mhash))
            for key in keys:
                mkey = manifest_key(key, pk, at)
                try:
                    plain = open_unpadded(ct, mkey)
                except DecryptError:
                    continue
                man = parse_manifest(plain, sid=sid, head_pk=pk, rev=at)
                break
            else:
                said = f"the log of device {name} of session {sid} is under a key this device does not hold"
                raise ManifestSealed("sealed", said, at)
            yield at, mhash, mkey, man
            if man.prev is None or not man.prev.startswith(CIDV1_RAW_BLAKE3):
                return
            mhash, at = man.prev[len(CIDV1_RAW_BLAKE3) :], at - 1


def frozen_lost(store: Store, sid: str, frozen: dict) -> ImportError_:
    """What an import or a pull says of a frozen log whose manifest `store` lacks: what is missing, and what
    puts it back (a writer's pull: put_back)."""
    h = bytes(frozen["h"]).hex()
    fix = (
        f"`sessiond sync --wait {sid}` on {FROZEN_PUTTER} puts it back; then import the code again (a device"
        f" following the session takes it at its next pull)"
    )
    return ImportError_(
        "frozen_lost",
        f"the log of device {frozen['d']} of session {sid} as a rekey froze it is missing from the store"
        f" {shown_store(store.url)}: its manifest {h[:16]}… (named by the session's members slot) is gone."
        f" {fix[0].upper()}{fix[1:]}",
        fix,
    )


async def fetch_frozen(
    store: Store,
    sid: str,
    frozen: dict,
    *,
    timeout: float,
    check: Callable[[RemoteLog], None] | None = None,
    after_seq: int = 0,
) -> tuple[RemoteLog, int]:
    """The log a frozen entry of the members slot pins (freeze_log): its manifest read by hash, opened with
    the key the entry carries, and checked as any member's (it names the session, the head key, the
    revision and the device); then its operations after `after_seq`, as fetch_log reads them. With the last seq
    the manifest holds (how far the frozen log goes, whatever of it was read: what a device that applied it holds
    whole, frozenrepair.py)."""
    name = str(frozen["d"])
    with _read_failures(store, sid, name):
        try:
            async with asyncio.timeout(timeout):
                ct = await store.get(bytes(frozen["h"]))
        except ObjectMissing:  # (not its writer's to mend: its head left it long ago)
            raise frozen_lost(store, sid, frozen) from None
        plain = open_unpadded(check_object(bytes(frozen["h"]), ct), bytes(frozen["x"]))
        man = parse_manifest(plain, sid=sid, head_pk=bytes(frozen["k"]), rev=frozen["r"])
        if man.device != name:
            raise LogError(f"the frozen manifest names device {man.device}, but the members slot says {name}")
        lg = await LogReader(sid, man.device, store, timeout).log(man.entries(), after_seq)
    if check is not None:
        try:
            check(lg)
        except Invalid as exc:
            raise ImportError_(
                "invalid",
                f"the log of device {man.device} of session {sid} holds what this sessiond refuses, so nothing"
                f" of it is applied: {exc.message}",
            ) from None
    return lg, man.last_seq
