"""Sharing: `share` (a share code), `import` (a session from one), `rekey`, `shares` (the codes issued),
`devices` (a session's, and their access), `unshare`. Registered by sync.py, for their place in `sessiond
--help` between `verify` and `gc`."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from ...client import ApiError
from ..connect import client
from ..errors import EXIT_USAGE, CliError, UsageError
from ..inputs import STORE_ARGV_WARNING, read_file, read_text, store_args
from ..options import ID_HELP, YEARS_10, duration_in
from ..output import emit, for_home, safe, table, when
from ..progress import Progress, StoreWaits
from . import Arguments, Commands


def register(commands: Commands) -> None:
    p = commands.add("share", cmd_share, "print a share code for a session (read-only unless --write)", unquoted=True)
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--write", action="store_true", help="let the importer add to the session too")
    p.add_argument(
        "--passphrase-file",
        dest="passphrase_file",
        help="protect the code with the passphrase in this file ('-': standard input)",
    )
    p.add_argument(
        "--expires",
        type=duration_in(1, YEARS_10),
        help="the code stops working after this long, with its unit (1 second to 10 years, e.g. 1h, 7d)",
    )
    p.add_argument("--qr", action="store_true", help="also print it as a QR code")
    _secret_options(p)
    p = commands.add(
        "import",
        cmd_import,
        "import a session from a share code (read from standard input) and keep it in sync",
        unquoted=True,
    )
    p.add_argument("code", nargs="?", help=argparse.SUPPRESS)
    p.add_argument(
        "--code-file", dest="code_file", help="read the code from this file ('-', or by default: standard input)"
    )
    p.add_argument("--passphrase-file", dest="passphrase_file", help="file holding the code's passphrase ('-': stdin)")
    p.add_argument(
        "--store",
        help="the store the session is in, when neither this daemon's store nor the code's hints hold it"
        + STORE_ARGV_WARNING,
    )
    p.add_argument(
        "--store-file",
        dest="store_file",
        metavar="PATH",
        help="read that store's URL from this file instead of --store ('-': standard input, then give the "
        "code with --code-file): an invite or password in it stays out of the process list",
    )
    _secret_options(p, code=True)

    p = commands.add("rekey", cmd_rekey, "rotate a shared session's key; old codes read nothing written after it")
    p.add_argument("id", help=ID_HELP)
    p.add_argument(
        "--drop",
        action="append",
        metavar="DEVICE",
        help="a writer device that loses access (repeatable; find it with `sessiond devices ID`)",
    )

    p = commands.add("shares", cmd_shares, "list the share codes this device issued (never the codes themselves)")
    p.add_argument("id", nargs="?", help="only this session's")
    p = commands.add(
        "devices",
        cmd_devices,
        "list a session's devices as this daemon knows them: writers, messages, and last seen: the time of its "
        "latest write held here, by its own clock (not when it last ran or pulled)",
    )
    p.add_argument("id", help=ID_HELP)
    p = commands.add("unshare", cmd_unshare, "end access to a session by a rekey: one device, or every other one")
    p.add_argument("id", help=ID_HELP)
    p.add_argument(
        "--device",
        metavar="D",
        help="only this writer device loses access (default: every other device); find D with `sessiond devices ID`",
    )


def _passphrase(path: str | None, confirm_hint: str) -> str | None:
    """Passphrases come from a file (or '-' for standard input), never from the command line."""
    if path is None:
        return None
    data = read_text("-") if path == "-" else read_file(path, "--passphrase-file")
    phrase = data.rstrip("\r\n")
    if not phrase:  # (--passphrase-file -: there is no file to name)
        said = "standard input holds no passphrase" if path == "-" else f"the passphrase file {path} is empty"
        raise CliError(said + confirm_hint, EXIT_USAGE)
    return phrase


def _share_meanwhile(_left: float) -> str:
    return (
        "the share waits for its store (as long as a store call may take: store_timeout in config.toml),"
        " then is refused, no code made"
    )


def _secret_options(p: Arguments, code: bool = False) -> None:
    """`--passphrase` (and import's `--code`), the options a newcomer guesses, taken so that they are refused as
    such (_secret_given): argparse read them as --passphrase-file and --code-file abbreviated, and the refusal of
    a file it could not read quoted the passphrase or the code."""
    p.add_argument("--passphrase", dest="passphrase_given", help=argparse.SUPPRESS)
    if code:
        p.add_argument("--code", dest="code_given", help=argparse.SUPPRESS)


def _secret_given(args) -> None:
    """A passphrase or a share code given on the command line (_secret_options, or where its file's name goes):
    refused quoting none of it. One naming a file that is there ('-': standard input) is that file, as the
    abbreviation always took it."""
    import os

    for given, dest in (("code_given", "code_file"), ("passphrase_given", "passphrase_file")):
        value = getattr(args, given, None)
        if value is not None and getattr(args, dest) is None and (value == "-" or os.path.isfile(value)):
            setattr(args, dest, value)
            setattr(args, given, None)
    code_file = getattr(args, "code_file", None)
    if getattr(args, "code_given", None) is not None or (
        code_file not in (None, "-") and code_file.startswith("sessiond1") and not os.path.exists(code_file)
    ):  # (--code-file CODE: the code where its file goes)
        raise CliError(_CODE_ON_COMMAND_LINE, EXIT_USAGE)
    passphrase_file = args.passphrase_file
    if passphrase_file not in (None, "-") and not os.path.exists(passphrase_file):
        raise CliError(  # (not quoted: typed where its file goes, the passphrase itself, a '/' in it or not)
            "--passphrase-file: no such file (its name not quoted here, in case it is the passphrase itself: the"
            " option takes a file holding the passphrase, a relative path read from the current folder, or - to"
            " type it on standard input)",
            EXIT_USAGE,
        )
    if args.passphrase_given is not None:
        raise CliError(
            "--passphrase takes no passphrase on the command line, where other users could read it in `ps` (not"
            " quoted here): put it in a file and give --passphrase-file FILE, or --passphrase-file - to type it on"
            " standard input",
            EXIT_USAGE,
        )


_CODE_ON_COMMAND_LINE = (
    "give the share code on standard input (e.g. `sessiond import < code.txt`, or paste it at "
    "the prompt), not on the command line, where other users could read it in `ps`"
)


def cmd_share(args) -> int:
    _secret_given(args)
    passphrase = _passphrase(args.passphrase_file, "")
    c = client(args)
    waits = StoreWaits(c, args.id, 0.0, _share_meanwhile, pulls=False)  # (a session is shared once pushed)
    try:
        res: dict[str, Any] = dict(
            c.share(args.id, write=args.write, passphrase=passphrase, expires_in=args.expires)
        )  # a plain dict: --qr adds "qr" to what is printed
    finally:
        waits.close()
    lines = [res["code"]]
    if not args.json:
        grant = (
            "read-write: whoever imports it can read the whole session and add to it"
            if args.write
            else "read-only: whoever imports it can read the whole session and follow it"
        )
        notes = [f"# {grant}"]
        if res.get("expires_at"):
            notes.append(f"# expires {when(res['expires_at'])}")
        if res.get("locations"):  # what the code says of where the session is
            notes.append(
                "# found through: " + ", ".join(f"{p['network']} ({p['hint'] or 'no hint'})" for p in res["locations"])
            )
        if res.get("protected"):
            notes.append("# protected by your passphrase: send the passphrase another way")
        else:
            notes.append("# anyone who sees this code can read the session: send it privately")
        print(safe("\n".join(notes), keep_lines=True), file=sys.stderr)
    if args.qr:
        import io

        import segno

        buf = io.StringIO()
        segno.make(res["code"], error="l").terminal(out=buf, compact=True)
        res["qr"] = buf.getvalue()
        if not args.json:  # standard output carries the code alone, so `share --qr | sessiond import` works
            print(buf.getvalue(), file=sys.stderr)
    emit(args, res, "\n".join(lines))
    return 0


def cmd_rekey(args) -> int:
    res = client(args).rekey(args.id, args.drop or [])
    lines = [
        f"rekeyed {res['session']}: {len(res['kept'])} other device(s) keep access"
        + (f" ({', '.join(res['kept'])})" if res["kept"] else ""),
        "read-only followers and every earlier share code can read nothing written from now on;",
        for_home(
            "what they already fetched stays with them. Make new codes with "
            f"`sessiond share {shlex.quote(res['session'])}` (add --write for a device that writes).",
            args.home,
        ),
    ]
    if res["dropped"]:
        lines.insert(1, f"dropped: {', '.join(res['dropped'])}")
    if res.get("already_dropped"):  # (an older daemon answers none)
        lines.insert(2, f"dropped already: {', '.join(res['already_dropped'])} (by an earlier rekey: no writer since)")
    emit(args, res, "\n".join(lines))
    return 0


_QR = set(" █▀▄")  # the characters of `share --qr`'s terminal QR code


def _without_notes(text: str) -> str:
    """A share code as `share` printed it: its notes (lines starting with '#', on standard error, kept by
    `share ... > code.txt 2>&1` or a paste of the terminal) and `--qr`'s QR code (standard error too) left out,
    as at the prompt, and blank lines."""
    kept = (line for line in text.splitlines() if not line.lstrip().startswith("#") and not set(line) <= _QR)
    return "\n".join(kept).strip()


def _code_at_prompt() -> str:
    """The share code typed or pasted at the terminal, not shown as it comes (a secret, as getpass reads
    it). A paste of what `share` showed holds its notes ('#' lines) and maybe its QR code above the code:
    those lines and blank ones are skipped, and the first other line is the code (getpass read the first
    line, a note, and the import failed). What a paste holds past the code is dropped, not left for the
    shell to run."""
    import termios

    fd = sys.stdin.fileno()
    sys.stderr.write("share code (or share's whole output): ")
    sys.stderr.flush()
    before = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSADRAIN, quiet)  # (not FLUSH, as getpass: a paste may be under way)
    try:
        while line := sys.stdin.readline():
            text = line.strip()
            if text and not text.startswith("#") and not set(text) <= _QR:
                return text
        return ""  # Ctrl-D: the daemon says no code is no code
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, before)
        sys.stderr.write("\n")


# the store an import names, as the daemon's refusals say it (sync/findstore.py ANOTHER_STORE) and as the CLI does
API_STORE = ", in the import's `store`"
CLI_STORE = " with --store URL (or --store-file FILE: a URL holding an invite or password)"


def _folder_from_here(url: str) -> str:
    """A store given as a folder's relative path (`./shared`, `file:shared`), made absolute from where the command
    runs: the daemon, which reads it, runs in the folder it was started in (and refuses a relative one). Any other
    (a URL, an absolute path, what the daemon refuses as a URL with its scheme left out) as given."""
    import os

    from ...daemon.urlguess import relative_folder

    path = relative_folder(url)
    return url if path is None else os.path.abspath(path)


def cmd_import(args) -> int:
    # A share code is a secret: it is read from standard input (or a file), never taken from the
    # command line, where every local user could see it in `ps`.
    if args.code not in (None, "-"):
        raise CliError(_CODE_ON_COMMAND_LINE, EXIT_USAGE)
    _secret_given(args)
    if args.store == "":  # `--store "$URL"` with URL unset: never read as "no --store"
        raise UsageError("import: --store is empty: give the store's URL, or leave --store out")
    # Standard input is read to its end once: the code (its default), a passphrase or a store URL, not two.
    from_stdin = [
        what
        for what, path in (
            ("the share code", args.code_file or "-"),
            ("--passphrase-file -", args.passphrase_file),
            ("--store-file -", args.store_file),
        )
        if path == "-"
    ]
    if len(from_stdin) > 1:
        raise UsageError(
            f"import: {' and '.join(from_stdin)} cannot {'both' if len(from_stdin) == 2 else 'all'} come from "
            "standard input (it is read once, to its end): give one of them there and the others in files "
            "(the code with --code-file FILE)"
        )
    store = store_args(args)  # (before the code is read, or asked for at a prompt: an argument's error first)
    if store is not None and len(store) > 1:
        raise CliError("import: give one store (--store or one URL in --store-file), not several", EXIT_USAGE)
    if store is not None:
        store = [_folder_from_here(store[0])]
    passphrase = _passphrase(args.passphrase_file, "")
    if args.code_file:
        code = _without_notes(read_text("-") if args.code_file == "-" else read_file(args.code_file, "--code-file"))
    elif sys.stdin.isatty():
        code = _code_at_prompt()
    else:
        code = _without_notes(read_text("-"))
    if not code.strip():  # an empty file or pipe: no code at all, not a wrong one
        where = f"in {args.code_file}" if args.code_file not in (None, "-") else "on standard input"
        raise UsageError(
            f"no share code {where}: give it there (`sessiond import < code.txt`, or paste it at the prompt)"
        )
    c = client(args)
    try:
        # (a code whose slot holds a rekey notice: its author's older manifests read, up to a thousand: `claims`)
        with Progress(c, {"import", "claims"}, labels={"claims": "import: reading older manifests of"}):
            res = c.import_code(code, passphrase, store=store[0] if store else None)
    except ApiError as exc:
        if exc.code in ("store_needed", "store") and API_STORE in exc.message:
            # the daemon names its request's field (sync/findstore.py ANOTHER_STORE); a user of the CLI gives the
            # options (the refusal's code and details kept, for --json)
            said = exc.message.replace(API_STORE, CLI_STORE)
            raise ApiError(exc.status, exc.code, said, exc.details) from None
        if exc.code != "passphrase_required":
            raise
        # the daemon names its request's field (sync/sharecode.py); a user of the CLI gives the option (the
        # refusal's code and details kept, for --json)
        said = (
            "this share code is protected by a passphrase: give it with --passphrase-file FILE"
            " ('-': standard input, the code then given with --code-file FILE)"
        )
        raise ApiError(exc.status, exc.code, said, exc.details) from None
    emit(args, res, res["session"])
    if not args.json:
        print(
            safe(
                f"# imported {res['session']} ({res['capability']}"
                + (", already here: brought up to date" if res.get("already") else "")
                + ")"
            ),
            file=sys.stderr,
        )
        if res.get("waiting_for"):
            print(
                safe(
                    f"# not yet here: what device(s) {', '.join(res['waiting_for'])} wrote; they have not taken the"
                    " session's latest rekey (away meanwhile), and their messages arrive once they have"
                ),
                file=sys.stderr,
            )
        if res.get("unchecked_checkpoints"):
            named = ", ".join(
                f"{p['number']} of device {p['device']} (version {p['v']})" for p in res["unchecked_checkpoints"]
            )
            print(
                safe(
                    f"# not checked: checkpoint(s) {named}, of a version this sessiond does not know (a newer one"
                    " made them); kept with the session: update sessiond to verify them"
                ),
                file=sys.stderr,
            )
    return 0


def cmd_shares(args) -> int:
    res = client(args).shares(args.id)
    rows = [
        [
            s["id"],
            s["session"],
            s["capability"],
            when(s["created_at"]),
            when(s["expires_at"]) if s["expires_at"] else "never",
            "yes" if s["protected"] else "no",
            s["status"],
        ]
        for s in res["shares"]
    ]
    human = (
        table(rows, ["#", "session", "access", "issued", "expires", "passphrase", "status"])
        if rows
        else "no share codes issued from this device" + (f" for {args.id}" if args.id else "")
    )
    emit(args, res, human)
    return 0


def _access(d: Mapping[str, object]) -> str:
    if d["writer"]:
        return "writer"
    if d["frozen"]:
        return "dropped by a rekey"
    return "read-only" if d["this_device"] else "not a writer"


def cmd_devices(args) -> int:
    res = client(args).devices(args.id)
    rows = [
        [
            d["device"] + (" (this device)" if d["this_device"] else ""),
            _access(d),
            d["messages"],
            when(d["last_message_at"]),
            when(d["last_seen"]),
        ]
        for d in res["devices"]
    ]
    lines = [table(rows, ["device", "access", "messages", "last message", "last seen"])]
    lines += [f"{d['device']}: {d['note']}" for d in res["devices"] if d["note"]]
    if not res["shared"]:
        lines.append(f"session {res['session']} is not shared: this device alone writes it")
    emit(args, res, "\n".join(lines))
    return 0


def cmd_unshare(args) -> int:
    res = client(args).unshare(args.id, args.device)
    who = f"device {args.device}" if args.device else "every other device"
    lines = [
        f"rekeyed {res['session']}: {who} can read nothing written from now on"
        + (f" (dropped: {', '.join(res['dropped'])})" if res["dropped"] else "")
        + (
            f"; dropped already by an earlier rekey: {', '.join(res['already_dropped'])}"
            if res.get("already_dropped")
            else ""
        ),
        f"{res['codes_revoked']} code(s) issued here stop working"
        + (f"; {len(res['kept'])} writer device(s) keep access ({', '.join(res['kept'])})" if res["kept"] else ""),
        "What this cannot take back:",
        *(f"  - {for_home(note, args.home)}" for note in res["cannot_take_back"]),
    ]
    emit(args, res, "\n".join(lines))
    return 0
