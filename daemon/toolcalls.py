"""Tool calls as OpenAI's chat completions carry them: an app's request's (checked as the API checks an
append's), a model's whole answer's, a stream's deltas put together, and a stored message in the shape a
model is sent (an assistant's call with no text: content null)."""

from __future__ import annotations

import json
from typing import Any

from ..api.messages import MAX_TOOL_CALLS, ToolCalls, new_call_id
from ..api.types import json_value
from ..storage.errors import Invalid
from .checker import checker
from .provider_stream import first_choice

_CALLS = checker(ToolCalls)
OPENAI_FIELDS = ("name", "tool_call_id", "tool_calls")  # a message's fields beside role and content
_OWN = ("id", "type", "function", "index")  # a call's fields sessiond keeps in the call (and a stream's index)
MAX_FIELDS = 64 << 10  # a call's provider fields kept up to this size (as JSON); more: not kept
# where a call's fields sit in a stored message's fields (its `extra`: call_fields, the call's id), which
# another device checks as one JSON document (daemon/remote_checks.py): its depth counted from there
FIELDS_DEPTH = 2


def _call(c: Any) -> Any:
    """One call with only the fields sessiond keeps in it (id, type, function name and arguments): a stream's
    `index` is no part of it, and a provider's own additions (Gemini 3's signature) are kept apart (`fields`)."""
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


NO_NAME = "the call has no function name"
TOO_MANY = f"one message holds at most {MAX_TOOL_CALLS} tool calls (the model made more)"


def _named_id(c: dict) -> None:
    """A model's call given no id (some servers give none) gets one made for it, in place: recorded with
    it, and the app that is passed the model's answer gets it too, so that the history it sends back
    (the call, then the tool's result naming it) is the session's."""
    if isinstance(c, dict) and not (isinstance(c.get("id"), str) and c["id"]):
        c["id"] = new_call_id()


def _why(c: Any, exc: Invalid) -> str:
    """Why a model's call cannot be recorded, in words that hold nothing of its arguments."""
    f = c.get("function") if isinstance(c, dict) else None
    if isinstance(f, dict) and not (isinstance(f.get("name"), str) and f["name"]):
        return NO_NAME  # it cannot be acted on: no app knows which function to run
    return f"the call is malformed ({exc.message.partition(' ')[0].removeprefix('tool_calls[0].')})"


def fields(c: Any) -> dict | None:
    """A model's call's fields beyond those kept in it (_OWN): a provider's own, as Gemini 3's `extra_content`
    (`{"google": {"thought_signature"}}`), which it must be sent back with the call; None when it has none,
    or they are larger than MAX_FIELDS as JSON, or JSON that no device takes in a message (unplain: an
    integer past 64 bits, nested too deep): not kept, as no other device would take this one's log with them."""
    if not isinstance(c, dict):
        return None
    own = {k: x for k, x in c.items() if k not in _OWN}
    if not own or len(json.dumps(own, ensure_ascii=False)) > MAX_FIELDS or unplain(own) is not None:
        return None
    return own


def of_request(given: list, calls: list[dict]) -> dict | None:
    """The provider's own fields of an app's message's calls (`given` as the app sent them, `calls` as
    kept), by call id, kept as a model's answer's are (`fields`: one past MAX_FIELDS is not); None when none
    has any."""
    own = {kept_call["id"]: f for c, kept_call in zip(given, calls, strict=True) if (f := fields(c)) is not None}
    return own or None


def unplain(own: dict) -> str | None:
    """Why a call's fields are not JSON that every device takes as a message's (the API's plain JSON, nested
    at most as deep as a stored message's fields may be: FIELDS_DEPTH of it is the place they are kept in),
    said after their place (".extra_content.a is nested too deeply"); None when they are."""
    try:
        json_value(own, "", FIELDS_DEPTH)
    except Exception as exc:  # the PydanticCustomError of api.types
        return f"{(getattr(exc, 'context', None) or {}).get('sub', '')} {exc}"
    return None


def checked_fields(own: Any, where: str) -> dict:
    """A call's provider fields as a file gives them, checked: an object of fields beyond the call's own (id,
    type, function), plain JSON no deeper than a stored message's fields may hold them (unplain), at most
    MAX_FIELDS as JSON, as a model's answer's are kept; else refused (Invalid) naming `where`."""
    if not isinstance(own, dict) or not own:
        raise Invalid(f"{where} must be an object of a provider's own fields of the call (as extra_content)")
    if ours := sorted(own.keys() & set(_OWN)):
        raise Invalid(f"{where} holds {', '.join(ours)}: a call's own fields are in the call, not beside it")
    if (why := unplain(own)) is not None:
        raise Invalid(f"{where}{why}")
    if len(json.dumps(own, ensure_ascii=False)) > MAX_FIELDS:
        raise Invalid(
            f"{where} is larger than {MAX_FIELDS >> 10} KiB as JSON: sessiond keeps a call's provider fields up to that"
        )
    return own


