"""`doctor`: the checks of a home, its stores and its sessions (GET /v1/doctor)."""

from typing import Literal

from pydantic import with_config
from typing_extensions import TypedDict

from .types import ANSWER, QUERY, QueryBool


@with_config(ANSWER)
class Finding(TypedDict):
    check: str  # home, folders, socket, keys, store, pinning, clock, push, pull, verify, daemon
    level: Literal["ok", "warn", "problem"]
    message: str
    fix: str | None  # the exact command that fixes it; None when nothing needs fixing


@with_config(ANSWER)
class DoctorReport(TypedDict):
    ok: bool  # no finding is a problem
    findings: list[Finding]


@with_config(QUERY)
class DoctorQuery(TypedDict, total=False):
    verify: QueryBool  # false (or 0): skip verifying every session against the store (the slow part)
