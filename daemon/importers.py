"""Other apps' histories in: Claude's data export, simonw/llm's logs.db (and Open WebUI's chat export:
daemon/webuifile.py, which uses the helpers here).

Each parser turns the whole file into a plan (one session per conversation, its messages in order)
before anything is written, and refuses a malformed file with the place that is wrong, e.g.
"conversations.json: conversation 3 (uuid 1f…): chat_messages[5].sender: expected 'human' or
'assistant'". Every session and message goes through the API's own checks (daemon/validate.py).

A message's original time is kept in the message's metadata as `created_at` (Unix seconds), beside
`source` and the source's own id; it is also the message's own `created_at` (its log operation's time,
as ChatGPT's import and a fork's copies keep theirs: timed, carry_times). docs/FORMATS.md section 10
describes the shapes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..api.messages import new_call_id
from ..storage.clock import wall
from ..storage.errors import Invalid
from . import validate as v

CLAUDE_FILE = "conversations.json"
LLM_FILE = "logs.db"


def _kind(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(x), type(x).__name__)


def _str(obj: dict, key: str, where: str, required: bool = False) -> str | None:
    x = obj.get(key)
    if x is None and not required:
        return None
    if not isinstance(x, str) or (required and not x):
        raise Invalid(f"{where}.{key}: expected {'a non-empty' if required else 'a'} string, got {_kind(x)}")
    return x


def timestamp(x: Any, where: str) -> float | None:
    """A time as the apps write it: ISO 8601 (naive means UTC, as llm writes it) or Unix seconds
    (milliseconds when too large to be seconds, as JavaScript writes them)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise Invalid(f"{where}: expected a time (ISO 8601 text or Unix seconds), got {_kind(x)}")
    if isinstance(x, str):
        try:
            t = datetime.fromisoformat(x.strip())
        except ValueError:
            raise Invalid(f"{where}: {x!r:.60} is not an ISO 8601 time") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return round(t.timestamp(), 3)
    if not (0 <= x < 1e14):  # NaN fails this too
        raise Invalid(f"{where}: {x!r:.40} is not a time")
    if x > 1e11:  # after the year 5138 in seconds: JavaScript's milliseconds
        x = x / 1000
    return round(float(x), 3)


def own_time(t: float | None) -> float | None:
    """A message's time as its log keeps it (its operation's `t`, to the millisecond), or None when it has
    none usable: none, not above 0 to the millisecond, or not come yet on this device's clock."""
    if t is None:
        return None
    kept = round(t, 3)
    return kept if kept > 0 and t <= wall() else None


def carry_times(messages: list[dict]) -> list[dict]:
    """A conversation's messages in order, each one without a `created_at` of its own given the one before
    it's, so that its chat's times do not go backwards (stats' answer times rely on them); those before the
    first that has one take that one's (not the import's, today, which the conversation's times would go back
    from); a conversation with none keeps none, and takes the import's time (reimports.prepared)."""
    first = next((m["created_at"] for m in messages if m.get("created_at") is not None), None)
    out, last = [], first
    for m in messages:
        if m.get("created_at") is None and last is not None:
            m = {**m, "created_at": last}
        last = m.get("created_at", last)
        out.append(m)
    return out


def timed(message: dict, when: float | None) -> dict:
    """A checked message with the source's time as its own `created_at`, when that is usable (own_time)."""
    t = own_time(when)
    return {**message, "created_at": t} if t is not None else message


def _meta(**fields: Any) -> dict:
    return {k: x for k, x in fields.items() if x is not None}


def _message(role: str, content: str, where: str, calls: dict | None = None, **meta: Any) -> dict:
    """A message checked as an append is; `calls`: its tool_calls, tool_call_id and name, as given."""
    return v.message({"role": role, "content": content, **(calls or {}), "metadata": _meta(**meta)}, where)


def _session(where: str, name: str | None, model: str | None = None, system: str | None = None, **meta) -> dict:
    spec = v.within(
        where,
        lambda: v.session_spec(
            {"name": name or None, "model": model, "system_prompt": system, "metadata": _meta(**meta)}
        ),
    )
    return {k: spec[k] for k in ("name", "model", "system_prompt", "metadata") if spec.get(k) is not None}


def _list(data: Any, file: str, what: str) -> list:
    if not isinstance(data, list):
        raise Invalid(f"{file}: expected a list of {what}, got {_kind(data)}")
    return data


