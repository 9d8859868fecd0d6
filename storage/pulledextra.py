"""A message's extra fields as this device keeps another device's (docs/FORMATS.md §4): a pull reads them so
(sync/pages.py parse_page), `verify` compares them so (op_to_cbor), and a session file's answer fields are checked by
the same rules (daemon/sessionfile.py answer). Dropped: a field naming one of the message's own (MESSAGE_OWN_KEYS:
sessiond writes none there; another device's would make the message say two things), an answer's
`tool_calls_dropped` (the calls its request could not record: said to the app that asked, never stored), and an
answer field holding what the API takes from no provider, app or file (a model's name not text or past 200
characters, an error past 2000, `interrupted` not true or false, a count of `usage` or `response` not a whole number
from 0 to MAX_TOKENS, or one of neither's: was stored as it came, then written by `export` into a file `import-file`
refused, and shown by the API's reads), and a `context_tokens` that is not such a count either (storage/contextcount.py:
what the chat's context counts of the message, in place of its tokens: a forged one would make a chat compact at every
question, or never). Its other fields are kept, a newer sessiond's among them."""

from __future__ import annotations

from typing import Any

from .model import MESSAGE_OWN_KEYS, PROMPT_TOKENS_MAX

# the most a count holds (api/types.py MAX_TOKENS, which storage/ does not import: the same 2^40)
COUNT_MAX = PROMPT_TOKENS_MAX

# an answer's text fields: the most characters each holds
ANSWER_TEXTS = {"model": 200, "provider": 200, "error": 2000}
# an answer's counts: the fields each holds (whole numbers from 0 to MAX_TOKENS)
ANSWER_COUNTS = {"usage": ("prompt_tokens", "completion_tokens"), "response": ("first_token_ms", "total_ms")}
NEVER_KEPT = MESSAGE_OWN_KEYS | {"tool_calls_dropped"}
# a message's tokens in its chat's context where they are not its quota's (storage/contextcount.py): such a count
CONTEXT_TOKENS = "context_tokens"
_LOOKED_AT = NEVER_KEPT | ANSWER_TEXTS.keys() | ANSWER_COUNTS.keys() | {"interrupted", CONTEXT_TOKENS}
_GONE = object()


def is_count(n: Any) -> bool:
    """Whether `n` is a count an answer's usage or response holds: a whole number from 0 to MAX_TOKENS."""
    return type(n) is int and 0 <= n <= COUNT_MAX


def text_ok(k: str, v: Any) -> bool:
    """Whether `v` is what the answer's text field `k` (ANSWER_TEXTS) holds."""
    return type(v) is str and len(v) <= ANSWER_TEXTS[k]


def _kept(k: str, v: Any) -> Any:
    """What is kept of the field `k`'s value `v` (_GONE: nothing)."""
    if k in NEVER_KEPT or v is None:
        return _GONE
    if k in ANSWER_TEXTS:
        return v if text_ok(k, v) else _GONE
    if k == "interrupted":
        return v if type(v) is bool else _GONE
    if k == CONTEXT_TOKENS:
        return v if is_count(v) else _GONE
    if type(v) is not dict:
        return _GONE
    fields = ANSWER_COUNTS[k]
    if all(f in fields and is_count(n) for f, n in v.items()) and v:
        return v
    return {f: n for f, n in v.items() if f in fields and is_count(n)} or _GONE


def pulled_extra(extra: Any) -> Any:
    """`extra` as a pull keeps another device's (the module's doc): None if nothing is left. Not a map: as it is
    (the page's check refuses it)."""
    if not isinstance(extra, dict) or extra.keys().isdisjoint(_LOOKED_AT):
        return extra
    out: dict | None = None
    for k in extra.keys() & _LOOKED_AT:
        v = extra[k]
        if (new := _kept(k, v)) is not v:
            if out is None:
                out = dict(extra)
            if new is _GONE:
                del out[k]
            else:
                out[k] = new
    return extra if out is None else (out or None)
