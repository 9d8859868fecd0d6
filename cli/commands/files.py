"""Plain files: `export` (a session as OpenAI messages or full JSON) and `import-file`."""

from __future__ import annotations

import json

from ..connect import client
from ..inputs import read_json
from ..output import emit
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add("export", cmd_export, "write a session as OpenAI chat messages or full JSON")
    p.add_argument("id")
    p.add_argument("--format", choices=["openai", "json"], default="json")
    p.add_argument("--chat", help="(openai) which chat; default: the current one")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p = commands.add(
        "import-file", cmd_import_file, "import OpenAI messages, a session JSON, or ChatGPT's conversations.json"
    )
    p.add_argument("path", help="the file ('-' reads standard input)")
    p.add_argument("--format", choices=["openai", "json", "chatgpt"], required=True)


def cmd_export(args) -> int:
    data = client(args).export(args.id, args.format, args.chat)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.output:
        from ...storage.fsutil import atomic_write

        atomic_write(args.output, text.encode() + b"\n", 0o600)
        if args.json:
            print(json.dumps({"written": args.output}))
    else:
        print(text)
    return 0


def cmd_import_file(args) -> int:
    res = client(args).import_file(read_json(args.path), args.format)
    emit(args, res, "\n".join(s["id"] for s in res["sessions"]))
    return 0
