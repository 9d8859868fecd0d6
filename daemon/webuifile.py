"""Open WebUI's chat export in (`import-file --format openwebui`): each chat the branch the user sees, its
answers' tool calls (kept by Open WebUI in the answer's text as <details type="tool_calls"> blocks) as
calls and the tools' messages answering them. Each message keeps its `timestamp` as its own time (an
answer's calls and results share it; one with none takes the one before it's: importers.carry_times).
docs/FORMATS.md section 10."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from ..api.messages import new_call_id
from ..storage.errors import Invalid
from .importers import _kind, _list, _message, _session, _str, carry_times, timed, timestamp

OPENWEBUI_FILE = "Open WebUI export"


def _webui_branch(chat: dict, where: str) -> list[tuple[str, Any]]:
    """The messages the user sees: history.currentId back through parentId to the first (what
    Open WebUI shows, regenerated siblings left out); the flat `messages` list when there is no
    history. Returns (place, message) pairs."""
    history = chat.get("history")
    if history is not None and not isinstance(history, dict):
        raise Invalid(f"{where}: chat.history: expected an object, got {_kind(history)}")
    current = (history or {}).get("currentId")
    if current is not None:
        nodes = history.get("messages")  # type: ignore[union-attr]
        if not isinstance(nodes, dict):
            raise Invalid(f"{where}: chat.history.messages: expected an object of messages by id, got {_kind(nodes)}")
        path: list[tuple[str, Any]] = []
        seen: set = set()
        node_id, named_by = current, "chat.history.currentId"
        while node_id is not None:
            if not isinstance(node_id, str) or node_id not in nodes:
                raise Invalid(f"{where}: {named_by} names message {node_id!r:.60}, which chat.history.messages lacks")
            if node_id in seen:
                raise Invalid(f"{where}: chat.history.messages: parentId links loop at {node_id!r:.60}")
            seen.add(node_id)
            place = f"chat.history.messages[{node_id!r:.60}]"
            node = nodes[node_id]
            if not isinstance(node, dict):
                raise Invalid(f"{where}: {place}: expected an object, got {_kind(node)}")
            path.append((place, node))
            node_id, named_by = node.get("parentId"), f"{place}.parentId"
        return list(reversed(path))
    flat = chat.get("messages")
    if flat is None:
        return []
    if not isinstance(flat, list):
        raise Invalid(f"{where}: chat.messages: expected a list, got {_kind(flat)}")
    return [(f"chat.messages[{i}]", m) for i, m in enumerate(flat)]


# A tool call Open WebUI ran, as it keeps it in the answer's text (its attributes HTML-escaped)
_WEBUI_CALL = re.compile(r'<details type="tool_calls"([^>]*)>.*?</details>', re.DOTALL)
_ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


def _webui_value(raw: str) -> str:
    """An attribute's value: unescaped, then read as JSON (a JSON string, as upstream encodes the
    arguments' text and a text result once more, is its text; other JSON is kept as JSON text); what is
    not JSON, as written."""
    text = html.unescape(raw)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # (not JSON; or nested deeper than Python's reader goes)
        return text
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _webui_tools(content: str, mid: str | None) -> list[dict]:
    """An Open WebUI answer's text with the tool calls it holds (<details type="tool_calls" ...> blocks) as
    messages: the text before them (stripped at their edge) with the calls, each `result` a tool's message
    answering its call, then the text after them; a block with no name stays in the text as it is."""
    out: list[dict] = []
    text: list[str] = []
    calls: list[dict] = []
    results: list[dict] = []
    pos = 0
    made = 0  # the answer's calls so far, of every turn: a call given no id is named by its place among them

    def flush() -> None:
        said = "".join(text).strip() if calls or results or out else "".join(text)
        if said or calls:
            out.append({"role": "assistant", "content": said, **({"tool_calls": list(calls)} if calls else {})})
        out.extend(results)
        text.clear()
        calls.clear()
        results.clear()

    for found in _WEBUI_CALL.finditer(content):
        attrs = dict(_ATTRIBUTE.findall(found.group(1)))
        name = html.unescape(attrs.get("name", ""))
        if not name or len(name) > 200:
            continue  # not one sessiond can call: left in the text
        between = content[pos : found.start()]
        if between.strip() and (calls or results):  # text after a call: the calls' turn is over
            flush()
        text.append(between)
        pos = found.end()
        given = html.unescape(attrs.get("id", ""))
        cid = given if 0 < len(given) <= 200 else f"{mid}.{made}" if mid else new_call_id()
        made += 1
        arguments = _webui_value(attrs["arguments"]) if attrs.get("arguments") else "{}"
        calls.append({"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}})
        if "result" in attrs:
            results.append(
                {"role": "tool", "content": _webui_value(attrs["result"]), "tool_call_id": cid, "name": name}
            )
    if not calls and not out:
        return [{"role": "assistant", "content": content}]
    if content[pos:].strip() and (calls or results):
        flush()
    text.append(content[pos:])
    flush()
    return out


def parse_openwebui(data: Any) -> list[dict]:
    """Open WebUI's chat export (Settings > Data Controls > Export Chats, or one chat's JSON): a list
    of {id, title, chat: {title, models, history: {messages, currentId}, messages}, created_at}."""
    items = [data] if isinstance(data, dict) else _list(data, OPENWEBUI_FILE, "chats")
    out = []
    for ci, item in enumerate(items):
        where = f"{OPENWEBUI_FILE}: chat {ci}"
        if not isinstance(item, dict):
            raise Invalid(f"{where}: expected an object, got {_kind(item)}")
        cid = _str(item, "id", where)
        if cid:
            where = f"{where} (id {cid:.60})"
        chat = item.get("chat")
        if not isinstance(chat, dict):
            raise Invalid(f"{where}: chat: expected an object (is this an Open WebUI export?), got {_kind(chat)}")
        title = _str(item, "title", where) or _str(chat, "title", f"{where}: chat")
        models = chat.get("models")
        if models is not None and not (isinstance(models, list) and all(isinstance(x, str) for x in models)):
            raise Invalid(f"{where}: chat.models: expected a list of model names")
        system = _str(chat, "system", f"{where}: chat")
        created = timestamp(item.get("created_at"), f"{where}: created_at")
        parsed = []
        for place, m in _webui_branch(chat, where):
            at = f"{where}: {place}"
            if not isinstance(m, dict):
                raise Invalid(f"{at}: expected an object, got {_kind(m)}")
            role = m.get("role")
            if role not in ("user", "assistant", "system"):
                raise Invalid(f"{at}.role: expected 'user', 'assistant' or 'system', got {role!r:.40}")
            content = m.get("content")
            if not isinstance(content, str):
                raise Invalid(f"{at}.content: expected a string, got {_kind(content)}")
            when = timestamp(m.get("timestamp"), f"{at}.timestamp")
            model = _str(m, "model", at)
            mid = _str(m, "id", at)
            turn = _webui_tools(content, mid) if role == "assistant" else [{"role": role, "content": content}]
            for t in turn:
                calls = {k: t[k] for k in ("tool_calls", "tool_call_id", "name") if k in t}
                checked = _message(
                    t["role"], t["content"], at, calls, source="openwebui", id=mid, created_at=when, model=model
                )
                parsed.append(timed(checked, when))
        spec = _session(
            where,
            title,
            model=(models or [None])[0],
            system=system or None,
            source="openwebui",
            chat=cid,
            created_at=created,
        )
        out.append({"spec": spec, "messages": carry_times(parsed), "forks": []})
    return out