def of_file(given: Any, calls: list[dict] | None, where: str, by_id: Any = None) -> dict | None:
    """The provider's own fields of a file's message's calls (to be kept as its `call_fields`): those each
    call carries beside id, type and function, as OpenAI-shaped messages (`export --format openai`) carry
    them, and a session file's `call_fields` (`by_id`: by call id); each checked (checked_fields). `given`:
    the message's tool_calls as the file has them; `calls`: as kept. None when no call has any."""
    out: dict = {}
    for i, (c, kept_call) in enumerate(zip(given if isinstance(given, list) else (), calls or (), strict=False)):
        if isinstance(c, dict) and (own := {k: x for k, x in c.items() if k not in _OWN}):
            where_i = f"{where}.tool_calls[{i}]'s fields beyond id, type and function"
            out[kept_call["id"]] = checked_fields(own, where_i)
    if by_id is not None:
        out.update(by_call_id(by_id, calls, f"{where}.call_fields"))
    return out or None


def by_call_id(by_id: Any, calls: list[dict] | None, where: str) -> dict:
    """A message's `call_fields` as given (a session file's, an append's): a call's provider fields by the id
    of one of the message's `calls` (as kept), each checked (checked_fields); else refused (Invalid) naming
    `where` (the field: `messages[3].call_fields`). Empty when `by_id` names no call."""
    if not isinstance(by_id, dict):
        raise Invalid(f"{where} must be an object: a call's provider fields by the call's id")
    ids = {c["id"] for c in calls or ()}
    out = {}
    for cid, own in by_id.items():
        if cid not in ids:
            raise Invalid(f"{where} names {cid!r:.80}, which is not the id of one of the message's calls")
        out[cid] = checked_fields(own, f"{where}[{cid!r:.80}]")
    return out


class Answered:
    """A model's answer's tool calls: those recorded (None: it made none that can be), and those that
    cannot be, each {"index", "reason"} (the index in the model's list); `fields`: the provider's own fields
    of the recorded calls, by call id (None: none has any), to be recorded as the message's `call_fields`."""

    def __init__(self, calls: list[dict] | None = None, dropped: list[dict] | None = None, fields: dict | None = None):
        self.calls, self.dropped, self.fields = calls, dropped or [], fields or None


def of_answer(calls: Any, indexes: list[int] | None = None) -> Answered:
    """A model's answer's tool calls: each whole one kept (one given no id gets one, in the answer's own
    call too), up to MAX_TOOL_CALLS (as an append's; a pull reads an older sessiond's message of more), the
    others dropped with the reason; `indexes`: each call's index in the model's list."""
    if not isinstance(calls, list) or not calls:
        return Answered()
    out: list[dict] = []
    dropped: list[dict] = []
    own: dict = {}
    for i, c in enumerate(calls):
        _named_id(c)
        if len(out) == MAX_TOOL_CALLS:  # one message holds no more, as an app's append
            dropped.append({"index": indexes[i] if indexes else i, "reason": TOO_MANY})
            continue
        try:
            out += _CALLS([_call(c)], "tool_calls")
        except Invalid as exc:
            dropped.append({"index": indexes[i] if indexes else i, "reason": _why(c, exc)})
            continue
        if (f := fields(c)) is not None:
            own[c["id"]] = f
    return Answered(out or None, dropped, own)