# ------------------------------------------------------------------------------------------ Claude
def _claude_turn(m: dict, role: str, where: str) -> list[dict] | None:
    """A turn's blocks of `content` in order, as messages: the text blocks (joined by a blank line) with the
    tool calls made (tool_use: an assistant's), up to each tool_result, which is the tool's message
    answering its call (_answered); then the text after it. Thinking is Claude's working, left out.
    None when the turn has no text or tool blocks (older exports: its `text` is the message). Each
    message is {role, content, and tool_calls, tool_call_id, name, is_error when it has them}."""
    content = m.get("content")
    if content is not None and not isinstance(content, list):
        raise Invalid(f"{where}.content: expected a list of content blocks, got {_kind(content)}")
    out: list[dict] = []
    parts: list[str] = []
    calls: list[dict] = []
    pending: list[dict] = []  # the calls not answered yet
    uuid = m.get("uuid") if isinstance(m.get("uuid"), str) and m.get("uuid") else None
    seen = False

    def flush() -> None:
        if parts or calls:
            out.append(
                {
                    "role": role,
                    "content": "\n\n".join(p for p in parts if p),
                    **({"tool_calls": list(calls)} if calls else {}),
                }
            )
        parts.clear()
        calls.clear()

    for bi, block in enumerate(content or ()):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise Invalid(f"{where}.content[{bi}]: expected a content block (an object with a type)")
        kind = block["type"]
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise Invalid(f"{where}.content[{bi}].text: expected a string, got {_kind(text)}")
            parts.append(text)
            seen = True
        elif kind == "tool_use" and role == "assistant":
            name = block.get("name")
            if not isinstance(name, str) or not name:
                continue  # nothing to call: left out, as every tool block was before
            given = block.get("id")
            cid = given if isinstance(given, str) and given else f"{uuid}.{bi}" if uuid else new_call_id()
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
            call = {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}
            calls.append(call)
            pending.append(call)
            seen = True
        elif kind == "tool_result":
            flush()
            result: dict[str, Any] = {"role": "tool", "content": _result_text(block.get("content"))}
            answered = _answered(pending, block)
            if answered is not None:
                pending.remove(answered)
                result["tool_call_id"] = answered["id"]
            name = block.get("name")
            name = name if isinstance(name, str) and name else answered["function"]["name"] if answered else None
            if name:
                result["name"] = name
            if block.get("is_error") is True:
                result["is_error"] = True
            out.append(result)
            seen = True
    flush()
    return out if seen else None


def _answered(pending: list[dict], block: dict) -> dict | None:
    """The call a tool_result answers: the one its tool_use_id names, else the earliest of its name not
    answered yet, else the earliest not answered (a result follows its call in a turn)."""
    named = block.get("tool_use_id")
    by_name = [c for c in pending if c["function"]["name"] == block.get("name")]
    by_id = [c for c in pending if c["id"] == named] if isinstance(named, str) else []
    found = by_id or by_name or pending
    return found[0] if found else None


