"""The records of the local cache and their vocabularies: operations (Op), another device's log as read
(RemoteLog), a run of this device's log column by column (LogRun), message ids, and the fields a session or
chat has. Plain data: no SQL here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from .clock import wall
from .errors import Invalid

ROLES = ("system", "user", "assistant", "tool")
STATUSES = ("active", "paused", "ended")
# provider: the name of a [providers.NAME] table in config.toml that answers for the session (issue 16)
SETTINGS_KEYS = ("temperature", "top_k", "top_p", "max_tokens", "provider")
# Session fields a PATCH may change (status changes go through pause/resume/end).
PATCHABLE = (
    "name",
    "user",
    "system_prompt",
    "model",
    "settings",
    "metadata",
    "tags",
    "preferences",
    "policy",
    "expires_at",
    "initial_messages",
)
# A session's own fields that a copy of it takes as they are: a clone or fork (storage/copies.py) and a
# session file's import (daemon/formats.py); its id, chats, status and history are each copy's own matter.
COPIED_FIELDS = (
    "user",
    "name",
    "system_prompt",
    "model",
    "settings",
    "initial_messages",
    "metadata",
    "tags",
    "preferences",
    "policy",
)
# A session's fields kept out of its row, in `session_texts` (migration 21): large (a prompt may be a pasted
# document; metadata, tags and preferences up to 1 MiB each), rarely changed, and not read by an append, which
# rewrites the row
SESSION_TEXTS = ("system_prompt", "initial_messages", "metadata", "tags", "preferences")
JSON_FIELDS = ("settings", "initial_messages", "metadata", "tags", "preferences", "policy")
# Session policy (issue 5): token_quota, checkpoint_interval, idle_timeout, and the chats' default
# max_context_tokens, context_margin and auto_compact.
POLICY_KEYS = (
    "token_quota",
    "checkpoint_interval",
    "idle_timeout",
    "max_context_tokens",
    "context_margin",
    "auto_compact",
)
CHAT_POLICY_KEYS = ("max_context_tokens", "context_margin", "auto_compact")
# Chat fields a chat.update may change (each last-writer-wins by (lamport, device id)).
CHAT_FIELDS = ("compacted", "policy", "name", "system_prompt", "model", "settings")
# Extra fields of a model's answer (issue 16), kept with the message and synced with it: the model and
# provider that wrote it, the provider's usage {prompt_tokens, completion_tokens}, its response times
# {first_token_ms, total_ms}, and interrupted/error when the answer stopped before its end.
ANSWER_KEYS = ("model", "provider", "usage", "response", "interrupted", "error")
# A model's answer's calls' own fields from its provider (Gemini 3's thought signature), by call id: sent
# back with the calls to that provider only (daemon/toolcalls.py).
# (part_notes: the lines of a message's text that note its parts that are not text, daemon/openai_history.py;
# context_tokens: its tokens in its chat's context where they are not its quota's, storage/contextcount.py)
EXTRA_KEYS = (
    "name",
    "tool_call_id",
    "tool_calls",
    "call_fields",
    "metadata",
    "part_notes",
    "context_tokens",
    *ANSWER_KEYS,
)
PLAIN_KEYS = frozenset({"role", "content", "tokens", "chat"})  # a message with only these has no extra
# A message's own fields, as a read gives them from its row's columns (storage/messagereads.py message_dict): none is
# ever an extra field. Another device's extra fields naming one are dropped as a pull reads its pages (sync/pages.py
# parse_page, storage/pulledextra.py): a message says one thing (its content, role, id...), here and wherever its row
# goes on from here.
MESSAGE_OWN_KEYS = frozenset({"id", "chat", "role", "content", "tokens", "created_at", "device", "seq", "lamport"})
DEFAULT_CHECKPOINT_INTERVAL = 1000
_INTERVAL_MAX = 1 << 40  # (api/types.py MAX_TOKENS, the most the API takes)


def checkpoint_interval(policy: dict) -> int:
    """A session's checkpoint interval: its policy's, a whole number from 1 to 2^40 as the API takes it, else (none,
    or another device's value that is no such number) the default. INTERVAL_SQL reads it the same."""
    n = policy.get("checkpoint_interval")
    return n if type(n) is int and 1 <= n <= _INTERVAL_MAX else DEFAULT_CHECKPOINT_INTERVAL


def interval_sql(policy: str) -> str:
    """SQL: checkpoint_interval() of the policy JSON text `policy` (SQL)."""
    n = f"json_extract({policy}, '$.checkpoint_interval')"
    return (
        f"CASE WHEN json_type({policy}, '$.checkpoint_interval') = 'integer' AND {n} BETWEEN 1 AND {_INTERVAL_MAX}"
        f" THEN {n} ELSE {DEFAULT_CHECKPOINT_INTERVAL} END"
    )


def now() -> float:
    """Wall-clock time rounded to milliseconds, the precision that travels in snapshots."""
    return round(wall() * 1000) / 1000


@dataclass
class Op:
    """One operation of one device's log."""

    session_id: str
    device_id: str
    seq: int
    lamport: int
    kind: str
    body: dict
    created_at: float

    @property
    def order(self) -> tuple:
        return (self.lamport, self.device_id, self.seq)


@dataclass
class RemoteLog:
    """Another device's operations as read from its log, ready for apply_remote: its messages as rows
    for one batched insert, (session_id, chat_id, device_id, seq, lamport, role, content, tokens,
    created_at, extra JSON), and its other operations; last_seq is the highest seq read."""

    device_id: str
    messages: list[tuple]
    ops: list[Op]
    last_seq: int

    def __len__(self) -> int:
        return len(self.messages) + len(self.ops)


def text_head(n: int) -> bytes:
    """The CBOR head of a text string of n UTF-8 bytes, in its shortest form (as DAG-CBOR requires)."""
    if n < 24:
        return bytes([0x60 | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([0x60 | extra]) + n.to_bytes(width, "big")
    raise ValueError("CBOR lengths stop at 2^64")


MESSAGE_COLUMNS = "session_id, chat_id, device_id, seq, lamport, role, content, tokens, created_at, extra"
PUSHED_COLUMNS = MESSAGE_COLUMNS + ", content_head, created_ms"  # and pushed_form's two


def pushed_form(content: object, created_at: float) -> tuple[bytes | None, int | None]:
    """(content_head, created_ms) of a message as the messages table keeps them (schema migration 10):
    text_head of its content's UTF-8 length, and its time as a page's `t` column has it (Python's
    round(created_at * 1000)); each None where the push's read works it out itself (a content that is not
    text, a time outside 0..4.5e12 s, as the read's own rounding)."""
    head = None
    if type(content) is str:  # an append's cost: a lookup for most contents, not text_head's loop
        n = len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
        head = _SHORT_HEADS[n] if n < 256 else (0x790000 | n).to_bytes(3, "big") if n < 65536 else text_head(n)
    return head, round(created_at * 1000) if 0 <= created_at <= 4.5e12 else None


_SHORT_HEADS = tuple(text_head(n) for n in range(256))


# The bytes a message's content takes in a run's blob (its CBOR head and UTF-8), by its size in bytes for
# sizes under 64 KiB, and 0 (index -1) for an operation that is not a message (not in the blob).
# (head width, least size, bound of sizes) of the text heads of one width
_HEAD_WIDTHS = ((1, 0, 24), (2, 24, 1 << 8), (3, 1 << 8, 1 << 16), (5, 1 << 16, 1 << 32))
# (made from the widths: calling text_head 65,536 times was 45 ms of every process's start)
_ITEM_SIZES = [n + width for width, low, high in _HEAD_WIDTHS[:3] for n in range(low, high)] + [0]


class LogRun:
    """Operations first..first+n-1 of one device's log, column by column: what a push encodes into
    pages. Message contents are not Python strings: `blob` holds each message's content as the CBOR
    text item a page stores (its head, then its UTF-8), back to back, as SQLite wrote them; `sizes[i]`
    is operation i's content in UTF-8 bytes, or -1 for an operation that is not a message (not in the
    blob: its `bodies[i]` is then its JSON body, and its chat, role, tokens and extra are None). A page's
    contents column is then slices of the blob (offsets()), never an object per message; runs are cut
    and joined by their blobs. `times[i]` is operation i's created_at in whole milliseconds, as Python's
    round(created_at * 1000) gives it (the page's `t` column)."""

    __slots__ = (
        "_blob",
        "_consecutive",
        "_offsets",
        "_parts",
        "_width",
        "bodies",
        "chats",
        "extras",
        "kinds",
        "lams",
        "roles",
        "seqs",
        "sizes",
        "times",
        "toks",
    )

    def __init__(
        self,
        seqs: list,
        lams: list,
        kinds: list,
        bodies: list,
        times: list,
        chats: list,
        roles: list,
        toks: list,
        extras: list,
        sizes: list,
        blob: bytes | memoryview,
    ):
        self.seqs, self.lams, self.kinds, self.bodies, self.times = seqs, lams, kinds, bodies, times
        self.chats, self.roles, self.toks, self.extras, self.sizes = chats, roles, toks, extras, sizes
        self._blob: bytes | memoryview | None = blob
        self._parts: list[bytes | memoryview] | None = None  # the blob's pieces while their join is not made
        self._offsets: list[int] | None = None
        self._consecutive: bool | None = None  # known: seqs are first, first+1, ... (see consecutive())
        self._width: int | None = None  # known: the width of every content head (0: of several), head_width()

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def blob(self) -> bytes | memoryview:
        """The contents' items back to back. A join of runs (+) keeps its operands' blobs as pieces and
        joins them only here, when first asked: a long push's carried page is encoded from the pieces
        (blob_views), a copy of up to a page fewer per chunk, with the GIL held."""
        if self._blob is None:
            self._blob, self._parts = b"".join(self._parts or ()), None
        return self._blob

    def blob_views(self, a: int, b: int) -> list[memoryview]:
        """The blob's bytes a..b, as views: of the pieces of a join not made yet, without making it."""
        if self._parts is None:
            return [memoryview(self.blob)[a:b]]
        out, at = [], 0
        for piece in self._parts:
            n = len(piece)
            if a < at + n and at < b:
                out.append(memoryview(piece)[max(a - at, 0) : min(b - at, n)])
            at += n
        return out or [memoryview(b"")]

    def _pieces(self) -> list[bytes | memoryview]:
        return self._parts if self._parts is not None else [self.blob]

    def consecutive(self) -> bool:
        """Whether the seqs are first, first + 1, ... with no gap. Known without looking at each one for a
        run read_run found so (and its tails and joins), which a long push asks of every chunk twice."""
        if self._consecutive is None:
            s = self.seqs
            self._consecutive = not s or s == list(range(s[0], s[0] + len(s)))
        return self._consecutive

    def offsets_at(self, positions: list[int]) -> list[int]:
        """offsets()[i] for each i of `positions` (ascending), summed a stretch at a time, without the
        list of every operation's offset (a page needs only where it begins and ends)."""
        if self._offsets is not None:
            return [self._offsets[i] for i in positions]
        sizes, out, at, prev = self.sizes, [], 0, 0
        # every head of one width (all messages, of sizes between two powers): a sum of the sizes
        width = self.head_width()
        high = 0 if width else max(sizes, default=0)
        for i in positions:
            if width:
                at += sum(sizes[prev:i]) + width * (i - prev)
            elif high < 1 << 16:
                at += sum(map(_ITEM_SIZES.__getitem__, sizes[prev:i]))
            else:
                at += sum(n + len(text_head(n)) if n >= 0 else 0 for n in sizes[prev:i])
            out.append(at)
            prev = i
        return out

    def head_width(self) -> int:
        """The width of every content's CBOR head when all operations are messages whose heads are of one
        width, else 0. Found once per run read (a long push asks of each chunk four times), and kept by
        its heads, tails and joins."""
        if self._width is None:
            low, high = (min(self.sizes), max(self.sizes)) if self.sizes else (0, 0)
            self._width = next((w for w, a, b in _HEAD_WIDTHS if a <= low and high < b), 0)
        return self._width

    def offsets(self) -> list[int]:
        """Where operation i's content item begins in the blob, for i in 0..len (the last is its end)."""
        if self._offsets is None:
            sizes = self.sizes
            items: Iterable[int]
            if not sizes or max(sizes) < 1 << 16:
                items = map(_ITEM_SIZES.__getitem__, sizes)
            else:
                items = (n + len(text_head(n)) if n >= 0 else 0 for n in sizes)
            self._offsets = list(accumulate(items, initial=0))
        return self._offsets

    def pieces(self) -> list:
        """Operation i's content as UTF-8 (a memoryview; empty for an operation that is not a message)."""
        blob, offs = memoryview(self.blob), self.offsets()
        return [blob[offs[i + 1] - max(z, 0) : offs[i + 1]] for i, z in enumerate(self.sizes)]

    def tail(self, i: int) -> LogRun:
        """The operations from index i on (their contents a view of this run's blob)."""
        (at,) = self.offsets_at([min(i, len(self))])
        run = self._with_blob([c[i:] for c in self._columns()], at, None)
        run._consecutive = self._consecutive or None
        run._width = self._width or None  # a part of a run of one head width is of that width
        return run

    def head(self, i: int) -> LogRun:
        """The first i operations (their contents a view of this run's blob)."""
        (at,) = self.offsets_at([min(i, len(self))])
        run = self._with_blob([c[:i] for c in self._columns()], 0, at)
        run._consecutive = self._consecutive or None
        run._width = self._width or None
        return run

    def _with_blob(self, columns: list, a: int, b: int | None) -> LogRun:
        """A run of `columns` whose blob is this run's bytes a..b (b None: to the end): a view of the
        blob, or of its pieces while their join is not made (without making it)."""
        if self._parts is None:
            return LogRun(*columns, memoryview(self.blob)[a:b])  # type: ignore[call-arg]  # mypy cannot count the ten columns a list unpacks
        end = sum(map(len, self._parts)) if b is None else b
        return LogRun.of_pieces(columns, self.blob_views(a, end))

    @classmethod
    def of_pieces(cls, columns: list, pieces: Sequence[bytes | memoryview]) -> LogRun:
        """A run of `columns` whose blob is `pieces` joined, the join made only when .blob is asked for."""
        run = cls(*columns, b"")  # type: ignore[call-arg]  # mypy cannot count the ten columns a list unpacks
        run._blob, run._parts = None, [p for p in pieces if len(p)]
        return run

    def __add__(self, other: LogRun) -> LogRun:
        run = LogRun.of_pieces(
            [a + b for a, b in zip(self._columns(), other._columns())], [*self._pieces(), *other._pieces()]
        )
        if self._consecutive and other._consecutive and (not self or not other or other.seqs[0] == self.seqs[-1] + 1):
            run._consecutive = True
        if self._width and self._width == other._width:
            run._width = self._width
        return run

    def _columns(self) -> tuple:
        return (
            self.seqs,
            self.lams,
            self.kinds,
            self.bodies,
            self.times,
            self.chats,
            self.roles,
            self.toks,
            self.extras,
            self.sizes,
        )

    @classmethod
    def empty(cls) -> LogRun:
        return cls([], [], [], [], [], [], [], [], [], [], b"")

    @classmethod
    def from_records(cls, records: list[tuple]) -> LogRun:
        """From tuples (seq, lamport, kind, body JSON, created_at, chat, role, content, tokens, extra
        JSON); content None for an operation that is not a message."""
        if not records:
            return cls.empty()
        seqs, lams, kinds, bodies, created, chats, roles, contents, toks, extras = map(list, zip(*records))
        times = [round(c * 1000) for c in created]
        utf8 = [c.encode() if c is not None else None for c in contents]
        sizes = [len(u) if u is not None else -1 for u in utf8]
        blob = b"".join(text_head(len(u)) + u for u in utf8 if u is not None)
        return cls(seqs, lams, kinds, bodies, times, chats, roles, toks, extras, sizes, blob)


# One row for a whole run of messages: SQLite concatenates the columns in C, with the GIL released for


def message_id(device_id: str, seq: int) -> str:
    return f"{device_id}-{seq}"


def parse_message_id(mid: str) -> tuple[str, int]:
    dev, sep, seq = mid.rpartition("-")
    # ASCII digits only (str.isdigit takes '²', which int() refuses), and a seq SQLite can hold
    if not sep or not dev or not seq.isascii() or not seq.isdigit() or len(seq) > 19 or int(seq) >= 1 << 63:
        raise Invalid(f"not a message id: {mid!r:.80} (expected DEVICE-SEQ, as listed by `sessiond log`)")
    return dev, int(seq)


# One encoder, built once: json.dumps with any non-default argument builds a new JSONEncoder per call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """JSON as stored in the database: compact, UTF-8 kept as is."""
    return _dumps(value)


# the most prompt tokens a message's `usage` is charged with (api/types.py MAX_TOKENS: a count sessiond takes); past
# it, or not a positive whole number, none: another device's message is not checked there (daemon/remote_checks.py)
PROMPT_TOKENS_MAX = 1 << 40


def charge(m: dict) -> int:
    """What a message costs the session's quota: its tokens, plus, for a model's answer, the prompt
    tokens the provider counted for it (the context sent with the question); and, when the provider counted
    more completion tokens than the message's own (a request for several answers, OpenAI's `n`, of which the
    first is recorded: its tokens are that answer's, what the context holds), those, as billed. CHARGE_SUM_SQL
    counts the same."""
    usage = m.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    billed = usage.get("completion_tokens") if isinstance(usage, dict) else None
    tokens = m.get("tokens") or 0
    if type(billed) is int and tokens < billed <= PROMPT_TOKENS_MAX:
        tokens = billed
    return tokens + (prompt if type(prompt) is int and 0 < prompt <= PROMPT_TOKENS_MAX else 0)


def row_charge(tokens: int | None, extra: str | None) -> int:
    """charge() of a stored message row (its tokens and extra columns). Its tokens are the column's, as in
    CHARGE_SUM_SQL: not a "tokens" another device's extra fields hold (sessiond writes none there)."""
    if extra and '"usage"' in extra:
        e = json.loads(extra)
        return charge({"tokens": tokens, "usage": e.get("usage") if isinstance(e, dict) else None})
    return tokens or 0


# the session's quota use recounted from its messages (charge() in SQL)
# (its prompt tokens a JSON integer in charge()'s range only: was any value, a string "500", a fraction or `true`
# another device wrote, counted here and not by charge(), so a pull's recount changed the quota's use and level)
CHARGE_SUM_SQL = (  # the sum of charge() over the message rows of a query (columns tokens, extra)
    "coalesce(sum(tokens), 0) + coalesce(sum(CASE WHEN json_valid(extra) THEN"  # (CASE: the JSON read once valid)
    " CASE WHEN json_type(extra, '$.usage.prompt_tokens') = 'integer'"
    f" AND json_extract(extra, '$.usage.prompt_tokens') BETWEEN 1 AND {PROMPT_TOKENS_MAX}"
    " THEN json_extract(extra, '$.usage.prompt_tokens') ELSE 0 END"
    # the completion tokens billed past the message's own (several answers asked, one recorded)
    " + CASE WHEN json_type(extra, '$.usage.completion_tokens') = 'integer'"
    f" AND json_extract(extra, '$.usage.completion_tokens') BETWEEN coalesce(tokens, 0) + 1 AND {PROMPT_TOKENS_MAX}"
    " THEN json_extract(extra, '$.usage.completion_tokens') - coalesce(tokens, 0) ELSE 0 END END), 0)"
)
RECOUNT_SQL = f"(SELECT {CHARGE_SUM_SQL} FROM messages WHERE session_id=?)"


def no_user_sql(alias: str = "") -> str:
    """SQL: the session (of table alias `alias`) has no user: none set, or an empty one an older sessiond
    stored, which means the same (GET /v1/sessions, /v1/stats and /v1/search's no_user)."""
    p = f"{alias}." if alias else ""
    return f"({p}user IS NULL OR {p}user='')"
