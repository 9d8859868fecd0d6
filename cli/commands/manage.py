"""Managing a session: `quota`, `context`, `compact`, `uncompact`, `clone`, `fork`, `checkpoint`,
`checkpoints`, `verify-proof`, `stats`, `cleanup`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ...client import ApiError
from ..connect import client
from ..errors import EXIT_ERROR, EXIT_USAGE, CliError, UsageError
from ..inputs import read_json
from ..options import ID_HELP, NO_USER_HELP, counted, duration, user_or_none
from ..output import emit, for_home, idle_end_said, safe, table, when
from . import Commands

if TYPE_CHECKING:
    from ...api.manage import SessionsStats, SessionStats


def register(commands: Commands) -> None:
    p = commands.add("quota", cmd_quota, "tokens used, the quota and its warning level")
    p.add_argument("id", help=ID_HELP)
    p = commands.add("context", cmd_context, "a chat's active context: tokens, budget, what is compacted")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p = commands.add(
        "compact", cmd_compact, "drop the oldest messages from a chat's active context (history keeps them)"
    )
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p.add_argument("--target-tokens", type=int, dest="target_tokens", help="keep at most this many tokens active")
    p = commands.add("uncompact", cmd_uncompact, "restore every compacted message of a chat to its context")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p = commands.add("clone", cmd_clone, "a new session with the same settings and initial context, no conversation")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--id", dest="new_id", help="the new session's id")
    p.add_argument("--name")
    p = commands.add("fork", cmd_fork, "a new session with the history up to a message")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--at", required=True, help="message id (see `sessiond log`)")
    p.add_argument("--id", dest="new_id", help="the new session's id")
    p.add_argument("--name")
    p = commands.add("checkpoint", cmd_checkpoint, "make a signed checkpoint of the conversation now")
    p.add_argument("id", help=ID_HELP)
    p = commands.add("checkpoints", cmd_checkpoints, "list a session's checkpoints")
    p.add_argument("id", help=ID_HELP)
    p = commands.add("verify-proof", cmd_verify_proof, "check checkpoint proofs (JSON file, or '-') against a session")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("proof", help="a JSON file of proofs (one, a list, or `end --json`'s output); '-': standard input")
    p = commands.add("stats", cmd_stats, "statistics of one session, one user, or the whole daemon")
    p.add_argument("id", nargs="?", help="one session's, by its id (default: every session's)")
    p.add_argument("--user", help="the statistics of this user's sessions")
    p.add_argument("--no-user", action="store_true", help=NO_USER_HELP)
    p = commands.add("cleanup", cmd_cleanup, "delete sessions idle for longer than a duration (and their keys)")
    p.add_argument(
        "--older-than", required=True, dest="older_than_text", metavar="DURATION", help="with its unit, e.g. 7d or 12h"
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument(
        "--yes",
        action="store_true",
        help="confirm a duration under 1 hour (--older-than 0 deletes every session); on a terminal, else asked",
    )
    p.set_defaults(prepare=_older_than)


def cmd_quota(args) -> int:
    q = client(args).quota(args.id)
    human = (
        f"{q['tokens_used']} of {q['token_quota']} tokens used ("
        + (
            f"{q['remaining']} left"
            if q["tokens_used"] <= q["token_quota"]
            else f"{q['tokens_used'] - q['token_quota']} over"
        )
        + f"): {q['level']}"
        if q["token_quota"]
        else f"{q['tokens_used']} tokens used; no quota ({q['level']})"
    )
    emit(args, q, human)
    return 0


def _context_line(c: Mapping[str, Any]) -> str:
    budget = c["policy"].get("max_context_tokens")
    return (
        f"chat {c['chat']}: {counted(c['active_tokens'], 'token')} in {counted(c['active_messages'], 'active message')}"
        + (f", and {c['fixed_tokens']} of the system prompt and initial messages" if c.get("fixed_tokens") else "")
        + (f" (budget {budget})" if budget else "")
        + (f"; {c['compacted_messages']} compacted, up to {c['compacted_upto']}" if c["compacted_upto"] else "")
    )


def cmd_context(args) -> int:
    c = client(args).context(args.id, args.chat)
    emit(args, c, _context_line(c))
    return 0


def cmd_compact(args) -> int:
    c = client(args).compact(args.id, chat=args.chat, target_tokens=args.target_tokens)
    emit(args, c, _context_line(c))
    return 0


def cmd_uncompact(args) -> int:
    c = client(args).uncompact(args.id, chat=args.chat)
    emit(args, c, _context_line(c))
    return 0


def cmd_clone(args) -> int:
    s = client(args).clone(args.id, new_id=args.new_id, name=args.name)
    emit(args, s, s["id"])
    return 0


def cmd_fork(args) -> int:
    s = client(args).fork(args.id, args.at, new_id=args.new_id, name=args.name)
    emit(args, s, s["id"])
    return 0


def cmd_checkpoint(args) -> int:
    # the daemon answers this device's latest proof when nothing changed since it (no second proof of the same
    # conversation), its answer's `made` false: said so
    cp = client(args).checkpoint(args.id)
    made = cp.pop("made", True)  # (--json prints the proof as `checkpoints --json` lists it)
    what = (
        f"checkpoint #{cp['number']} (version {cp.get('v', 1)}): {counted(cp['messages'], 'message')},"
        f" {counted(cp['tokens'], 'token')}, hash {cp['hash']}"
    )
    if not made:
        what = f"no new checkpoint: nothing changed since this one, which stands\n{what}"
    emit(args, cp, what)
    return 0


def cmd_checkpoints(args) -> int:
    cps = client(args).checkpoints(args.id)["checkpoints"]
    emit(
        args,
        {"checkpoints": cps},
        table(
            [
                [
                    c["number"],
                    c["device"],
                    c.get("v", 1),
                    c["messages"],
                    c["tokens"],
                    c["hash"][:32] + "…",
                    when(c["created_at"]),
                ]
                for c in cps
            ],
            ["#", "device", "version", "messages", "tokens", "hash", "created"],
        )
        if cps
        else "no checkpoints",
    )
    return 0


def cmd_verify_proof(args) -> int:
    proof = read_json(args.proof)
    if isinstance(proof, dict) and "checkpoints" in proof and "number" not in proof:
        proofs = proof["checkpoints"]  # the output of `sessiond end --json` or `checkpoints --json`
        if not isinstance(proofs, list):
            raise CliError(f'{args.proof}: "checkpoints" must be a list of checkpoint proofs', EXIT_USAGE)
    else:
        proofs = proof if isinstance(proof, list) else [proof]
    if not proofs:  # nothing checked is not a success
        raise CliError(
            f"{args.proof} holds no checkpoint proofs: give a proof, a list of them, or the output of "
            f"`sessiond end --json` / `checkpoints --json`",
            EXIT_USAGE,
        )
    for i, p in enumerate(proofs):
        if not isinstance(p, dict):
            raise CliError(f"{args.proof}: proof {i} is not a JSON object (a checkpoint proof)", EXIT_USAGE)
    # the answers as plain dicts: ProofResult names only "ok", the daemon answers the checkpoint's fields too
    c = client(args)
    results: list[dict[str, Any]] = [_checked(c, args.id, p, len(proofs) > 1) for p in proofs]
    emit(
        args,
        {"ok": all(r["ok"] for r in results), "results": results},
        "\n".join(
            f"ok      checkpoint #{r['number']} of {r['device']} (version {r.get('v', 1)}):"
            f" {counted(r['messages'], 'message')}, {counted(r['tokens'], 'token')}"
            if r["ok"]
            else f"FAILED  {for_home(r['problem'], args.home)}"
            for r in results
        ),
    )
    return 0 if all(r["ok"] for r in results) else EXIT_ERROR


def _checked(c, sid: str, proof: dict, among: bool) -> dict[str, Any]:
    """The daemon's answer for one proof; one of several that cannot be checked here (422 `checkpoint`: malformed,
    or another session's) said as FAILED among the others, which are still checked."""
    try:
        return dict(c.verify_proof(sid, proof))
    except ApiError as exc:
        if not among or exc.code != "checkpoint":
            raise
        return {"ok": False, "problem": exc.message, "error": exc.code}