class Assembled:
    """A stream's tool-call deltas put together, by their index (a delta given none: `_place`): the id,
    type and name as the first delta that gives them does, the arguments' pieces concatenated. A call
    whose first delta gives no id waits for it (`waiting`): a later delta's id is moved into the first
    delta, where the app reads it, once (an app that joins a call's ids, as OpenAI's SDK's stream helper
    does, gets it whole); a call whose id does not come (by the calls' end, or as long as the caller
    waits) gets one made (`name_the_rest`), and an id given after that is taken out of its delta: the app
    has the made one, which is recorded. The caller holds the chunks back from the app meanwhile. A delta
    given no index is given the one it was put together under, in place (`changed`)."""

    def __init__(self) -> None:
        self._parts: dict[int, dict] = {}
        self._first: dict[int, dict] = {}  # a call's first delta (in its chunk), while the call has no id
        self._made: set[int] = set()  # the calls given an id made for them
        # whether the last chunk added was changed (an id taken out, an index given): to be encoded again
        self.changed = False
        self._ids: dict[str, int] = {}  # each id given, the index of its call
        self._last: int | None = None  # the index of the call the last delta was part of

    def _place(self, cid: str | None, i: int) -> int:
        """The index of a delta given none (Gemini's streams give none, each parallel call in a chunk of its
        own): the call its id names, a new one for an id not seen yet, else the call the last delta was part
        of (its arguments go on); the first, by its place in its chunk's list."""
        if cid is not None:
            known = self._ids.get(cid)
            return known if known is not None else (max(self._parts) + 1 if self._parts else i)
        return self._last if self._last is not None else i

    def add(self, chunk: dict) -> bool:
        """Take a chunk's tool-call deltas; whether it had any."""
        self.changed = False
        choice = first_choice(chunk)
        delta = choice.get("delta") if choice is not None else None
        deltas = delta.get("tool_calls") if isinstance(delta, dict) else None
        if not isinstance(deltas, list) or not deltas:
            return False
        for i, d in enumerate(deltas):
            if not isinstance(d, dict):
                continue
            has_id = isinstance(d.get("id"), str) and d["id"]
            index = d.get("index")
            if not isinstance(index, int):
                # the app is passed the index too: OpenAI's SDKs put a call's deltas together by theirs
                index = d["index"] = self._place(d["id"] if has_id else None, i)
                self.changed = True
            if has_id and d["id"] not in self._ids:
                self._ids[d["id"]] = index
            self._last = index
            part = self._parts.get(index)
            if part is None:
                part = self._parts[index] = {"arguments": []}
                if not has_id:
                    self._first[index] = d
            elif has_id and index in self._first:  # its id, late: moved into the call's first delta
                part["id"] = self._first.pop(index)["id"] = d.pop("id")
            elif has_id and index in self._made:  # too late: the app was passed the id made for it
                del d["id"]
                self.changed = True
            for k in ("id", "type"):
                if isinstance(d.get(k), str) and d[k] and k not in part:
                    part[k] = d[k]
            for k, x in d.items():  # a provider's own fields of the call (Gemini 3's signature): as given
                if k not in _OWN:
                    part.setdefault("fields", {})[k] = x
            f = d.get("function")
            if isinstance(f, dict):
                if isinstance(f.get("name"), str) and f["name"] and "name" not in part:
                    part["name"] = f["name"]
                if isinstance(f.get("arguments"), str):
                    part["arguments"].append(f["arguments"])
        return True

    def waiting(self) -> bool:
        """Whether a call begun without its id still waits for it."""
        return bool(self._first)

    def name_the_rest(self) -> None:
        """Each call still without its id gets one made (_named_id), in its first delta too."""
        for index, d in self._first.items():
            _named_id(d)
            self._parts[index]["id"] = d["id"]
            self._made.add(index)
        self._first.clear()

    def whole(self) -> list[dict]:
        """The calls put together, in the order of their indexes, as a whole answer gives them (unchecked)."""
        return [
            {
                **p.get("fields", {}),
                "id": p.get("id"),
                "type": p.get("type", "function"),
                "function": {"name": p.get("name"), "arguments": "".join(p["arguments"])},
            }
            for _, p in sorted(self._parts.items())
        ]

    def answered(self) -> Answered:
        return of_answer(self.whole(), sorted(self._parts))

    def calls(self) -> list[dict] | None:
        return self.answered().calls


def openai_message(m: dict, provider: str | None = None, *, every: bool = False) -> dict:
    """A stored message as a model is sent it: role and content, its name, tool_call_id and tool_calls; an
    assistant's calls with no text have content null, as OpenAI's own answers do. Its calls carry their
    provider's own fields (`call_fields`) when `provider` is the one that gave them (the message's
    `provider`): another provider may refuse a field it does not know (Gemini's API does). Fields kept with
    no provider (a file's: whoever gave them is not known) go with the calls to any provider, as the file
    sends them (an app's history's are recorded as the provider's its request went to: openai_compat.py).
    `every`: the calls carry their fields whoever gave them (`export --format openai`)."""
    out = {"role": m["role"], "content": m["content"]}
    for k in OPENAI_FIELDS:
        if m.get(k):
            out[k] = m[k]
    own = m.get("call_fields")
    if out.get("tool_calls") and isinstance(own, dict) and (every or _sent_to(m, provider)):
        out["tool_calls"] = [_with_fields(c, own) for c in out["tool_calls"]]
    if "tool_calls" in out and not out["content"]:
        out["content"] = None
    return out


def _sent_to(m: dict, provider: str | None) -> bool:
    """Whether message `m`'s calls' own fields go to `provider` (a request's): the one that gave them, or any
    when the message names none."""
    return provider is not None and m.get("provider") in (provider, None)


def _with_fields(c: Any, own: dict) -> Any:
    """Call `c` with the provider's own fields recorded for it (those that are no field sessiond keeps in it)."""
    f = own.get(c.get("id")) if isinstance(c, dict) else None
    if not isinstance(f, dict):
        return c
    return {**{k: x for k, x in f.items() if k not in _OWN}, **c}
