"""The devices of a session as this daemon knows them (`sessiond devices ID`, GET /v1/sessions/{id}/devices):
what `unshare --device D` and `rekey --drop D` need, D. Read from what is here, with no store request: the
writers of the session's members slot as this process last read or wrote it (else the members whose logs it
follows, its `peers` rows, and itself once it announced itself in the slot; never itself once a rekey left it out),
the logs a rekey froze (its own then too), and the writes held here per device (messages, operations)."""

from __future__ import annotations

from .context import SyncContext
from .frozen import decode_frozen
from .members import Members
from .membersobject import member_name


async def session_devices(ctx: SyncContext, members: Members, sid: str) -> dict:
    """{"session", "shared", "members_rev", "devices": [...]}: this device first, then the writers, then the
    others, each by id. Raises the database's NotFound for an unknown session."""
    db = ctx.db
    revoked = (await db.get_session(sid)).get("access") == "revoked"
    me = db.device_id
    remote = await db.remote(sid)
    tallies = await db.device_tallies(sid)
    if remote is None:  # not shared: this device alone writes it (its messages are its own)
        writers, followed, notes, frozen = {me}, set(), {}, set()
    else:
        peers = await db.peers(sid)
        # a member whose log was never read has no device id yet: named by the start of its head key
        names = {bytes(p["head_pk"]): member_name(p) for p in peers}
        followed = set(names.values())
        notes = {names[bytes(p["head_pk"])]: p["last_error"] for p in peers if p["last_error"]}
        frozen = {str(f["d"]) for f in decode_frozen(remote.get("frozen"))}
        listed = members.last_known(sid, bytes(remote["announce_pk"]))
        if listed is not None:
            writers = {member_name(m) for m in listed}
        else:  # not read since the daemon started: the members it follows, and itself once it announced itself
            writers = followed | ({me} if remote["announced"] else set())
        if revoked:  # a rekey left this device out: the slot it last read (under the key it lost) is no more
            writers.discard(me)
            frozen.add(me)
    nobody = {"messages": 0, "last_message_at": None, "last_seen": None}
    devices = [
        {
            "device": d,
            "this_device": d == me,
            "writer": d in writers,
            "followed": d in followed,
            "frozen": d in frozen,
            **tallies.get(d, nobody),
            "note": notes.get(d),
        }
        for d in {me, *writers, *followed, *frozen, *tallies}
    ]
    devices.sort(key=lambda x: (not x["this_device"], not x["writer"], x["device"]))
    return {
        "session": sid,
        "shared": remote is not None,
        "members_rev": remote["members_rev"] if remote is not None else None,
        "devices": devices,
    }
