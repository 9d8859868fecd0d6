"""Whether a share code's session is the one held here under its id (an import over a copy held here: a rejoin after
a rekey, a session made here or imported from a file): the code's logs must hold its very creation. Composed by
importer.Importer."""

from __future__ import annotations

from ..storage.database import Database
from ..storage.model import Op, RemoteLog
from . import dagcbor
from .errors import ImportError_
from .fetch import BEHIND
from .membersobject import member_name
from .pages import op_to_cbor


def _creation(logs: dict[str, RemoteLog]) -> Op | None:
    return next((op for lg in logs.values() for op in lg.ops if op.kind == "session.create"), None)


async def same_session(db: Database, sid: str, logs: dict[str, RemoteLog]) -> bool:
    """Whether the code's logs hold the very creation of the session held here (same device, sequence number and
    content): a new key for this session, not another one under its id."""
    create = _creation(logs)
    if create is None:
        return False
    here = await db.log_ops(sid, create.device_id, create.seq - 1, create.seq)
    return len(here) == 1 and dagcbor.encode(op_to_cbor(here[0])) == dagcbor.encode(op_to_cbor(create))


async def file_copy(db: Database, sid: str, logs: dict[str, RemoteLog]) -> bool:
    """Whether the session held here is a copy of the code's made from a file (import-file of its export): created
    here with the creation time of the code's session's creation (a file import keeps the file's, and no other
    creation here takes another's), which that creation is not."""
    create = _creation(logs)
    here = await db.log_ops(sid, db.device_id, 0, 1)
    if create is None or len(here) != 1 or here[0].kind != "session.create":
        return False
    kept, theirs = here[0].body.get("created_at"), create.body.get("created_at")
    return (
        isinstance(kept, (int, float))
        and kept == theirs
        and here[0].created_at != kept  # made at another time than its creation says: copied
        and create.device_id != db.device_id
    )


async def _created(db: Database, sid: str, device: str) -> bool:
    """Whether `device`'s log of `sid`, as held here, begins with the session's creation."""
    first = await db.log_ops(sid, device, 0, 1)
    return len(first) == 1 and first[0].kind == "session.create"


async def creation_not_held(db: Database, sid: str, peers: list[dict], *, fresh: bool = False) -> ImportError_:
    """A rejoin's refusal (busy) when the code's logs do not hold the session's creation: its creator's log is not
    under the code's key yet. `peers`: the writers as the import read them, those away (BEHIND) named, the creator
    among them: one gone for good would hold every rejoin back for ever, unless a device that took the rekey drops
    it (its log then frozen into the new generation, the creation with it). Which of those away created it is told
    from its log as held here, when the session is (a rejoin): a writer merely away, dropped, would be left out for
    nothing. `fresh`: the import of a device that holds no copy of the session (no rekey of it to take here), refused
    so as long as a writer is away (was: as a damaged log, to be mended by the creator's verify, which a creator gone
    for good never runs)."""
    away = [p for p in peers if p["last_error"] == BEHIND]
    creator = [p for p in away if not fresh and p["device_id"] and await _created(db, sid, p["device_id"])]
    gone = ""
    if away:
        names = [member_name(p) for p in creator or away]
        which = names[0] if len(names) == 1 else "DEVICE"
        among = "" if len(names) == 1 else f", one of {', '.join(names)}"
        gone = (
            f"; if it is gone for good, a device that took the rekey drops it (`sessiond rekey {sid} --drop {which}`"
            f"{among}: its log, which holds the creation, goes into the new generation as it stands), and a code made"
            f" after that imports here"
        )
    here = (
        "nothing was imported. Import"
        if fresh
        else f"nothing here changed. `sessiond sync --wait {sid}` takes the rekey if it kept this device; else import"
    )
    return ImportError_(
        "busy",
        f"the code's logs of session {sid} do not hold its creation yet: the device that created it has not pushed its"
        f" log under the code's key (it is away, or was stopped in the middle of a rekey); {here} the code again once"
        f" that device has synced{gone}",
    )
