"""Messages: one or a batch appended, the Idempotency-Key header, messages as answered, the list query."""

import secrets
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, with_config
from pydantic.config import JsonDict
from typing_extensions import TypeAliasType, TypedDict

from .idempotency import KEY_RULE, good_key
from .types import (
    ANSWER,
    BODY,
    MAX_TEXT,
    MAX_TOKENS,
    QUERY,
    CallFieldsObject,
    JsonObject,
    MessageMetadata,
    QueryBool,
    QueryInt,
    Role,
    Text,
    Whole,
    refuse,
)

MAX_BATCH = 100_000
MAX_TOOL_CALLS = 1000  # one assistant message's calls


@with_config(BODY)
class ToolFunction(TypedDict):
    """The function a tool call calls: its name, and its arguments as the model wrote them (JSON text, kept
    as given: a model's malformed JSON is the app's to handle, as OpenAI's API passes it on)."""

    name: Text(200, min_len=1)
    arguments: Text(MAX_TEXT, nul=True)


@with_config(BODY)
class ToolCall(TypedDict):
    """One call of a tool by the model, in OpenAI's chat-completions shape."""

    id: Text(200, min_len=1)
    type: Literal["function"]
    function: ToolFunction


ToolCalls = Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOL_CALLS)]
# A message's calls as a log already holds them (another device's, read at a pull or an import): any number,
# each checked as an append's. MAX_TOOL_CALLS bounds what an app or a model adds now; an older sessiond
# recorded a model's answer of more, and the log's objects are bounded at 1 MiB whatever a message holds:
# refused, such a session would never sync to another device again.
StoredToolCalls = Annotated[list[ToolCall], Field(min_length=1)]
# A model's calls' own fields from its provider, by call id: an object per call of the message, of the fields
# the provider gave beside id, type and function (Gemini 3's `extra_content` with its thought signature,
# which it must be sent back with the call), each at most 64 KiB as JSON and 30 levels deep (the daemon checks
# ids, sizes and depth: daemon/toolcalls.py). Sent back with the calls to the provider that gave them (to any,
# when not known).
CallFields = Annotated[
    dict[str, CallFieldsObject],
    Field(
        max_length=MAX_TOOL_CALLS,
        description="a call's provider fields (beside id, type and function) by the call's id: one of the"
        " message's tool_calls; each at most 64 KiB as JSON, nested at most 30 levels below it",
    ),
]


def new_call_id() -> str:
    """An id for a tool call given none (`sessiond add --tool-call`, a provider's call without one), made
    as OpenAI's look: call_ and 24 hex digits, random."""
    return "call_" + secrets.token_hex(12)