def _or_dash(x: object) -> object:
    return "-" if x is None else x


def cmd_stats(args) -> int:
    if args.id and args.user:  # (the daemon's statistics are of one session, or of a user's sessions)
        raise CliError("stats: give a session id or --user, not both", EXIT_USAGE)
    user_or_none(args)
    answer = client(args).stats(args.id, args.user, no_user=args.no_user or None)
    if args.id:  # one session's
        st = cast("SessionStats", answer)
        lines = [
            f"session {st['session']} ({st['status']}): {counted(st['chats'], 'chat')}, "
            f"{counted(st['messages'], 'message')}, {counted(st['tokens'], 'token')} used; "
            f"created {when(st['created_at'])}, last active {when(st['last_activity'])}"
        ]
        if st.get("idle_end_waits"):  # active, though idle: why (as `show` says)
            lines.append(f"idle end: {idle_end_said(st['idle_end_waits'], args.home)}")
        # per chat: the model's answers through sessiond and their measured times (averages), then the wait
        # from a question to the answer that followed it (any answer, an app's own included)
        lines.append(
            table(
                [
                    [
                        c["chat"],
                        c["name"],
                        c["messages"],
                        c.get("answers", 0),
                        _or_dash(c.get("avg_first_token_seconds")),
                        _or_dash(c.get("avg_answer_seconds")),
                        _or_dash(c["avg_response_seconds"]),
                    ]
                    for c in st["per_chat"]
                ],
                ["chat", "name", "messages", "answers", "first token s", "answer s", "question to answer s"],
            )
        )
    else:  # several sessions': a user's, those with no user, the daemon's
        many = cast("SessionsStats", answer)
        # whose figures they are, when not the daemon's: a user's, or the sessions with no user
        whose = "sessions with no user: " if args.no_user else ""
        if args.user is not None:
            whose = f"user {safe(args.user)}: "
        lines = [
            f"{whose}{counted(many['sessions'], 'session')} ({many['active']} active, {many['paused']} paused,"
            f" {many['ended']} ended), {counted(many['messages'], 'message')}, {counted(many['tokens'], 'token')}"
        ]
        if many.get("users"):
            lines.append(
                table(
                    [[u["user"] or "(none)", u["sessions"], u["tokens"]] for u in many["users"]],
                    ["user", "sessions", "tokens"],
                )
            )
    emit(args, answer, "\n".join(lines))
    return 0


