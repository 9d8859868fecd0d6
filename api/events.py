"""The change events of GET /v1/events: their ids, and resuming a stream after one (Last-Event-ID).

An event's id is `RUN-SEQ`: RUN, 12 hex digits, names one run of the daemon (a new one at every start),
SEQ counts that run's events up from 1. A stream resumed after an id gets the events that followed it, or
first one `events.lost` event when they are not all kept (daemon/events.py)."""

import re
from typing import Annotated

from pydantic import WithJsonSchema, with_config
from typing_extensions import TypedDict

from .types import QUERY

LAST_EVENT_ID_HEADER = "Last-Event-ID"
EVENT_ID_PATTERN = r"^[0-9a-f]{12}-(0|[1-9][0-9]{0,17})$"
LOST = "events.lost"  # the event that says some events of the stream were not kept
LAST_EVENT_ID_DESCRIPTION = (
    "Resume after this event id (an `id:` line of an earlier stream, RUN-SEQ): the events after it are sent "
    "first, or one `events.lost` event when they were not kept (another run of the daemon, or too old). "
    "A malformed id is a 400 bad_parameter"
)

EventId = Annotated[str, WithJsonSchema({"type": "string", "pattern": EVENT_ID_PATTERN, "maxLength": 31})]


@with_config(QUERY)
class EventsQuery(TypedDict, total=False):
    # as the Last-Event-ID header, for an app that cannot set headers; the header wins (a browser's
    # EventSource sends it on reconnecting, newer than the id its URL was made with)
    last_event_id: EventId


_ID = re.compile(EVENT_ID_PATTERN)


def parse_event_id(text: str) -> tuple[str, int] | None:
    """(run, seq) of an event id, or None if `text` is not one."""
    if len(text) > 31 or not _ID.match(text):
        return None
    run, seq = text.split("-")
    return run, int(seq)
