"""A frozen log whose manifest the store lost (docs/FORMATS.md §6: deleted by hand, lost by a host, never
pinned), put back by a writer of the session that holds the log's operations.

The members slot pins a dropped writer's log as a rekey froze it by its manifest's hash; with that object gone,
every import of the session fails on it, and so does every pull that has not taken it yet. Its writer cannot mend
it (its head left that manifest long ago, and it may have no key of the new generation), and no device can write
those bytes again: a manifest names its predecessor and pages cut as that writer's pushes cut them. So a writer
of the session (the write secret, the current key) that applied the log builds it again from its database, the
operations of that device as it holds them (the same ones every device that applied the frozen log holds: one
generation applies a dropped writer's log only as frozen), sealed as a manifest at the frozen revision, of that
device and head key, under a key of its own (the entry carries it), and names it in the members slot in place of
the lost one (Members.ensure_member `replace`). Only a device that took that log whole from its manifest (noted
in its database then: SyncState.note_frozen_taken) puts it back, up to the last seq the manifest held: one that
holds less of it (it pulled the dropped writer in part, and the log was lost before it took it) would name a log
holding less than was frozen, which no device would put back again (its manifest is in the store), and every
later import would lack the rest.
"""

from __future__ import annotations

import logging
import os

from ..stores import Store, StoreError
from ..stores.bounded import bounded
from .context import SyncContext
from .crypto import seal
from .errors import ImportError_
from .logloaders import log_loaders
from .manifest import encode_manifest
from .members import Members, announce_key
from .push import LogWriter

log = logging.getLogger("sessiond.sync")


async def lacking(store: Store, frozen: list[dict], timeout: float) -> list[dict]:
    """The frozen logs of `frozen` whose manifest `store` does not hold."""
    out = []
    for f in frozen:
        if not await bounded(store.has(bytes(f["h"])), timeout):
            out.append(f)
    return out


async def _rebuild(ctx: SyncContext, sid: str, store: Store, frozen: dict) -> dict | None:
    """The log of `frozen` built again from this device's database and put in `store`: its new frozen entry, or
    None when this device did not take that log whole from its manifest (it may hold less of it than was frozen:
    put back, the slot would name a log holding less, and every later import would lack the rest), or holds it
    torn. Built up to the last seq the manifest held, as noted when this device took it, and no further (what
    this device holds of that writer past the freeze is not the frozen log's)."""
    db, device = ctx.db, str(frozen["d"])
    key = ctx.keys.session_key(sid)
    last = await db.syncstate.frozen_taken(sid, bytes(frozen["k"]), int(frozen["r"]))
    if key is None or not last or await db.last_seq(sid, device) < last:
        return None
    writer = LogWriter(sid, device, key, store, ctx.timeout, workers=ctx.workers)

    load, open_loader = log_loaders(db, sid, device)
    entries, lamport = await writer.write_run(load, open_loader, 1, last)
    levels = await writer.compact([entries], load)
    plain = encode_manifest(sid, device, int(frozen["r"]), bytes(frozen["k"]), last, lamport, levels, None)
    x = os.urandom(32)  # (its own key: never one a head's manifest is sealed under)
    ct, ref = seal(plain, x, pad=False)
    # a gc candidate before its put, and in `naming` (which gc leaves alone) until the slot's write: another writer
    # may put the log back first, and this manifest, named by nothing then, is freed by gc (put_back forgets it
    # once the slot names it; gc reads every frozen manifest a slot names as live: killed in between, it stays)
    ctx.naming.add(ref.hash)
    if (url := getattr(store, "url", None)) is not None:
        await db.released.add(url, sid, [ref.hash])
    try:
        await writer.put([ct], [ref.hash])
    except BaseException:
        ctx.naming.discard(ref.hash)  # (not named: a candidate, whether or not the store took it)
        raise
    return {"d": device, "k": bytes(frozen["k"]), "r": int(frozen["r"]), "h": ref.hash, "x": x}


async def put_back(ctx: SyncContext, members: Members, sid: str, store: Store, lost: list[dict]) -> dict[bytes, dict]:
    """The frozen logs `lost` (their manifests gone from `store`) built again here and named in `sid`'s members
    slot in their place: {lost manifest hash: new entry} for those put back. Nothing when this device cannot
    write the slot (no write secret) or holds none of a log. The caller holds the session's rekey lock, on the
    generation whose slot named them."""
    if ctx.keys.write_secret(sid) is None or ctx.keys.session_key(sid) is None:
        return {}
    new: dict[bytes, dict] = {}
    try:
        for f in lost:
            try:
                again = await _rebuild(ctx, sid, store, f)
            except Exception as exc:  # (a torn log here: SyncError; a store that fails: the next pull tries again)
                log.warning("could not build a lost frozen log again: %s", exc, extra={"session": sid})
                continue
            if again is not None:
                new[bytes(f["h"])] = again
        if new:
            log.warning(
                "the store lost the manifest of a frozen log: built again from this device's copy and named in the"
                " members slot",
                extra={"session": sid, "objects": len(new)},
            )
            await members.ensure_member(sid, replace=new)
            await _named(ctx, members, sid, store, [bytes(e["h"]) for e in new.values()])
    finally:
        ctx.naming.difference_update(bytes(e["h"]) for e in new.values())
    return new


async def _named(ctx: SyncContext, members: Members, sid: str, store: Store, built: list[bytes]) -> None:
    """The manifests `built` here that `sid`'s members slot names, as read now (this device's write, or another
    writer's that put the same log back first), no longer gc candidates; the others stay candidates, named by
    nothing (gc frees them). A slot that cannot be read leaves them all: gc, reading the slot, forgets those named."""
    url, write, key = getattr(store, "url", None), ctx.keys.write_secret(sid), ctx.keys.session_key(sid)
    if url is None or write is None or key is None:
        return
    try:
        frozen = (await members.read_slot(store, sid, key, bytes(announce_key(write).verify_key), cached=True))[3]
    except (ImportError_, StoreError, TimeoutError, OSError) as exc:
        log.warning("could not read which frozen logs the members slot names: %s", exc, extra={"session": sid})
        return
    await ctx.db.released.forget(url, {bytes(f["h"]) for f in frozen} & set(built))
