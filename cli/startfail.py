"""Why the daemon's start failed, said in one line: `sessiond daemon`'s error (a refusal of the home, a full
disk, a file it cannot write), the process ended at once when a store hangs, and what `start` shows of the
daemon it spawned (the last line that daemon wrote)."""

from __future__ import annotations

import os
import subprocess
import sys

from ..api.locate import resolve_home
from ..storage.errors import is_disk_full
from ..storage.redact import scrub_text
from .errors import EXIT_ERROR, EXIT_USAGE, CliError
from .forkstart import ForkedDaemon


def start_failure(args, exc: Exception) -> Exception:
    """What the daemon's failed start says (`start` shows the last line its daemon wrote: this one): a
    refusal of the home (HomeError), a full disk or a file it cannot write, in one line; any other as it is."""
    from ..daemon.home import HomeError

    if isinstance(exc, HomeError):
        return CliError(scrub_text(str(exc)), EXIT_USAGE)
    if not isinstance(exc, OSError):
        return exc
    # a start that met a full disk (the lock file, the device key, the store's folder)
    refused = unwritable(exc, resolve_home(args.home))
    if refused is not None:
        return refused
    if not is_disk_full(exc):
        return exc
    return CliError(
        f"cannot start: the disk holding {resolve_home(args.home)} is full ({exc.strerror or exc}"
        f"{': ' + exc.filename if exc.filename else ''}); free some space on it, then start again",
        EXIT_ERROR,
    )


def end_failed(args, exc: BaseException) -> None:
    """A start that failed while a store hangs (a write that never returns): its error said as run_command
    says it, then the process ended (its database closed already). Its exit would otherwise wait for the
    store's thread, as long as the store hangs (the stop does the same: daemon/server.py serve)."""
    import logging
    import traceback

    from .errors import run_command

    def said(_args) -> int:
        raise start_failure(args, exc) if isinstance(exc, Exception) else exc

    try:
        code = run_command(said, args)
    except BaseException:  # (not one run_command says: as the interpreter would show it)
        traceback.print_exception(exc)
        code = EXIT_ERROR
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def unwritable(exc: OSError, home: str) -> CliError | None:
    """A start that could not write in its home (a file system mounted read-only, a file not this user's to
    write): said in one line with the file, why and the way; None for another failure."""
    import errno

    if exc.errno == errno.EROFS:
        way = "its file system is mounted read-only: remount it read-write, or choose another home with --home"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        way = "it is not yours to write: give it back to your user, or choose another home with --home"
    else:
        return None
    return CliError(f"cannot start: cannot write {exc.filename or home} ({exc.strerror}); {way}", EXIT_ERROR)


def not_started(home: str, proc: subprocess.Popen | ForkedDaemon, out_path: str) -> CliError:
    """Why the daemon `start` spawned did not start: the last line written to daemon.out. Not the line of a
    daemon that found the home taken (this one's, losing to another start whose daemon then failed: that
    one's reason is the line before), unless it is the only one."""
    try:
        with open(out_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4000))
            tail = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        tail = []
    tail = [line for line in tail if "already running (or starting)" not in line] or tail
    # (the daemon writes its refusal as `sessiond: ...`, as this command does: the program named once)
    why = scrub_text(tail[-1]).removeprefix("sessiond: ") if tail else f"exit code {proc.returncode}"
    return CliError(f"the daemon did not start: {why}")
