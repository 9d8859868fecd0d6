"""`search`: full-text search over every message on this device."""

from __future__ import annotations

import sys

from ..connect import client
from ..errors import UsageError
from ..options import NO_USER_HELP, user_or_none
from ..output import emit, safe, when
from . import Commands

ROLES = ["system", "user", "assistant", "tool"]


def register(commands: Commands) -> None:
    p = commands.add(
        "search",
        cmd_search,
        'search every message on this device (FTS5 syntax: words, a "phrase", prefix*, AND/OR/NOT), best first',
    )
    p.add_argument("query", help="what to find, e.g. '\"exact phrase\" OR pirat*'")
    p.add_argument("--session", help="only this session")
    p.add_argument("--user", help="only sessions of this user")
    p.add_argument("--no-user", action="store_true", help=NO_USER_HELP)
    p.add_argument("--role", choices=ROLES, help="only messages of this role")
    p.add_argument("--limit", type=int, default=20, help="at most this many results (1-1000, default 20)")


def marked(snippet: str, highlights: list[list[int]], bold: bool) -> str:
    """The snippet on one line, safe for a terminal, its matches in bold (a terminal) or [brackets]."""
    start, end = ("\x1b[1m", "\x1b[0m") if bold else ("[", "]")
    out, pos = [], 0
    for a, b in highlights:
        out += [safe(snippet[pos:a].replace("\n", " ")), start, safe(snippet[a:b].replace("\n", " ")), end]
        pos = b
    out.append(safe(snippet[pos:].replace("\n", " ")))
    return "".join(out)


def cmd_search(args) -> int:
    if not args.query.strip():
        raise UsageError("give a QUERY: the words to find (see `sessiond search --help`)")
    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit must be between 1 and 1000 (got {args.limit})")
    user_or_none(args)
    res = client(args).search(
        args.query, session=args.session, user=args.user, no_user=args.no_user or None, role=args.role, limit=args.limit
    )
    if args.json:
        emit(args, res)
        return 0
    bold = sys.stdout.isatty()
    for h in res["hits"]:
        place = f"{safe(h['session'])} {safe(h['chat'])} {safe(h['id'])}"
        aside = " (compacted)" if h.get("compacted") else ""
        said = f"{when(h['created_at'])}  {place}  {safe(h['role'])}{aside}"
        print(f"{said}: {marked(h['snippet'], h['highlights'], bold)}")
    if not res["hits"]:
        print("no messages match", file=sys.stderr)
    return 0
