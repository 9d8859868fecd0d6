"""What a change of a session may do (Sessions.update, statuschanges.py): its status's lifecycle (active and paused
to each other and to ended, an end final), and an ended session's conversation, final."""

from __future__ import annotations

from .errors import Conflict, new_session_ways

# What a session's conversation is, final once it has ended (as its chats' are: storage/chats.py): the rest of its
# fields (a name, tags, metadata, preferences, its user, its expiry and idle timeout) file it, and still change
_CONVERSATION = ("system_prompt", "initial_messages", "model", "settings")
_KEEPING_POLICY = ("idle_timeout",)  # (of its policy: how long it is kept, as its expiry)


def refuse_conversation_change(sid: str, current: dict, fields: dict) -> None:
    """Refuse (Conflict) a change of the conversation of session `sid`, ended (`current`: as it is): its system
    prompt, initial messages, model, settings or its policy but the idle timeout. The same value given again
    is no change (an app that sends the whole session back to rename it)."""
    changed = [k for k in _CONVERSATION if k in fields and fields[k] != current.get(k)]
    if "policy" in fields:
        was, given = current.get("policy") or {}, fields["policy"] or {}
        changed += sorted(k for k in set(was) | set(given) if k not in _KEEPING_POLICY and was.get(k) != given.get(k))
    if changed:
        raise Conflict(
            f"session {sid!r} has ended; its conversation is final: {', '.join(changed)} cannot change (a name,"
            f" tags, metadata and its expiry still do; go on in a clone: `sessiond clone {sid}`)",
            reason="ended",
            api=new_session_ways(sid, fork=False),
        )


def check_status_change(sid: str, current: str, status: str) -> None:
    """Refuse a change of a session's status from `current` to `status` that its lifecycle does not allow:
    active and paused go to each other and to ended; an end is final."""
    if status == current or status == "ended":
        return
    if current == "ended":
        raise Conflict(
            f"session {sid!r} has ended; an ended session cannot be paused or resumed (go on in a clone: "
            f"`sessiond clone {sid}`)",
            reason="ended",
            api=new_session_ways(sid, fork=False),
        )
    if (status == "paused" and current != "active") or (status == "active" and current != "paused"):
        raise Conflict(f"session {sid!r} is {current}; cannot change it to {status}", reason="status")
