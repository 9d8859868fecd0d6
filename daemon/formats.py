"""Plain formats in and out: OpenAI chat messages, a session as JSON or Markdown (daemon/markdown.py),
ChatGPT's conversations.json (daemon/chatgptfile.py), and the other apps' files of daemon/importers.py.

Parsing is complete before anything is written, so a malformed file imports nothing; a file that
becomes several sessions (ChatGPT branches) is removed again if any part fails. What a file holds is
checked by the API's own functions (daemon/validate.py): an import accepts exactly what
POST /v1/sessions and POST .../messages would.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from typing import Any

from ..storage.errors import Conflict, Invalid, LimitReached
from ..storage.model import ANSWER_KEYS, COPIED_FIELDS, ROLES
from ..storage.tokens import counted_text
from . import filelimits, importers, markdown, reimports, sessionfile, toolcalls, webuifile
from . import validate as v
from .chatgptfile import parse_chatgpt
from .testhooks import pause_for_tests

JSON_FORMAT = "sessiond.session.v1"


def _text(content: Any, where: str) -> str:
    """OpenAI content: a string, or a list of parts of which only text is supported."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif (
                isinstance(part, dict)
                and part.get("type") in ("text", "input_text", "output_text")
                and isinstance(part.get("text"), str)
            ):
                out.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Invalid(f"{where}: content part {i} is {kind!r}; only text parts can be imported")
        return "".join(out)
    raise Invalid(f"{where}: content must be a string or a list of text parts")


# ------------------------------------------------------------------------------------------ export
# An export reads its messages in pages of this many: progress between them, and other requests served
# in between (a 100,000-message session is not one long read holding the event loop).
EXPORT_PAGE = 10_000


async def _messages(db, sid: str, total: int, progress, *, chat: str | None = None) -> list[dict]:
    """Every message of one chat, or of the session (all chats, merged in the session's order), read page
    by page along each chat's index."""
    if chat is None:
        chats = [c["id"] for c in await db.list_chats(sid)]
        done = [0]
        per_chat = [await _chat_messages(db, sid, c, total, progress, done) for c in chats]
        return list(heapq.merge(*per_chat, key=lambda m: (m["lamport"], m["device"], m["seq"])))
    return await _chat_messages(db, sid, chat, total, progress, [0])


async def _chat_messages(db, sid: str, chat: str, total: int, progress, done: list[int]) -> list[dict]:
    out: list[dict] = []
    after = None
    while True:
        page = await db.list_messages(sid, chat=chat, limit=EXPORT_PAGE, after=after)
        out += page
        done[0] += len(page)
        if progress is not None:
            progress(done[0], max(total, done[0]))
        if len(page) < EXPORT_PAGE:
            return out
        after = page[-1]["id"]
        await asyncio.sleep(0)  # let other requests in between pages


