"""Managing sessions: quota, context and compaction, clones and forks, checkpoints and proofs, import and
export of plain files, statistics and clean-up."""

from typing import Any, Literal, NotRequired, Required

from pydantic import with_config
from typing_extensions import TypedDict

from .chats import Chat
from .messages import Message
from .sessions import LIST_EVERY_USER, IdleEndWaits, Session
from .types import (
    ANSWER,
    BODY,
    MAX_TOKENS,
    QUERY,
    JsonObject,
    Name,
    QueryBool,
    Seconds,
    SessionId,
    Status,
    Text,
    Whole,
)


@with_config(ANSWER)
class Quota(TypedDict):
    session: str
    tokens_used: int
    level: Literal["safe", "warning", "critical", "exhausted"]
    token_quota: NotRequired[int | None]
    remaining: NotRequired[int | None]  # tokens left under the quota, 0 once it is used up or passed
    over: NotRequired[int | None]  # tokens used past the quota (a model's answer, a lowered quota), else 0
    thresholds: NotRequired[dict]


@with_config(QUERY)
class ChatQuery(TypedDict, total=False):
    chat: Text(200, min_len=1)  # id or name; the current chat when absent


@with_config(ANSWER)
class Context(TypedDict):
    session: str
    chat: str
    policy: NotRequired[dict]  # the budget policy in force: the chat's own, else the session's, else the default
    defaults: NotRequired[list[str]]  # the keys of `policy` neither the chat nor the session set
    compacted_upto: NotRequired[str | None]
    active_messages: NotRequired[int]
    active_tokens: NotRequired[int]
    fixed_tokens: NotRequired[int]  # the system prompt's and initial messages': sent first, counted in the budget
    compacted_messages: NotRequired[int]
    messages: NotRequired[int]


@with_config(BODY)
class Compact(TypedDict, total=False):
    chat: Text(200, min_len=1) | None
    target_tokens: Whole(0, MAX_TOKENS) | None


@with_config(BODY)
class Uncompact(TypedDict, total=False):
    chat: Text(200, min_len=1) | None


@with_config(BODY)
class Clone(TypedDict, total=False):
    id: SessionId | None
    name: Text() | None


@with_config(BODY)
class Fork(TypedDict, total=False):
    at: Required[Text(300)]  # the last message kept
    id: SessionId | None
    name: Text() | None


@with_config(ANSWER)
class Checkpoint(TypedDict):
    number: int
    hash: str
    signature: str
    session: NotRequired[str]
    device: NotRequired[str]
    tokens: NotRequired[int]
    messages: NotRequired[int]
    frontier: NotRequired[dict]
    created_at: NotRequired[float]
    pk: NotRequired[str]
    v: NotRequired[int]  # the proof's version (docs/FORMATS.md §8): 2, or none for version 1
    # POST's answer only: whether the request made it (false: nothing changed since this device's latest
    # checkpoint, which stands and is the answer); no part of the proof (verify-proof reads past it)
    made: NotRequired[bool]


@with_config(ANSWER)
class CheckpointList(TypedDict):
    checkpoints: list[Checkpoint]


@with_config(BODY)
class ProofRequest(TypedDict):
    proof: JsonObject


@with_config(ANSWER)
class ProofResult(TypedDict):
    ok: bool
    session: NotRequired[str]
    problem: NotRequired[str]  # why the proof does not hold (ok false)
    number: NotRequired[int]  # the checkpoint's, when it holds
    device: NotRequired[str]
    messages: NotRequired[int]
    tokens: NotRequired[int]
    v: NotRequired[int]  # the proof's version, when it holds


@with_config(QUERY)
class ExportQuery(TypedDict, total=False):
    format: Literal["openai", "json", "markdown"]
    chat: Text(200, min_len=1)  # openai only (one chat); json and markdown hold every chat, and refuse it (422)


@with_config(ANSWER)
class OpenAIExport(TypedDict):
    """?format=openai: one chat (`chat`, else the current one) as an OpenAI chat-completions body: its system
    prompt and the session's initial messages first, then its messages, each {role, content} with its name,
    tool_call_id and tool_calls (an assistant's calls with no text: content null); its model and sampling
    settings beside them, those it has."""

    messages: list[JsonObject]
    model: NotRequired[str]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    max_tokens: NotRequired[int]


@with_config(ANSWER)
class ExportedMessage(Message):
    """A message of a session file: as GET .../messages answers it (Message: with its metadata, and a model's
    answer's model, provider, usage, times (response) and whether it stopped early (interrupted, error); a field
    with no value is left out)."""


@with_config(ANSWER)
class SessionExport(TypedDict):
    """?format=json (the default): the whole session as a session file (import-file reads it back)."""

    format: Literal["sessiond.session.v1"]
    session: Session
    chats: list[Chat]
    checkpoints: list[Checkpoint]
    messages: list[ExportedMessage]


@with_config(ANSWER)
class MarkdownExport(TypedDict):
    """?format=markdown: every chat as Markdown text."""

    format: Literal["markdown"]
    markdown: str


Export = OpenAIExport | SessionExport | MarkdownExport  # GET .../export, by its ?format=


