"""A chat's history made sendable to an OpenAI-compatible model, for one request only (what is stored stays as
it is): OpenAI's API refuses a function name outside ^[a-zA-Z0-9_-]{1,64}$, arguments that are not JSON, a
tool's message answering no call of the assistant's message just before it, and a call no tool's message
answers, which histories imported from other apps (ChatGPT's `dalle.text2im`, `python` with its code as the
arguments, a tool's output with no call) hold. README, "Talk to a model". A request that ends in calls no
output answers yet (`unanswered`) is the caller's to refuse (`calls_unanswered`): no made-up result stands in for the
one to come; so is a request with nothing to answer (`nothing_to_answer`)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from ..storage.errors import Invalid, ToolCallUnanswered, session_path

_BAD = re.compile(r"[^a-zA-Z0-9_-]")
MAX_NAME = 64
NO_RESULT = "(no result of this call was recorded)"


def name(n: str) -> str:
    """A name as OpenAI takes it: each character it does not take as "_", cut to 64 characters."""
    return _BAD.sub("_", n)[:MAX_NAME] or "_"


def arguments(a: Any) -> str:
    """A call's arguments as JSON text of an object: as they are when they are one, else {"input": the text}."""
    if isinstance(a, str):
        try:
            if isinstance(json.loads(a), dict):
                return a
        except (ValueError, RecursionError):  # (not JSON; or nested deeper than Python's reader goes)
            pass
    return json.dumps({"input": a if isinstance(a, str) else json.dumps(a)}, ensure_ascii=False)


def _call(c: dict) -> dict:
    f = c.get("function") or {}
    return {**c, "function": {**f, "name": name(str(f.get("name") or "")), "arguments": arguments(f.get("arguments"))}}


def _note(m: dict) -> dict:
    """A tool's output that answers no call in the request, as a note in the user's turn naming the tool."""
    tool = f"the tool {m['name']}" if m.get("name") else "a tool"
    return {"role": "user", "content": f"[The output of {tool}, which answers no call here:]\n{m.get('content') or ''}"}


def history(msgs: list[dict]) -> list[dict]:
    """`msgs` (each as toolcalls.openai_message gives it) as the request sends them: names and arguments as
    OpenAI takes them; a call's several outputs in a row as one tool message (their texts joined by a blank
    line); a tool's output answering no call of the assistant's message just before it as a note in the
    user's turn (_note); and a call no output answers, followed by another message, answered NO_RESULT."""
    out: list[dict] = []
    pending: list[str] = []  # the ids of the calls just made, in order, not answered yet
    made: set = set()  # ids of the calls of the assistant's message just before (its tool messages between)

    def close() -> None:
        out.extend({"role": "tool", "tool_call_id": cid, "content": NO_RESULT} for cid in pending)
        pending.clear()
        made.clear()

    for m in msgs:
        m = {**m, "name": name(m["name"])} if isinstance(m.get("name"), str) and m["name"] else m
        if m["role"] == "tool":
            cid = m.get("tool_call_id")
            if cid in made:
                last = out[-1]
                if last["role"] == "tool" and last.get("tool_call_id") == cid:
                    last["content"] = f"{last.get('content') or ''}\n\n{m.get('content') or ''}"
                else:
                    out.append(dict(m))
                    if cid in pending:
                        pending.remove(cid)
                continue
            close()
            out.append(_note(m))
            continue
        close()
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [_call(c) for c in m["tool_calls"]]}
            pending[:] = [c.get("id") for c in m["tool_calls"]]
            made.update(pending)
        out.append(m)
    return out


def unanswered(sent: list[dict]) -> list[str]:
    """The ids of the calls `sent` (as history gives it) ends in that no tool's message answers: those of
    its last assistant's message with calls, when only tool messages follow it."""
    i = len(sent)
    while i and sent[i - 1]["role"] == "tool":
        i -= 1
    if not i or not sent[i - 1].get("tool_calls"):
        return []
    answered = {m.get("tool_call_id") for m in sent[i:]}
    return [c.get("id") for c in sent[i - 1]["tool_calls"] if c.get("id") not in answered]


def nothing_to_answer(session: dict, chat: str) -> Invalid:
    """The refusal of a request for the model's next answer (no question) to a chat holding no message (its
    system prompt aside): the provider would be sent none (OpenAI refuses an empty `messages`, 400)."""
    sid = session["id"]
    where = "" if chat == session["current_chat"] else f" --chat {shlex.quote(chat)}"
    return Invalid(
        f"chat {chat!r} of session {sid} holds no message for the model to answer, so nothing is sent to it: ask"
        f" a question (`sessiond ask {sid}{where} TEXT`)",
        api=[f'POST {session_path(sid, "complete")} {{"chat": {json.dumps(chat)}, "content": QUESTION}}'],
    )


def calls_unanswered(session: dict, chat: str, ids: list[str]) -> ToolCallUnanswered:
    """The refusal of a request for the model's next answer (no question) to a chat that ends in tool calls
    no result answers: OpenAI's API refuses such a history (400), and the model has nothing to go on from."""
    sid = session["id"]
    where = "" if chat == session["current_chat"] else f" --chat {shlex.quote(chat)}"
    named = ", ".join(ids)
    # in API terms (details.api): each result appended (one batch), then the same request again; or a question
    answers = ", ".join(f'{{"role": "tool", "tool_call_id": {json.dumps(i)}, "content": RESULT}}' for i in ids)
    to, ask = json.dumps(chat), f"POST {session_path(sid, 'complete')}"
    results = f'POST {session_path(sid, "messages")} {{"messages": [{answers}], "chat": {to}}}'
    # (the id quoted for a shell, and given with `=`: one beginning with "-" is no option to argparse)
    return ToolCallUnanswered(
        f"chat {chat!r} of session {sid} ends in the model's tool call{'s' if len(ids) > 1 else ''} {named}, which"
        f" no tool's result answers yet, so nothing is sent to the model: add each result first (`sessiond add"
        f" {sid}{where} --role tool --tool-call-id={shlex.quote(ids[0])} TEXT`; POST /v1/sessions/{sid}/messages"
        f" with its tool_call_id), or ask a question (the call is then sent answered {NO_RESULT!r})",
        tool_call_ids=ids,
        api=[f'{results}, then {ask} {{"chat": {to}}}', f'{ask} {{"chat": {to}, "content": QUESTION}}'],
    )
