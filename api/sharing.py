"""Sharing between devices: share codes, importing them, rekeying, pushing and verifying snapshots."""

from typing import Literal, NotRequired, Required

from pydantic import with_config
from typing_extensions import TypedDict

from .types import ANSWER, BODY, QUERY, YEARS_10, Seconds, Text


@with_config(BODY)
class ShareRequest(TypedDict, total=False):
    write: bool  # read-write (another writer device) instead of read-only
    passphrase: Text(1000, min_len=8) | None
    expires_in: Seconds(1, YEARS_10) | None


@with_config(ANSWER)
class Location(TypedDict):
    network: str  # relay, s5, ipfs, folder
    hint: str | None  # a URL to try (no credentials), or none


@with_config(ANSWER)
class ShareResult(TypedDict):
    code: str
    session: str
    capability: Literal["read-only", "read-write"]
    expires_at: NotRequired[int | None]
    store: NotRequired[str | None]  # this device's store(s) the session is in (a mirror's separated by spaces)
    locations: NotRequired[list[Location]]  # what the code says: networks plus hints
    protected: NotRequired[bool]


@with_config(BODY)
class ImportRequest(TypedDict, total=False):
    code: Required[Text(20_000)]
    passphrase: Text(1000) | None
    store: Text(2048, min_len=1) | None  # where the session is, when neither this store nor the code's hints hold it


@with_config(ANSWER)
class UncheckedCheckpoint(TypedDict):
    device: str
    number: int
    v: int  # its version, past those this sessiond verifies


@with_config(ANSWER)
class ImportResult(TypedDict):
    session: str
    new: NotRequired[int]
    capability: NotRequired[str]  # this device's access now: a read-only code over a writer's copy leaves "read-write"
    already: NotRequired[bool]
    devices: NotRequired[int]
    waiting_for: NotRequired[list[str]]  # writers not yet under the session's latest key: their messages come later
    # checkpoints of a version this sessiond does not know (a newer one made them): kept, not checked
    unchecked_checkpoints: NotRequired[list[UncheckedCheckpoint]]


@with_config(BODY)
class RekeyRequest(TypedDict, total=False):
    drop: list[str] | None  # device ids losing access


@with_config(ANSWER)
class RekeyResult(TypedDict):
    session: str
    kept: list[str]
    dropped: list[str]  # the writer devices dropped: by this rekey, and those asked to drop that one before had
    already_dropped: list[str]  # those of `dropped` an earlier rekey dropped (a drop asked again after a crash)


@with_config(BODY)
class SyncRequest(TypedDict, total=False):
    session: Text(128, min_len=1) | None  # absent: every session
    wait: bool
    timeout: Seconds(0, 3600)


@with_config(ANSWER)
class SyncResult(TypedDict):
    complete: bool  # everything asked for is pushed, and pulled without an error
    pushed: bool  # everything asked for is pushed
    sessions: dict  # each session's sync state, by id (as GET /v1/sessions/{id} gives it in `sync`)


@with_config(BODY)
class VerifyRequest(TypedDict, total=False):
    session: Text(128, min_len=1) | None  # absent: every session


@with_config(ANSWER)
class VerifyReport(TypedDict):
    ok: bool
    sessions: list


@with_config(QUERY)
class SharesQuery(TypedDict, total=False):
    session: Text(128, min_len=1)  # absent: the codes of every session


@with_config(ANSWER)
class IssuedShare(TypedDict):
    """A share code this device issued, described: never the code, its key or its passphrase."""

    id: int
    session: str
    created_at: float
    capability: Literal["read-only", "read-write"]
    expires_at: int | None
    protected: bool  # a passphrase protects the code
    store: str | None
    status: Literal["active", "expired", "revoked"]  # revoked: the session was rekeyed since


@with_config(ANSWER)
class ShareList(TypedDict):
    shares: list[IssuedShare]


@with_config(BODY)
class UnshareRequest(TypedDict, total=False):
    device: Text(128, min_len=1) | None  # one writer device; absent: every other device


@with_config(ANSWER)
class UnshareResult(TypedDict):
    session: str
    kept: list[str]
    dropped: list[str]
    already_dropped: list[str]  # as RekeyResult's
    codes_revoked: int  # codes of this device that worked until now and no longer do
    cannot_take_back: list[str]  # what no rekey can undo, said plainly


@with_config(ANSWER)
class Device(TypedDict):
    """A device of a session, as this daemon knows it (no store is asked)."""

    device: str  # its id (a member whose log was never read: the start of its head key), unshare's --device
    this_device: bool
    writer: bool  # in the session's members slot, as last read or written here (else as the logs followed say)
    followed: bool  # this device follows its log
    frozen: bool  # a rekey dropped it (this device: its access `revoked`): its log stays as it stood then
    messages: int  # its messages held here
    last_message_at: float | None  # the latest of them, as the device stamped it
    last_seen: float | None  # its latest write of any kind held here (a message, a change, a chat), by its clock
    note: str | None  # what holds its log back, if anything (away through a rekey)


@with_config(ANSWER)
class DeviceList(TypedDict):
    session: str
    shared: bool  # shared from here or imported: false, this device alone
    members_rev: int | None  # the members slot's revision as last seen here
    devices: list[Device]  # this device first, then the writers, then the others


@with_config(BODY)
class GcRequest(TypedDict, total=False):
    dry_run: bool
    grace: Seconds(0, YEARS_10)  # seconds since this device's logs let an object go


@with_config(ANSWER)
class GcStore(TypedDict):
    store: str
    objects: int
    bytes: int
    how: str  # "deleted", "unpinned", or why nothing could be
    errors: NotRequired[list[str]]
    # sessions a rekey left this device out of, their objects kept (not a failure): "ID: kept its N objects: why"
    held: NotRequired[list[str]]


@with_config(ANSWER)
class GcKeptInStore(TypedDict):
    session: str  # a session deleted here
    store: str
    objects: int  # of its objects its delete kept in the store for good (never freed by gc)
    why: str  # what needs them: the members slot pins this device's log as a rekey froze it
    at: float  # when it was deleted (Unix seconds)


@with_config(ANSWER)
class GcReport(TypedDict):
    dry_run: bool
    grace: float
    objects: int  # freed (or, with dry_run, that would be)
    bytes: int  # of those whose size the store could tell
    kept: int  # candidates still referenced by a current head, or too young, or on a store that cannot delete
    stores: list[GcStore]
    # present when deletes here kept objects in the store for good (rm's kept_in_store), by session
    kept_in_store: NotRequired[list[GcKeptInStore]]
