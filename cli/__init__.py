"""The command line, `sessiond` (main.py: its entry point). This module runs first, before the imports that take
most of a command's first half second: a Ctrl-C meanwhile ends the command with one line and exit code 130, as
one later does (errors.run_command), not with a traceback of whatever was being imported."""

import os
import signal
import sys

INTERRUPTED = b"sessiond: interrupted (Ctrl-C)\n"


def _interrupted_starting(signum, frame) -> None:
    """SIGINT while the command starts: said as errors.fail says it (`--json`: the error on standard output too)."""
    if "--json" in sys.argv[1:]:
        os.write(1, b'{"error": {"code": "interrupted", "message": "interrupted (Ctrl-C)"}}\n')
    os.write(2, INTERRUPTED)
    os._exit(130)  # (nothing is written yet that an exit would have to finish)


def _run_as_command() -> bool:
    """Whether this process is the command (`sessiond ...`, `python -m sessiond.cli.main ...`), not a program
    importing the package (which keeps its own Ctrl-C)."""
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first).startswith("sessiond")


if _run_as_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_starting)


def started_up() -> None:
    """main()'s imports are done: Ctrl-C is a KeyboardInterrupt again, which the command itself handles."""
    if signal.getsignal(signal.SIGINT) is _interrupted_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
