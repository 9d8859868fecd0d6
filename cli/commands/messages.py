"""Messages: `add` (append one), `ask` (ask the session's model and record the answer: ask.py), `models` (what
a provider offers to ask) and `log` (print them)."""

from __future__ import annotations

import json
from typing import Any

from ...api.jsonkeys import DuplicateKey, loads
from ...client import ApiError
from ..connect import client
from ..errors import UsageError
from ..inputs import message_text
from ..options import ID_HELP, count
from ..output import calls_said, emit, safe, short, when
from . import Commands, ask


def register(commands: Commands) -> None:
    p = commands.add("add", cmd_add, "append a message", intermixed=True)
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--role", required=True, choices=["system", "user", "assistant", "tool"], help="who says it")
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p.add_argument("--tokens", type=int, help="token count, if the app knows it")
    calls = p.add_argument_group("tool calls (an assistant's) and a tool's result")
    calls.add_argument(
        "--tool-call",
        nargs=2,
        action="append",
        dest="tool_calls",
        metavar=("NAME", "ARGS_JSON"),
        help="the model called function NAME with these arguments (a JSON object); repeat for each call; its id"
        " is made (call_...), shown in the answer and by `log`",
    )
    calls.add_argument(
        "--tool-call-with-id",
        nargs=3,
        action="append",
        dest="tool_calls",
        metavar=("ID", "NAME", "ARGS_JSON"),
        help="the same, with the call's id as the model gave it",
    )
    calls.add_argument(
        "--call-fields",
        nargs=2,
        action="append",
        metavar=("ID", "FIELDS_JSON"),
        help="the provider's own fields of call ID (given with --tool-call-with-id), a JSON object of those beside"
        ' id, type and function, e.g. Gemini 3\'s \'{"extra_content": {"google": {"thought_signature":'
        ' "..."}}}\': sent back with the call to the model; repeat for each call',
    )
    calls.add_argument("--tool-call-id", metavar="ID", help="(--role tool) the id of the call this result answers")
    calls.add_argument(
        "--name", help="the message's name (the API's `name`): for --role tool, the function whose result this is"
    )
    p.add_argument(
        "text", nargs="?", help="the message ('-' reads it from standard input); may be left out with --tool-call"
    )
    ask.register(commands)  # (here: its place in `sessiond --help`, between `add` and `models`)
    p = commands.add("models", cmd_models, "list the models a provider offers (its GET /models)")
    p.add_argument("--provider", help="this provider (config.toml [providers.NAME]) instead of the default one")
    p.add_argument("--session", help="the models of the provider a question to this session goes to")
    p.add_argument("--chat", help="(with --session) that of this chat (id or name) instead of the current chat's")
    p = commands.add("log", cmd_log, "print a session's messages")
    p.add_argument("id", help=ID_HELP)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--chat", help="chat id or name (default: the current chat)")
    which.add_argument("--all", action="store_true", help="every chat, interleaved in order")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--limit", type=count, default=1_000_000, help="print the first N messages, oldest first")
    size.add_argument(
        "--last", type=count, metavar="N", help="print the latest N messages (oldest of them first), read from the end"
    )
    p.add_argument("--short", action="store_true", help="one line per message")


def cmd_add(args) -> int:
    calls = tool_calls(args.role, args.tool_calls or [])
    _tool_result(args)
    content = "" if args.text is None else message_text(args.text)
    if not content.strip() and not calls:  # no command takes a message out of a session's history again
        raise UsageError("the message is empty: give TEXT, or '-' and the message on standard input")
    c = client(args)
    m = c.append(
        args.id,
        args.role,
        content,
        chat=args.chat,
        tokens=args.tokens,
        tool_calls=calls or None,
        call_fields=call_fields(args.call_fields or []) or None,
        tool_call_id=args.tool_call_id,
        name=args.name,
    )
    emit(args, m, m["id"])
    ask.quota_note(args, c)  # as `ask` says it
    return 0


def tool_calls(role: str, given: list[list[str]]) -> list[dict]:
    """`add`'s --tool-call NAME ARGS_JSON and --tool-call-with-id ID NAME ARGS_JSON, in the order given, as the
    API's tool_calls (the arguments kept as the JSON text typed, checked to be a JSON object: a function's
    arguments are one); a call given no id gets one made as OpenAI's look. Refused (usage) otherwise."""
    if given and role != "assistant":
        raise UsageError(
            f"--tool-call: only an assistant's message carries tool calls (this one's role is {role});"
            " a tool's result names its call with --tool-call-id"
        )
    if not given:
        return []
    from ...api.messages import new_call_id  # (pydantic's import only for a command that needs it)

    out = []
    for g in given:
        option = "--tool-call-with-id" if len(g) == 3 else "--tool-call"
        call_id, name, arguments = g if len(g) == 3 else (new_call_id(), *g)
        if not call_id:
            raise UsageError(f"{option}: the call's ID is empty")
        if not name:
            raise UsageError(f"{option}: the function's NAME is empty")
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{option} {name}: ARGS_JSON is not valid JSON ({exc}): {arguments!r}") from None
        if not isinstance(parsed, dict):
            raise UsageError(f"{option} {name}: ARGS_JSON must be a JSON object (e.g. '{{\"q\": \"x\"}}' or '{{}}')")
        out.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return out