async def export(db, sid: str, fmt: str, chat: str | None = None, progress=None) -> dict:
    """The session in a format; `progress(done, total)`: messages read so far."""
    if chat is not None and fmt in ("json", "markdown"):
        raise Invalid(f"chat picks the chat of an openai export; a {fmt} export holds every chat (leave chat out)")
    s = await db.get_session(sid, counts=True)
    if fmt == "openai":
        chat = s["current_chat"] if chat is None else chat
        c = await db.get_chat(sid, chat)
        msgs = []
        system = c["system_prompt"] or s["system_prompt"]
        if system:
            msgs.append({"role": "system", "content": system})
        for m in s["initial_messages"]:  # as a question to the model sends them (daemon/complete.py)
            msgs.append(toolcalls.openai_message(m))
        n = (await db.read_one("SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?", (sid, chat)))[0]
        # a call with its provider's own fields, as the provider gave it (Gemini 3's signature, which it refuses
        # a later request's call without)
        msgs += (toolcalls.openai_message(m, every=True) for m in await _messages(db, sid, n, progress, chat=chat))
        out = {"messages": msgs}
        if c["model"] or s["model"]:
            out["model"] = c["model"] or s["model"]
        # the chat's own settings override the session's one by one, as when its model is asked
        for k, v in {**(s["settings"] or {}), **(c["settings"] or {})}.items():
            if k != "provider":  # sessiond's own (which provider answers), not an OpenAI parameter
                out[k] = v
        return out
    if fmt == "json":
        chats = await db.list_chats(sid)
        msgs = await _messages(db, sid, s["message_count"], progress)
        return {
            "format": JSON_FORMAT,
            "session": s,
            "chats": chats,
            "checkpoints": await db.checkpoints(sid),
            "messages": [
                {
                    k: m.get(k)
                    for k in (
                        "id",
                        "chat",
                        "role",
                        "content",
                        "tokens",
                        "created_at",
                        "name",
                        "tool_call_id",
                        "tool_calls",
                        "call_fields",  # a provider's own fields of the calls, by call id
                        "metadata",
                        "part_notes",  # the lines of its text noting its parts that are not text (openai_history)
                        "context_tokens",  # its tokens in its chat's context where not its quota's (contextcount)
                        *ANSWER_KEYS,  # a model's answer: what it costs the quota (usage), its times
                    )
                    if m.get(k) is not None
                }
                for m in msgs
            ],
        }
    if fmt == "markdown":
        chats = await db.list_chats(sid)
        msgs = await _messages(db, sid, s["message_count"], progress)
        return {"format": "markdown", "markdown": markdown.render(s, chats, msgs)}
    raise Invalid(f"unknown export format {fmt!r}: use openai, json or markdown")


# ------------------------------------------------------------------------------------------ import
def _message(m: Any, where: str, call_fields: bool = False) -> dict:
    """A file's message, checked as an append's is (its tool calls uncapped, as a pull reads them:
    v.recorded_message); its calls' provider fields (beside id, type and function in each call, and,
    `call_fields`: a session file's, by call id) checked and kept as its `call_fields`."""
    if not isinstance(m, dict):
        raise Invalid(f"{where} is not an object")
    role = m.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise Invalid(f"{where}: role {role!r:.40} is not one of {', '.join(ROLES)}")
    out = {"role": role, "content": _text(m.get("content"), where)}
    for k in ("name", "tool_call_id", "tokens", "metadata"):
        if m.get(k) is not None:
            out[k] = m[k]
    if m.get("tool_calls"):  # (an empty list, as some apps write for none: none)
        out["tool_calls"] = toolcalls.kept(m["tool_calls"])
    out = v.recorded_message(out, where)
    own = toolcalls.of_file(
        m.get("tool_calls"), out.get("tool_calls"), where, m.get("call_fields") if call_fields else None
    )
    return {**out, "call_fields": own} if own else out


def _spec(body: dict, where: str) -> dict:
    """A session's fields from a file, checked as POST /v1/sessions checks them."""
    return v.within(where, lambda: v.session_spec(body))


# The sampling settings an OpenAI request body (and `export --format openai`) carries beside its model.
OPENAI_SETTINGS = ("temperature", "top_p", "max_tokens", "top_k")


def parse_openai(data: Any) -> dict:
    if isinstance(data, dict) and data.get("format") == JSON_FORMAT:  # its "messages" would import, all else lost
        raise Invalid(
            "this is a sessiond session file, not OpenAI chat messages: import it in the json format"
            " (`sessiond import-file FILE --format json`, or without --format), which keeps its chats, settings"
            " and status; read as openai, only its messages would be imported"
        )
    if isinstance(data, dict):
        msgs = data.get("messages")
        model = data.get("model")
        settings = {k: data[k] for k in OPENAI_SETTINGS if data.get(k) is not None} or None
    else:
        msgs, model, settings = data, None, None
    if not isinstance(msgs, list) or not msgs:
        raise Invalid('an OpenAI chat file is a list of messages, or an object with a non-empty "messages" list')
    parsed = [_message(m, f"messages[{i}]") for i, m in enumerate(msgs)]
    system = []
    while parsed and parsed[0]["role"] == "system":
        system.append(parsed.pop(0)["content"])
    spec = _spec({"system_prompt": "\n\n".join(system) or None, "model": model, "settings": settings}, "the file")
    return {"spec": spec, "messages": parsed}


