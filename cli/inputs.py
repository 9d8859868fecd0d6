"""What the CLI reads from the user besides options: text ('-' for standard input), files, and JSON."""

from __future__ import annotations

import json
import sys

from .errors import EXIT_USAGE, CliError


def read_text(text: str) -> str:
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("standard input is not UTF-8 text", EXIT_USAGE) from None
    return text


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text", EXIT_USAGE) from None


def read_json(path: str):
    """JSON from a file, or from standard input for '-'."""
    text = read_text("-") if path == "-" else read_file(path)
    try:
        return json.loads(text)
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
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None
