"""Sessions: `new`, `set`, `ls`, `show`, `rm`, and the status changes `pause`, `resume`, `end`."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..connect import client, note_provider_not_here
from ..errors import EXIT_USAGE, CliError
from ..inputs import json_arg, prompt_text
from ..options import (
    ID_HELP,
    NO_USER_HELP,
    SESSION_UNSET,
    YEARS_10,
    add_policy,
    add_settings,
    add_unset,
    count,
    duration_in,
    instant,
    policy_of,
    settings_of,
    unset_into,
    user_or_none,
)
from ..output import emit, for_home, idle_end_said, safe, short, table, when
from ..progress import StoreWaits
from . import Commands


def _add_session_options(p, *, change: bool) -> None:
    """The options `new` and `set` share; `change`: set's, whose --tag and --metadata replace what it has."""
    p.add_argument("--name")
    p.add_argument("--system", help="system prompt ('-' reads it from standard input)")
    p.add_argument("--model")
    p.add_argument("--user", help="owner user id")
    p.add_argument(
        "--tag",
        action="append",
        help="the session's tags, replacing all it has (repeatable: give every tag it should keep)"
        if change
        else "a tag (repeatable)",
    )
    p.add_argument(
        "--metadata",
        help="a JSON object that replaces the session's metadata whole" if change else "metadata as a JSON object",
    )
    p.add_argument(
        "--preferences",
        help="a JSON object that replaces the session's preferences whole"
        if change
        else "preferences as a JSON object",
    )
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in",
        type=duration_in(1, YEARS_10),
        dest="expires_in",
        help=f"expire {'this long from now' if change else 'after this long'}, with its unit"
        " (1 second to 10 years, e.g. 7d)",
    )
    expiry.add_argument(
        "--expires-at",
        type=instant,
        dest="expires_at",
        metavar="TIME",
        help="expire at this time: ISO 8601 with its zone, e.g. 2027-01-31T18:00:00Z or 2027-01-31T19:00:00+01:00",
    )
    p.add_argument("--provider", help="the provider that answers it (a [providers.NAME] in config.toml)")
    add_settings(p)
    add_policy(p)


def register(commands: Commands) -> None:
    p = commands.add("new", cmd_new, "create a session and print its id")
    p.add_argument("--id", help="your own id for it (default: a generated, time-sortable id)")
    p.add_argument(
        "--initial", help='initial messages as a JSON list of {role, content}: \'[{"role": "user", "content": "Hi"}]\''
    )
    _add_session_options(p, change=False)

    p = commands.add(
        "set",
        cmd_set,
        "change a session's name, prompt, model, settings, tags, metadata, preferences or expiry (--unset clears one)",
    )
    p.add_argument("id", help=ID_HELP)
    _add_session_options(p, change=True)
    add_unset(p, SESSION_UNSET, "the session")

    p = commands.add("ls", cmd_ls, "list sessions")
    p.add_argument("--user", help="only sessions of this user")
    p.add_argument("--no-user", action="store_true", help=NO_USER_HELP)
    p.add_argument("--status", choices=["active", "paused", "ended"], help="only sessions of this status")
    p.add_argument("--tag", help="only sessions with this tag")
    p.add_argument("--limit", type=count, default=1000, help="list at most this many (default 1000)")
    p = commands.add("show", cmd_show, "show one session")
    p.add_argument("id", help=ID_HELP)
    p = commands.add("rm", cmd_rm, "delete a session (and its key) from this device")
    p.add_argument("id", help=ID_HELP)
    p.add_argument(
        "--force",
        action="store_true",
        help="delete a shared session even though changes written here are not pushed yet (they are lost)",
    )
    for action, helptext in (
        ("pause", "pause a session"),
        ("resume", "resume a paused session"),
        ("end", "end a session"),
    ):
        p = commands.add(action, _status_cmd(action), helptext)
        p.add_argument("id", help=ID_HELP)


def cmd_new(args) -> int:
    spec = dict(
        id=args.id,
        name=args.name,
        system_prompt=prompt_text(args.system) if args.system else None,
        model=args.model,
        user=args.user,
        tags=args.tag or None,
        settings=settings_of(args),
        metadata=json_arg(args.metadata, "--metadata"),
        preferences=json_arg(args.preferences, "--preferences"),
        initial_messages=_initial(args.initial),
        expires_in=args.expires_in,
        expires_at=args.expires_at,
        policy=policy_of(args) or None,
    )
    c = client(args)
    s = c.create_session(**spec)
    emit(args, s, s["id"])
    note_provider_not_here(args, c)
    return 0


