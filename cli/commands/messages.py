"""Messages: `add` (append one), `ask` (ask the session's model and record the answer), `models` (what a
provider offers to ask) and `log` (print them)."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ...api.jsonkeys import DuplicateKey, loads
from ...client import ApiError, ClientError
from ...client.calls import new_idempotency_key
from ..connect import client
from ..errors import EXIT_ERROR, EXIT_INTERRUPTED, UsageError, fail, stdout_to_null
from ..inputs import message_text
from ..options import count
from ..output import emit, for_home, safe, short, when
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add("add", cmd_add, "append a message", intermixed=True)
    p.add_argument("id")
    p.add_argument("--role", required=True, choices=["system", "user", "assistant", "tool"])
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
    p = commands.add(
        "ask",
        cmd_ask,
        "ask the session's model: appends TEXT, prints the answer as it streams, records it",
        intermixed=True,  # (TEXT, which --again leaves out, after the options: `ask ID --json TEXT`)
    )
    p.add_argument("id")
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p.add_argument("--model", help="this model instead of the chat's or session's")
    p.add_argument("--provider", help="this provider (config.toml [providers.NAME]) instead of the session's")
    p.add_argument(
        "--again",
        action="store_true",
        help="add no question: the model answers the chat as it stands (a question recorded when the provider failed)",
    )
    p.add_argument("text", nargs="?", help="the question; '-' reads it from standard input")
    p = commands.add("models", cmd_models, "list the models a provider offers (its GET /models)")
    p.add_argument("--provider", help="this provider (config.toml [providers.NAME]) instead of the default one")
    p.add_argument("--session", help="the models of the provider a question to this session goes to")
    p.add_argument("--chat", help="(with --session) that of this chat (id or name) instead of the current chat's")
    p = commands.add("log", cmd_log, "print a session's messages")
    p.add_argument("id")
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
    _quota_note(args, c)  # as `ask` says it
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


def cmd_ask(args) -> int:
    if args.again and args.text is not None:
        raise UsageError("--again adds no question: give TEXT, or --again, not both")
    if args.text is None and not args.again:
        raise UsageError(
            "give the question, TEXT (or '-' and the question on standard input), or --again for the model to "
            "answer the chat as it stands"
        )
    content = None if args.again else message_text(args.text)
    if content is not None and not content.strip():  # recorded and sent, it cost an answer to nothing
        raise UsageError("the question is empty: give TEXT, or '-' and the question on standard input")
    stream = None
    arrived = wrote = False  # some of the answer's text arrived; some of it was printed
    cut = False  # standard output's reader left (a closed pipe): the answer is read to its end unprinted
    c = client(args)
    if args.again and (answered := _answered(c, args)) is not None:
        return answered
    key = new_idempotency_key()  # (kept: what the request recorded is asked by it after a Ctrl-C)
    try:
        stream = c.complete_stream(
            args.id, content, chat=args.chat, model=args.model, provider=args.provider, idempotency_key=key
        )
        for text in stream:
            arrived = arrived or bool(text)
            if not args.json and not cut:
                try:
                    sys.stdout.write(safe(text, keep_lines=True))  # (a model's text: escapes, bidi overrides)
                    sys.stdout.flush()
                    wrote = True
                except BrokenPipeError:  # (`ask ... | head -c 20`: the reader had what it wanted)
                    stdout_to_null()  # the rest read, not printed: recorded whole, not cut as a Ctrl-C cuts it
                    cut = True
    except KeyboardInterrupt:
        with _stopping():  # Ctrl-C pressed again meanwhile cuts nothing short: the user is told what is kept
            if wrote:
                sys.stdout.write("\n")  # the stop message on a line of its own
                sys.stdout.flush()
            if stream is not None:
                stream.close()  # the daemon stops the generation and records what arrived, marked interrupted
            return _interrupted(args, client(args, timeout=STOP_WAIT), key, arrived)
    except ClientError as exc:  # the daemon's error, or the connection's: on a line of its own
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if isinstance(exc, ApiError) and isinstance(exc.details.get("message"), dict):
            return _failed_mid_answer(args, exc, exc.details["message"])
        if isinstance(exc, ApiError) and exc.answer is not None:
            return _unrecorded(args, exc, exc.answer)
        if isinstance(exc, ApiError) and exc.code == "model_not_found" and exc.details.get("model"):
            exc = ApiError(exc.status, exc.code, _choose_model(exc), exc.details)
        if isinstance(exc, ApiError) and content is not None:
            exc = _question_kept(args, c, key, exc)
        raise exc from None
    if args.json:
        emit(args, stream.message)
    else:
        if wrote:
            sys.stdout.write("\n")
        # its tool calls, as `log` shows them: the stream's text does not carry them (an answer that is only a
        # call would print nothing)
        sys.stdout.write("".join(f"-> {safe(c)}\n" for c in _calls(stream.message or {})))
    if not (arrived or args.json or (stream.message or {}).get("tool_calls")):  # (else nothing at all would show)
        sys.stdout.flush()
        print("sessiond: (the model answered nothing)", file=sys.stderr)
    for dropped in (stream.message or {}).get("tool_calls_dropped") or ():  # (one with no name: none can run it)
        sys.stdout.flush()
        said = f"the model's tool call {dropped.get('index')} is not recorded: {dropped.get('reason')}"
        print(f"sessiond: {safe(said)}", file=sys.stderr)
    _quota_note(args, c)
    return 0


# the seconds `ask`, stopped by Ctrl-C, waits for the daemon to say what it kept (it ends the generation
# at once; a daemon that does not answer within them leaves the stream's view of it)
STOP_WAIT = 10.0


@contextlib.contextmanager
def _stopping() -> Iterator[None]:
    """Ctrl-C ignored while `ask` stops (closes its stream, asks what was kept, says so: a few
    milliseconds, STOP_WAIT at most), so that pressing it again does not lose the kept messages' ids."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _choose_model(exc: ApiError) -> str:
    """A model the provider does not have, in the CLI's words: the daemon's, which name an app's request
    field and route, give way to the option and the command that lists the provider's models. (A 404 that
    named no model, the provider's base_url wrong, says so and nothing of a choice: it stays as it is.)"""
    said, choice, _ = exc.message.rpartition("; choose another")
    if not choice:
        return exc.message
    provider = exc.details.get("provider")
    listing = f"sessiond models --provider {provider}" if provider else "sessiond models"
    return f"{said}; choose another with --model (the provider's models: `{listing}`)"


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


