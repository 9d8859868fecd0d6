"""Sync and sharing: `sync`, `verify`, `share`, `import` (a share code), `rekey`, `shares`, `devices`, `unshare`,
`gc`."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from ...client import ApiError
from ...storage.clock import wait_said
from .. import time_left
from ..connect import client
from ..errors import EXIT_ERROR, EXIT_USAGE, CliError, UsageError
from ..inputs import STORE_ARGV_WARNING, read_file, read_text, store_args
from ..options import YEARS_10, duration_in, seconds_up_to
from ..output import emit, for_home, safe, table, when
from ..progress import Progress, StoreWaits
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add("sync", cmd_sync, "push (and pull) now")
    p.add_argument("id", nargs="?")
    p.add_argument("--wait", action="store_true", help="wait until everything is pushed")
    p.add_argument(
        "--timeout",
        type=seconds_up_to(3600),
        default=60.0,
        help="how long to wait for the daemon, in seconds from the command's start: 0 to 3600 (default 60)",
    )
    p = commands.add("verify", cmd_verify, "check the store's copy of each session against this device")
    p.add_argument("id", nargs="?")

    p = commands.add("share", cmd_share, "print a share code for a session (read-only unless --write)")
    p.add_argument("id")
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
    p = commands.add(
        "import", cmd_import, "import a session from a share code (read from standard input) and keep it in sync"
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

    p = commands.add("rekey", cmd_rekey, "rotate a shared session's key; old codes read nothing written after it")
    p.add_argument("id")
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
    p.add_argument("id")
    p = commands.add("unshare", cmd_unshare, "end access to a session by a rekey: one device, or every other one")
    p.add_argument("id")
    p.add_argument(
        "--device",
        metavar="D",
        help="only this writer device loses access (default: every other device); find D with `sessiond devices ID`",
    )
    p = commands.add("gc", cmd_gc, "free store objects this device's logs no longer reference")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="count what would be freed; free nothing")
    p.add_argument(
        "--grace",
        type=duration_in(0, YEARS_10),
        help="only objects let go at least this long ago, with its unit (e.g. 12h, 7d; 0 for all; at most 10 years; "
        "default 24h)",
    )


def _trying_again(left: float) -> str:
    """What `sync --wait` does while a push or a pull fails: `left`, the seconds left of its --timeout."""
    return (
        f"trying again until --timeout ({left:.0f} s left; Ctrl-C stops waiting, the daemon goes on trying by itself)"
    )


def cmd_sync(args) -> int:
    c = client(args)
    if args.wait:  # a first push, or a long one: its progress from the daemon, on a terminal
        # --timeout counts from the command's start, as whoever runs it counts it (its imports took ~0.4 s of it)
        timeout = time_left(args.timeout)
        waits = StoreWaits(c, args.id, timeout, _trying_again)
        res = None
        try:
            with Progress(c, {"push"}, {args.id} if args.id else None):
                # (counted again: opening the progress's and the store's event streams took some of it)
                res = c.sync(args.id, wait=True, timeout=time_left(args.timeout))
        finally:
            waits.close(expected=res is not None and any(st.get("retry_after") for st in res["sessions"].values()))
    else:
        res = c.sync(args.id, wait=False, timeout=args.timeout)
    lines = []
    asked_to_wait = []  # sessions whose store asked (Retry-After) to wait past this command's timeout
    for sid, st in res["sessions"].items():
        waiting = bool(st.get("retry_after") and st["pending"])
        if waiting:
            asked_to_wait.append(st.get("retry_in") or 0)
        lines.append(
            f"{sid}: {st['state']}, revision {st['head_rev']}, {st['pending']} pending"
            + (
                f", last error: {for_home(st['last_error'], args.home)}"
                if st.get("last_error") and st["pending"]
                else ""
            )
            + (f", next try in {wait_said(st.get('retry_in', 0))} as the store asked (Retry-After)" if waiting else "")
            + (f", cannot pull: {for_home(st['pull_error'], args.home)}" if st.get("pull_error") else "")
            + (f", waiting for {', '.join(st['waiting_for'])} (away through a rekey)" if st.get("waiting_for") else "")
        )
    if args.wait and res.get("stopping"):  # cut short by the daemon's stop: not the store's doing
        lines.append(
            "the daemon is stopping: not everything could be "
            + ("pulled" if res["pushed"] else "pushed")
            + " before it stopped; it goes on once the daemon runs again "
            + for_home("(`sessiond start`, then `sessiond sync --wait` to wait for it)", args.home)
        )
    elif args.wait:
        lines.append(
            "all pushed and pulled"
            if res["complete"]
            else "not everything could be pushed: the store asked (Retry-After) to wait "
            f"{wait_said(max(asked_to_wait))} before the next try, past the end of --timeout {args.timeout:g} s; the "
            "daemon tries again then by itself "
            + for_home(f"(or run `sessiond sync --wait --timeout {max(asked_to_wait) + 30:.0f}`)", args.home)
            if not res["pushed"] and asked_to_wait
            else "not everything could be pushed yet (see errors above)"
            if not res["pushed"]
            else "everything is pushed, but not everything could be pulled (see errors above)"
        )
    else:
        lines.append("sync requested")
    emit(args, res, "\n".join(lines))
    return 0 if res["complete"] or not args.wait else EXIT_ERROR


def cmd_verify(args) -> int:
    c = client(args)
    with Progress(c, {"verify"}, {args.id} if args.id else None):
        rep = c.verify(args.id)
    lines = []
    for s in rep["sessions"]:
        if s["ok"] and s["revision"] is None and s.get("devices"):  # no log of its own: a follower's
            n = s["devices"]
            lines.append(
                f"ok      {s['session']}: {s['operations']} operations of {n} other device{'s' * (n != 1)} checked,"
                " none written here"
            )
        elif s["ok"]:
            lines.append(
                f"ok      {s['session']}: revision {s['revision']}, {s['objects']} objects, "
                f"{s['operations']} operations" + (f", {s['unpushed']} not yet pushed" if s["unpushed"] else "")
            )
        elif s.get("store_failure"):  # the store failed: nothing is known of the session, it is not damaged
            lines.append(f"UNCHECKED {s['session']}: {for_home(s['store_failure'], args.home)}")
        else:
            lines.append(f"FAILED  {s['session']}:")
            lines += [f"          {for_home(p, args.home)}" for p in s["problems"]]
            if s.get("repair"):
                lines.append(f"          (to repair: {for_home(s['repair'], args.home)})")
            if s.get("upgrade"):  # written by a newer sessiond: not damaged, this device upgrades
                lines.append(f"          (newer, not damaged: {for_home(s['upgrade'], args.home)})")
        for st in s.get("stores", []):  # a mirror's store that could not be asked whether it holds it all
            if st.get("not_checked"):
                lines.append(f"          store {st['url']} not checked: {for_home(st['not_checked'], args.home)}")
        # another device's log in some of a mirror's stores, not all: each device pushes to the stores it names
        lines += [f"          note: {for_home(n, args.home)}" for n in s.get("notes", ())]
        if s.get("waiting"):  # writers away through a rekey, whose logs are not here to check yet
            lines += [f"          not yet checked: {for_home(w, args.home)}" for w in s["waiting"]]
    if not rep["sessions"]:
        lines.append("no sessions to verify")
    emit(args, rep, "\n".join(lines))
    return 0 if rep["ok"] else EXIT_ERROR


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


def cmd_share(args) -> int:
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


def cmd_import(args) -> int:
    # A share code is a secret: it is read from standard input (or a file), never taken from the
    # command line, where every local user could see it in `ps`.
    if args.code not in (None, "-"):
        raise CliError(
            "give the share code on standard input (e.g. `sessiond import < code.txt`, or paste it at "
            "the prompt), not on the command line, where other users could read it in `ps`",
            EXIT_USAGE,
        )
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
        with Progress(c, {"import"}):
            res = c.import_code(code, passphrase, store=store[0] if store else None)
    except ApiError as exc:
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


def cmd_gc(args) -> int:
    res = client(args).gc(grace=args.grace, dry_run=args.dry_run)
    verb = "would free" if res["dry_run"] else "freed"
    lines = [f"{verb} {res['objects']} object(s), {res['bytes']} bytes; {res['kept']} kept (young or referenced)"]
    for st in res["stores"]:
        how = st["how"]  # "deleted" or "unpinned": what a real run does; else why the store could not be asked
        if res["dry_run"] and how in ("deleted", "unpinned"):
            how = f"would be {how}"
        lines.append(f"  {st['store']}: {st['objects']} object(s), {st['bytes']} bytes ({how})")
        lines += [f"    {e}" for e in st.get("errors", []) + st.get("held", [])]
    if res.get("kept_in_store"):  # (what deletes here kept for frozen logs: never freed, said at every run)
        lines.append("kept in the store for good by deletes here (never freed):")
        lines += [
            f"  {k['session']}: {k['objects']} object(s) in {k['store']}: {k['why']}" for k in res["kept_in_store"]
        ]
    emit(args, res, "\n".join(lines))
    # a store that failed (its sessions' objects kept, or the store not opened): what was due is not freed, and a
    # script running gc learns it by the exit code, as verify's and doctor's do
    failed = any(st.get("errors") or st["how"].startswith("cannot open") for st in res["stores"])
    return EXIT_ERROR if failed else 0
