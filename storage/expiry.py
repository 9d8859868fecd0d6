"""When sessions expire, and the writes their expiry refuses: a session's expiry (its expires_at, or its idle
timeout after its last activity) read from its row or dict (session_expiry, past_expiry), a write to one
past it refused (expired_for_writes: not a shared one's idle timeout, whose end waits for a pull) and the daemon
told to end it (refuse_expired), a message to one paused or ended refused,
as expired when its expiry ended it (refuse_inactive); and the queries the daemon's clean-up runs on
(`Expiries`: which sessions expired, when the next one does). Session rows themselves: sessions.py."""

from __future__ import annotations

import json
import time
from typing import Any, NoReturn

from .activity import judged
from .connections import Connections, Row
from .errors import Conflict, Expired, new_session_ways, session_path


def idle_timeout_of(policy: Any) -> Any:
    """The idle timeout a session's policy (its stored JSON text, or the dict) sets, or None; the text
    is parsed only when it names one (most policies do not)."""
    if isinstance(policy, str):
        if "idle_timeout" not in policy:
            return None
        policy = json.loads(policy)
    return policy.get("idle_timeout") if isinstance(policy, dict) else None


def expiry(expires_at: Any, idle_timeout: Any = None, last_activity: Any = None) -> float | None:
    """When a session expires: at `expires_at`, or `idle_timeout` seconds after its last activity, whichever
    comes first; None if neither is set. A value that is not a number (stored by an older sessiond) never
    expires its session, as in `expired`."""
    when = expires_at if _is_number(expires_at) else None
    if idle_timeout and _is_number(idle_timeout) and _is_number(last_activity):
        idle_end = last_activity + idle_timeout
        if when is None or idle_end < when:
            when = idle_end
    return when


def _field(s: Any, k: str) -> Any:
    """Field `k` of a session's row, or of its dict (a field a dict leaves out: None)."""
    return s.get(k) if isinstance(s, dict) else s[k]


def last_activity(s: Any) -> Any:
    """Session `s`'s (its row or dict, with its id) last activity as its idleness is judged: shifted by the steps of
    the wall clock since, if stamped this run (storage/activity.py)."""
    return judged(_field(s, "id"), _field(s, "last_activity"))


def session_expiry(s: Any) -> float | None:
    """When session `s` (its row, or its dict: id, expires_at, policy, last_activity) expires (expiry()), its idle
    timeout counted in real time from a last activity of this run (last_activity())."""
    return expiry(_field(s, "expires_at"), idle_timeout_of(_field(s, "policy")), last_activity(s))


def past_expiry(s: Any, t: float) -> bool:
    """Whether session `s` (its row or dict, with its status), not ended, is past its expiry or idle past its
    idle timeout at `t` (the writes' check: a write must not revive a session the clean-up is about to end)."""
    if _field(s, "status") == "ended":
        return False
    when = session_expiry(s)
    return when is not None and when <= t


async def expired_for_writes(q: Any, sid: str, s: Any, t: float) -> bool:
    """Whether a write to session `sid` (`s`: its row or dict), read through `q`, is refused at `t` as expired:
    past its expiry (past_expiry), but a shared one (a `remotes` row) idle past its idle timeout and not past its
    own `expires_at` is not: its idle end waits for a pull (daemon/sharedidle.py), so it is not ended yet, and a
    write here is its activity, taken (its idle time counts from it). The callers have checked its access."""
    if not past_expiry(s, t):
        return False
    exp = _field(s, "expires_at")
    if _is_number(exp) and exp <= t:
        return True
    return await q.fetchone("SELECT 1 FROM remotes WHERE session_id=?", (sid,)) is None


async def refuse_expired(c: Connections, q: Any, sid: str, s: Any) -> NoReturn:
    """A write found session `sid` (`s`: its row or dict, read through `q`) past its expiry or idle timeout: the
    daemon is told (it ends the session now, as its clean-up would at its next run), and the write is refused,
    saying when and why it expired and the way on."""
    if c.on_expired is not None:
        c.on_expired(sid)
    when = session_expiry(s)
    assert when is not None  # past_expiry said so
    raise expired_error(sid, s, when, "it is ended now", forks=await _holds_messages(q, sid))


