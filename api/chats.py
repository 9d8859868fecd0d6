"""Chats: the conversations of a session, each with its own prompt, model, settings and context policy."""

from typing import Annotated, NotRequired, Required

from pydantic import AfterValidator, ConfigDict, with_config
from typing_extensions import TypedDict

from .sessions import ChatPolicy, Settings
from .types import ANSWER, BODY, MAX_TEXT, ChatId, Name, Text, refuse

SESSIONS_MODEL = "leave it out for the session's (null clears it)"


@with_config(BODY)
class ChatCreate(ChatPolicy, total=False):
    """A new chat; the context policy's fields are also accepted at the top level, as shortcuts (a field given
    both ways is refused). A chat is picked by its id or its name, the id first: a name another chat of the
    session has as its name or id, or an id another chat has as its name, is refused (409)."""

    id: ChatId | None
    name: Text() | None
    system_prompt: Text(MAX_TEXT) | None
    model: Name(SESSIONS_MODEL) | None
    settings: Settings | None
    switch: bool | None  # make it the session's current chat
    policy: ChatPolicy | None


@with_config(ConfigDict(**BODY, json_schema_extra={"minProperties": 1}))
class ChatPatch(ChatPolicy, total=False):
    """Changes to a chat: the fields given replace its own; null clears one (a null name gives the chat its id
    as its name again); settings and policy (with its shortcuts) are merged per field, a null in them clears
    that field, a null settings or policy clears all of it; a policy field is given in `policy` or as its
    shortcut, not both. Its id cannot change. A name another chat of the session has as its name or id is
    refused (409): a name picks one chat."""

    name: Text() | None
    system_prompt: Text(MAX_TEXT) | None
    model: Name(SESSIONS_MODEL) | None
    settings: Settings | None
    policy: ChatPolicy | None


def _something(body: dict) -> dict:
    if not body:
        raise refuse("nothing to change: give at least one field")
    return body


ChatPatchBody = Annotated[ChatPatch, AfterValidator(_something)]


@with_config(BODY)
class Switch(TypedDict):
    chat: Text(200, min_len=1)  # id or name


@with_config(ANSWER)
class Chat(TypedDict):
    id: str
    current: bool
    name: NotRequired[str | None]
    system_prompt: NotRequired[str | None]
    model: NotRequired[str | None]
    settings: NotRequired[dict]
    policy: NotRequired[dict]
    created_at: NotRequired[float]
    compacted_upto: NotRequired[str | None]  # the last message its compaction set aside, if any


@with_config(ANSWER)
class ChatList(TypedDict):
    chats: list[Chat]


__all__ = ["Chat", "ChatCreate", "ChatList", "ChatPatch", "ChatPatchBody", "Required", "Switch"]
