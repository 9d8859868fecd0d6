"""How the CLI fails: exit codes, CliError, and the one path that turns any failure into a message on
standard error (and, with --json, {"error": {"code", "message"}} on standard output, with the daemon's "details"
when its refusal has them)."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

from ..client import ApiError, ClientError, DaemonNotAnswering, DaemonNotRunning
from ..daemon.home import HomeError
from ..storage.redact import hide_share_codes
from .output import OutputFailed, for_home, safe

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT


class CliError(Exception):
    """A failure a command reports to the user; `code` is the exit code. `kind` is the JSON error code:
    "usage" for a usage exit (EXIT_USAGE, a UsageError too), "error" otherwise."""

    def __init__(self, message: str, code: int = EXIT_ERROR, kind: str | None = None):
        super().__init__(message)
        self.code = code
        self.kind = kind or ("usage" if code == EXIT_USAGE else "error")


class UsageError(CliError):
    """The arguments are wrong (exit code 2, JSON error code "usage")."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


def stuck(home: str | None, exc: ClientError) -> CliError:
    """What listens on the home's socket took the connection but failed to answer (`exc`): the daemon holding
    the home, stuck or stopped (its pid: `stop` ends it), or, when none holds it, another program, or a service's
    socket whose daemon did not start. Nothing in time (DaemonNotAnswering) is exit 3, as no daemon at all is:
    either way a script starts or restarts it; an answer that is no sessiond's stays an error (exit 1)."""
    from ..api.locate import read_lock, resolve_home, socket_path
    from ..daemon.homelock import holds_lock

    home = resolve_home(home)
    flag = f"--home {shlex.quote(home)}"
    pid = read_lock(home)[0]
    why = f"no answer within {exc.seconds:g} s" if isinstance(exc, DaemonNotAnswering) else str(exc)
    if pid is not None and holds_lock(pid, home):
        said = (
            f"the daemon (pid {pid}) holds this home but does not answer ({why}); `sessiond stop {flag}` ends it "
            f"(killing it if it must), then `sessiond start {flag}` starts it again"
        )
    else:
        said = (
            f"what listens on {socket_path(home)} does not answer ({why}), and no sessiond daemon holds this home: "
            "another program has its socket, or a service's daemon did not start (`sessiond service status`); end "
            f"that program (or remove the socket), then `sessiond start {flag}`"
        )
    if not isinstance(exc, DaemonNotAnswering):
        return CliError(said)
    if exc.done_unknown:
        said += "; the request may or may not have been done: check it before repeating it"
    return CliError(said, EXIT_NO_DAEMON, "daemon_not_answering")


def _unsure(exc: ClientError) -> str:
    """`exc`'s message; for a request that may or may not have been done (its key named, client/errors.keyed),
    the way on in the CLI's words, not the Python client's `idempotency_key=` (a command makes a new key each run)."""
    if exc.unsure is None:
        return str(exc)
    return exc.unsure + "check what it did (`sessiond log ID --last 5`, `sessiond show ID`) before running it again"


def _for_home(key: str, value: Any, args: Any) -> Any:
    """A refusal's detail as `--json` prints it: its CLI ways (`fix`, `owner`) for this home, as the message's."""
    home = getattr(args, "home", None)
    if key == "fix" and isinstance(value, str):  # (doctor's form, `sessiond COMMAND  # what it does`, or a message's)
        command, sep, note = value.partition("  # ")
        if sep and command.startswith("sessiond "):
            return f"{for_home(f'`{command}`', home)[1:-1]}  # {for_home(note, home)}"
        return for_home(value, home)
    if key == "owner" and isinstance(value, list):
        return [for_home(v, home) if isinstance(v, str) else v for v in value]
    return value


def fail(args: Any, code: str, message: str, exit_code: int, details: dict | None = None) -> int:
    """`details`: the daemon's refusal's (which store failed and how, when to retry, the ways on), in `--json` only;
    a model's answer it carries is `ask`'s to print, not repeated here. A share code in `message` (one typed where a
    file's name or an argument goes, quoted by the refusal) is named as one, not quoted."""
    message = hide_share_codes(for_home(message, getattr(args, "home", None)))  # (its commands, for this home)
    if getattr(args, "json", False):
        err: dict[str, Any] = {"code": code, "message": message}
        kept = {k: _for_home(k, v, args) for k, v in (details or {}).items() if k != "answer"}
        if kept:
            err["details"] = kept
        print(json.dumps({"error": err}))
    print(f"sessiond: {safe(message, keep_lines=True)}", file=sys.stderr)
    return exit_code


def stdout_to_null() -> None:
    """Standard output pointed at /dev/null once a write to it failed (a closed pipe, a full disk): what its
    buffer still holds is then not tried again at the exit, which would be Python's "Exception ignored" and
    exit code 120."""
    import os

    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def output_failed(exc: OSError) -> int:
    """A write to standard output failed: said on standard error alone (--json's error would go where the
    output could not), and standard output pointed at /dev/null, so that what its buffer still holds is not
    tried again at the exit."""
    stdout_to_null()
    print(
        f"sessiond: cannot write to standard output ({exc.strerror or exc}): what was printed is incomplete;"
        " is the disk holding the file it goes to full? Free some space, or send the output elsewhere",
        file=sys.stderr,
    )
    return EXIT_ERROR


def run_command(
    fn: Callable[[Any], int | None],
    args: Any,
    explain: Callable[[Any, ApiError], CliError | None] | None = None,
) -> int:
    """Run a command; every failure it may meet becomes a message and an exit code, never a traceback.
    `explain`: what the daemon's refusal means in the command's own words, if it can say (a value the
    user gave an option, refused as the API field it fills: cli/options.option_error)."""
    try:
        code = fn(args) or 0
        sys.stdout.flush()  # (here, not at the exit, where a failing write is Python's "Exception ignored")
        return code
    except OutputFailed as exc:
        return output_failed(exc)
    except DaemonNotRunning as exc:
        return fail(args, "daemon_not_running", _unsure(exc), EXIT_NO_DAEMON)
    except DaemonNotAnswering as exc:
        hung = stuck(getattr(args, "home", None), exc)
        return fail(args, hung.kind, str(hung), hung.code)
    except ApiError as exc:
        said = explain(args, exc) if explain is not None else None
        if said is not None:
            return fail(args, said.kind, str(said), said.code)
        return fail(args, exc.code, exc.message, EXIT_ERROR, exc.details)
    except CliError as exc:
        return fail(args, exc.kind, str(exc), exc.code)
    except HomeError as exc:  # (UnsafeSocket too, a ClientError: the client refused the socket's folder)
        return fail(args, "bad_home", str(exc), EXIT_ERROR)
    except ClientError as exc:
        return fail(args, "error", _unsure(exc), EXIT_ERROR)
    except UnicodeDecodeError:
        return fail(args, "usage", "standard input is not UTF-8 text", EXIT_USAGE)
    except KeyboardInterrupt:
        return fail(args, "interrupted", "interrupted (Ctrl-C)", EXIT_INTERRUPTED)
    except BrokenPipeError:  # (`sessiond ls | head -1`: the reader had what it wanted)
        stdout_to_null()
        return 0
