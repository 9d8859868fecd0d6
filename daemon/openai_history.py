"""What of an OpenAI-compatible request's messages its chat has not stored yet (openai_compat.py). Apps resend
the whole history with every call: it is matched against the chat's stored history from the start (role,
content, the tool calls a message makes or answers) and the part past the longest common prefix is new,
unless the chat already ends with the start of that part: an app whose history parted from the chat's (an
answer regenerated, a question edited) had it appended by an earlier call, and only what follows is new.
The request's messages are read and checked here first (request_messages), as the chat stores them."""

from __future__ import annotations

import re

from ..storage.errors import Invalid
from . import toolcalls
from . import validate as v
from .checker import too_long


def _matched(m: dict, content: str | None = None) -> tuple:
    """What of a message the request's history is matched by: role, content (`content`, else its own), and the
    tool calls it makes or answers (two calls with no text differ by them)."""
    return (m["role"], m["content"] if content is None else content, m.get("tool_calls"), m.get("tool_call_id"))


def new_part(session: dict, chat: dict, history: list[dict], msgs: list[dict]) -> list[dict]:
    """What of the request's messages the chat has not stored yet, matched against `history` (the chat's
    first messages) only: past the session's own (`own_part`), the part past the longest common prefix."""
    return past_stored(msgs[own_part(session, chat, msgs) :], history)[0]


def own_part(session: dict, chat: dict, msgs: list[dict]) -> int:
    """How many of the request's first messages are the session's own system prompt (the chat's, else the
    session's) and initial messages, which sessiond keeps apart from the chat's history."""
    i = 0
    system = chat.get("system_prompt") or session.get("system_prompt")
    if system and msgs and msgs[0]["role"] == "system" and msgs[0]["content"] == system:
        i = 1
    initial = [(m["role"], m["content"]) for m in session.get("initial_messages") or []]
    if initial and [(m["role"], m["content"]) for m in msgs[i : i + len(initial)]] == initial:
        i += len(initial)
    return i


def past_stored(rest: list[dict], history: list[dict]) -> tuple[list[dict], bool]:
    """The request's messages `rest` (past the session's own) past the longest prefix they share with the
    chat's `history` (its first messages, at least as many), and whether they part from it: the chat holds a
    message where the request has another (then `resent` says how many of them the chat ends with)."""
    k = 0
    while k < len(rest) and k < len(history) and _same(rest[k], history[k]):
        k += 1
    return rest[k:], k < len(rest) and k < len(history)


def resent(new: list[dict], tail: list[dict]) -> int:
    """How many of `new`, the request's messages past where its history parts from the chat's, the chat ends
    with already (`tail`: its last messages, at most as many): those an earlier call of the app appended past
    that place. The longest such run, from `new`'s start to the chat's end; 0 if the chat does not end so."""
    for s in range(max(0, len(tail) - len(new)), len(tail)):
        if _same(new[0], tail[s]) and all(_same(new[n], tail[s + n]) for n in range(1, len(tail) - s)):
            return len(tail) - s
    return 0


def _same(sent: dict, stored: dict) -> bool:
    """Whether the request's message `sent` is the stored `stored`. A stopped answer (interrupted) was
    recorded with every word the daemon sent, and the app may have read fewer before its Stop: its copy is
    the same message when it is a prefix of the recorded text (not a new one, stored after it)."""
    if _matched(sent) == _matched(stored):
        return True
    if TEXT_ALONE in sent and _matched(sent, sent[TEXT_ALONE]) == _matched(stored):
        return True  # its parts that are not text, as an older sessiond recorded them: left out
    # recorded with a part's note (`[image]`), sent again with fewer such parts or none (an app leaving its older
    # turns' images out): the same text, as sessiond keeps it, is the same message (a user's: OpenAI's API takes
    # parts that are not text from a user only)
    if (
        sent["role"] == stored["role"] == "user"
        and isinstance(stored.get("content"), str)
        and (bare := _notes_left_out(stored)) is not None
        and _matched(stored, bare) == _matched(sent, sent.get(TEXT_LINES))
    ):
        return True
    return bool(
        stored.get("interrupted")
        and sent["role"] == stored["role"] == "assistant"
        and _matched(sent)[2:] == _matched(stored)[2:]
        and stored["content"].startswith(sent["content"])
    )