def _quota_note(args, c) -> None:
    """On standard error, once an answer (`ask`) or a message (`add`) leaves the session's token quota at its
    warning level or past it (each answer counts its prompt's tokens too: a few questions can spend it), so
    that the refusal of the next one is no surprise. Nothing when it cannot be read: the append is what was
    asked for."""
    try:
        sys.stdout.flush()
        q = c.quota(args.id)
    except ClientError:
        return
    if q.get("token_quota") and q.get("level") not in (None, "safe"):
        said = (
            f"this session has used {q['tokens_used']} of its {q['token_quota']} tokens ({q['level']}); "
            f"see `sessiond quota {args.id}`"
        )
        print(f"sessiond: {safe(for_home(said, args.home))}", file=sys.stderr)


def _interrupted(args, c, key: str, arrived: bool) -> int:
    """Ctrl-C: the daemon, seeing its app leave, stops the generation and records what had arrived (or
    nothing); what it kept is asked of it once it has (`c.asked`), and named: the question and the answer as
    recorded (with --json, beside the error as messages, null for one not recorded). Exit 130."""
    try:
        kept = c.asked(args.id, key)
    except (ClientError, KeyboardInterrupt):  # the daemon cannot say (gone, or not within STOP_WAIT): the stream's view
        if arrived:
            said = "stopped; what arrived is recorded, marked interrupted"
        else:  # (the daemon records no answer when its app leaves before the model's first words)
            said = "stopped before any of the answer arrived: nothing of it is recorded"
        return fail(args, "interrupted", said, EXIT_INTERRUPTED)
    question, answer = kept.get("question"), kept.get("answer")
    of_question = f" (the question: message {question['id']})" if question else ""
    if answer is not None and answer.get("interrupted"):
        said = f"stopped; what arrived is recorded, marked interrupted: message {answer['id']}{of_question}"
    elif answer is not None:  # the whole answer was in before the daemon saw the app leave
        said = f"stopped; the whole answer is recorded: message {answer['id']}{of_question}"
    elif question is not None:
        said = f"stopped before any of the answer arrived: nothing of it is recorded{of_question}"
    elif args.again:  # (no question sent: the chat's last one, recorded before, stays as it was)
        said = "stopped before any of the answer arrived: nothing of it is recorded (--again added no question)"
    else:
        said = "stopped before the question was recorded: nothing was"
    if args.json:
        print(
            json.dumps(
                {"error": {"code": "interrupted", "message": said}, "question": question, "message": answer},
                ensure_ascii=False,
            )
        )
    print(f"sessiond: {safe(said, keep_lines=True)}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _answered(c, args) -> int | None:
    """`ask --again` refused on a chat that already ends in the model's whole answer: --again is for a question
    whose provider failed, and the model asked again would add a second answer after the first (the API allows a
    chat's next answer; the command's user meant the recorded question's). An answer cut short may be asked again."""
    page: list[Any] = c.messages(args.id, chat=args.chat, limit=1, last=True)["messages"]
    last = page[-1] if page else None
    if last is None or last.get("role") != "assistant" or last.get("interrupted") or last.get("tool_calls"):
        return None
    where = f" --chat {shlex.quote(args.chat)}" if args.chat else ""
    said = (
        f"the chat already ends in the model's answer (message {last['id']}): --again answers a question the model"
        f" has not answered, and would add a second answer; ask a new question (`sessiond ask"
        f" {shlex.quote(args.id)}{where} TEXT`)"
    )
    return fail(args, "already_answered", said, EXIT_ERROR)


def _question_kept(args, c, key: str, exc: ApiError) -> ApiError:
    """A failure (the provider's) that left the question recorded and no answer: said, with the way to have it
    answered once the provider is back (`ask --again`), as `ask ID TEXT` again would record the question twice."""
    try:
        kept = c.asked(args.id, key)
    except ClientError:
        return exc
    question = kept.get("question")
    if question is None or kept.get("answer") is not None:
        return exc
    # as it was asked: the chat, model and provider chosen (else --again asks the chat's own); a model the provider
    # does not have: another, to choose (asked again, it would fail the same way)
    model = "MODEL" if exc.code == "model_not_found" else args.model
    chosen = (("--chat", args.chat), ("--model", model), ("--provider", args.provider))
    flags = "".join(f" {flag} {shlex.quote(value)}" for flag, value in chosen if value)
    again = f"`sessiond ask {shlex.quote(args.id)}{flags} --again`"  # (--home put in as the error is printed)
    said = (
        f"{exc.message}; the question is recorded as message {question['id']}: to have the model answer it, "
        f"{again} (asking it again with TEXT would record it twice)"
    )
    return ApiError(exc.status, exc.code, said, exc.details)


def _failed_mid_answer(args, exc: ApiError, stored: dict) -> int:
    """The provider failed mid-answer and the daemon recorded what had arrived: the error, and that record
    (with --json, beside the error as the answer's own message)."""
    said = for_home(exc.message, args.home)  # (the daemon's names the kept message and the way on: `ask --again`)
    if args.json:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}, "message": stored}, ensure_ascii=False))
    print(f"sessiond: {safe(said, keep_lines=True)}", file=sys.stderr)
    return EXIT_ERROR


