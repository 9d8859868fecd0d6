"""Chats within a session: `chat new`, `chat set`, `chat ls`, `chat switch`."""

from __future__ import annotations

from typing import Any

from ..connect import client, note_provider_not_here
from ..errors import EXIT_USAGE, CliError
from ..inputs import prompt_text
from ..options import CHAT_UNSET, add_policy, add_settings, add_unset, policy_of, settings_of, unset_into
from ..output import emit, safe, short, table, when
from . import Commands

_PROVIDER = "the provider that answers this chat's questions (a [providers.NAME] in config.toml), over the session's"


def register(commands: Commands) -> None:
    p = commands.add("chat", None, "chats within a session: new, set, ls, switch")
    chat = commands.actions(p, "chat_command")
    q = chat.add("new", cmd_chat_new, "create a chat")
    q.add_argument("id", help="session id")
    q.add_argument("--id", dest="chat_id", help="the chat's own id")
    q.add_argument("--name")
    q.add_argument("--system", help="system prompt ('-' reads it from standard input)")
    q.add_argument("--model")
    q.add_argument("--switch", action="store_true", help="make it the current chat")
    q.add_argument("--provider", help=_PROVIDER)
    add_settings(q)
    add_policy(q, chat=True)
    q = chat.add("set", cmd_chat_set, "change a chat: name, prompt, model, settings, context policy (--unset clears)")
    q.add_argument("id", help="session id")
    q.add_argument("chat", help="chat id or name")
    q.add_argument("--name")
    q.add_argument("--system", help="system prompt ('-' reads it from standard input)")
    q.add_argument("--model")
    q.add_argument("--provider", help=_PROVIDER)
    add_settings(q)
    add_policy(q, chat=True)
    add_unset(q, CHAT_UNSET, "the chat")
    q = chat.add("ls", cmd_chat_ls, "list chats")
    q.add_argument("id", help="session id")
    q = chat.add("switch", cmd_chat_switch, "switch the current chat")
    q.add_argument("id", help="session id")
    q.add_argument("chat", help="chat id or name")


def cmd_chat_new(args) -> int:
    c = client(args)
    chat = c.create_chat(
        args.id,
        id=args.chat_id,
        name=args.name,
        system_prompt=prompt_text(args.system) if args.system else None,
        model=args.model,
        settings=settings_of(args),
        switch=args.switch or None,
        policy=policy_of(args) or None,
    )
    emit(args, chat, chat["id"])
    note_provider_not_here(args, c)
    return 0


def cmd_chat_set(args) -> int:
    fields: dict[str, Any] = {}
    for key in ("name", "model"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.system is not None:
        fields["system_prompt"] = prompt_text(args.system)
    if settings_of(args):
        fields["settings"] = settings_of(args)
    if policy_of(args):
        fields["policy"] = policy_of(args)
    unset_into(args, CHAT_UNSET, fields)
    if not fields:
        raise CliError("nothing to change: give at least one option (see `sessiond chat set --help`)", EXIT_USAGE)
    c = client(args)
    chat = c.update_chat(args.id, args.chat, **fields)
    emit(args, chat, f"updated chat {chat['id']} of {args.id}")
    note_provider_not_here(args, c)
    return 0


def cmd_chat_ls(args) -> int:
    chats = client(args).list_chats(args.id)["chats"]
    emit(
        args,
        {"chats": chats},
        table(
            [
                [
                    "*" if c["current"] else "",
                    c["id"],
                    c["name"],
                    c["model"],
                    short(c["system_prompt"], 40),
                    when(c["created_at"]),
                ]
                for c in chats
            ],
            ["", "id", "name", "model", "system prompt", "created"],
        ),
    )
    return 0


def cmd_chat_switch(args) -> int:
    s = client(args).switch_chat(args.id, args.chat)
    now = s["current_chat"]  # (picked by its name: said by the name given, with its id)
    emit(args, s, f"{s['id']}: current chat is now {safe(now if args.chat == now else f'{args.chat} ({now})')}")
    return 0