def call_fields(given: list[list[str]]) -> dict:
    """`add`'s --call-fields ID FIELDS_JSON, as the API's call_fields (by call id; the daemon checks them as an
    import does: ids of the message's calls, sizes). Refused (usage) when not a JSON object, or an ID twice."""
    out: dict = {}
    for call_id, fields in given:
        option = f"--call-fields {call_id}"
        if call_id in out:
            raise UsageError(f"{option} is given twice: give a call's fields once, in one JSON object")
        try:
            out[call_id] = loads(fields)
        except DuplicateKey as exc:
            raise UsageError(exc.message(option, "give")) from None
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{option}: FIELDS_JSON is not valid JSON ({exc}): {fields!r:.200}") from None
        if not isinstance(out[call_id], dict):
            raise UsageError(f"{option}: FIELDS_JSON must be a JSON object (e.g. '{{\"extra_content\": {{...}}}}')")
    return out


def _tool_result(args) -> None:
    """`add`'s --tool-call-id (a tool's result's only) and --name, each given a value."""
    if args.tool_call_id is not None and args.role != "tool":
        raise UsageError("--tool-call-id: only a tool's result names its call (give it with --role tool)")
    for option, value in (("--tool-call-id", args.tool_call_id), ("--name", args.name)):
        if value is not None and not value:
            raise UsageError(f"{option} is empty")


def cmd_models(args) -> int:
    if args.provider == "":  # (the endpoint reads an empty provider as the default one)
        raise UsageError("--provider must not be empty: leave it out for the default provider")
    if args.session == "":
        raise UsageError("--session must not be empty: give a session id, or leave it out for the default provider")
    if args.chat == "":
        raise UsageError("--chat must not be empty: give a chat's id or name, or leave it out for the current chat")
    if args.chat is not None and args.session is None:
        raise UsageError("--chat names a chat of the session --session names: give --session too")
    try:
        listed = client(args).models(provider=args.provider, session=args.session, chat=args.chat)
    except ApiError as exc:  # the chat the header names: the option that filled it
        said = exc.message.replace("the X-Sessiond-Chat header names", "--chat names")
        said = said.replace("leave the header out for its current chat", "leave --chat out for its current chat")
        raise ApiError(exc.status, exc.code, said, exc.details) from None
    data = listed.get("data") if isinstance(listed, dict) else None
    ids = [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    emit(args, listed, "\n".join(ids) if ids else "the provider lists no models")
    return 0


def _latest(c, args) -> list[Any]:
    """The latest `--last` messages, in pages of 10,000 read back from the end (oldest first)."""
    msgs: list[Any] = []
    before = None
    while len(msgs) < args.last:
        page = c.messages(
            args.id,
            chat=args.chat,
            limit=min(args.last - len(msgs), 10_000),
            before=before,
            last=None if before else True,
            all_chats=args.all or None,
        )
        msgs[:0] = page["messages"]
        before = page["next"]
        if not before:
            break
    return msgs


def cmd_log(args) -> int:
    c = client(args)
    msgs: list[Any] = []  # Message answers
    after = None
    while args.last is None and len(msgs) < args.limit:
        page = c.messages(
            args.id, chat=args.chat, limit=min(args.limit - len(msgs), 10_000), after=after, all_chats=args.all or None
        )
        msgs += page["messages"]
        after = page["next"]
        if not after:
            break
    if args.last is not None:
        msgs = _latest(c, args)
    if args.json:
        emit(args, {"messages": msgs})
        return 0
    if not msgs:
        print("no messages")
    chats: dict[str, Any] = {x["id"]: x for x in c.list_chats(args.id)["chats"]} if msgs else {}
    aside = _compacted(c, args.id, msgs, chats)
    for m in msgs:
        named = (chats.get(m["chat"]) or {}).get("name") or m["chat"]  # (--all: each by its name, as `chat ls`)
        head = safe(f"[{when(m['created_at'])}] {m['role']}" + (f" ({named})" if args.all else ""))
        answers = f" (answers {safe(m['tool_call_id'])})" if m.get("tool_call_id") else ""
        mark = (" [compacted]" if m["id"] in aside else "") + (" [interrupted]" if m.get("interrupted") else "")
        calls = calls_said(m)
        who = f"{safe(m['role']):>9}" + (f" ({safe(named)})" if args.all else "")  # (--short's line)
        print(
            f"{head} {m['id']}{mark}{answers}:\n"
            + (f"{safe(m['content'], keep_lines=True)}\n" if m["content"] or not calls else "")
            + "".join(f"-> {safe(c)}\n" for c in calls)
            if not args.short
            else f"{who}:{mark} {short(m['content'] or '; '.join(calls), 100)}"
        )
    return 0


def _compacted(c, sid: str, msgs: list, chats: dict) -> set[str]:
    """The ids of the messages listed that their chat's compaction set aside (no longer sent to the model): a
    chat's messages up to its cut (`compacted_upto` of `chats`, the session's by id), in the global order, but
    its system messages, which stay. A cut outside the messages listed (`--last`, `--limit`) is placed by the
    chat's first message after it."""
    cuts = {cid: x["compacted_upto"] for cid, x in chats.items() if x.get("compacted_upto")}
    listed = {m["id"]: m for m in msgs}
    key = lambda m: (m["lamport"], m["device"], m["seq"])  # noqa: E731  (the global order)
    out: set[str] = set()
    for chat, cut in cuts.items():
        mine = [m for m in msgs if m["chat"] == chat and m["role"] != "system"]
        if not mine:
            continue
        if cut in listed:
            out.update(m["id"] for m in mine if key(m) <= key(listed[cut]))
            continue
        following = c.messages(sid, chat=chat, after=cut, limit=1)["messages"]
        out.update(m["id"] for m in mine if not following or key(m) < key(following[0]))
    return out
