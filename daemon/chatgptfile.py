"""ChatGPT's conversations.json in (`import-file --format chatgpt`): each conversation's branch ending at
current_node is its history; every other branch becomes a fork of it, from the message where they part.

A model's use of a tool is an assistant message addressed to the tool (`recipient`: python, browser,
dalle.text2im, ... rather than "all"), its code or query as the content; the tool's output is a message
of author role "tool", named by `author.name`, after it. They come in as a call (its id the node's) and
the tool's message answering it (paired along each branch: pair_calls). docs/FORMATS.md section 10.

Each message keeps its own time (`create_time`) as its created_at, as a fork's copies and a session file's
messages keep theirs: a message's time is its log operation's `t`, which no checkpoint hashes (FORMATS.md
sections 4 and 8). One without a usable time takes the time of the message before it on its branch (the
first ones, the first usable one's after them; the import's on a branch with none: importers.carry_times).
"""

from __future__ import annotations

import math
from typing import Any

from ..storage.errors import Invalid
from ..storage.model import ROLES
from . import validate as v
from .importers import carry_times, own_time

MAX_ID = 200  # a call id's and a name's longest (api/messages.py)


def _text(content: Any, where: str) -> str | None:
    """A message's text: its string `parts` joined, else its `text` (code, execution output, quotes), else
    its `result` (a browsing display); None for a content type that carries none of them (images, a
    browsing step's code, model context): nothing to read."""
    if not isinstance(content, dict):
        content = {}
    parts = content.get("parts")
    if parts is None:
        for key in ("text", "result"):
            if isinstance(content.get(key), str):
                return content[key]
        if isinstance(content.get("content_type"), str):
            return None
    if not isinstance(parts, list):
        raise Invalid(f"{where} has no content parts")
    return "".join(p for p in parts if isinstance(p, str))


def _name(x: Any) -> str | None:
    return x if isinstance(x, str) and 0 < len(x) <= MAX_ID else None