@with_config(BODY)
class ImportFile(TypedDict):
    format: NotRequired[Literal["openai", "json", "chatgpt", "claude", "openwebui", "llm"]]  # absent: told by its shape
    data: Any  # the file's parsed JSON (llm: its tables' rows), checked by its importer


@with_config(ANSWER)
@with_config(ANSWER)
class ImportedBefore(TypedDict):
    """A conversation of the file that an earlier import made a session of, skipped: `up_to_date`, the session
    here holds all of it already (perhaps continued here since); `refused`, the session here could not take
    the conversation's new messages (`error` says why and what to do: e.g. it is paused)."""

    source: Literal["chatgpt", "claude", "openwebui", "llm"]
    conversation: str  # the source's id of the conversation
    name: str | None  # its title in the file
    session: str  # the session here that holds it
    reason: Literal["up_to_date", "refused"]
    error: NotRequired[str]  # refused: the refusal
    branch: NotRequired[str]  # a ChatGPT branch other than the history (current_node's): its last message's node id


@with_config(ANSWER)
class ImportAppended(TypedDict):
    """A conversation continued in the app since an earlier import: its new messages appended to the session
    that import made of it."""

    source: Literal["chatgpt", "claude", "openwebui", "llm"]
    conversation: str
    name: str | None
    session: str  # the session here they were appended to
    messages: int  # how many
    branch: NotRequired[str]  # a ChatGPT branch other than the history (current_node's): its last message's node id


@with_config(ANSWER)
class ImportDiverged(TypedDict):
    """A conversation whose history here and in the file part before the file's new messages (continued
    here and in the app, or edited in the app): made a session of its own, the one here left as it was."""

    source: Literal["chatgpt", "claude", "openwebui", "llm"]
    conversation: str
    name: str | None
    session: str  # the session here it differs from (the oldest made of the conversation)
    new_session: str  # the session made of the file's conversation (one of `sessions`)


@with_config(ANSWER)
class ImportBranch(TypedDict):
    """A branch (ChatGPT's: not the one at current_node) new since an earlier import of its conversation (an
    answer regenerated, a question edited in the app; or one whose fork here was continued both here and in
    the app, that fork left as it is): made a fork of the session here made of the conversation, from the
    last message the two share."""

    source: Literal["chatgpt", "claude", "openwebui", "llm"]
    conversation: str
    name: str | None
    session: str  # the session here made of the conversation, which the new one forks
    node: str  # the branch's last message's node id in the file
    messages: int  # how many messages the branch holds in the file
    new_session: str  # the fork made of it (one of `sessions`)


@with_config(ANSWER)
class ImportFileResult(TypedDict):
    sessions: list[Session]  # made
    skipped: list[ImportedBefore]
    appended: list[ImportAppended]
    diverged: list[ImportDiverged]
    branches: list[ImportBranch]  # new since: each made a fork


@with_config(QUERY)
class StatsQuery(TypedDict, total=False):
    session: Text(128, min_len=1)
    user: Name(LIST_EVERY_USER)
    no_user: QueryBool  # true: of the sessions with no user (as GET /v1/sessions' no_user); not with `user`


@with_config(ANSWER)
class ChatStats(TypedDict):
    """One chat's statistics: `avg_response_seconds` the mean time from a user's message (the first of those in a
    row) to the assistant's that follows, by the messages' own times; `answers` the model's answers whose times
    sessiond measured, and the two last their times (to the first token, to the whole answer) averaged; null
    with none to average."""

    chat: str
    name: str | None
    messages: int
    avg_response_seconds: float | None
    answers: int
    avg_first_token_seconds: float | None
    avg_answer_seconds: float | None


@with_config(ANSWER)
class SessionStats(TypedDict):
    """GET /v1/stats?session=ID: one session's statistics (`tokens`: every token it used, as its quota counts)."""

    session: str
    status: Status
    chats: int
    messages: int
    tokens: int
    created_at: float
    last_activity: float
    per_chat: list[ChatStats]
    # past its idle timeout, still active: its end waits for a pull (as GET /v1/sessions/ID says). Absent otherwise.
    idle_end_waits: NotRequired[IdleEndWaits]


@with_config(ANSWER)
class UserStats(TypedDict):
    user: str | None  # null: the sessions with no user
    sessions: int
    tokens: int


@with_config(ANSWER)
class SessionsStats(TypedDict):
    """GET /v1/stats, ?user=U or ?no_user=true: the statistics of several sessions (a fork's copied history
    counted once), with `user` (one user's), `no_user` (those with no user), or `users` (the daemon's: each
    user's)."""

    sessions: int
    tokens: int
    messages: int
    active: int
    paused: int
    ended: int
    user: NotRequired[str]
    no_user: NotRequired[Literal[True]]
    users: NotRequired[list[UserStats]]


Stats = SessionStats | SessionsStats  # one session's (?session=), or several's


@with_config(BODY)
class Cleanup(TypedDict, total=False):
    older_than: Required[Seconds(0, 1e10)]  # seconds idle
    dry_run: bool


@with_config(ANSWER)
class CleanupResult(TypedDict):
    sessions: list
    deleted: NotRequired[bool]
    # idle, but shared and holding changes of this device not pushed yet: not deleted, each with its `reason`
    kept: NotRequired[list]


AnyJson = Any
