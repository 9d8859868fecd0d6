"""`sessiond`: the command line's entry point. Every command takes --home DIR and --json; every error
exits non-zero. The commands are in commands/, the parser in parser.py, failures in errors.py."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..daemon.home import resolve_home
from ..storage.redact import scrub_text
from . import settled, started_up
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, fail, run_command, stdout_to_null
from .options import option_error
from .output import UTF8_LOCALE_WAY, ascii_locale, fit_locale, watch_output
from .parser import ParseError, build_parser, dash_hint, is_utf8, not_utf8


def main(argv: list[str] | None = None) -> int:
    fit_locale()  # (what stdout and stderr cannot encode, escaped)
    watch_output()  # (a write to stdout that fails: said in one line, run_command)
    argv = sys.argv[1:] if argv is None else list(argv)
    wants_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
    early = argparse.Namespace(json=wants_json)
    try:
        return _main(argv, wants_json, early)
    except KeyboardInterrupt:  # (while the parser is made, before the command runs: run_command's own after)
        return fail(early, "interrupted", "interrupted (Ctrl-C)", EXIT_INTERRUPTED)
    finally:
        settled()  # (a Ctrl-C while the command exits changes nothing: cli/__init__.py)


def _flushed() -> bool:
    """Standard output written out now, or False (and pointed at /dev/null) when its reader closed the pipe."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_to_null()
        return False
    return True


def _main(argv: list[str], wants_json: bool, early: argparse.Namespace) -> int:
    started_up()  # Ctrl-C from here on: a KeyboardInterrupt, caught (not the start's own exit: cli/__init__.py)
    bad = not_utf8(argv)
    if bad:
        return fail(early, "usage", bad, EXIT_USAGE)
    parser = build_parser(wants_json, argv)  # (the command argv names built, the others listed)
    try:
        args = parser.parse_args(argv)
    except ParseError as exc:
        if not wants_json:
            exc.parser.print_usage(sys.stderr)
        where = exc.parser.prog.partition(" ")[2]  # the subcommand, if any
        said = scrub_text(
            f"{exc}{dash_hint(exc.parser, argv, str(exc))}"
        )  # (an argument quoted: a URL's secret hidden)
        return fail(early, "usage", f"{where}: {said}" if where else said, EXIT_USAGE)
    except SystemExit as exc:  # --version, --help: printed as the arguments are parsed, flushed here
        return int(exc.code or 0) if _flushed() else 0  # (else `| head -1`: the reader had what it wanted)
    except BrokenPipeError:  # (the same, written out as it was printed: a pipe's reader gone first)
        stdout_to_null()
        return 0
    if getattr(args, "fn", None) is None:
        if getattr(args, "command", None):  # a group (`sessiond chat`) without its action
            group = args.command
            return fail(args, "usage", f"{group}: give an action (see `sessiond {group} --help`)", EXIT_USAGE)
        if args.json:
            return fail(args, "usage", "give a command (see `sessiond --help`)", EXIT_USAGE)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prepare = getattr(args, "prepare", None)  # a command's own check of its arguments, before anything else
    if prepare is not None:
        try:
            prepare(args)
        except UsageError as exc:
            return fail(args, exc.kind, str(exc), exc.code)
    if args.home == "":  # `--home "$H"` with H unset: never read as "the default home"
        return fail(args, "usage", "--home is empty: give the home's folder, or leave --home out", EXIT_USAGE)
    if getattr(args, "data", None) == "":  # `serve --data "$D"` with D unset: never the default relay folder
        return fail(args, "usage", "--data is empty: give the relay's folder, or leave --data out", EXIT_USAGE)
    empty = _empty_argument(args)
    if empty:
        return fail(args, "usage", empty, EXIT_USAGE)
    home = resolve_home(args.home)
    unsure = _not_utf8_home(args.home, home)
    if unsure:
        return fail(args, "bad_home", unsure, EXIT_USAGE)
    if os.path.lexists(home) and not os.path.isdir(home):
        return fail(
            args,
            "bad_home",
            f"the home {home} is not a folder; give a folder with --home (or $SESSIOND_HOME)",
            EXIT_USAGE,
        )
    return run_command(args.fn, args, option_error)


def _not_utf8_home(given: str | None, home: str) -> str | None:
    """What is wrong with a home whose path is not UTF-8 text (Python carries its other bytes as lone
    surrogates, which its socket path, lock file and API cannot carry): bytes of another encoding in
    $SESSIOND_HOME or $XDG_DATA_HOME, or in the current folder's name of a relative --home."""
    try:
        home.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    if given:
        came = "its folder (--home)" if os.path.isabs(os.path.expanduser(given)) else "the current folder"
    else:
        came = "$SESSIOND_HOME" if os.environ.get("SESSIOND_HOME") else "$XDG_DATA_HOME or $HOME"
    raw = os.fsencode(home)
    shown = ascii(raw)[2:-1]
    if ascii_locale() and is_utf8(raw):  # (UTF-8, but Python reads paths as ASCII in this locale)
        return f"the home {shown} (from {came}) is not ASCII, all this locale reads; {UTF8_LOCALE_WAY}"
    return (
        f"the home {shown} is not UTF-8 text (from {came}); give a home whose path is UTF-8: "
        f"--home DIR, or $SESSIOND_HOME"
    )


def _empty_argument(args: argparse.Namespace) -> str | None:
    """What is wrong with a session ID or CHAT argument given empty (`sessiond show "$ID"` with ID unset):
    the daemon would be asked for a path with no id ("no such route"), or an empty chat."""
    if getattr(args, "id", None) == "" and args.command != "new":  # (new's `id` is its --id option)
        return "ID is empty: give a session's id (see `sessiond ls`)"
    if getattr(args, "chat", None) == "" and args.command == "chat":
        return f"CHAT is empty: give a chat's id or name (see `sessiond chat ls {shlex.quote(args.id)}`)"
    return None


if __name__ == "__main__":
    sys.exit(main())
