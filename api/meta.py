"""About the daemon itself: its status."""

from typing import NotRequired

from pydantic import with_config
from typing_extensions import TypedDict

from .types import ANSWER, JsonObject


@with_config(ANSWER)
class PinningStatus(TypedDict):
    service: str  # the pinning service's URL (config.toml's pinning_service), without credentials
    pinned: int  # pin requests it holds that this daemon remembers
    pending: int  # objects waiting to be pinned there (its last try failed, or none was made yet)
    last_error: str | None  # why its last try failed (a refused token, the service down), None once one succeeds
    fix: NotRequired[str]  # while last_error: what to do (the token file to write, or the service to check)


@with_config(ANSWER)
class StoreStatus(TypedDict):
    url: str
    # answered last time it was used (None: not used yet). One store (no mirror): as its pushes found it,
    # False while a session's last push failed on it (failure, last_error, retry_in), and for a folder store
    # whose folder is missing, empty or not made yet, last_error saying so
    reachable: bool | None
    pending: int  # objects and heads waiting in its outbox (a mirror's store that was down)
    last_error: str | None
    failure: NotRequired[str]  # reachable False: the failure's class (unreachable, refusing our credentials, ...)
    retry_in: NotRequired[float]  # ... and the seconds before it is tried again
    retry_after: NotRequired[bool]  # ... retry_in being the store's own Retry-After
    writes: NotRequired[int]  # a folder store: objects and heads written since the daemon started
    write_batches: NotRequired[int]  # ... in this many batches (each: one thread job, one fsync per folder)
    head_listings: NotRequired[int]  # a folder store: full listings of its heads folder by this daemon's follower
    journal_records: NotRequired[int]  # ... and records of its change journal read instead (stores/headjournal.py)
    pinning: NotRequired[PinningStatus]  # a Kubo store whose objects a pinning service pins too


@with_config(ANSWER)
class PushStats(TypedDict):
    started: int  # pushes started since the daemon started
    active_sessions: int  # sessions pushed in the last 2 s
    gap: float  # seconds a busy session's next push waits now (push_delay, wider under load, at most 1 s)


@with_config(ANSWER)
class DatabaseLostStatus(TypedDict):
    what: str  # deleted, replaced by another file, WAL deleted, overwritten in place, written by another program
    message: str  # what became of it, as doctor says it
    fix: str  # what to do


@with_config(ANSWER)
class DatabaseStats(TypedDict):
    commits: int  # SQLite commits on the writer since the daemon started (each serves one or more write transactions)
    # sessions.db or its WAL lost under the daemon (writes refused: database_lost); overwritten in place, counts,
    # stores and sync are then empty, as no read is answered
    lost: NotRequired[DatabaseLostStatus]


@with_config(ANSWER)
class EventsStatus(TypedDict):
    subscribers: int  # event streams (GET /v1/events) open now
    keepalive: float  # seconds of no event after which each is sent a comment (config.toml's event_keepalive)
    backlog: int  # bytes of events a stream may hold unsent before it is dropped (config.toml's event_backlog)
    held: int  # bytes of events the streams hold unsent now
    dropped: int  # streams dropped since the daemon started for holding too much unsent


@with_config(ANSWER)
class OpenAIStatus(TypedDict):
    base_url: str | None  # the OpenAI-compatible listener (openai_listen), if it runs
    api_key_file: str | None  # the file holding its bearer key, when it runs
    socket_path: str  # the endpoint's path prefix on the socket


@with_config(ANSWER)
class Providers(TypedDict):
    default: str | None  # config.toml's default_provider
    names: list[str]  # its [providers.NAME]


@with_config(ANSWER)
class FormatVersion(TypedDict):
    writes: int | str  # the version of the format this sessiond writes
    reads: list[int | str]  # those it reads


@with_config(ANSWER)
class Status(TypedDict):
    version: str
    schema: NotRequired[int]  # the database schema's version (daemon/versions.py)
    formats: NotRequired[dict[str, FormatVersion]]  # the wire formats': share_code, log, page, members, ...
    device_id: str
    uptime: float
    counts: dict
    pid: NotRequired[int]
    socket: NotRequired[str]
    home: NotRequired[str]
    store: NotRequired[str | None]  # a mirror's URLs separated by spaces
    stores: NotRequired[list[StoreStatus]]  # each store: one, or each of a mirror's
    database: NotRequired[DatabaseStats]
    events: NotRequired[EventsStatus]
    sync: NotRequired[dict]
    pushes: NotRequired[PushStats]
    openai: NotRequired[OpenAIStatus]
    providers: NotRequired[Providers]


@with_config(ANSWER)
class OpenAPIDocument(TypedDict):
    """GET /v1/openapi.json: this OpenAPI 3.1 document, generated from the route table (daemon/openapi.py)."""

    openapi: str  # "3.1.0"
    info: JsonObject  # {title, version: the daemon's, description}
    servers: list[JsonObject]  # [{url}]: the socket's requests' base
    paths: JsonObject  # by path, by method: each route's parameters, request body and answers
    components: JsonObject  # {schemas}: the named models the paths refer to