async def _holds_messages(q: Any, sid: str) -> bool:
    """Whether session `sid` holds a message: a fork of it at one is a way on (read on a refusal only)."""
    return await q.fetchone("SELECT 1 FROM messages WHERE session_id=? LIMIT 1", (sid,)) is not None


def expired_error(sid: str, s: Any, when: float, state: str, *, forks: bool) -> Expired:
    """The refusal of a write to session `sid` (`s`: its row or dict) that expired at `when`: when and why
    (its expires_at, or its idle timeout), `state` (whether it is ended), and the way on: a clone, and a fork
    at a message when it holds one (`forks`); one holding none, a clone, given an expiry of its own."""
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
    idle = idle_timeout_of(_field(s, "policy"))
    reason = "expires_at" if when == _field(s, "expires_at") else "idle_timeout"  # (api/errors.py REASONS)
    if reason == "expires_at":
        why = f"expired at {at}"
    elif _is_number(idle):
        why = f"expired at {at}, idle for longer than its idle_timeout ({idle:g} s)"
    else:
        why = f"expired at {at}, idle for longer than its idle timeout"
    if forks:
        ways = (
            f"`sessiond clone {sid}` (same settings, no history) or `sessiond fork {sid} --at MESSAGE_ID` (its"
            " history up to that message)"
        )
    else:  # (no message to fork at)
        ways = (
            f"`sessiond clone {sid}` (same settings; it holds no messages), which has no expiry of its own: give it"
            " one with `sessiond set NEW_ID --expires-in D`"
        )
    return Expired(
        f"session {sid!r} {why}; an expired session takes no more changes ({state}). Go on in a new session: {ways}",
        session=sid,
        expired_at=when,
        api=new_session_ways(sid, fork=forks),
        reason=reason,
    )


async def refuse_inactive(q: Any, sid: str, status: str) -> NoReturn:
    """Refuse a message (an append, a question to a model) to session `sid`, paused or ended (`status`),
    read through `q`: one its expiry or idle timeout ended (its end's operation says when it expired) as
    `expired`, naming when, as a write that finds it past its expiry is; one paused or ended otherwise as
    a conflict (not_active)."""
    if status == "ended":
        row = await q.fetchone("SELECT stamps, expires_at, policy FROM sessions WHERE id=?", (sid,))
        when = None if row is None else await _expired_at(q, sid, row["stamps"])
        if when is not None:
            raise expired_error(sid, row, when, "it has ended", forks=await _holds_messages(q, sid))
    raise not_active(sid, status)


async def refuse_if_expiry_ended(q: Any, sid: str, row: Any) -> None:
    """A status change (a resume, a pause) asked of session `sid`, ended (`row`: its row, read through `q`):
    refused as expired, naming when, if its expiry ended it, as a message to it is (refuse_inactive); an end
    made otherwise is left to the status change's own check (storage/changerules.check_status_change)."""
    when = await _expired_at(q, sid, row["stamps"])
    if when is not None:
        raise expired_error(sid, row, when, "it has ended", forks=await _holds_messages(q, sid))


async def _expired_at(q: Any, sid: str, stamps: str) -> float | None:
    """When the session's expiry ended it, as its end's operation (the one whose stamp its status holds)
    records it; None for an end made otherwise (`end`, or by a sessiond that did not record it)."""
    stamp = json.loads(stamps).get("status")
    if not (isinstance(stamp, list) and len(stamp) == 2):
        return None
    op = await q.fetchone(
        "SELECT body FROM ops WHERE session_id=? AND device_id=? AND lamport=? AND kind='session.update'",
        (sid, stamp[1], stamp[0]),
    )
    when = None if op is None else json.loads(op[0]).get("expired_at")
    return when if _is_number(when) else None


