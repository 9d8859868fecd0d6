"""Frozen logs (docs/FORMATS.md §6): a dropped writer's log as a rekey froze it, named in the members object's
"f" and kept in the database (`remotes.frozen`): what one is, which of two is kept, and the database's copy read
back."""

from __future__ import annotations

from collections.abc import Sequence

from ..storage.database import Database
from . import dagcbor


def is_frozen(f: object) -> bool:
    """A frozen log (docs/FORMATS.md §6): {"d": device id, "k": head public key, "r": revision, "h": its
    manifest's BLAKE3, "x": the manifest's key}."""
    return (
        isinstance(f, dict)
        and isinstance(f.get("d"), str)
        and isinstance(f.get("k"), bytes)
        and len(f["k"]) == 33
        and isinstance(f.get("r"), int)
        and not isinstance(f.get("r"), bool)
        and f["r"] >= 1
        and isinstance(f.get("h"), bytes)
        and len(f["h"]) == 32
        and isinstance(f.get("x"), bytes)
        and len(f["x"]) == 32
    )


def merge_frozen(have: Sequence[dict], more: Sequence[dict]) -> list[dict]:
    """Frozen logs, one per head key: the one at the head's latest revision (of two at one revision, the first
    named). A log frozen once stays as it was frozen, as no later rekey freezes it again, but one that drops
    its writer again after a new code let it back in: that freeze holds what it wrote meanwhile too."""
    out: dict[bytes, dict] = {}
    for f in [*have, *more]:
        k = bytes(f["k"])
        if k not in out or f["r"] > out[k]["r"]:
            out[k] = dict(f)
    return [out[k] for k in sorted(out)]


def frozen_adds(have: Sequence[dict], more: Sequence[dict]) -> bool:
    """Whether merging `more` into `have` (merge_frozen) changes it: a log of a head `have` lacks, or one at a
    later revision than `have` holds of its head (a writer let back in and dropped again). A slot that holds
    every head at an older freeze still needs writing."""
    held = {bytes(f["k"]): f["r"] for f in have}
    return any(bytes(f["k"]) not in held or f["r"] > held[bytes(f["k"])] for f in more)


def put_back_named(have: Sequence[dict], more: Sequence[dict]) -> dict[bytes, dict]:
    """The logs of `more` (a members slot's, as read or written) naming another manifest than `have` holds of the
    same head at the same revision, by the hash of the one `have` holds: a frozen log put back in place of a lost
    one (frozenrepair.py), as every freeze of one head at one revision names the manifest that head's writer
    published at it. Such an entry is noted in place of the lost one (Members.keep_frozen): else a members slot
    written again from this device's notes (one the store lost: Members.restore) would name the lost manifest."""
    held = {(bytes(f["k"]), f["r"]): bytes(f["h"]) for f in have}
    out: dict[bytes, dict] = {}
    for f in more:
        h = held.get((bytes(f["k"]), f["r"]))
        if h is not None and h != bytes(f["h"]) and h not in out:
            out[h] = dict(f)
    return out


def decode_frozen(blob: bytes | None) -> list[dict]:
    """The frozen logs noted in the database (remotes.frozen: a DAG-CBOR list), those well formed."""
    if not blob:
        return []
    try:
        logs = dagcbor.decode(bytes(blob))
    except dagcbor.DagCborError:
        return []
    return [f for f in logs if is_frozen(f)] if isinstance(logs, list) else []


async def own_log_frozen(db: Database, sid: str) -> bool:
    """Whether a members slot of `sid` may pin this device's own log as a rekey froze it (docs/FORMATS.md §6): a
    rekey left this device out and froze its log (its revocation says how far, past 0, or does not say), or a frozen
    log of this device is noted here (dropped once, let back in by a new code since). That log's manifest, which its
    head has left, is a gc candidate here, kept by gc's reads of the slot while the session is here (gc.py
    _frozen_live; a revoked one's heads cannot be read, and its candidates stay): deleted here, nothing would read the
    slot again, and gc would free what every later import of the session reads (which no sessiond before 0.30.0
    puts back)."""
    revoked, carried = await db.syncstate.revocation(sid)
    if revoked and carried != 0:
        return True
    remote = await db.remote(sid)
    return remote is not None and any(str(f["d"]) == db.device_id for f in decode_frozen(remote.get("frozen")))
