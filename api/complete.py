"""Talking to a model (issue 16): the body of POST /v1/sessions/{id}/complete, and the OpenAI-compatible
chat-completions request as far as sessiond reads it (the rest is passed on to the provider)."""

import re
from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import AfterValidator, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from .idempotency import ASKED_KEY_RULE
from .messages import Message, key_type
from .types import ANSWER, BODY, MAX_TEXT, QUERY, JsonObject, Name, Text, refuse

# a character that is not whitespace (JSON Schema's \s, ECMA-262's: the OpenAPI document's pattern, which the
# check below reads the same way, so that what the document allows the daemon takes)
SAID = "[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
_SAID_RE = re.compile(SAID)


def _said(s: str) -> str:
    if not _SAID_RE.search(s):  # recorded and sent, it would cost an answer to nothing (`sessiond ask` refuses it)
        raise refuse(
            "is empty (or only whitespace): give the question, or leave content out for the model to answer the"
            " chat as it stands"
        )
    return s


# the question: NUL allowed (as in any message's text), not empty nor only whitespace
Question = Annotated[
    str,
    Field(max_length=MAX_TEXT, json_schema_extra={"minLength": 1, "pattern": SAID}),
    AfterValidator(_said),
]


@with_config(BODY)
class Complete(TypedDict, total=False):
    """Append `content` as the user's message (optional: leave it out to answer what is there; an empty or
    only-whitespace one is refused, 422, nothing recorded or sent; leaving it out is
    refused, 409 tool_call_unanswered, when that ends in tool calls no tool's result answers), send the
    chat's active context to the model, record the answer. `stream`: server-sent events `delta`
    ({content}) and then `message` (the stored answer), or `error`. An answer that cannot be recorded (the
    session ended, deleted or revoked while the model answered) is refused as the session's state refuses a
    write (409, 404), with the answer in the error's `details.answer`, a stream's `error` event too."""

    content: Question | None  # not empty, nor only whitespace (422): leave it out to ask for no question
    chat: Text(200, min_len=1) | None  # id or name; default the session's current chat
    model: Name("leave it out for the chat's or the session's") | None
    provider: Text(100, min_len=1) | None  # default the session's, then config.toml's default_provider
    stream: bool


@with_config(QUERY)
class AskedQuery(TypedDict):
    """GET /v1/sessions/{id}/complete?key=K: what the question sent with Idempotency-Key K recorded."""

    key: key_type(ASKED_KEY_RULE)  # (the header's check, in a query parameter's words)


@with_config(QUERY)
class ModelsQuery(TypedDict, total=False):
    """GET /openai/v1/models?provider=P: the models of provider P (config.toml's [providers.P]); without
    it, those of the session X-Sessiond-Session names, else of the default provider."""

    provider: Text(100, min_len=1)


@with_config(ANSWER)
class Asked(TypedDict):
    """What a question to the model recorded (answered once no request with its key is still being answered:
    an app that left mid-answer learns what its leaving left in the session). `answer`: the model's answer as
    recorded, `interrupted` if it stopped early; null if none was (or not yet, by a request still to come)."""

    key: str
    question: Message | None  # the question's message, if it gave one and it was recorded
    answer: Message | None


@with_config(ConfigDict(extra="allow"))
class ChatMessage(TypedDict, total=False):
    role: Required[Literal["system", "developer", "user", "assistant", "tool"]]
    content: str | list[Any] | None


@with_config(ConfigDict(extra="allow"))
class ChatCompletionRequest(TypedDict, total=False):
    """OpenAI's chat-completions request; fields sessiond does not read are passed on to the provider."""

    model: Text(200)
    stream: bool
    messages: Required[Annotated[list[ChatMessage], Field(min_length=1)]]


# The OpenAI-compatible endpoint's answers: the provider's, passed on as it sent them (its own fields beside
# OpenAI's); sessiond checks only what it reads (a completion's first choice holds a message object).


@with_config(ANSWER)
class CompletionChoice(TypedDict):
    message: JsonObject  # {role, content, tool_calls, ...}: the answer (each choice's, of a request's `n`)
    index: NotRequired[int]
    finish_reason: NotRequired[str | None]
    logprobs: NotRequired[Any]


@with_config(ANSWER)
class ChatCompletion(TypedDict):
    """OpenAI's chat.completion, as the provider answered it (not streamed; with "stream": true, its
    chat.completion.chunk objects as server-sent events, then `data: [DONE]` or an error event)."""

    choices: Annotated[list[CompletionChoice], Field(min_length=1)]
    id: NotRequired[str]
    object: NotRequired[str]  # "chat.completion"
    created: NotRequired[int]
    model: NotRequired[str]
    usage: NotRequired[JsonObject | None]
    system_fingerprint: NotRequired[str | None]
    service_tier: NotRequired[str | None]


@with_config(ANSWER)
class ModelInfo(TypedDict):
    id: str
    object: NotRequired[str]  # "model"
    created: NotRequired[int]
    owned_by: NotRequired[str]


@with_config(ANSWER)
class ModelList(TypedDict, total=False):
    """OpenAI's model list, as the provider answered it: {"object": "list", "data": [{"id", ...}]}."""

    object: str
    data: list[ModelInfo]


__all__ = [
    "Asked",
    "AskedQuery",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "Complete",
    "CompletionChoice",
    "ModelInfo",
    "ModelList",
]
