"""A session as Markdown for people: a title, the settings, one heading per chat, each message under
a heading with its role and time.

Message content is kept verbatim. It is written as Markdown (an answer's lists and code render) unless
a line of it could change the document's structure outside a code block (a heading, a setext
underline, a thematic break, an HTML block) or it leaves a code fence open; then the whole message
goes into a fence longer than any run of backticks in it, so nothing in it can end the fence early.
Text that only appears inline (titles, names, settings) is escaped.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_BREAKS = (
    re.compile(r"^ {0,3}#{1,6}(\s|$)"),  # an ATX heading
    re.compile(r"^ {0,3}(=+|-+)\s*$"),  # a setext underline (also "---", a break)
    re.compile(r"^ {0,3}((\*\s*){3,}|(_\s*){3,})$"),  # a thematic break
    re.compile(r"^ {0,3}<"),  # an HTML block, which can swallow what follows
)
_LINES = re.compile(r"\r\n|\r|\n")
_ESCAPE = re.compile(r"([\\`*_\[\]<>#|~&])")


def inline(text: object) -> str:
    """Text for one line of Markdown (a heading, a list item): one line, every markup character escaped."""
    return _ESCAPE.sub(r"\\\1", " ".join(str(text).split()))


def when(t: float | None) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown time"


def needs_fence(text: str) -> bool:
    """Whether `text`, written as Markdown, could break the document around it."""
    open_fence: str | None = None
    for line in _LINES.split(text):  # a lone "\r" ends a line too (CommonMark), so it can start a heading
        m = _FENCE.match(line)
        if open_fence is not None:
            if m and m.group(1)[0] == open_fence[0] and len(m.group(1)) >= len(open_fence) and not m.group(2).strip():
                open_fence = None
            continue
        if m:
            if m.group(1)[0] == "`" and "`" in m.group(2):
                return True  # not a fence by the rules, but a reader would take it for one
            open_fence = m.group(1)
        elif any(p.match(line) for p in _BREAKS):
            return True
    return open_fence is not None


def block(text: str) -> str:
    """Content as a Markdown block: as it is, or fenced when it needs to be."""
    if text and not needs_fence(text):
        return text
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _settings(s: dict) -> list[str]:
    lines = [f"- Session: `{s['id']}`" if "`" not in s["id"] else f"- Session: {inline(s['id'])}"]
    if s.get("user"):
        lines.append(f"- User: {inline(s['user'])}")
    if s.get("model"):
        lines.append(f"- Model: {inline(s['model'])}")
    if s.get("settings"):
        lines.append(
            "- Settings: " + ", ".join(f"{inline(k)} = {inline(json.dumps(x))}" for k, x in s["settings"].items())
        )
    if s.get("policy"):
        lines.append("- Policy: " + ", ".join(f"{inline(k)} = {inline(json.dumps(x))}" for k, x in s["policy"].items()))
    if s.get("tags"):
        lines.append("- Tags: " + ", ".join(inline(t) for t in s["tags"]))
    lines.append(f"- Created: {when(s.get('created_at'))}; status: {inline(s.get('status', 'active'))}")
    if s.get("expires_at"):
        lines.append(f"- Expires: {when(s['expires_at'])}")
    lines.append(f"- Messages: {s.get('message_count', 0)} in {s.get('chat_count', 1)} chat(s)")
    source = (s.get("metadata") or {}).get("source")
    if isinstance(source, str):
        lines.append(f"- Imported from: {inline(source)}")
    return lines


def _fenced(text: str) -> str:
    """Text fenced whatever it holds (a tool call's arguments: the model's text, not the document's)."""
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _calls(m: dict) -> str:
    """An assistant's tool calls, each its id and then `name(arguments)`, fenced."""
    return "".join(
        f"\nTool call {inline(c['id'])}:\n\n{_fenced(c['function']['name'] + '(' + c['function']['arguments'] + ')')}\n"
        for c in m.get("tool_calls") or ()
    )


def _message(m: dict) -> str:
    role = m["role"] + (f" ({m['name']})" if m.get("name") else "")
    if m.get("tool_call_id"):
        role += f" answering {m['tool_call_id']}"
    meta = m.get("metadata") or {}
    original = meta.get("created_at")
    stamp = when(original) if isinstance(original, (int, float)) and not isinstance(original, bool) else "unknown time"
    if stamp == "unknown time":  # not imported with a time (or with one no calendar has): when it was written here
        stamp = when(m.get("created_at"))
    content = f"\n{block(m['content'])}\n" if m["content"] or not m.get("tool_calls") else ""
    return f"### {inline(role)} · {stamp}\n{content}{_calls(m)}"


def render(session: dict, chats: list[dict], messages: list[dict]) -> str:
    """The document. `messages` are every chat's, each with its `chat`; `chats` in their listed order."""
    title = session.get("name") or f"Session {session['id']}"
    out = [f"# {inline(title)}", "", *_settings(session), ""]
    if session.get("system_prompt"):
        out += ["**System prompt**", "", block(session["system_prompt"]), ""]
    for i, m in enumerate(session.get("initial_messages") or ()):
        if i == 0:
            out += ["**Initial messages**", ""]
        out += [f"*{inline(m['role'])}*", "", block(m["content"]), ""]
    by_chat: dict[str, list[dict]] = {}
    for m in messages:
        by_chat.setdefault(m["chat"], []).append(m)
    for c in chats:
        label = c.get("name") or c["id"]
        out += [f"## Chat: {inline(label)}" + (" (current)" if c.get("current") else ""), ""]
        details = []
        if c.get("model") and c.get("model") != session.get("model"):
            details.append(f"model {inline(c['model'])}")
        if c.get("settings") and c.get("settings") != session.get("settings"):
            details.append(
                "settings " + ", ".join(f"{inline(k)} = {inline(json.dumps(x))}" for k, x in c["settings"].items())
            )
        if details:
            out += ["This chat's " + "; ".join(details), ""]
        if c.get("system_prompt"):
            out += ["**System prompt**", "", block(c["system_prompt"]), ""]
        msgs = by_chat.get(c["id"], [])
        if not msgs:
            out += ["*(no messages)*", ""]
        out += [_message(m) for m in msgs]
    return "\n".join(out).rstrip("\n") + "\n"
