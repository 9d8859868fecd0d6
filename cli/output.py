"""What the CLI prints: JSON for scripts (--json, the exact data) or text for people, with every
untrusted string made safe for a terminal first; tables and the formats of times and short texts."""

from __future__ import annotations

import json
import re
import time
from typing import Any

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(m: re.Match) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def safe(text: Any, keep_lines: bool = False) -> str:
    """Text as a terminal may show it: control characters (which could move the cursor, recolour or
    rewrite the screen) and lone surrogates become escapes like \\x1b. Only for human output;
    --json prints the exact text."""
    text = "" if text is None else str(text)
    return (_CONTROL_BUT_LINES if keep_lines else _CONTROL).sub(_escape, text)


def emit(args, data: Any, human: str | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif human is not None:
        print(safe(human, keep_lines=True))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[safe(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def short(text: str | None, n: int = 60) -> str:
    if text is None:
        return ""
    text = safe(text.replace("\n", " "))
    return text if len(text) <= n else text[: n - 1] + "…"
