"""The route table: every route of the socket API, declared once, with the models (api/) of its request
body, query string, headers and answer. It drives the aiohttp router (daemon/api.py), the checks of
each request (routes/common.py reads a body and a query through the route's own models) and the
OpenAPI document (daemon/openapi.py), so the three cannot drift.

Adding a route: a handler in the module of its area, its models in api/, and one line below.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...api import chats as C
from ...api import complete as Cm
from ...api import doctor as Dr
from ...api import events as Ev
from ...api import manage as M
from ...api import messages as Msg
from ...api import meta as Meta
from ...api import search as Se
from ...api import sessions as S
from ...api import sharing as Sh
from ...api.idempotency import IDEMPOTENCY_HEADER
from ...api.types import Text
from .. import complete, openai_compat, openai_names
from . import appends, chats, events, files, manage, messages, meta, search, sessions, sharing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Header:
    name: str
    model: Any
    description: str = ""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: Any = None  # the body's model (api/), None for no body
    response: Any = None  # the answer's model; None for an event stream
    status: int = 200
    query: Any = None  # the query string's model
    headers: tuple[Header, ...] = ()  # request headers it reads
    errors: tuple[int, ...] = ()  # error statuses beyond the common ones (api/errors.py ERROR_STATUSES)
    stream: bool = False  # may answer with server-sent events too
    websocket: bool = False  # answers 101, a WebSocket (the append stream)

    @property
    def header_names(self) -> frozenset[str]:
        return frozenset(h.name for h in self.headers)


IDEMPOTENCY = Header(IDEMPOTENCY_HEADER, Msg.IdempotencyKey, Msg.IDEMPOTENCY_DESCRIPTION)
LAST_EVENT_ID = Header(Ev.LAST_EVENT_ID_HEADER, Ev.EventId, Ev.LAST_EVENT_ID_DESCRIPTION)
SESSION = Header(
    openai_names.SESSION_HEADER,
    Text(128, min_len=1),
    "The session that records this call (absent: a new session, whose id comes back in this header of the answer;"
    " empty: refused, 422)",
)
CHAT = Header(
    openai_names.CHAT_HEADER,
    Text(128, min_len=1),
    "The chat of that session the call reads and appends to, by its id or name (absent: the session's current"
    " chat, never switched; the chat's id comes back in this header of the answer; empty, unknown or without"
    f" {openai_names.SESSION_HEADER}: refused)",
)

ROUTES: list[Route] = [
    Route(
        "GET",
        "/v1/status",
        meta.status,
        "Daemon version, device id, uptime, counts and sync state",
        response=Meta.Status,
    ),
    Route(
        "GET",
        "/v1/doctor",
        meta.doctor,
        "Check the home's permissions and keys, each store (a write-read round trip), the clock, pending pushes "
        "and every session's stored copy; each finding with the command that fixes it",
        response=Dr.DoctorReport,
        query=Dr.DoctorQuery,
    ),
    Route("GET", "/v1/openapi.json", meta.openapi, "This OpenAPI document", response=Meta.OpenAPIDocument),
    Route("POST", "/v1/sessions", sessions.create_session, "Create a session", S.CreateBody, S.Session, 201),
    Route(
        "GET",
        "/v1/sessions",
        sessions.list_sessions,
        "List sessions (filter by user, status, tag; paginated)",
        response=S.SessionList,
        query=S.SessionsQuery,
    ),
    Route(
        "GET", "/v1/sessions/{id}", sessions.get_session, "One session with counts and sync state", response=S.Session
    ),
    Route("PATCH", "/v1/sessions/{id}", sessions.patch_session, "Change a session's fields", S.PatchBody, S.Session),
    Route(
        "DELETE",
        "/v1/sessions/{id}",
        sessions.delete_session,
        "Delete a session and its key from this device (a shared one with changes not pushed: only with force)",
        response=S.Deleted,
        query=S.DeleteQuery,
    ),
    Route(
        "POST", "/v1/sessions/{id}/pause", sessions.pause, "Pause a session (appends are refused)", response=S.Session
    ),
    Route("POST", "/v1/sessions/{id}/resume", sessions.resume, "Resume a paused session", response=S.Session),
    Route(
        "POST",
        "/v1/sessions/{id}/end",
        sessions.end,
        "End a session: its final checkpoint made, everything pushed",
        response=S.Ended,
    ),
    Route(
        "POST", "/v1/sessions/{id}/chats", chats.create_chat, "Create a chat in a session", C.ChatCreate, C.Chat, 201
    ),
    Route("GET", "/v1/sessions/{id}/chats", chats.list_chats, "List a session's chats", response=C.ChatList),
    Route(
        "PATCH",
        "/v1/sessions/{id}/chats/{chat}",
        chats.patch_chat,
        "Change a chat (by id or name): name, system prompt, model, settings, context policy; synced",
        C.ChatPatchBody,
        C.Chat,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/switch",
        chats.switch_chat,
        "Make a chat the session's current chat",
        C.Switch,
        S.Session,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/messages",
        messages.append_messages,
        "Append one message, or a batch in one transaction; answered after the commit",
        Msg.Append,
        Msg.Appended,
        201,
        headers=(IDEMPOTENCY,),
    ),
    Route(
        "GET",
        appends.PATH,
        appends.append_stream,
        "The append stream: a WebSocket whose text frames are appends (a head line: tag, session and"
        " Idempotency-Key; a newline; the body POST /v1/sessions/{id}/messages takes), each answered once committed"
        " with a frame {tag, status, body} holding what the POST answers; in order",
        status=101,
        websocket=True,
        query=Msg.AppendsQuery,
    ),
    Route(
        "GET",
        "/v1/sessions/{id}/messages",
        messages.list_messages,
        "List messages (by chat; limit; before/after)",
        response=Msg.MessageList,
        query=Msg.MessagesQuery,
    ),
    Route("GET", "/v1/sessions/{id}/quota", manage.quota, "Tokens used, quota and warning level", response=M.Quota),
    Route(
        "GET",
        "/v1/sessions/{id}/context",
        manage.context,
        "A chat's active context and compaction state",
        response=M.Context,
        query=M.ChatQuery,
    ),
    Route(
        "POST", "/v1/sessions/{id}/compact", manage.compact, "Compact a chat's active context now", M.Compact, M.Context
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/uncompact",
        manage.uncompact,
        "Restore a chat's compacted messages to its context",
        M.Uncompact,
        M.Context,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/clone",
        manage.clone,
        "A new session with the same settings, no conversation",
        M.Clone,
        S.Session,
        201,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/fork",
        manage.fork,
        "A new session with the history up to a message",
        M.Fork,
        S.Session,
        201,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/checkpoints",
        manage.make_checkpoint,
        "Make a signed checkpoint now",
        response=M.Checkpoint,
        status=201,
    ),
    Route(
        "GET", "/v1/sessions/{id}/checkpoints", manage.list_checkpoints, "List checkpoints", response=M.CheckpointList
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/verify-proof",
        manage.verify_proof,
        "Check a checkpoint proof against the session",
        M.ProofRequest,
        M.ProofResult,
    ),
    Route(
        "GET",
        "/v1/sessions/{id}/export",
        files.export_session,
        "The session as OpenAI messages, full JSON, or Markdown ({format, markdown})",
        response=M.Export,
        query=M.ExportQuery,
    ),
    Route(
        "POST",
        "/v1/import-file",
        files.import_file,
        "Import OpenAI messages, a session JSON, or ChatGPT's, Claude's, Open WebUI's or llm's history",
        M.ImportFile,
        M.ImportFileResult,
        201,
    ),
    Route(
        "GET",
        "/v1/stats",
        manage.stats,
        "Statistics: one session, one user, or the whole daemon",
        response=M.Stats,
        query=M.StatsQuery,
    ),
    Route(
        "POST",
        "/v1/cleanup",
        manage.cleanup,
        "Delete sessions idle for longer than older_than seconds",
        M.Cleanup,
        M.CleanupResult,
    ),
    Route(
        "GET",
        "/v1/search",
        search.search,
        'Full-text search over every message on this device (FTS5 syntax: a "phrase", prefix*, AND/OR/NOT), '
        "best first, each with a highlighted snippet",
        response=Se.SearchResult,
        query=Se.SearchQuery,
    ),
    Route(
        "GET",
        "/v1/events",
        events.events,
        "Server-sent events for every change, each with an id; resumed after a Last-Event-ID (or last_event_id) "
        "with the events that followed it, or first one events.lost event if they were not kept",
        query=Ev.EventsQuery,
        headers=(LAST_EVENT_ID,),
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/share",
        sharing.share,
        "Make a share code (read-only, or read-write with write)",
        Sh.ShareRequest,
        Sh.ShareResult,
        201,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/rekey",
        sharing.rekey,
        "Rotate the session key; every writer device but those dropped keeps access",
        Sh.RekeyRequest,
        Sh.RekeyResult,
    ),
    Route(
        "GET",
        "/v1/shares",
        sharing.shares,
        "The share codes this device issued (described: never a code or its secrets), and whether each still works",
        response=Sh.ShareList,
        query=Sh.SharesQuery,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/unshare",
        sharing.unshare,
        "End access by a rekey: one writer device (device) or every other device, and every earlier code",
        Sh.UnshareRequest,
        Sh.UnshareResult,
    ),
    Route(
        "GET",
        "/v1/sessions/{id}/devices",
        sharing.devices,
        "The session's devices as this daemon knows them: this one, the writers of its members slot, the logs it"
        " follows; each with its messages held here and when it last wrote",
        response=Sh.DeviceList,
    ),
    Route(
        "POST",
        "/v1/gc",
        sharing.gc,
        "Free store objects this device's logs let go longer than grace seconds ago and no current head references",
        Sh.GcRequest,
        Sh.GcReport,
    ),
    Route(
        "POST",
        "/v1/import",
        sharing.import_code,
        "Import a session from a share code, verified, all or nothing",
        Sh.ImportRequest,
        Sh.ImportResult,
        201,
    ),
    Route(
        "POST",
        "/v1/sync",
        sharing.sync_now,
        "Push (and pull) now; optionally wait until done",
        Sh.SyncRequest,
        Sh.SyncResult,
    ),
    Route(
        "POST",
        "/v1/sessions/{id}/complete",
        complete.handle,
        "Append a user message (optional), send the chat's active context to the model, record and return the "
        "answer (stream: server-sent events of deltas, then the stored message)",
        Cm.Complete,
        Msg.Message,
        201,
        headers=(IDEMPOTENCY,),
        errors=(502, 504),
        stream=True,
    ),
    Route(
        "GET",
        "/v1/sessions/{id}/complete",
        complete.asked,
        "What a question sent with Idempotency-Key `key` recorded (its question and the model's answer, or null), "
        "once no request with that key is being answered: what an app that left mid-answer left in the session",
        response=Cm.Asked,
        query=Cm.AskedQuery,
    ),
    Route(
        "POST",
        "/openai/v1/chat/completions",
        openai_compat.chat_completions,
        "OpenAI-compatible chat completions, recorded into the session named by X-Sessiond-Session (or a new "
        "one, named in the answer's header), in its chat X-Sessiond-Chat names (or its current one)",
        Cm.ChatCompletionRequest,
        Cm.ChatCompletion,
        headers=(SESSION, CHAT),
        errors=(502, 504),
        stream=True,
    ),
    Route(
        "GET",
        "/openai/v1/models",
        openai_compat.models,
        "The provider's models (OpenAI-compatible): `provider`'s, else the session's chat's (X-Sessiond-Chat's, else"
        " its current one's), else the session's, else the default one's",
        response=Cm.ModelList,
        query=Cm.ModelsQuery,
        headers=(SESSION, CHAT),
        errors=(502, 504),
    ),
    Route(
        "POST",
        "/v1/verify",
        sharing.verify,
        "Verify the pushed snapshots against the local database",
        Sh.VerifyRequest,
        Sh.VerifyReport,
    ),
]