def not_active(sid: str, status: str) -> Conflict:
    """The refusal of a message (an append, a question to a model) to a paused or ended session: why, and the
    way on (in API terms too)."""
    if status == "paused":
        return Conflict(
            f"session {sid!r} is paused; resume it first (`sessiond resume {sid}`)",
            reason="paused",
            api=[f"POST {session_path(sid, 'resume')}"],
        )
    return Conflict(
        f"session {sid!r} has ended; an ended session takes no new messages (go on in a clone: `sessiond clone {sid}`)",
        reason="ended",
        api=new_session_ways(sid, fork=False),
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Expiries:
    """The sessions that expire, as the daemon's clean-up asks for them (daemon/operations.py)."""

    def __init__(self, c: Connections):
        self.c = c

    async def _expiring(self, ended: bool = False) -> list[tuple[Row, float]]:
        """The sessions not ended that can expire, each with when it does (expiry()); `ended`: ended ones too
        (delete_expired deletes a session at its expiry, ended or not)."""
        out = []
        # only the rows that can expire: one with an expiry, or a policy naming an idle timeout (a superset
        # of those whose policy sets one; checked below), so a minute's clean-up of 10,000 sessions without
        # either parses no JSON
        for r in await self.c.committed.fetchall(
            "SELECT id, expires_at, last_activity, policy, status, access FROM sessions WHERE NOT importing"
            + ("" if ended else " AND status!='ended'")
            + " AND (expires_at IS NOT NULL OR instr(policy, 'idle_timeout') > 0)"
        ):
            # a value that is not a number (stored by an older sessiond) never expires its session, and
            # must not stop the others from expiring
            when = session_expiry(r)
            if when is not None:
                out.append((r, when))
        return out

    async def activity_after(self, t: float) -> int:
        """Give the sessions that can idle out (an idle timeout, not ended) whose last activity is after `t`
        (more than a second: this device's clock was stepped back since it was stamped) `t` as their last
        activity, or one stamped this run its last activity as judged now if earlier (last_activity()); how
        many. Their idle timeout then counts from the step (or from that activity, in real time), not from a
        time the clock reaches only as much later as it was stepped back (a day's step: a day more); and a
        write's `max(last_activity, now)` moves it again. Others keep theirs (the order of `ls`)."""
        where = " WHERE last_activity > ? AND status!='ended' AND instr(policy, 'idle_timeout') > 0"
        if not await self.c.committed.fetchall("SELECT 1 FROM sessions" + where + " LIMIT 1", (t + 1.0,)):
            return 0
        async with self.c.transaction() as tx:
            # (one whose activity this run saw gets it as judged, on the clock as it reads now: its idleness
            # counts from then, in real time, not from the step)
            rows = await tx.fetchall("SELECT id, last_activity FROM sessions" + where, (t + 1.0,))
            moved = [(min(last_activity(r), t), r["id"]) for r in rows]
            await tx.executemany("UPDATE sessions SET last_activity=? WHERE id=?", moved)
            return len(moved)

    async def expired(self, t: float, *, ended: bool = False) -> list[dict]:
        """Sessions past their expiry or idle timeout that are not ended yet; `ended`: ended ones too (to be
        deleted: one whose delete a crash cut short after its expiry ended it, one a user ended before it)."""
        return [
            {**{k: r[k] for k in ("id", "expires_at", "last_activity", "status", "access")}, "expired_at": when}
            for r, when in await self._expiring(ended)
            if when <= t
        ]

    async def next_expiry(self, after: float, *, ended: bool = False) -> float | None:
        """When the next session not ended (`ended`: or ended) expires (its expiry or idle timeout) after
        `after`, or None. (One that expired by then and is still here could not be ended or deleted: a
        read-only import, which its owner's devices end; the clean-up does not wait on it.)"""
        return min((when for _, when in await self._expiring(ended) if when > after), default=None)

    async def expiry_of(self, sid: str, *, ended: bool = False) -> float | None:
        """When session `sid` expires, if it can and is not ended (`ended`: or is); None for one that is gone."""
        r = await self.c.committed.fetchone(
            "SELECT id, expires_at, last_activity, policy, status FROM sessions WHERE id=? AND NOT importing", (sid,)
        )
        if r is None or (r["status"] == "ended" and not ended):
            return None
        return session_expiry(r)
