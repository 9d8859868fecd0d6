"""Tool calls as OpenAI's chat completions carry them: an app's request's (checked as the API checks an
append's), a model's whole answer's, a stream's deltas put together, and a stored message in the shape a
model is sent (an assistant's call with no text: content null)."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..api.messages import ToolCalls
from ..storage.errors import Invalid
from .checker import checker

log = logging.getLogger("sessiond.complete")

_CALLS = checker(ToolCalls)
OPENAI_FIELDS = ("name", "tool_call_id", "tool_calls")  # a message's fields beside role and content


def _call(c: Any) -> Any:
    """One call with only the fields sessiond keeps (id, type, function name and arguments): a provider's
    own additions (an `index`, a signature) are the app's to send back, not the session's to keep."""
    if not isinstance(c, dict) or not isinstance(c.get("function"), dict):
        return c  # refused by the check, naming it
    f = c["function"]
    args = f.get("arguments", "")
    if isinstance(args, dict):  # some servers give the arguments as an object: kept as the JSON text OpenAI's are
        args = json.dumps(args, ensure_ascii=False)
    return {
        "id": c.get("id"),
        "type": c.get("type", "function"),
        "function": {"name": f.get("name"), "arguments": args},
    }


def kept(calls: Any) -> Any:
    """A message's tool_calls with only the fields sessiond keeps, to be checked (anything but a list as given,
    for the check to refuse)."""
    return [_call(c) for c in calls] if isinstance(calls, list) else calls


def from_request(calls: Any, where: str) -> list[dict]:
    """An app's message's tool_calls, as stored; a malformed one refused (Invalid) naming it."""
    if not isinstance(calls, list):
        raise Invalid(f"{where}: must be a list of tool calls")
    return _CALLS(kept(calls), where)


def of_answer(calls: Any) -> list[dict] | None:
    """A model's answer's tool calls, those that are whole (the others logged and left out: the app has
    them as the provider sent them); None when it made none."""
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for c in calls:
        try:
            out += _CALLS([_call(c)], "tool_calls")
        except Invalid as exc:
            log.warning("a model's tool call not recorded: %s", exc.message, extra={"event": "complete.tool_call"})
    return out or None


class Assembled:
    """A stream's tool-call deltas put together, by their index: the id, type and name as the first delta
    that gives them does, the arguments' pieces concatenated."""

    def __init__(self) -> None:
        self._parts: dict[int, dict] = {}

    def add(self, chunk: dict) -> bool:
        """Take a chunk's tool-call deltas; whether it had any."""
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return False
        delta = choices[0].get("delta")
        deltas = delta.get("tool_calls") if isinstance(delta, dict) else None
        if not isinstance(deltas, list) or not deltas:
            return False
        for i, d in enumerate(deltas):
            if not isinstance(d, dict):
                continue
            index = d.get("index", i)
            part = self._parts.setdefault(index if isinstance(index, int) else i, {"arguments": []})
            for k in ("id", "type"):
                if isinstance(d.get(k), str) and d[k] and k not in part:
                    part[k] = d[k]
            f = d.get("function")
            if isinstance(f, dict):
                if isinstance(f.get("name"), str) and f["name"] and "name" not in part:
                    part["name"] = f["name"]
                if isinstance(f.get("arguments"), str):
                    part["arguments"].append(f["arguments"])
        return True

    def calls(self) -> list[dict] | None:
        return of_answer(
            [
                {
                    "id": p.get("id"),
                    "type": p.get("type", "function"),
                    "function": {"name": p.get("name"), "arguments": "".join(p["arguments"])},
                }
                for _, p in sorted(self._parts.items())
            ]
        )


def openai_message(m: dict) -> dict:
    """A stored message as a model is sent it: role and content, its name, tool_call_id and tool_calls; an
    assistant's calls with no text have content null, as OpenAI's own answers do."""
    out = {"role": m["role"], "content": m["content"]}
    for k in OPENAI_FIELDS:
        if m.get(k):
            out[k] = m[k]
    if "tool_calls" in out and not out["content"]:
        out["content"] = None
    return out