def _result_text(content: Any) -> str:
    """A tool_result's content: its text (a string, or the text of its blocks, joined by a blank line);
    images and the like are not text: left out."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        return "\n\n".join(t for t in texts if t)
    return ""


def _attachments(m: dict, where: str) -> list[str] | None:
    names = []
    for key in ("attachments", "files"):
        items = m.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise Invalid(f"{where}.{key}: expected a list, got {_kind(items)}")
        for i, a in enumerate(items):
            if not isinstance(a, dict):
                raise Invalid(f"{where}.{key}[{i}]: expected an object, got {_kind(a)}")
            name = _str(a, "file_name", f"{where}.{key}[{i}]")
            if name:
                names.append(name)
    return names or None


def parse_claude(data: Any) -> list[dict]:
    """Claude's data export: conversations.json, a list of conversations with their chat_messages
    in order. One session per conversation."""
    out = []
    for ci, conv in enumerate(_list(data, CLAUDE_FILE, "conversations (Claude's data export)")):
        where = f"{CLAUDE_FILE}: conversation {ci}"
        if not isinstance(conv, dict):
            raise Invalid(f"{where}: expected an object, got {_kind(conv)}")
        uuid = _str(conv, "uuid", where, required=True)
        where = f"{where} (uuid {uuid:.60})"
        name = _str(conv, "name", where)
        created = timestamp(conv.get("created_at"), f"{where}: created_at")
        msgs = conv.get("chat_messages")
        if not isinstance(msgs, list):
            raise Invalid(f"{where}: chat_messages: expected a list, got {_kind(msgs)}")
        parsed = []
        for mi, m in enumerate(msgs):
            at = f"chat_messages[{mi}]"
            if not isinstance(m, dict):
                raise Invalid(f"{where}: {at}: expected an object, got {_kind(m)}")
            sender = m.get("sender")
            if sender not in ("human", "assistant"):
                raise Invalid(f"{where}: {at}.sender: expected 'human' or 'assistant', got {sender!r:.40}")
            mid = _str(m, "uuid", f"{where}: {at}")
            role = "user" if sender == "human" else "assistant"
            turn = _claude_turn(m, role, f"{where}: {at}")
            if turn is None:
                turn = [{"role": role, "content": _str(m, "text", f"{where}: {at}") or ""}]
            when = timestamp(m.get("created_at"), f"{where}: {at}.created_at")
            files = _attachments(m, f"{where}: {at}")
            # an empty turn (an interrupted answer) has nothing to keep; a tool's result is kept even empty
            turn = [t for t in turn if t["content"].strip() or t.get("tool_calls") or t["role"] == "tool"]
            if files and not turn:
                turn = [{"role": role, "content": ""}]
            for ti, t in enumerate(turn):
                calls = {k: t[k] for k in ("tool_calls", "tool_call_id", "name") if k in t}
                checked = _message(
                    t["role"],
                    t["content"],
                    f"{where}: {at}",
                    calls,
                    source="claude",
                    id=mid,
                    created_at=when,
                    attachments=files if ti == 0 else None,
                    is_error=t.get("is_error"),
                )
                parsed.append(timed(checked, when))
        spec = _session(where, name, source="claude", conversation=uuid, created_at=created)
        out.append({"spec": spec, "messages": carry_times(parsed), "forks": []})
    return out


# ------------------------------------------------------------------------------------- llm's logs.db
def parse_llm(data: Any) -> list[dict]:
    """simonw/llm's logs.db, as its two tables' rows ({"conversations": [...], "responses": [...]},
    which `sessiond import-file` reads from the SQLite file). One session per conversation; each
    response is the user's prompt and the model's answer, in the order given (the CLI sends them by
    datetime_utc). A system prompt that changes within a conversation becomes a system message."""
    if not isinstance(data, dict) or not isinstance(data.get("responses"), list):
        raise Invalid(f'{LLM_FILE}: expected {{"conversations": [...], "responses": [...]}}, the rows of its tables')
    convs = _list(data.get("conversations") or [], f"{LLM_FILE}: conversations", "rows")
    sessions: dict[Any, dict] = {}
    for i, row in enumerate(convs):
        where = f"{LLM_FILE}: conversations row {i}"
        if not isinstance(row, dict):
            raise Invalid(f"{where}: expected an object, got {_kind(row)}")
        cid = _str(row, "id", where, required=True)
        where = f"{LLM_FILE}: conversation {cid:.60}"
        if cid in sessions:
            raise Invalid(f"{where}: the id appears twice in the conversations table")
        sessions[cid] = {"where": where, "name": _str(row, "name", where), "model": _str(row, "model", where)}
        sessions[cid]["turns"] = []
    lone = 0
    for i, row in enumerate(data["responses"]):
        where = f"{LLM_FILE}: responses row {i}"
        if not isinstance(row, dict):
            raise Invalid(f"{where}: expected an object, got {_kind(row)}")
        rid = _str(row, "id", where, required=True)
        where = f"{where} (id {rid:.60})"
        cid = _str(row, "conversation_id", where)
        key = cid if cid is not None else ("response", lone := lone + 1)
        if key not in sessions:  # a response of no conversation row: a conversation of its own
            sessions[key] = {"where": where, "name": None, "model": None, "turns": []}
        fields: dict[str, Any] = {k: _str(row, k, where) for k in ("prompt", "system", "response", "model")}
        fields["id"] = rid
        fields["time"] = timestamp(row.get("datetime_utc"), f"{where}.datetime_utc")
        fields["where"] = where
        sessions[key]["turns"].append(fields)
    calls, results = _llm_tools(data, "tool_calls", "arguments"), _llm_tools(data, "tool_results", "output")
    out = []
    for key, s in sessions.items():
        turns = s["turns"]
        system = turns[0]["system"] if turns else None
        msgs = []
        pending: list[dict] = []  # the calls no result answered yet
        for t in turns:
            turn: list[dict] = []  # the response's messages, each at its time (a system prompt changed with it too)
            if t["system"] and t["system"] != system:
                turn.append(_message("system", t["system"], t["where"] + ".system", source="llm", response=t["id"]))
                system = t["system"]
            if t["prompt"]:
                turn.append(
                    _message(
                        "user",
                        t["prompt"],
                        t["where"] + ".prompt",
                        source="llm",
                        response=t["id"],
                        created_at=t["time"],
                    )
                )
            for r in results.get(t["id"], ()):  # the results this prompt sent back, in llm's order
                answered = _answered(pending, {"tool_use_id": r["tool_call_id"], "name": r["name"]})
                if answered is not None:
                    pending.remove(answered)
                tool = {"tool_call_id": answered["id"]} if answered else {}
                turn.append(
                    _message(
                        "tool",
                        r["output"] or "",
                        r["where"],
                        {**tool, **({"name": r["name"]} if r["name"] else {})},
                        source="llm",
                        response=t["id"],
                        created_at=t["time"],
                        exception=r["exception"],
                    )
                )
            made = [
                {
                    "id": c["tool_call_id"] or f"{t['id']}.{i}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"] or "{}"},
                }
                for i, c in enumerate(calls.get(t["id"], ()))
            ]
            pending += made
            if t["response"] or made:
                turn.append(
                    _message(
                        "assistant",
                        t["response"] or "",
                        t["where"] + ".response",
                        {"tool_calls": made} if made else None,
                        source="llm",
                        response=t["id"],
                        created_at=t["time"],
                        model=t["model"],
                    )
                )
            msgs += [timed(m, t["time"]) for m in turn]
        model = s["model"] or next((t["model"] for t in turns if t["model"]), None)
        conversation = key if isinstance(key, str) else None
        spec = _session(
            s["where"],
            s["name"],
            model=model,
            system=(turns[0]["system"] if turns else None) or None,
            source="llm",
            conversation=conversation,
            created_at=turns[0]["time"] if turns else None,
        )
        out.append({"spec": spec, "messages": carry_times(msgs), "forks": []})
    return out


def _llm_tools(data: dict, table: str, text: str) -> dict[str, list[dict]]:
    """llm's tool_calls (`text`: arguments, JSON) or tool_results (output, exception) rows, by the response
    they belong to, in the order given (llm's rowid). A call with no name is left out: nothing to call."""
    rows = data.get(table)
    if rows is None:
        return {}
    out: dict[str, list[dict]] = {}
    for i, row in enumerate(_list(rows, f"{LLM_FILE}: {table}", "rows")):
        where = f"{LLM_FILE}: {table} row {i}"
        if not isinstance(row, dict):
            raise Invalid(f"{where}: expected an object, got {_kind(row)}")
        item = {k: _str(row, k, where) for k in ("response_id", "name", text, "tool_call_id", "exception")}
        if item["response_id"] is None or (table == "tool_calls" and not item["name"]):
            continue
        item["where"] = where
        out.setdefault(item["response_id"], []).append(item)
    return out


# ------------------------------------------------------------------------------------------ detect
def _all_have(items: list, key: str) -> bool:
    return bool(items) and all(isinstance(x, dict) and key in x for x in items)


def detect(data: Any, json_format: str) -> str:
    """The format of a parsed file, when its shape says so for certain; otherwise ask for --format."""
    if isinstance(data, dict):
        if data.get("format") == json_format:
            return "json"
        if "responses" in data and "conversations" in data:
            return "llm"
        if isinstance(data.get("chat"), dict):
            return "openwebui"
        if "mapping" in data:
            return "chatgpt"
        if isinstance(data.get("messages"), list) and "chat" not in data:
            return "openai"
    elif isinstance(data, list):
        for key, fmt in (
            ("chat_messages", "claude"),
            ("mapping", "chatgpt"),
            ("chat", "openwebui"),
            ("role", "openai"),
        ):
            if _all_have(data, key):
                return fmt
    raise Invalid(
        "cannot tell this file's format for certain; name it (the request's \"format\", or `--format` of `sessiond"
        " import-file`): openai, json, chatgpt, claude, openwebui or llm"
    )
