"""About the daemon itself: its status."""

from typing import NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from .types import ANSWER


@with_config(ANSWER)
class Status(TypedDict):
    version: str
    device_id: str
    uptime: float
    counts: dict
    pid: NotRequired[int]
    socket: NotRequired[str]
    home: NotRequired[str]
    store: NotRequired[str | None]
    sync: NotRequired[dict]