def _older_than(args) -> None:
    """--older-than is read as a duration after parsing (the report repeats the text as given)."""
    try:
        args.older_than = duration(args.older_than_text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"argument --older-than: {exc}") from None


CONFIRM_UNDER = 3600  # a clean-up of sessions idle for less (seconds) is confirmed: 0 deletes every session


def _confirmed(args) -> None:
    """A clean-up whose duration is under an hour deletes nearly every session, or all of them (0): more
    likely a typo (0 or 30m for 30d) than meant. Without --yes it is asked on a terminal (how many it would
    delete, from a dry run), and refused with --json or with no terminal to ask on, nothing deleted."""
    if args.dry_run or args.yes or args.older_than >= CONFIRM_UNDER:
        return
    said = f"--older-than {args.older_than_text} deletes " + (
        "every session" if args.older_than == 0 else f"every session idle for longer than {args.older_than_text}"
    )
    if args.json or not sys.stdin.isatty():
        raise UsageError(f"{said}: a duration under 1 hour needs --yes (--dry-run lists what it would delete)")
    n = len(client(args).cleanup(args.older_than, dry_run=True)["sessions"])
    sys.stderr.write(f"{said}: delete {n} session(s) now? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("cleanup: nothing deleted", EXIT_ERROR)


def cmd_cleanup(args) -> int:
    _confirmed(args)
    res = client(args).cleanup(args.older_than, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {len(res['sessions'])} session(s) idle for longer than {args.older_than_text}"]
    lines += [f"  {s['id']}  {safe(s['name'])}  last active {when(s['last_activity'])}" for s in res["sessions"]]
    if res.get("kept"):
        lines.append(f"kept {len(res['kept'])} session(s) idle as long, whose changes written here are not pushed yet:")
        lines += [f"  {s['id']}  {safe(s['name'])}: {for_home(s['reason'], args.home)}" for s in res["kept"]]
    emit(args, res, "\n".join(lines))
    return 0
