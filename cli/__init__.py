"""The command line, `sessiond` (main.py: its entry point). This module runs first, before the imports that take
most of a command's first half second: a Ctrl-C meanwhile ends the command with one line and exit code 130, as
one later does (errors.run_command), not with a traceback of whatever was being imported."""

import os
import signal
import sys
import time

INTERRUPTED = b"sessiond: interrupted (Ctrl-C)\n"
IMPORTED = time.monotonic()  # (when the process's own start cannot be read: this module's import, a little later)


def started() -> float:
    """When this process started, on time.monotonic()'s clock: a command's --timeout counts from there, the
    half second of its imports included, as whoever runs it counts it. Linux: /proc/self/stat's start time
    (10 ms steps); elsewhere this module's import."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime: clock ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return IMPORTED
    return time.monotonic() - max(0.0, age)  # (not IMPORTED: a process forked from one that imported it is newer)


# seconds a command takes after the daemon's answer: to print it and exit (its threads joined, the interpreter's end)
EXITING = 0.1


def time_left(timeout: float) -> float:
    """What is left of a command's `timeout` (from its start: started()) for the daemon's wait, its exit kept."""
    return max(0.0, timeout - (time.monotonic() - started()) - EXITING)


def _interrupted_starting(signum, frame) -> None:
    """SIGINT while the command starts: said as errors.fail says it (`--json`: the error on standard output too)."""
    if "--json" in sys.argv[1:]:
        os.write(1, b'{"error": {"code": "interrupted", "message": "interrupted (Ctrl-C)"}}\n')
    os.write(2, INTERRUPTED)
    os._exit(130)  # (nothing is written yet that an exit would have to finish)


def _run_as_command() -> bool:
    """Whether this process is the command (`sessiond ...`, `python -m sessiond.cli.main ...`), not a program
    importing the package (which keeps its own Ctrl-C): one run as `python -m tool` whose package imports this
    (sys.argv[0] is "-m" while Python locates the module it runs), or a script of its own named sessiond-x."""
    first = sys.argv[0] if sys.argv else ""
    if first == "-m":  # (the module asked for: `-m NAME` or `-mNAME` in the interpreter's own arguments)
        args = getattr(sys, "orig_argv", [])
        at = next((i for i, a in enumerate(args) if a.startswith("-m")), None)
        name = None if at is None else (args[at][2:] or (args[at + 1] if at + 1 < len(args) else ""))
        return name is not None and (name == "sessiond" or name.startswith("sessiond."))
    return os.path.splitext(os.path.basename(first))[0] == "sessiond"


AS_COMMAND = _run_as_command()
if AS_COMMAND and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_starting)


def _interrupted_once(signum, frame) -> None:
    """SIGINT while the command runs: a KeyboardInterrupt, which the command handles (`ask` closes its stream and
    says what the daemon kept); pressed again while it does so, or as it ends, nothing (was: a second press cut
    that short, or printed a second line "interrupted (Ctrl-C)" under it, or killed the command as it exited)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def started_up() -> None:
    """main()'s imports are done: Ctrl-C is a KeyboardInterrupt again, once (_interrupted_once), which the command
    itself handles. The command only: a program importing the package keeps its own Ctrl-C."""
    if AS_COMMAND and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _interrupted_starting):
        signal.signal(signal.SIGINT, _interrupted_once)


def settled() -> None:
    """main() has settled the command's outcome (its exit code, what it printed): a Ctrl-C from here on, while the
    interpreter ends (threads joined, the logging module's clean-up), changes nothing; else it cut that end with a
    traceback and the exit status was the signal's. The command only: a program importing the package keeps its
    own Ctrl-C."""
    handlers = (signal.default_int_handler, _interrupted_starting, _interrupted_once)
    if AS_COMMAND and signal.getsignal(signal.SIGINT) in handlers:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
