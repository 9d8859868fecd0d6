"""Search: full-text over every message on this device (FTS5 query syntax), its query and its answer."""

from typing import Required

from pydantic import with_config
from typing_extensions import TypedDict

from .sessions import LIST_EVERY_USER
from .types import ANSWER, QUERY, Name, QueryBool, QueryInt, Role, Text

MAX_RESULTS = 1000


@with_config(QUERY)
class SearchQuery(TypedDict, total=False):
    """`q` in FTS5's syntax: words (all of them must match), a "phrase", a prefix*, AND / OR / NOT."""

    q: Required[Text(1000, min_len=1)]
    session: Text(128, min_len=1)
    user: Name(LIST_EVERY_USER)
    no_user: QueryBool  # true: in the sessions with no user (as GET /v1/sessions' no_user); not with `user`
    role: Role
    limit: QueryInt(1, MAX_RESULTS)  # default 20


@with_config(ANSWER)
class SearchHit(TypedDict):
    """One message that matched: where it is, and a snippet of its text with the matches' places in it
    (`highlights`: [start, end) character offsets into `snippet`; "…" where the text was cut)."""

    session: str
    chat: str
    id: str  # the message id (device-seq), a cursor of GET /v1/sessions/{id}/messages and fork's `at`
    device: str
    seq: int
    role: Role
    created_at: float
    snippet: str
    highlights: list[list[int]]
    rank: float  # bm25: lower is better
    compacted: bool  # the chat's compaction has set it aside (it stays in the history)


@with_config(ANSWER)
class SearchResult(TypedDict):
    query: str
    hits: list[SearchHit]
