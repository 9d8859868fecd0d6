"""Token estimates for messages whose app did not report a count (a reported count always wins).

The default, "chars4", is one token per four characters (rounded up, at least one): the usual rule of
thumb for English text with BPE tokenizers. "words" is four tokens per three words. Others can be
registered with `register`, and chosen with `token_estimator = "NAME"` in config.toml.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Estimator = Callable[[str], int]

_ESTIMATORS: dict[str, Estimator] = {
    "chars4": lambda text: max(1, math.ceil(len(text) / 4)),
    "words": lambda text: max(1, math.ceil(len(text.split()) * 4 / 3)),
}
DEFAULT = "chars4"


def counted_text(m: dict) -> str:
    """What of a message an estimate counts: its content, and the names and arguments of its tool calls
    (a model's answer that is only a call has no content, and costs its arguments' tokens)."""
    calls = m.get("tool_calls")
    if not calls:
        return m["content"]
    return m["content"] + "".join(c["function"]["name"] + " " + c["function"]["arguments"] for c in calls)


def register(name: str, fn: Estimator) -> None:
    _ESTIMATORS[name] = fn


def get(name: str | None = None) -> Estimator:
    try:
        return _ESTIMATORS[name or DEFAULT]
    except KeyError:
        raise ValueError(f"unknown token estimator {name!r}; known: {', '.join(sorted(_ESTIMATORS))}") from None