def _file_chat(c: Any, where: str) -> dict:
    """A chat of a session file, with its creation time when the file gives one (the chats' order)."""
    c, newer = sessionfile.newer_policy(c, where, chat=True) if isinstance(c, dict) else (c, {})
    spec = v.chat_spec(c, where)
    if newer:
        spec["policy"] = {**spec["policy"], **newer}
    created = importers.timestamp(c.get("created_at"), f"{where}.created_at")
    return {**spec, "created_at": created} if created is not None else spec


def parse_json(data: Any) -> dict:
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise Invalid(f'not a sessiond session file (its "format" must be {JSON_FORMAT!r})')
    s = data.get("session")
    if not isinstance(s, dict):
        raise Invalid('session file has no "session" object')
    chats = data.get("chats") or []
    if not isinstance(chats, list):
        raise Invalid('session file\'s "chats" must be a list of objects with an id')
    s, newer = sessionfile.newer_policy(s, "session")
    spec = _spec(
        {k: s.get(k) for k in ("id", *COPIED_FIELDS, "expires_at")},
        "session",
    )
    spec = {k: x for k, x in spec.items() if x is not None}
    if newer:
        spec["policy"] = {**spec.get("policy", {}), **newer}
    if (created := importers.timestamp(s.get("created_at"), "session.created_at")) is not None:
        spec["created_at"] = created  # (as its chats keep theirs)
    if (origin := sessionfile.provenance(s)) is not None:
        spec["provenance"] = origin  # cloned or forked from (which the spec's checks, as POST's, do not take)
    if chats:
        spec["chats"] = [_file_chat(c, f"chats[{i}]") for i, c in enumerate(chats)]
        ids = [c["id"] for c in spec["chats"]]
        if len(set(ids)) != len(ids):
            raise Invalid('session file\'s "chats" name one chat id twice')
        spec["current_chat"] = s.get("current_chat") or ids[0]
        if spec["current_chat"] not in ids:
            raise Invalid(f"session.current_chat {spec['current_chat']!r:.80} is not one of the file's chats")
    known = {c["id"] for c in spec.get("chats", ())} or {"main"}
    msgs = data.get("messages") or []
    if not isinstance(msgs, list):
        raise Invalid('session file\'s "messages" must be a list')
    parsed = []
    at: dict[str, int] = {}  # a file message's id: its place in the file (a chat's compaction cutoff names it)
    for i, m in enumerate(msgs):
        pm = _message(m, f"messages[{i}]", call_fields=True)
        pm.update(sessionfile.answer(m, f"messages[{i}]"))
        pm.update(sessionfile.part_notes(m, f"messages[{i}]"))
        pm.update(sessionfile.context_tokens(m, f"messages[{i}]"))
        if (when := importers.timestamp(m.get("created_at"), f"messages[{i}].created_at")) is not None:
            pm["created_at"] = when  # its own time, as a fork's copy keeps it (_append takes it out)
        if isinstance(m.get("id"), str):
            at.setdefault(m["id"], i)
        chat = m.get("chat", "main")  # _message keeps a message's own fields; its chat is the file's
        if not isinstance(chat, str):
            raise Invalid(f"messages[{i}].chat must be a chat id (a string)")
        if chat not in known:
            raise Invalid(f"messages[{i}] is in chat {chat!r}, which the file does not define")
        pm["chat"] = chat
        parsed.append(pm)
    status = sessionfile.status(s)
    return {
        "spec": spec,
        "messages": parsed,
        "status": status,
        "cuts": sessionfile.cuts(chats, at, [m["chat"] for m in parsed]),
        "proven": sessionfile.proven(data),
    }


