"""Options shared by several commands: durations (90s, 7d), a chat's sampling settings and its
context/quota policy; each group is added to a parser here and read back from the parsed arguments here."""

from __future__ import annotations

import argparse
import re
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")


def duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 12h, 7d, 2w)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def count(text: str) -> int:
    """A --limit: a whole number, at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


def add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, dest="top_k")
    p.add_argument("--top-p", type=float, dest="top_p")
    p.add_argument("--max-tokens", type=int, dest="max_tokens")


def settings_of(args) -> Any:  # a Settings body or None (the daemon checks it)
    s = {
        k: getattr(args, k)
        for k in ("temperature", "top_k", "top_p", "max_tokens", "provider")
        if getattr(args, k, None) is not None
    }
    return s or None


def add_policy(p: argparse.ArgumentParser, chat: bool = False) -> None:
    p.add_argument(
        "--max-context-tokens",
        type=int,
        dest="max_context_tokens",
        help="context budget; the chat compacts itself past budget x margin",
    )
    p.add_argument("--context-margin", type=float, dest="context_margin", help="safety margin (default 0.8)")
    p.add_argument(
        "--no-auto-compact",
        action="store_true",
        dest="no_auto_compact",
        help="refuse appends past the budget (context_overflow) instead of compacting",
    )
    if not chat:
        p.add_argument("--token-quota", type=int, dest="token_quota", help="tokens this session may use in all")
        p.add_argument(
            "--checkpoint-interval",
            type=int,
            dest="checkpoint_interval",
            help="make a signed checkpoint every N tokens (default 1000)",
        )
        p.add_argument(
            "--idle-timeout", type=duration, dest="idle_timeout", help="end the session after this idle time"
        )


def policy_of(args) -> Any:  # a ChatPolicy body, maybe empty (the daemon checks it)
    out = {}
    for k in ("token_quota", "max_context_tokens", "context_margin", "checkpoint_interval", "idle_timeout"):
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    if getattr(args, "no_auto_compact", False):
        out["auto_compact"] = False
    return out
