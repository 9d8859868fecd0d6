"""Messages: `add` (append one) and `log` (print a session's messages)."""
from __future__ import annotations

from ..connect import client
from ..inputs import read_text
from ..output import emit, safe, short, when
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add("add", cmd_add, "append a message")
    p.add_argument("id")
    p.add_argument("--role", required=True, choices=["system", "user", "assistant", "tool"])
    p.add_argument("--chat", help="chat id (default: the current chat)")
    p.add_argument("--tokens", type=int, help="token count, if the app knows it")
    p.add_argument("text", help="the message; '-' reads it from standard input")
    p = commands.add("log", cmd_log, "print a session's messages")
    p.add_argument("id")
    p.add_argument("--chat")
    p.add_argument("--all", action="store_true", help="every chat, interleaved in order")
    p.add_argument("--limit", type=int, default=1_000_000)
    p.add_argument("--short", action="store_true", help="one line per message")


def cmd_add(args) -> int:
    content = read_text(args.text)
    m = client(args).append(args.id, args.role, content, chat=args.chat, tokens=args.tokens)
    emit(args, m, m["id"])
    return 0


def cmd_log(args) -> int:
    c = client(args)
    msgs, after = [], None
    while len(msgs) < args.limit:
        page = c.messages(args.id, chat=args.chat, limit=min(args.limit - len(msgs), 10_000), after=after,
                          all_chats=args.all or None)
        msgs += page["messages"]
        after = page["next"]
        if not after:
            break
    if args.json:
        emit(args, {"messages": msgs})
        return 0
    if not msgs:
        print("no messages")
    for m in msgs:
        head = f"[{when(m['created_at'])}] {m['role']}" + (f" ({m['chat']})" if args.all else "")
        print(f"{head} {m['id']}:\n{safe(m['content'], keep_lines=True)}\n" if not args.short
              else f"{m['role']:>9}: {short(m['content'], 100)}")
    return 0