# A request message's text as an older sessiond recorded it (its text parts alone), beside the text recorded now
# (openai_compat.py drops it before the message is stored): the history it recorded still matches.
TEXT_ALONE = "text_alone"
# A request message's text parts, a line each, without the notes of its parts that are not text (text_of): the
# text a message recorded with such parts holds without its notes (sent again, its images left out, it matches).
# Only a list of parts has one; a string is the user's own text, a line such as `[x]` in it content, not a note.
TEXT_LINES = "text_lines"
# what of a request's message it is matched by only (not stored)
MATCH_ONLY = (TEXT_ALONE, TEXT_LINES)
# The lines of a message's text that note its parts that are not text (text_of: `[image]`), by number from 0, kept
# with the message (its extra fields), so that only those, not a user's own line such as `[x]`, are left out when a
# history is matched. A message recorded before they were kept (0.37.0) names none: there, only PART_NOTES' lines,
# and only beside text (a message of such lines alone is text as it stands); a message recorded since with such a
# line of the user's own names an empty list.
PART_NOTES_KEY = "part_notes"
# what a part that is not text is recorded as, in its place in the message's text: sessiond keeps text
PART_NOTES = {"image_url": "[image]", "input_audio": "[audio]", "file": "[file]"}
_KNOWN_NOTES = frozenset(PART_NOTES.values())