def _unrecorded(args, exc: ApiError, answer: dict) -> int:
    """The model answered and the daemon could not record it (the session ended, deleted or this device left
    out of a rekey meanwhile): the answer is the user's still. Its text streamed already; its tool calls, which
    only the record would have shown, follow it (as `log` shows them); then the refusal. With --json, the
    answer beside the error: `{"error": {"code", "message"}, "answer": {...}}`. Exit 1."""
    said = for_home(exc.message, args.home)
    if args.json:
        print(json.dumps({"error": {"code": exc.code, "message": said}, "answer": answer}, ensure_ascii=False))
    else:
        sys.stdout.write("".join(f"-> {safe(c)}\n" for c in _calls(answer)))
        sys.stdout.flush()
    print(f"sessiond: {safe(said, keep_lines=True)}", file=sys.stderr)
    return EXIT_ERROR


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
        calls = _calls(m)
        print(
            f"{head} {m['id']}{mark}{answers}:\n"
            + (f"{safe(m['content'], keep_lines=True)}\n" if m["content"] or not calls else "")
            + "".join(f"-> {safe(c)}\n" for c in calls)
            if not args.short
            else f"{safe(m['role']):>9}:{mark} {short(m['content'] or '; '.join(calls), 100)}"
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


def _calls(m: dict) -> list[str]:
    """An assistant's tool calls as `name(arguments) [id]`, one each."""
    return [f"{c['function']['name']}({c['function']['arguments']}) [{c['id']}]" for c in m.get("tool_calls") or ()]
