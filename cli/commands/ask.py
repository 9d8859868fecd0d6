"""`ask`: a question to the session's model, its answer printed as it streams and recorded; what a Ctrl-C, a
provider's failure or a refusal to record left kept, said with the way on (`ask --again`). Registered by
messages.py, beside `add` (whose quota note is this module's `quota_note`)."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ...client import ApiError, ClientError
from ...client.calls import new_idempotency_key
from ..connect import client
from ..errors import EXIT_ERROR, EXIT_INTERRUPTED, UsageError, fail, stdout_to_null
from ..inputs import message_text
from ..options import ID_HELP
from ..output import calls_said, emit, for_home, safe
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add(
        "ask",
        cmd_ask,
        "ask the session's model: appends TEXT, prints the answer as it streams, records it",
        intermixed=True,  # (TEXT, which --again leaves out, after the options: `ask ID --json TEXT`)
    )
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p.add_argument("--model", help="this model instead of the chat's or session's")
    p.add_argument("--provider", help="this provider (config.toml [providers.NAME]) instead of the session's")
    p.add_argument(
        "--again",
        action="store_true",
        help="add no question: the model answers the chat as it stands (a question recorded when the provider failed)",
    )
    p.add_argument("text", nargs="?", help="the question; '-' reads it from standard input")


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
        if isinstance(exc, ApiError):
            exc = _question_kept(args, c, key, exc)
        raise exc from None
    answer = stream.message
    if args.json:
        emit(args, answer)
    else:
        if wrote:
            sys.stdout.write("\n")
        # its tool calls, as `log` shows them: the stream's text does not carry them (an answer that is only a
        # call would print nothing)
        sys.stdout.write("".join(f"-> {safe(c)}\n" for c in calls_said(answer or {})))
    if not (arrived or args.json or (answer and answer.get("tool_calls"))):  # (else nothing at all would show)
        sys.stdout.flush()
        print("sessiond: (the model answered nothing)", file=sys.stderr)
    for dropped in (answer.get("tool_calls_dropped") if answer else None) or ():  # (one with no name: none can run it)
        sys.stdout.flush()
        said = f"the model's tool call {dropped.get('index')} is not recorded: {dropped.get('reason')}"
        print(f"sessiond: {safe(said)}", file=sys.stderr)
    quota_note(args, c)
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


def quota_note(args, c) -> None:
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
    answered once the provider is back (`ask --again`), as `ask ID TEXT` again would record the question twice. And
    `ask --again` failing so (no question of its own: the chat's last one, still unanswered) says the same way on."""
    try:
        kept = c.asked(args.id, key)
    except ClientError:
        return exc
    question = kept.get("question")
    if kept.get("answer") is not None or (question is None and not args.again):
        return exc
    # as it was asked: the chat, model and provider chosen (else --again asks the chat's own); a model the provider
    # does not have: another, to choose (asked again, it would fail the same way)
    model = "MODEL" if exc.code == "model_not_found" else args.model
    chosen = (("--chat", args.chat), ("--model", model), ("--provider", args.provider))
    flags = "".join(f" {flag} {shlex.quote(value)}" for flag, value in chosen if value)
    again = f"`sessiond ask {shlex.quote(args.id)}{flags} --again`"  # (--home put in as the error is printed)
    if question is None:  # (--again: nothing recorded, the chat as it was)
        said = f"{exc.message}; nothing was recorded, the chat's last question still waits: {again} once put right"
        return ApiError(exc.status, exc.code, said, exc.details)
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
        sys.stdout.write("".join(f"-> {safe(c)}\n" for c in calls_said(answer)))
        sys.stdout.flush()
    print(f"sessiond: {safe(said, keep_lines=True)}", file=sys.stderr)
    return EXIT_ERROR
