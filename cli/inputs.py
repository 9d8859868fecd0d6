"""What the CLI reads from the user besides options: text ('-' for standard input), files, and JSON."""

from __future__ import annotations

import os
import sys

from ..api.jsonkeys import DuplicateKey, loads
from .errors import EXIT_USAGE, CliError


def read_text(text: str) -> str:
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("standard input is not UTF-8 text", EXIT_USAGE) from None
    return text


def message_text(text: str) -> str:
    """A message's or a prompt's text: as given, or for '-' standard input less the one line end that
    ends it (`echo hi | sessiond add ID --role user -` stores "hi", as `$(...)` in a shell would);
    line ends within it, and any further blank lines at its end, are kept."""
    if text != "-":
        return text
    data = read_text("-")
    return data[:-2] if data.endswith("\r\n") else data[:-1] if data.endswith("\n") else data


def prompt_text(text: str, option: str = "--system") -> str:
    """A system prompt's text as message_text reads it; '-' with nothing (or only blank space) on standard
    input is refused, as add and ask refuse an empty message: an empty pipe (`set ID --system - <
    missing-output`) would otherwise replace the prompt with nothing. `--unset system` clears it on purpose."""
    prompt = message_text(text)
    if text == "-" and not prompt.strip():
        raise CliError(
            f"{option} -: standard input is empty; give the prompt there (or as {option} TEXT)"
            " (to clear a prompt: --unset system)",
            EXIT_USAGE,
        )
    return prompt


def read_file(path: str, option: str | None = None) -> str:
    """A text file's content; one that cannot be read is refused naming the `option` it was given to, if any."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        said = f"{option} {path}: cannot read it" if option else f"cannot read {path}"
        raise CliError(f"{said}: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{option + ' ' if option else ''}{path} is not UTF-8 text", EXIT_USAGE) from None


def read_json(path: str):
    """JSON from a file, or from standard input for '-'."""
    text = read_text("-") if path == "-" else read_file(path)
    try:
        return loads(text)
    except DuplicateKey as exc:
        raise CliError(exc.message("standard input" if path == "-" else path, "give"), EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"{'standard input' if path == '-' else path} is not JSON: {exc}", EXIT_USAGE) from None
    except RecursionError:
        raise CliError(
            f"{'standard input' if path == '-' else path} is nested too deeply to be read", EXIT_USAGE
        ) from None


def json_arg(text: str | None, what: str):
    """An option's value given as JSON text (e.g. --metadata)."""
    if text is None:
        return None
    try:
        return loads(text)
    except DuplicateKey as exc:
        raise CliError(exc.message(what, "give"), EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None
    except RecursionError:
        raise CliError(f"{what} is nested too deeply to be read", EXIT_USAGE) from None


STORE_ARGV_WARNING = (
    "; a URL given here (with an invite or password in it) is visible to every local user in `ps`: "
    "give such a URL with --store-file"
)


def store_from_file(path: str) -> list[str]:
    """Store URLs from a file ('-': standard input), one a line; blank lines and # comments skipped. A
    store URL can carry a secret (an invite, a password): read this way it never is in argv."""
    if path != "-" and "://" in path and not os.path.exists(path):  # the URL itself given where its file goes
        from ..daemon.urlguess import quoted_url

        raise CliError(
            f"--store-file takes a file holding the store URL, not the URL ({quoted_url(path)}, its credentials not"
            " quoted here): put it in a file, one a line, or give it on standard input with --store-file -",
            EXIT_USAGE,
        )
    if path != "-" and ("@" in path or "//" in path or ":" in path) and not os.path.exists(path):
        # (a URL's slip, its scheme left out or a ':' short, `INVITE@HOST:PORT`, `s5+http//INVITE@HOST`, or its '@'
        # typed ':' with a '/' short or none, `s5:/INVITE:HOST:PORT`, `INVITE:HOST:PORT`: no file's)
        raise CliError(
            "--store-file: no such file (its name not quoted here: it looks like the store URL itself, an invite or"
            " a password in it); the option takes a file holding the store URL, one a line, or - for standard input",
            EXIT_USAGE,
        )
    text = read_text("-") if path == "-" else read_file(path, "--store-file")
    urls = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not urls:
        where = "standard input" if path == "-" else path
        raise CliError(
            f"--store-file: {where} holds no store URL (one a line, e.g. s5+http://INVITE@HOST:PORT)", EXIT_USAGE
        )
    return urls


def store_args(args) -> list[str] | None:
    """The store URLs of --store (repeatable or one) and --store-file together; None if neither."""
    given = args.store if isinstance(args.store, list) else [args.store] if args.store else []
    if getattr(args, "store_file", None):
        given = [*given, *store_from_file(args.store_file)]
    hide_store_secrets(given)
    return given or None


def hide_store_secrets(urls: list[str]) -> None:
    """The credentials of the store URLs given hidden by value from every error this process prints."""
    from ..storage.redact import hide_everywhere, url_secrets

    hide_everywhere(*(secret for url in urls for secret in url_secrets(url)))


def read_fd(fd: int) -> str:
    """All of what an inherited file descriptor (a pipe from `sessiond start`) holds, to its end; closed."""
    with open(fd, "rb", closefd=True) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"file descriptor {fd} did not hold UTF-8 text", EXIT_USAGE) from None