PARSERS = {"claude": importers.parse_claude, "openwebui": webuifile.parse_openwebui, "llm": importers.parse_llm}


async def import_file(
    db,
    data: Any,
    fmt: str | None,
    estimate,
    progress: Callable[[int, int], None] | None = None,
    *,
    remove: Callable[[str], Awaitable[None]],
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Every conversation of the file as a session (and its branches), or nothing: a failure part-way
    deletes what was created, and a crash part-way leaves them listed as an unfinished file import, which
    the daemon's next start deletes (daemon/server.py). `remove(sid)` deletes one of them as that start
    does (daemon.ops.delete_session: its key files too, once a push under way ended). `progress(done,
    total)`: messages written so far, of all the file's. Returns the sessions made, and what became of the
    conversations sessions here were imported from already (reimports.py): skipped, appended, diverged, and
    their branches (ChatGPT's) new since, each made a fork of the session made of the conversation (branches)."""
    if fmt is None:
        fmt = importers.detect(data, JSON_FORMAT)
    if fmt == "openai":
        plan = [{**parse_openai(data), "forks": []}]
    elif fmt == "json":
        plan = [{**parse_json(data), "forks": []}]
    elif fmt == "chatgpt":
        plan = parse_chatgpt(data)
    elif fmt in PARSERS:
        plan = PARSERS[fmt](data)
    else:
        raise Invalid(f"unknown import format {fmt!r}: use openai, json, chatgpt, claude, openwebui or llm")
    plan, tails, skipped = await reimports.sort_out(db, plan)
    await pause_for_tests("import-file.sorted")
    for item in plan:
        filelimits.within_limits(db.limits, item["spec"], [item["messages"], *(f["messages"] for f in item["forks"])])
    for item in plan:  # as POST /v1/sessions does
        for m in item["spec"].get("initial_messages") or ():
            if m.get("tokens") is None:
                m["tokens"] = estimate(counted_text(m))
    total = sum(len(item["messages"]) + sum(len(f["messages"]) for f in item["forks"]) for item in plan)
    total += sum(len(t["messages"]) for t in tails)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    created: list[dict] = []
    diverged: list[dict] = []
    branches: list[dict] = []  # the branches new here of conversations that are, each made a fork
    finish: dict[str, dict] = {}  # {session: {"status", "cuts"}}: what end_file_import sets
    user = None  # the user of the session being made (a refusal by the per-user limit is about them)
    try:
        for item in plan:
            user = item["spec"].get("user")
            spec = {k: v for k, v in item["spec"].items() if v is not None}
            if "shared" in item:  # a new branch's fork: the tokens of the history it copies (stats.py)
                copied = _tokens(item["messages"][: item["shared"]], estimate)
                spec["provenance"] = {**spec["provenance"], "copied_tokens": copied}
            elif "provenance" in spec:  # a session file's fork: its copy counted as the quota counts it (0.36.0's not)
                spec["provenance"] = sessionfile.copied_as_charged(spec["provenance"], item["messages"], estimate)
            try:
                s = await db.create_session(
                    spec,
                    file_import=True,
                    active=item.get("status", "active") == "active",  # (a paused or ended one: not limited)
                )
            except Conflict as exc:
                if not (sid := item["spec"].get("id")):
                    raise
                new_one = 'remove the session\'s "id" from the file to import it as a new session'
                if exc.details.get("reason") == "importing":
                    # one being imported, hidden: no session here to delete (404 by its id), and no id to choose
                    # but the file's: wait for that import, or import the file's as a new session
                    twin = await db.held_twin(sid)
                    held = (
                        f"session {sid!r}, and session {twin[0]!r}, whose id differs from it only in case (on a"
                        f" case-insensitive disk the two would share one key file),"
                        if twin is not None
                        else f"session {sid!r}, which"
                    )
                    raise Conflict(
                        f"this file holds {held} is being imported on this device (from a share code or a file): wait"
                        f" for that import to end (one that fails frees the id), or {new_one}",
                        reason="importing",
                    ) from None
                # import-file takes no id: say what to do with the file or the session here (which may be one
                # whose id differs from the file's only in case: the two would share a key file)
                here = await db.case_twin(sid) or sid
                held = (
                    f"session {sid!r}, which is on this device already"
                    if here == sid
                    else f"session {sid!r}, and session {here!r} is on this device: the two ids differ only in case"
                    f" (on a case-insensitive disk they would share one key file)"
                )
                raise Conflict(
                    f"this file holds {held}: delete it first (`sessiond rm {here}`) to import the file's copy, or"
                    f" {new_one}",
                    reason="exists" if here == sid else "case_twin",
                ) from None
            created.append(s)
            if item.get("diverged_from"):
                diverged.append(reimports.diverged(item, s["id"]))
            if item.get("branch_of"):
                branches.append({**item["branch_of"], "new_session": s["id"]})
            stored = await _append(db, s["id"], item["messages"], estimate, step)
            # a session file's status and compaction, set as the import ends (over its messages)
            cuts = {
                chat: [stored[i][k] for k in ("lamport", "device", "seq")] for chat, i in item.get("cuts", {}).items()
            }
            proven = bool(item.get("proven") and stored)
            if cuts or proven or item.get("status", "active") != "active":
                finish[s["id"]] = {"status": item.get("status", "active"), "cuts": cuts, "checkpoint": proven}
            ids = {m["node"]: x["id"] for m, x in zip(item["messages"], stored, strict=True) if m.get("node")}
            for fork in item["forks"]:
                at = ids.get(fork["from_node"]) if fork["from_node"] else None
                user = None
                # its messages on the main branch are the main session's history, copied (stats.py)
                copied = _tokens([m for m in fork["messages"] if m.get("node") in ids], estimate)
                f = await db.create_session(
                    {
                        "name": f"{s['name'] or 'conversation'} (branch)",
                        # marked: a re-import compares the file's branches with it (reimports.py)
                        "metadata": {**(item["spec"].get("metadata") or {}), "branch": True},
                        "provenance": {"kind": "fork", "session": s["id"], "message": at, "copied_tokens": copied},
                    },
                    file_import=True,
                )
                created.append(f)
                await _append(db, f["id"], fork["messages"], estimate, step)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):  # the daemon stopping: its next start deletes them (marked
            raise  # as a file import not ended), not this stop, which a delete of a million messages held for seconds
        for s in created:
            try:
                await remove(s["id"])
            except Exception:
                pass
        if isinstance(exc, LimitReached):  # the file's own sessions filled the room: say so
            active = [s for s in created if finish.get(s["id"], {}).get("status", "active") == "active"]
            raise filelimits.past_active_limit(exc, plan, active, user) from None
        raise
    await db.end_file_import([s["id"] for s in created], finish)
    appended = await reimports.append_tails(db, tails, estimate, step, skipped)
    made = [await db.get_session(s["id"], counts=True) for s in created]
    return made, {"skipped": skipped, "appended": appended, "diverged": diverged, "branches": branches}


def _tokens(messages: list[dict], estimate) -> int:
    return sum(m["tokens"] if m.get("tokens") is not None else estimate(counted_text(m)) for m in messages)


# A long conversation goes in as appends of this many messages: progress between them, and no one
# transaction holding the writer long (a failure still undoes the whole import: its sessions go).
APPEND_BATCH = 5000


async def _append(db, sid: str, messages: list[dict], estimate, step: Callable[[int], None]) -> list[dict]:
    """Append in order to a session the import is making; returns the stored messages."""
    if not messages:
        return []
    clean, times = reimports.prepared(messages, estimate)
    stored: list[dict] = []
    for i in range(0, len(clean), APPEND_BATCH):
        batch = clean[i : i + APPEND_BATCH]
        # hidden until the import ends
        stored += await db.append_messages(sid, batch, times=times[i : i + APPEND_BATCH], importing=True)
        step(len(batch))
        await pause_for_tests("import-file.batch")
    return stored