# only an assistant's message carries tool calls (the daemon checks it: daemon/validate.py; said here so
# that the document's valid messages are the ones the daemon takes)
_CALLS_OF_ASSISTANT: JsonDict = {
    "if": {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array"}}},
    "then": {"properties": {"role": {"const": "assistant"}}},
}


@with_config(ConfigDict(**BODY, json_schema_extra=_CALLS_OF_ASSISTANT))
class MessageIn(TypedDict, total=False):
    """A message: role and content, with optional token count (estimated by the daemon when absent),
    names and metadata. Appended, `chat` (id or name) defaults to the session's current chat; a
    session's initial messages ignore it. An assistant's message may carry the model's `tool_calls` (its
    content then often empty), and with `call_fields` the provider's own fields of those calls (Gemini 3's
    thought signature: sent back with them to any provider, as whose they are is not known); a tool's
    message names the call it answers with `tool_call_id`, a call of its chat (stored, or earlier in a
    batch: else refused, 422), or leaves it out (it answers no call)."""

    role: Required[Role]
    content: Required[Text(MAX_TEXT, nul=True)]
    tokens: Whole(0, MAX_TOKENS) | None
    chat: Text(200, min_len=1) | None
    name: Text(200) | None
    tool_call_id: Text(200) | None
    tool_calls: ToolCalls | None
    call_fields: CallFields | None
    metadata: MessageMetadata | None


@with_config(BODY)
class MessageBatch(TypedDict, total=False):
    """Messages appended in one transaction, to `chat` unless a message names its own."""

    messages: Required[Annotated[list[MessageIn], Field(min_length=1, max_length=MAX_BATCH)]]
    chat: Text(200, min_len=1) | None


# POST /v1/sessions/{id}/messages takes either; a body with `messages` is a batch.
Append = TypeAliasType("Append", MessageIn | MessageBatch)

IDEMPOTENCY_DESCRIPTION = (
    "Makes an append safe to retry. A new random key (e.g. a UUID) per request; send the same key again only "
    "to retry that request (after a broken connection): the daemon then answers with the first result (the "
    "same message ids) and stores nothing twice. Keys are remembered per session, durably, for 24 hours (the "
    "last 1,000 per session). The same key with other messages is refused with 422 idempotency_key_reused."
)


def key_type(rule: str) -> Any:
    """An Idempotency-Key (good_key), refused in `rule`'s words: the header's, or a query parameter's."""

    def check(key: object) -> str:
        if not good_key(key):
            raise refuse(rule)
        return key  # type: ignore[return-value]  # (good_key: a str)

    return Annotated[
        str,
        PlainValidator(check),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"}),
    ]


IdempotencyKey = key_type(KEY_RULE)


@with_config(QUERY)
class MessagesQuery(TypedDict, total=False):
    chat: Text(200, min_len=1)  # id or name; the current chat when absent
    limit: QueryInt(1, MAX_BATCH)
    before: Text(300, min_len=1)  # a message id
    after: Text(300, min_len=1)
    all: QueryBool
    # the latest `limit` messages (of those after `after`, if given): read from the end, answered oldest
    # first; `next` is then the cursor (`before`) of the page before them, as with `before`
    last: QueryBool


@with_config(QUERY)
class AppendsQuery(TypedDict, total=False):
    # the connection's frames under way together (pipelined appends share commits); else one at a time
    pipeline: QueryBool


# ------------------------------------------------------------------------------------------- answers
@with_config(ANSWER)
class DroppedCall(TypedDict):
    index: int
    reason: str


@with_config(ANSWER)
class Message(TypedDict):
    id: str
    chat: str
    role: Role
    content: str
    created_at: float
    tokens: NotRequired[int | None]
    name: NotRequired[str]
    tool_call_id: NotRequired[str]
    tool_calls: NotRequired[list[ToolCall]]
    call_fields: NotRequired[dict[str, JsonObject]]  # the calls' provider fields, by call id
    # a model's answer as its question's request recorded it (not kept): the calls it made that could not
    # be recorded (one without a function name), each by its index in the model's list and why
    tool_calls_dropped: NotRequired[list[DroppedCall]]
    device: NotRequired[str]
    seq: NotRequired[int]
    lamport: NotRequired[int]
    metadata: NotRequired[JsonObject]
    # a user's message an OpenAI-endpoint app sent with parts that are not text: which lines of its content (from 0)
    # note them (`[image]`), as another device wrote them (a number past its lines, or not one, is not read)
    part_notes: NotRequired[list[Any]]
    # its tokens in its chat's context where they are not its `tokens`, which the quota counts: an answer an
    # OpenAI-endpoint app went on from, of several it asked for (`n`), recorded with `tokens` 0 (billed with that
    # request) and counted in the context by these (storage/contextcount.py)
    context_tokens: NotRequired[int]
    # a model's answer's (storage/model.py ANSWER_KEYS): the model and provider that wrote it, the provider's
    # usage {prompt_tokens, completion_tokens}, its response times {first_token_ms, total_ms}, and interrupted
    # (and error) when it stopped before its end; a field with no value is left out
    model: NotRequired[str]
    provider: NotRequired[str]
    usage: NotRequired[JsonObject]
    response: NotRequired[JsonObject]
    interrupted: NotRequired[bool]
    error: NotRequired[str]


@with_config(ANSWER)
class AppendedBatch(TypedDict):
    """A batch is answered with ids, not an echo of every message: the app has the content already."""

    count: int
    ids: list[str]
    chat: str  # the chat of its messages (its first message's, when they name several: then `chats`)
    chats: NotRequired[list[str]]  # the chat of each id, in order: only for a batch over several chats
    created_at: NotRequired[float]
    first_seq: NotRequired[int]
    last_seq: NotRequired[int]


Appended = TypeAliasType("Appended", Message | AppendedBatch)


@with_config(ANSWER)
class MessageList(TypedDict):
    messages: list[Message]
    next: str | None
