"""What the CLI prints: JSON for scripts (--json, the exact data) or text for people, with every
untrusted string made safe for a terminal first; tables and the formats of times and short texts."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any

# Invisible format characters (Unicode's Cf, and the line and paragraph separators): the bidirectional
# controls (U+202A-U+202E embeddings and overrides, U+2066-U+2069 isolates, U+200E/U+200F/U+061C marks)
# make a terminal show text in another order than it is (a synced message or name could show as
# something it is not, "Trojan Source"), and the zero-width ones, U+FEFF and the tag characters hide
# text. All but the zero-width (non-)joiners, U+200C/U+200D, which scripts and emoji sequences need.
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")


def _escape(m: re.Match) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def safe(text: Any, keep_lines: bool = False) -> str:
    """Text as a terminal may show it: control characters (which could move the cursor, recolour or
    rewrite the screen), invisible format characters (bidirectional overrides and isolates, which show
    text reordered; zero-width ones, which hide it; see _FORMAT) and lone surrogates become escapes like
    \\x1b or \\u202e. Only for human output; --json prints the exact text."""
    text = "" if text is None else str(text)
    return (_CONTROL_BUT_LINES if keep_lines else _CONTROL).sub(_escape, text)


_QUOTED_COMMAND = re.compile(r"`(sessiond [^`]*)`(?! on (?!this\b))")  # not one "on device X", "on a writer"
_GROUPS = ("chat", "key", "service")  # commands whose action is a second word


def _command_for(command: str, home_arg: str) -> str:
    words = command.split(" ")
    if "--home" in words or "--help" in words or len(words) < 2 or words[1] == "serve":  # (serve: the relay's)
        return command
    at = 3 if words[1] in _GROUPS and len(words) > 2 and not words[2].startswith("-") else 2
    return " ".join(words[:at] + [home_arg] + words[at:])


def for_home(text: str, home: str | None) -> str:
    """`text` (a message, the daemon's or the CLI's) with `--home HOME` in each `sessiond COMMAND` quoted in
    it, when the home in use is not the default one (not $SESSIOND_HOME's either): run as printed, "see
    `sessiond ls`" or "`sessiond resume S`" acted on the default home's daemon (doctor's fixes do the same,
    daemon/doctor_fixes.for_home). Not a command the text gives for other devices (followed by "on
    device X", "on a writer"), nor the relay's `sessiond serve`, nor `--help`."""
    from ..api.locate import default_home, resolve_home

    if "`sessiond " not in text or resolve_home(home) == default_home():
        return text
    home_arg = f"--home {shlex.quote(resolve_home(home))}"
    return _QUOTED_COMMAND.sub(
        lambda m: "`" + " && ".join(_command_for(c, home_arg) for c in m.group(1).split(" && ")) + "`", text
    )


def emit(args, data: Any, human: str | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif human is not None:
        print(safe(human, keep_lines=True))


def printed(text: str) -> str:
    """`text` as standard output writes it: each character its encoding cannot carry (an ASCII or ISO-8859
    locale, fit_locale) escaped as \\uXXXX, as the stream itself would, so that its length can be measured."""
    import sys

    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    out = []
    for ch in text:
        try:
            ch.encode(encoding)
            out.append(ch)
        except (UnicodeEncodeError, LookupError):
            out.append(_json_char(ch))
    return "".join(out)


def columns(text: str) -> int:
    """The terminal columns `text` takes: an East Asian wide or fullwidth character two, a combining mark and
    the zero-width (non-)joiners none, any other character one."""
    import unicodedata

    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) or ch in "\u200c\u200d" else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """Rows under their headings, each column as wide as its widest cell as it will show: measured after the
    cells are escaped (safe, and what the locale's encoding cannot carry: printed), in terminal columns."""
    cells = [[printed(safe(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [columns(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(c + " " * (w - columns(c)) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def idle_end_said(waits: Mapping[str, Any], home: str | None) -> str:
    """An `idle_end_waits` (a shared session past its idle timeout, its end waiting for a pull) as `show` and
    `stats` say it."""
    return (
        f"past its idle timeout since {when(waits['since'])}; its end waits for a pull to confirm"
        " that no other device wrote meanwhile"
        + (f" (last pull failed: {for_home(waits['pull_error'], home)})" if waits.get("pull_error") else "")
    )


def calls_said(m: Mapping[str, Any]) -> list[str]:
    """An assistant's tool calls as `name(arguments) [id]`, one each (as `log` and `ask` show them)."""
    return [f"{c['function']['name']}({c['function']['arguments']}) [{c['id']}]" for c in m.get("tool_calls") or ()]


def short(text: str | None, n: int = 60) -> str:
    if text is None:
        return ""
    text = safe(text.replace("\n", " "))
    return text if len(text) <= n else text[: n - 1] + "…"


def _json_escape(exc: UnicodeError) -> tuple[str, int]:
    """An error handler for a standard stream that cannot encode a character: it is written as JSON writes
    it, \\uXXXX (a pair of them past U+FFFF), so that text stays readable and --json output valid and exact."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(_json_char(ch) for ch in exc.object[exc.start : exc.end]), exc.end


def _json_char(ch: str) -> str:
    """One character as JSON escapes it: \\uXXXX, a surrogate pair of them past U+FFFF."""
    cp = ord(ch)
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
    return f"\\u{cp:04x}"


def fit_locale() -> None:
    """Standard output and error made to work under a locale whose encoding is not UTF-8 (LC_ALL=C with
    Python's UTF-8 mode off, an ISO-8859 locale, PYTHONIOENCODING=ascii): a character they cannot encode is
    written escaped (_json_escape) rather than a UnicodeEncodeError traceback."""
    import codecs
    import sys

    codecs.register_error("sessiond-json-escape", _json_escape)
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if encoding and codecs.lookup(encoding).name != "utf-8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="sessiond-json-escape")


def ascii_locale() -> bool:
    """Whether Python reads this process's arguments, environment and paths as ASCII (LC_ALL=C with its UTF-8
    mode turned off, PYTHONUTF8=0): any other byte then comes as a lone surrogate, UTF-8 or not."""
    import codecs
    import sys

    return codecs.lookup(sys.getfilesystemencoding()).name == "ascii"


UTF8_LOCALE_WAY = "run sessiond under a UTF-8 locale (LC_ALL=C.UTF-8) or with PYTHONUTF8=1"


class OutputFailed(OSError):
    """A write to standard output that failed (the disk holding the file it is redirected to full, a
    file-size limit, an I/O error): run_command says so in one line. A closed pipe stays BrokenPipeError."""


def watch_output() -> None:
    """Standard output (the interpreter's own, fd 1) rewrapped so that a failing write raises OutputFailed,
    told apart from the command's other OSErrors; its encoding, errors and buffering kept."""
    import io
    import sys

    if sys.stdout is None or sys.stdout is not sys.__stdout__:  # (closed at start; or a test's capture: alone)
        return
    out: Any = sys.stdout
    try:
        fd = out.fileno()
    except (OSError, ValueError):
        return
    buffered = isinstance(out.buffer, io.BufferedWriter)  # (not under python -u, PYTHONUNBUFFERED)

    class Raw(io.FileIO):
        def write(self, b) -> int | None:  # type: ignore[override]
            try:
                return super().write(b)
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise OutputFailed(exc.errno, exc.strerror) from None

    out.flush()
    raw = Raw(fd, "wb", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw) if buffered else raw,
        encoding=out.encoding,
        errors=out.errors,
        line_buffering=out.line_buffering,
        write_through=out.write_through,
    )
