"""A tool's result appended naming its call (tool_call_id): the call must be one of its chat's, stored or
made earlier in the same batch (Messages.append, for the append routes), else the append is refused naming
the chat's latest calls, or the chat that has the call."""

from __future__ import annotations

import json
import shlex

from .errors import Invalid, session_path, sync_wait
from .model import dumps

# Whether a chat has a model's call of an id (the id as JSON text, for instr to pass over the messages that
# cannot hold it unparsed; then the id), and the chat of a session that has it; read from the chat's end.
CALL_IN_CHAT = (
    "SELECT 1 FROM messages m, json_each(m.extra, '$.tool_calls') j WHERE m.session_id=? AND m.chat_id=?"
    " AND m.role='assistant' AND instr(m.extra, ?) > 0 AND json_extract(j.value, '$.id')=?"
    " ORDER BY m.lamport DESC LIMIT 1"
)
_CALL_IN_SESSION = (
    "SELECT m.chat_id FROM messages m, json_each(m.extra, '$.tool_calls') j WHERE m.session_id=?"
    " AND m.role='assistant' AND instr(m.extra, ?) > 0 AND json_extract(j.value, '$.id')=? LIMIT 1"
)
_LATEST_CALLS = (
    "SELECT extra FROM messages WHERE session_id=? AND chat_id=? AND role='assistant'"
    " AND instr(extra, '\"tool_calls\"') > 0 ORDER BY lamport DESC, device_id DESC, seq DESC LIMIT 1"
)


async def check_results(tx, sid: str, chat: str, messages: list[dict]) -> None:
    """Refuse (Invalid) a tool's message whose tool_call_id names no call of its chat (stored, or made earlier
    in the batch): a typo, or the wrong chat. Its output would be kept answering no call, and sent to a
    model as a note, its call as answered by nothing, for good (no message leaves a session)."""
    made: set[tuple[str, str]] = set()  # (chat, id) of the batch's calls so far
    for i, m in enumerate(messages):
        c = m.get("chat") or chat
        for call in m.get("tool_calls") or ():
            made.add((c, call["id"]))
        cid = m.get("tool_call_id")
        if m["role"] != "tool" or cid is None or (c, cid) in made:
            continue
        if await tx.fetchone(CALL_IN_CHAT, (sid, c, dumps(cid), cid)) is None:
            raise await _no_call(tx, sid, c, cid, f"messages[{i}]: " if len(messages) > 1 else "")


async def _no_call(tx, sid: str, chat: str, cid: str, where: str) -> Invalid:
    """The refusal of a result naming call `cid`, which chat `chat` does not have: the chat that has it, or
    the ids of the chat's latest calls (what a result most likely answers)."""
    said = f"{where}tool_call_id {cid!r} names no tool call of chat {chat!r} of session {sid!r}, so nothing was added"
    other = await tx.fetchone(_CALL_IN_SESSION, (sid, dumps(cid), cid))
    if other is not None:
        return Invalid(
            f"{said}: it is a call of chat {other[0]!r}: add its result there (--chat {shlex.quote(other[0])};"
            f' "chat": {dumps(other[0])})',
            tool_call_id=cid,
            chat=other[0],
        )
    row = await tx.fetchone(_LATEST_CALLS, (sid, chat))
    ids = [c.get("id") for c in json.loads(row[0]).get("tool_calls") or ()] if row else []
    return Invalid(
        f"{said}: "
        + (f"the chat's latest tool calls are {', '.join(ids)}" if ids else "the chat has no tool calls")
        + f" (a call another device made is here once pulled: `sessiond sync {sid}`); a tool's output that"
        " answers no call is added with no tool_call_id (`sessiond add` without --tool-call-id)",
        tool_call_id=cid,
        tool_call_ids=ids,
        api=[  # the pull (then the append again), or the output added answering no call
            sync_wait(sid),
            f'POST {session_path(sid, "messages")} {{"role": "tool", "content": RESULT, "chat": {dumps(chat)}}}',
        ],
    )