def text_of(content) -> str:
    """A message's content as text: a string, or its list of parts: the text parts' texts, and each other
    part (an image, audio, a file) noted by its kind, a line of its own (`[image]`)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [p for p in content if isinstance(p, dict)]
    if all(isinstance(p.get("text"), str) or not p.get("type") for p in parts):
        return _texts(parts)
    return "\n".join(p["text"] if isinstance(p.get("text"), str) else _note(p.get("type")) for p in parts)


def part_notes(content) -> list[int]:
    """Which lines of text_of(`content`) note its parts that are not text (PART_NOTES_KEY), by number from 0."""
    if not isinstance(content, list):
        return []
    parts = [p for p in content if isinstance(p, dict)]
    if all(isinstance(p.get("text"), str) or not p.get("type") for p in parts):
        return []
    notes, line = [], 0
    for p in parts:
        if isinstance(p.get("text"), str):
            line += p["text"].count("\n") + 1
        else:
            notes.append(line)
            line += 1
    return notes


def _notes_left_out(stored: dict) -> str | None:
    """A stored message's text without the lines noting its parts that are not text: those it names
    (PART_NOTES_KEY), else, recorded before they were named (0.37.0), the lines PART_NOTES holds, unless every line
    is one: a user's own text (`[image]`) then, as likely as an image alone, and left out it would be nothing, which
    any message sent in its place without text of its own (an audio clip alone) matched. None if it has none."""
    lines = stored["content"].split("\n")
    named = named_notes(stored.get(PART_NOTES_KEY), len(lines))
    if named is not None:
        notes = set(named)
    else:
        notes = {i for i, line in enumerate(lines) if line in _KNOWN_NOTES}
        if len(notes) == len(lines):
            return None
    return "\n".join(line for i, line in enumerate(lines) if i not in notes) if notes else None


def named_notes(named, lines: int) -> list[int] | None:
    """The lines a message's PART_NOTES_KEY names, as stored (another device's, a session file's: any value), that
    its text has (`lines` of them), in order, once each; None if it is no list (the message names none)."""
    if not isinstance(named, list):
        return None
    return sorted({n for n in named if type(n) is int and 0 <= n < lines})


def _texts(parts: list) -> str:
    return "".join(_text_parts(parts))


def _text_parts(content: list) -> list[str]:
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _note(kind) -> str:
    if kind in PART_NOTES:
        return PART_NOTES[kind]
    return f"[{kind}]" if isinstance(kind, str) and kind.isidentifier() and len(kind) <= 40 else "[part]"


# the field a refusal of a message names first, as OpenAI's `param`: messages[1].tool_calls[0].function.arguments
_FIELD = re.compile(r"messages\[\d+\](?:\.[A-Za-z_]+|\[\d+\])*")


def request_messages(body: dict) -> list[dict]:
    """The request's messages, read and checked; a refusal names its field as OpenAI's `param`."""
    try:
        return _read_messages(body)
    except Invalid as exc:
        field = _FIELD.match(exc.message)
        if field and "param" not in exc.details:
            exc.details["param"] = field.group(0)
        raise


def _read_messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise Invalid("messages must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Invalid(f"messages[{i}] must be an object with a role")
        role = "system" if m["role"] == "developer" else m["role"]
        if not isinstance(m.get("content"), (str, list, type(None))):
            raise Invalid(f"messages[{i}].content must be a string, a list of parts, or null")
        if role not in ("system", "user", "assistant", "tool"):
            raise Invalid(f"messages[{i}].role must be system, developer, user, assistant or tool")
        text = text_of(m.get("content"))
        if len(text) > v.MAX_TEXT:
            raise Invalid(too_long(f"messages[{i}].content", len(text), v.MAX_TEXT))
        rec = {"role": role, "content": text}
        if (
            isinstance(m.get("content"), list)
            and (alone := _texts([p for p in m["content"] if isinstance(p, dict)])) != text
        ):
            rec[TEXT_ALONE] = alone
        if isinstance(m.get("content"), list):  # (a string: the user's own text, matched as it is)
            rec[TEXT_LINES] = "\n".join(_text_parts(m["content"]))
        notes = part_notes(m.get("content"))
        if notes or not _KNOWN_NOTES.isdisjoint(text.split("\n")):
            # named, none too where a line of the user's own is one such as `[image]`: a message that names none
            # is taken as 0.37.0 recorded it, where such a line is a note (_notes_left_out)
            rec[PART_NOTES_KEY] = notes
        if m.get("name") is not None:  # stored as the API's append stores it; refused as it refuses it
            rec["name"] = v.message_name(m["name"], f"messages[{i}].name")
        if isinstance(m.get("tool_call_id"), str) and 0 < len(m["tool_call_id"]) <= 200:
            rec["tool_call_id"] = m["tool_call_id"]
        if m.get("tool_call_id") is not None and "tool_call_id" not in rec:  # (left out: the provider's to take)
            raise Invalid(
                f"messages[{i}].tool_call_id must be a string of 1 to 200 characters: the id of the call it answers",
                param=f"messages[{i}].tool_call_id",
            )
        if m.get("tool_calls") is not None:  # (OpenAI's SDKs send an empty list as absent; so is it here)
            if role != "assistant":
                raise Invalid(f"messages[{i}].tool_calls: only an assistant's message carries tool calls")
            for j, c in enumerate(m["tool_calls"] if isinstance(m["tool_calls"], list) else ()):
                if isinstance(c, dict) and c.get("id") is None:
                    where = f"messages[{i}].tool_calls[{j}].id"
                    raise Invalid(
                        f"{where} is missing: a call's id is what its tool's message names (OpenAI's API refuses"
                        " a call without one)",
                        param=where,
                    )
            if m["tool_calls"] != []:
                calls = toolcalls.from_request(m["tool_calls"], f"messages[{i}].tool_calls")
                rec["tool_calls"] = calls
                if own := toolcalls.of_request(m["tool_calls"], calls):
                    rec["call_fields"] = own  # (kept, not matched by: _matched; the request's provider's)
        out.append(rec)
    return out
