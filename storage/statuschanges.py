"""A session's status and access changed: pause, resume and end (its status, by an operation of its log,
through Sessions.update, which checks the change with check_status_change), and revoked (its access: a
rekey without this device, noted here only)."""

from __future__ import annotations

from typing import Any

from .changerules import check_status_change
from .closing import Closing
from .connections import Connections
from .expiry import refuse_if_expiry_ended
from .sessions import Sessions, session_dict, writable_row


class StatusChanges:
    def __init__(self, c: Connections, sessions: Sessions, closing: Closing):
        self.c = c
        self.sessions = sessions
        self.closing = closing  # the sessions closed to questions until their revocation is committed

    async def mark_revoked(self, sid: str, carried: int | None = None, *, on: bytes | None = None) -> bool:
        """Note that the session was rekeyed without this device: its `access` becomes `revoked`, which
        refuses every change (writable_row) until a new code imported over it gives it `write` or `read`
        again. Not an operation of its log (no other device would read it). Whether it changed anything.
        `carried`: how far the rekey carried this device's log over (the seq its notice names; None: it does
        not say), kept with it in the same transaction (`revocations`): what this device wrote past it is held
        here only, which `rm` and the clean-up keep (held_here). Marked as closing (closing.py) until it is
        committed: a question to the session's model meanwhile waits for it, and is refused as a revoked
        session's, the model not asked. Revoked already, its `carried` is raised to `carried` if that is
        further (a kept writer carried this device's log past the notice's "s", which the old members slot
        says later: sync/rekeycarried.py); never lowered, nor set where the rekey said none. `on`: the announce
        key of the members slot whose rekey left it out; nothing is marked if the session is no longer on it
        (a new code imported while the check ran moved it to a generation that lists this device)."""
        still_on = "" if on is None else " AND EXISTS (SELECT 1 FROM remotes WHERE session_id=? AND announce_pk=?)"
        slot: tuple = () if on is None else (sid, on)
        with self.closing.marked(sid):
            async with self.c.transaction() as tx:
                changed = await tx.execute(
                    "UPDATE sessions SET access='revoked' WHERE id=? AND access!='revoked' AND NOT importing"
                    + still_on,
                    (sid, *slot),
                )
                if changed:
                    await tx.execute(
                        "INSERT OR REPLACE INTO revocations(session_id, carried) VALUES (?, ?)", (sid, carried)
                    )
                    tx.emit({"type": "session.updated", "session": sid, "fields": ["access"]})
                    self.c.hold_commit("commit.revoke")  # (the tests hold a revocation's commit here)
                elif carried is not None:
                    await tx.execute(
                        "UPDATE revocations SET carried=? WHERE session_id=? AND carried<?" + still_on,
                        (carried, sid, carried, *slot),
                    )
        return bool(changed)

    async def set_status(self, sid: str, status: str, *, expired_at: float | None = None) -> dict:
        """Change a session's status. `expired_at`: an end its expiry (or idle timeout) made, which its
        operation records (`expired_at`), so that a write to it is refused as expired (refuse_inactive)."""
        row = await writable_row(self.c.committed, sid, self.c, ending=status == "ended", texts=True)
        if status == row["status"]:
            return session_dict(row)
        if row["status"] == "ended" and status != "ended":  # one its expiry ended is refused as expired (when)
            await refuse_if_expiry_ended(self.c.committed, sid, row)
        check_status_change(sid, row["status"], status)  # (again in update's transaction, as it stands then)
        fields: dict[str, Any] = {"status": status}
        if expired_at is not None and status == "ended":
            fields["expired_at"] = expired_at
        return await self.sessions.update(sid, fields, event=f"session.{'resumed' if status == 'active' else status}")
