"""Plain files: `export` (a session as OpenAI messages, full JSON or Markdown) and `import-file`."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Any, cast

from ...client import ApiError
from ...daemon.home import resolve_home
from ..connect import client
from ..errors import EXIT_USAGE, CliError, UsageError
from ..inputs import read_json
from ..llmdb import is_sqlite, read_logs_db
from ..options import ID_HELP
from ..output import emit, for_home, safe
from ..progress import Progress
from . import Commands

if TYPE_CHECKING:
    from ...api.manage import ImportFileResult, MarkdownExport

IMPORT_FORMATS = ["openai", "json", "chatgpt", "claude", "openwebui", "llm"]


def register(commands: Commands) -> None:
    p = commands.add("export", cmd_export, "write a session as OpenAI chat messages, full JSON or Markdown")
    p.add_argument("id", help=ID_HELP)
    p.add_argument(
        "--format",
        choices=["openai", "json", "markdown"],
        default="json",
        help="openai: one chat's messages as OpenAI takes them; json: the whole session, which import-file restores"
        " (default); markdown: to read",
    )
    p.add_argument("--chat", help="(openai only) which chat; default: the current one")
    p.add_argument("-o", "--output", help="write to this file instead of standard output ('-': standard output)")
    p.add_argument("--force", action="store_true", help="with -o: replace the file if it exists")
    p = commands.add(
        "import-file",
        cmd_import_file,
        "import OpenAI messages, a session JSON, or ChatGPT's, Claude's, Open WebUI's or llm's history",
    )
    p.add_argument("path", help="the file ('-' reads standard input)")
    p.add_argument(
        "--format",
        choices=IMPORT_FORMATS,
        help="chatgpt/claude: conversations.json; openwebui: its chat export; llm: its logs.db."
        " Default: told by the file's shape, when that is certain",
    )


def _check_output(path: str, home: str, force: bool) -> None:
    """-o names a file to write, in a folder that exists and not in the daemon's home (its database, keys and
    store, which a write there would replace), and not one that exists unless `force`: checked before the export
    is asked for."""
    if os.path.isdir(path):
        raise UsageError(f"-o {path} is a folder: give the path of a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {path}: there is no folder {folder}; make it first, or give another path")
    real_home, real_folder = os.path.realpath(home), os.path.realpath(folder)
    if os.path.commonpath([real_home, real_folder]) == real_home:
        raise UsageError(
            f"-o {path} is in the daemon's home {home}, where it keeps its own files (its database, keys and"
            " store), which a write there can replace: write the export somewhere else"
        )
    _check_new(path, force)


def _is_stream(path: str) -> bool:
    """`path` names (perhaps through a link) something that is no regular file to keep, which an export is written
    into rather than put in place of: a named pipe, a shell's process substitution (/dev/fd/N), /dev/stdout."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # (none there, or a link to nothing: a file to make)
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _is_stdout(path: str) -> bool:
    """`path` is this command's own standard output (/dev/stdout, /dev/fd/1, or what it is redirected into)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):
        return False


def _destination(path: str) -> str:
    """Where -o `path` writes: the file a link names (replaced, its link left as it is: renamed over, the link
    itself would be the file, and /dev/stdout is one), or `path`."""
    if os.path.islink(path) and not _is_stream(path):
        return os.path.realpath(path)
    return path


def _check_new(path: str, force: bool) -> None:
    """An existing file at `path` (an earlier export, a file named by mistake) is not replaced without --force."""
    if not force and os.path.lexists(path) and not _is_stream(path):
        raise _exists(path)


def _exists(path: str) -> UsageError:
    return UsageError(f"-o {path} exists: nothing was written; give another path, or add --force to replace it")


def _write_output(args, data: bytes) -> None:
    """The export's `data` written where -o says (args.write_to), and said: `{"written"}` with --json, else a line
    naming what and where, unless it was written into a stream (/dev/stdout, a pipe), which holds the export alone."""
    stream = _is_stream(args.write_to)
    _write_to(args.write_to, data, args.force)
    if stream and _is_stdout(args.write_to):
        return  # (-o /dev/stdout: the export is the command's output, as with -o -; no second document after it)
    if args.json:
        print(json.dumps({"written": args.output}))
    elif not stream:
        print(safe(f"wrote the {args.format} export of session {args.id} to {args.output} ({len(data):,} bytes)"))


def _write_to(path: str, data: bytes, force: bool) -> None:
    from ...storage.errors import is_disk_full
    from ...storage.fsutil import atomic_write, create_new

    _check_new(path, force)  # (again: made while the export was read)
    try:
        if _is_stream(path):  # (written into: renamed over, it would be a regular file in its place)
            with open(path, "wb") as f:
                f.write(data)
            return
        if force:
            atomic_write(path, data, 0o600)
        else:  # put in place only where nothing is: a file made after the check above is kept, not replaced
            create_new(path, data, 0o600)
    except FileExistsError:  # made after the check above: refused as one there before
        raise _exists(path) from None
    except OSError as exc:
        if is_disk_full(exc):  # (atomic_write removed its temporary file: nothing is left half written)
            raise CliError(
                f"cannot write {path}: the disk holding it is full ({exc.strerror}); nothing was written: free some"
                f" space there, or give -o a file on another disk"
            ) from None
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_export(args) -> int:
    if args.chat is not None and args.format != "openai":
        raise UsageError(f"--chat picks the chat of --format openai; a {args.format} export holds every chat")
    if args.output == "":  # `-o "$F"` with F unset: not standard output
        raise UsageError("-o is empty: give the path of a file to write, or leave -o out for standard output")
    if args.output == "-":
        args.output = None  # standard output, as if -o were left out
    if args.force and not args.output:
        raise UsageError("--force replaces the file -o names: give -o FILE, or leave --force out")
    args.write_to = _destination(args.output) if args.output else None
    if args.write_to:
        _check_output(args.write_to, resolve_home(args.home), args.force)
    c = client(args)
    with Progress(c, {"export"}):
        data = c.export(args.id, args.format, args.chat)
    if args.format == "markdown":
        return _write_markdown(args, cast("MarkdownExport", data))
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.output:
        _write_output(args, text.encode() + b"\n")
    else:
        print(text)
    return 0


def _write_markdown(args, data: MarkdownExport) -> int:
    text = data["markdown"]
    if args.output:
        _write_output(args, text.encode())
    elif args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:  # exact bytes into a pipe or file; a terminal gets its control characters escaped
        sys.stdout.write(safe(text, keep_lines=True) if sys.stdout.isatty() else text)
    return 0


def _in_file_terms(exc: ApiError, where: str) -> ApiError:
    """The daemon's refusal of a field of the request's `data` (the file's contents, e.g. "body.data[0].content
    is not valid Unicode text") said of the place in the file, which is what the user has: "F: [0].content ..."."""
    prefix = "body.data"
    if not exc.message.startswith(prefix):
        return exc
    place = exc.message[len(prefix) :].removeprefix(".")  # "[0].content ...", or " must be ..." (the whole file)
    return ApiError(exc.status, exc.code, f"{where}{'' if place.startswith(' ') else ': '}{place}", exc.details)


# each format's file, as `import-file --format` names it
_FILES = {
    "openai": "OpenAI chat messages",
    "json": "a sessiond session file (export --format json)",
    "chatgpt": "ChatGPT's conversations.json",
    "claude": "Claude's data export (conversations.json)",
    "openwebui": "an Open WebUI chat export",
}


def _not_of_format(exc: ApiError, data: Any, fmt: str | None) -> ApiError:
    """A file refused as malformed by the parser of the --format named, when the file's shape says for
    certain it is of another format (daemon/importers.detect, what a file without --format is read as): the
    parser's words say nothing of the format (Claude's names the file conversations.json). Said so, with the
    way on; any other refusal as it is, and so is one that names that --format already (a session file read as
    openai: the daemon's own words say what it is and the way on)."""
    if exc.code != "invalid" or fmt is None or fmt == "llm":
        return exc
    from ...daemon.formats import JSON_FORMAT
    from ...daemon.importers import detect
    from ...storage.errors import Invalid

    try:
        its = detect(data, JSON_FORMAT)
    except Invalid:  # its shape says nothing for certain: the parser's refusal stands
        return exc
    if its == fmt or its not in _FILES or f"--format {its}`" in exc.message:  # (the daemon's names it: once)
        return exc
    return ApiError(
        exc.status,
        exc.code,
        f"the file is shaped as {_FILES[its]} (--format {its}), not as --format {fmt}: import it with --format {its},"
        f" or leave --format out (read as {fmt}: {exc.message})",
        exc.details,
    )


def _too_large(path: str, limit: object) -> str:
    """An import refused as over the daemon's request limit (`limit`, bytes, as its answer names it), in the
    file's terms: its size (a file's, as the file system tells it: the request is not encoded again to learn
    it), the limit, the way on."""
    where, size = "standard input", ""
    if path != "-":
        where = path
        with contextlib.suppress(OSError):
            size = f" ({os.path.getsize(path) >> 20} MiB)"
    over = f"the {limit >> 20} MiB" if isinstance(limit, int) else "what"
    return (
        f"{where}{size} is over {over} a request to the daemon may carry: split it (its conversations,"
        f" or messages, into several files, each smaller) and import each"
    )


def cmd_import_file(args) -> int:
    fmt = args.format
    if fmt == "llm" and args.path == "-":
        raise CliError("llm's logs.db is a SQLite file: give its path, not standard input", EXIT_USAGE)
    if fmt == "llm" or (fmt is None and args.path != "-" and is_sqlite(args.path)):
        data, fmt = read_logs_db(args.path), "llm"
    else:
        data = read_json(args.path)
    c = client(args)
    try:
        with Progress(c, {"import-file"}):
            res = c.import_file(data, fmt)
    except ApiError as exc:
        if exc.code == "too_large":  # the whole file goes in one request
            raise CliError(_too_large(args.path, exc.details.get("limit"))) from None
        where = "standard input" if args.path == "-" else args.path
        raise _not_of_format(_in_file_terms(exc, where), data, fmt) from None
    if res["sessions"] or args.json:
        emit(args, res, "\n".join(s["id"] for s in res["sessions"]))
    if not args.json:
        for line in _again(res):
            print(safe(for_home(line, args.home)), file=sys.stderr)
    return 1 if any(s.get("reason") == "refused" for s in res.get("skipped", ())) else 0


def _again(res: ImportFileResult) -> list[str]:
    """What became of the file's conversations an earlier import made sessions of, a line each."""

    def said(s: Any) -> str:
        name = f"{s['name']!r}" if s.get("name") else "a conversation without a title"
        return f"# {name} ({s['source']} {s['conversation']})"

    def its(s: Any) -> str:  # a branch other than the history: named by its last message's node
        return f": its branch ending at node {s['branch']!r}" if s.get("branch") else ""

    lines = []
    for a in res.get("appended", ()):
        n = a["messages"]
        lines.append(f"{said(a)}{its(a)}: {n} new message{'s' * (n != 1)} appended to session {a['session']}")
    for d in res.get("diverged", ()):
        lines.append(
            f"{said(d)} differs from session {d['session']} before its new messages (continued here, or edited in"
            f" the app): imported as a new session {d['new_session']}, session {d['session']} left as it is"
        )
    for s in res.get("skipped", ()):
        if s.get("reason") == "refused":
            why = s.get("error", "refused")
            lines.append(f"{said(s)}{its(s)}: its new messages were not appended to session {s['session']}: {why}")
        else:
            lines.append(f"{said(s)}{its(s)} was already imported as session {s['session']}: nothing new, skipped")
    for b in res.get("branches", ()):
        lines.append(
            f"{said(b)}: its branch ending at node {b['node']!r} ({b['messages']} messages) is new: imported as"
            f" session {b['new_session']}, a fork of session {b['session']}"
        )
    return lines