def _time(x: Any) -> float | None:
    """A message's `create_time` (Unix seconds), to the millisecond its log keeps; None for none usable
    (null, not a number, negative, or not come yet on this device's clock): the one before it's then."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return own_time(float(x))


def message_of(node: dict, node_id: str, where: str) -> dict | None:
    """A node's message, unchecked ({role, content, node, metadata: {source, id: the node's}, created_at when
    it has a time, and a call's tool_calls or a tool's name}), or None for what is not the conversation's
    (hidden scaffolding, images, empty turns, roles sessiond has not). The node id kept is what a re-import
    compares it by (reimports.same): two messages of the same text are told apart by it."""
    msg = node.get("message")
    if not msg:
        return None
    if not isinstance(msg, dict):
        raise Invalid(f"{where}: node {node_id!r} has a malformed message")
    author = msg.get("author") or {}
    if not isinstance(author, dict):
        raise Invalid(f"{where}: node {node_id!r:.80} has a malformed author")
    role = author.get("role")
    text = _text(msg.get("content"), f"{where}: node {node_id!r}")
    if role not in ROLES or text is None or not text.strip():
        return None
    out: dict[str, Any] = {"role": role, "content": text, "node": node_id, "metadata": {"source": "chatgpt"}}
    if (when := _time(msg.get("create_time"))) is not None:
        out["created_at"] = when
    if _name(node_id) is not None:
        out["metadata"]["id"] = node_id
    recipient = _name(msg.get("recipient"))
    if role == "assistant" and recipient and recipient != "all":  # a call of a tool: its code or query
        call_id = _name(node_id) or _name(msg.get("id"))
        if call_id is not None:
            out["content"] = ""
            out["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": recipient, "arguments": text}}
            ]
    elif role == "tool" and _name(author.get("name")):
        out["name"] = author["name"]
    return out


def pair_calls(msgs: list[dict], where: str) -> list[dict]:
    """A branch's messages checked as appends, each tool's message answering a call before it: the earliest
    call of its name not answered yet, else the earliest not answered; a tool's further output right after
    (a browsing step's several quotes) answers the same call; none before it: it answers none. A message
    without a time takes the one before it's (importers.carry_times)."""
    pending: list[dict] = []
    previous: dict | None = None  # the call the message just before (a tool's) answered
    out = []
    for m in msgs:
        if m.get("tool_calls"):
            pending += m["tool_calls"]
            previous = None
        elif m["role"] == "tool":
            named = [c for c in pending if c["function"]["name"] == m.get("name")]
            found = named or pending
            call = found[0] if found else None
            if call is not None:
                pending.remove(call)
            elif previous is not None and previous["function"]["name"] == m.get("name"):
                call = previous
            if call is not None:
                m = {**m, "tool_call_id": call["id"]}
            previous = call
        else:
            previous = None
        node = m["node"]
        own = {k: m[k] for k in ("node", "created_at") if k in m}  # (not a message's fields: the import's)
        checked = v.message({k: x for k, x in m.items() if k not in own}, f"{where}: node {node!r:.80}")
        out.append({**checked, **own})
    return carry_times(out)


def parse_chatgpt(data: Any) -> list[dict]:
    """ChatGPT's conversations.json: each conversation's branch ending at current_node is its history;
    every other branch becomes a fork of it, from the message where they part."""
    convs = data if isinstance(data, list) else [data]
    out = []
    for ci, conv in enumerate(convs):
        where = f"conversation {ci}"
        if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
            raise Invalid(f'{where} has no "mapping" (is this a ChatGPT conversations.json?)')
        mapping = conv["mapping"]
        current = conv.get("current_node")
        if not isinstance(current, str) or current not in mapping:
            raise Invalid(f"{where}: current_node {current!r:.80} is not in its mapping")
        for node_id, node in mapping.items():
            if not isinstance(node, dict):
                continue  # reported if a path reaches it
            if node.get("parent") is not None and not isinstance(node["parent"], str):
                raise Invalid(f"{where}: node {node_id!r:.80} has a parent that is not a node id")
            if node.get("children") is not None and not isinstance(node["children"], list):
                raise Invalid(f"{where}: node {node_id!r:.80} has children that are not a list")

        # Both helpers run within this iteration; the defaults bind this conversation's values all the same.
        def path_to(node_id: str, where: str = where, mapping: dict = mapping) -> list[str]:
            path, seen = [], set()
            while node_id is not None:
                if node_id in seen:
                    raise Invalid(f"{where}: the mapping has a cycle at {node_id!r}")
                if node_id not in mapping or not isinstance(mapping[node_id], dict):
                    raise Invalid(f"{where}: node {node_id!r} is referenced but missing")
                seen.add(node_id)
                path.append(node_id)
                node_id = mapping[node_id].get("parent")
            return list(reversed(path))

        def messages_of(path: list[str], where: str = where, mapping: dict = mapping) -> list[dict]:
            return pair_calls([m for m in (message_of(mapping[n], n, where) for n in path) if m], where)

        main_path = path_to(current)
        main_msgs = messages_of(main_path)
        leaves = [n for n, nd in mapping.items() if isinstance(nd, dict) and not nd.get("children") and n != current]
        forks = []
        on_main = set(main_path)
        for leaf in sorted(leaves):
            path = path_to(leaf)
            shared = [n for n in path if n in on_main]
            branch_msgs = messages_of(path)
            if not any(m["node"] not in on_main for m in branch_msgs):
                continue
            last_shared = next((m["node"] for m in reversed(main_msgs) if m["node"] in shared), None)
            forks.append({"messages": branch_msgs, "from_node": last_shared})
        if conv.get("title") is not None and not isinstance(conv["title"], str):
            raise Invalid(f"{where}: title must be a string")
        meta = {"source": "chatgpt", "conversation": conv.get("id") or conv.get("conversation_id")}
        if (created := _time(conv.get("create_time"))) is not None:
            meta["created_at"] = created  # the conversation's own time, as the other apps' imports keep it
        body = {"name": conv.get("title"), "metadata": meta}
        spec = v.within(where, lambda body=body: v.session_spec(body))
        out.append(
            {"spec": {"name": spec["name"], "metadata": spec["metadata"]}, "messages": main_msgs, "forks": forks}
        )
    return out