def _initial(text: str | None) -> Any:
    """--initial's messages; one with no text (and no tool calls) is refused, as `add` refuses it: it would
    go with every question, and nothing takes it out again. The rest the daemon checks."""
    messages = json_arg(text, "--initial")
    if messages is not None and not isinstance(messages, list):
        raise CliError(
            "--initial must be a list: a JSON list of messages, each an object with its role and content, such as"
            ' \'[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello"}]\'',
            EXIT_USAGE,
        )
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        text = m.get("content") if isinstance(m, dict) else None
        if isinstance(text, str) and not text.strip() and not m.get("tool_calls"):
            raise CliError(f"--initial[{i}] is empty: give each message some text (or leave it out)", EXIT_USAGE)
    return messages


def cmd_set(args) -> int:
    fields: dict[str, Any] = {}
    for key in ("name", "model", "user"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.system is not None:
        fields["system_prompt"] = prompt_text(args.system)
    if args.tag is not None:
        fields["tags"] = args.tag
    if settings_of(args):
        fields["settings"] = settings_of(args)
    if args.metadata is not None:
        fields["metadata"] = json_arg(args.metadata, "--metadata")
    if args.preferences is not None:
        fields["preferences"] = json_arg(args.preferences, "--preferences")
    for key in ("expires_in", "expires_at"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if policy_of(args):
        fields["policy"] = policy_of(args)
    unset_into(args, SESSION_UNSET, fields)
    if not fields:
        raise CliError("nothing to change: give at least one option (see `sessiond set --help`)", EXIT_USAGE)
    c = client(args)
    s = c.update_session(args.id, **fields)
    emit(args, s, f"updated {s['id']}")
    note_provider_not_here(args, c)
    return 0


def cmd_ls(args) -> int:
    user_or_none(args)
    c = client(args)
    rows: list[Any] = []  # Session answers
    after = None
    want = args.limit + 1  # one more than shown: whether there are more to say so
    while True:
        page = c.list_sessions(
            user=args.user,
            no_user=args.no_user or None,
            status=args.status,
            tag=args.tag,
            limit=min(want - len(rows), 1000),
            after=after,
        )
        rows += page["sessions"]
        after = page["next"]
        if not after or len(rows) >= want:
            break
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    if more and not args.json:
        said = "`sessiond ls --limit N` lists more, or filter them with --user, --status, --tag"
        print(f"(there are more sessions than these {len(rows)}: {for_home(said, args.home)})", file=sys.stderr)
    emit(
        args,
        {"sessions": rows, "more": more},
        table(
            [
                [
                    s["id"],
                    s["name"],
                    s["user"],
                    # rekeyed without this device: it cannot write it any more (`show` says the access of each)
                    s["status"] + (", revoked" if s.get("access") == "revoked" else ""),
                    s["model"],
                    ",".join(s["tags"]),
                    when(s["last_activity"]),
                ]
                for s in rows
            ],
            ["id", "name", "user", "status", "model", "tags", "last activity"],
        )
        if rows
        else "no sessions",
    )
    return 0


def cmd_show(args) -> int:
    s = client(args).get_session(args.id)
    sync = s.get("sync", {})
    lines = [
        f"id:            {s['id']}",
        f"name:          {safe(s['name'])}",
        f"user:          {safe(s['user'])}",
        f"status:        {s['status']}",
        f"model:         {safe(s['model'])}",
        f"settings:      {json.dumps(s['settings'])}",
        f"tags:          {safe(', '.join(s['tags']))}",
        f"system prompt: {short(s['system_prompt'], 70)}",
        f"current chat:  {s['current_chat']}",
        f"chats:         {s['chat_count']}",
        f"messages:      {s['message_count']} ({s['tokens']} tokens used, a model's prompts included)",
        f"created:       {when(s['created_at'])}",
        f"last activity: {when(s['last_activity'])}",
        f"expires:       {_expires(dict(s))}",
        f"sync:          {sync.get('state', '-')}, revision {sync.get('head_rev', 0)}, "
        f"{sync.get('pending', 0)} pending"
        + (f", last error: {for_home(sync['last_error'], args.home)}" if sync.get("last_error") else "")
        + (f", cannot pull: {for_home(sync['pull_error'], args.home)}" if sync.get("pull_error") else ""),
    ]
    more: dict[str, Any] = dict(s)  # the answer's fields beyond the Session model's (access, policy, provenance)
    lines.insert(4, f"access:        {more.get('access', '-')}")
    if more.get("policy"):
        lines.append(f"policy:        {json.dumps(more['policy'])}")
    if s.get("initial_messages"):
        lines.append(f"initial:       {len(s['initial_messages'])} message(s)")
    waits = more.get("idle_end_waits")
    if waits:
        lines.insert(
            lines.index(f"expires:       {_expires(dict(s))}") + 1,
            f"idle end:      {idle_end_said(waits, args.home)}",
        )
    held = more.get("held_here")
    if held:
        from ...storage.errors import held_said

        lines.insert(5, f"held here:     {held_said(held)}; a new share code imported here sends them")
    prov = more.get("provenance")
    if prov:
        lines.append(
            f"copied from:   {prov.get('kind')} of {safe(prov.get('session'))}"
            + (f" at {safe(prov['message'])}" if prov.get("message") else "")
        )
    if s["metadata"]:
        lines.append(f"metadata:      {safe(json.dumps(s['metadata'], ensure_ascii=False))}")
    if s.get("preferences"):
        lines.append(f"preferences:   {safe(json.dumps(s['preferences'], ensure_ascii=False))}")
    emit(args, s, "\n".join(lines))
    return 0


def _expires(s: dict) -> str:
    """When the session expires: its expires_at, or its idle timeout after its last activity when that comes
    first (the daemon ends it then; `-` would have said never)."""
    idle = (s.get("policy") or {}).get("idle_timeout")
    last = s.get("last_activity")
    if isinstance(idle, int | float) and isinstance(last, int | float):
        idle_end = last + idle
        if s["expires_at"] is None or idle_end < s["expires_at"]:
            return f"{when(idle_end)} (idle timeout {idle:g} s after the last activity)"
    return when(s["expires_at"])


def push_wait(home: str | None) -> float:
    """How long the daemon's `rm` and `end` wait for a shared session's push (daemon/operations.py): as long
    as a store call may take, config.toml's store_timeout (its default, when that cannot be read)."""
    from ...daemon.home import Config, HomeError, resolve_home

    try:
        return Config.load(resolve_home(home)).store_timeout
    except (HomeError, OSError):
        return Config.store_timeout


def _rm_meanwhile(left: float) -> str:
    return (
        f"the delete waits for its store ({left:.0f} s left), then is refused, nothing deleted, if they are not "
        "pushed by then (`--force` deletes it without them)"
    )


def _end_meanwhile(left: float) -> str:
    return f"the end waits for its store ({left:.0f} s left), then answers, ended here, not pushed yet"


def cmd_rm(args) -> int:
    c = client(args)
    waits = None if args.force else StoreWaits(c, args.id, push_wait(args.home), _rm_meanwhile, pulls=False)
    try:
        out = c.delete_session(args.id, force=args.force)
    finally:
        if waits is not None:
            waits.close()
    kept = out.get("kept_in_store")
    said = f"; kept {kept['objects']} of its objects in the store for good: {kept['why']}" if kept else ""
    if left := out.get("left_in_store"):  # (a session never shared, its head in the store unread)
        said += (
            f"\n  left in the store {left['store']}: {left['what']}; {left['why']}"
            f"\n  fix: {for_home(left['fix'], args.home)}"
        )
    emit(args, out, f"deleted {args.id}{said}")
    return 0


def _status_cmd(action: str):
    """`pause`, `resume` or `end`: the client method of that name; `end` also reports the final proofs."""

    def run(args) -> int:
        c = client(args)
        waits = StoreWaits(c, args.id, push_wait(args.home), _end_meanwhile, pulls=False) if action == "end" else None
        try:
            s = getattr(c, action)(args.id)
        finally:
            if waits is not None:
                waits.close()
        human = f"{s['id']}: {s['status']}"
        if action == "end":
            snap = s.get("snapshot") or {}
            human += (
                f"\nfinal tokens: {s['tokens_used']}\ncheckpoints: {len(s['checkpoints'])}"
                + (
                    f" (last: #{s['checkpoints'][-1]['number']} {s['checkpoints'][-1]['hash'][:16]}…)"
                    if s["checkpoints"]
                    else ""
                )
                + (
                    f"\nsnapshot: revision {snap['revision']}, manifest {snap['manifest_ipfs_cid']}"
                    if snap
                    else "\nsnapshot: not pushed yet"
                    + (
                        for_home(
                            " (the daemon is stopping: it is pushed once the daemon runs again, `sessiond start`)",
                            args.home,
                        )
                        if s.get("stopping")
                        else for_home(
                            f" (its store did not take it: `sessiond sync {s['id']} --wait` pushes it, and says"
                            " why not)",
                            args.home,
                        )
                        if s.get("pushed") is False
                        else ""
                    )
                )
            )
        emit(args, s, human)
        return 0

    return run
