"""The API's calls, written once: `Api` has one method per route of the socket API, and the blocking
`Client` (blocking.py) and the asyncio `AsyncClient` (aio.py) inherit them, each giving `_call`, the
transport (the async one's `_call` is a coroutine, so there every method returns an awaitable; aiocalls.py,
generated from `Api` by .ci/aiocalls.py, types them so for an app's type checker: run it after changing a call).

Also here: how a path and a query string are written, the idempotency key an append or a completion
carries, which requests may be sent again after a broken connection, and how long an append stream may
sit idle.

The types of the keyword arguments and of the answers are the API's models (sessiond.api: TypedDicts,
so an answer is a plain dict). They are imported for type checkers only: the models need pydantic,
which the client (standard library only, so that the CLI starts fast) does not load.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import quote, urlencode

from ..api.idempotency import IDEMPOTENCY_HEADER, KEY_RULE, good_key  # noqa: F401 (IDEMPOTENCY_HEADER: the clients')
from .errors import ApiError, closed_during

if TYPE_CHECKING:  # the API's models, for type checkers (see above)
    from typing import Unpack

    from ..api.chats import Chat, ChatCreate, ChatList, ChatPatch
    from ..api.complete import Asked
    from ..api.doctor import DoctorReport
    from ..api.manage import (
        Checkpoint,
        CheckpointList,
        CleanupResult,
        Context,
        Export,
        ImportFileResult,
        ProofResult,
        Quota,
        Stats,
    )
    from ..api.messages import AppendedBatch, Message, MessageIn, MessageList
    from ..api.meta import OpenAPIDocument, Status
    from ..api.search import SearchResult
    from ..api.sessions import Deleted, Ended, Session, SessionCreate, SessionList, SessionPatch
    from ..api.sharing import (
        DeviceList,
        GcReport,
        ImportResult,
        RekeyResult,
        ShareList,
        ShareResult,
        SyncResult,
        UnshareResult,
        VerifyReport,
    )

LAST_EVENT_ID_HEADER = "Last-Event-ID"  # api/events.py's, repeated: importing api/events.py would load pydantic
# the session and chat a call to the OpenAI-compatible endpoint names (daemon/openai_names.py's, repeated: that
# module loads aiohttp)
SESSION_HEADER, CHAT_HEADER = "X-Sessiond-Session", "X-Sessiond-Chat"


def locate_socket(home: str, socket: str | None) -> str:
    """The socket a client of `home` talks to (`socket`, if given): a long home's, outside it, only in a folder
    that no other user could have made or can write to (api/locate.py); UnsafeSocket otherwise."""
    from ..api.locate import HomeError, check_socket_folder, socket_path
    from .errors import UnsafeSocket

    if socket:
        return socket
    try:
        path = socket_path(home)
        if os.path.dirname(path) != home:  # a long home's socket, elsewhere
            check_socket_folder(path)  # no other user's folder: they could stand in for the daemon
    except HomeError as exc:
        raise UnsafeSocket(str(exc)) from None
    return path


def quote_id(sid: str) -> str:
    """An id as one path segment."""
    return quote(sid, safe="")


def query_string(params: dict) -> str:
    items = {k: v for k, v in params.items() if v is not None}
    for k, v in items.items():
        if isinstance(v, bool):
            items[k] = "1" if v else "0"
    return ("?" + urlencode(items)) if items else ""


def new_idempotency_key() -> str:
    """A random UUID (version 4), as str(uuid.uuid4()) is, made without the UUID object (~10 us of every append
    of the blocking client's, ~1 us so)."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40  # the version, 4
    b[8] = b[8] & 0x3F | 0x80  # the variant, RFC 4122's
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def key_for(given: str | None) -> str:
    """The key an append or a question carries: `given`, or a new one. One the API refuses is the ApiError the
    daemon answers one with (422), raised before sending: some (a non-Latin-1 or control character) cannot be
    sent as a header at all, and the HTTP library's own error would say nothing of the API's rule."""
    if given is None:
        return new_idempotency_key()  # (a good key; an empty one given is refused, below, as the daemon does)
    if not good_key(given):
        raise ApiError(422, "invalid", KEY_RULE)
    return given


def sendable_header(name: str, value: str) -> str:
    """`value` for header `name` (X-Sessiond-Session, X-Sessiond-Chat); one no header can carry (a chat's name
    may hold a line break) refused as the ApiError the daemon answers a bad value with (422), before sending,
    with the way to name that chat: the HTTP libraries' own ValueError said nothing of it."""
    if any(c in value for c in "\r\n\0"):
        way = "name that chat by its id (`sessiond chat ls SESSION` lists them)" if name == CHAT_HEADER else ""
        raise ApiError(
            422,
            "invalid",
            f"the {name} header names {value!r}, which no header can carry (a line break or a NUL character in"
            f" it){': ' + way if way else ''}",
            {"param": name},
        )
    return value


def retryable(method: str, key: str | None) -> bool:
    """Whether a request may be sent again after its connection broke with no answer: the daemon may
    have done it already. A GET changes nothing; an append carrying an idempotency key is answered by
    its first result. Anything else is not repeated blindly."""
    return method == "GET" or key is not None


KEEP_ALIVE_HEADER = "Keep-Alive"  # an append stream's handshake answer: `timeout=N`, the daemon's idle timeout
IDLE_SHARE = 0.5  # of that timeout, the time an append stream may sit idle and still be used


def stream_idle_limit(keep_alive: str | None) -> float | None:
    """Seconds an append stream may sit idle and still take an append: IDLE_SHARE of the idle timeout its
    handshake's `Keep-Alive: timeout=N` names (the daemon closes a stream idle that long; an append sent as
    that close is on its way, late when the daemon's loop is busy, is dropped with the stream and must be sent
    again). None if it names none (a daemon of before it)."""
    for part in (keep_alive or "").split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                seconds = float(value.strip())
            except ValueError:
                return None
            return seconds * IDLE_SHARE if 0 < seconds < float("inf") else None
    return None


WAIT_MARGIN = 30.0  # seconds a call that waits by request may take beyond its wait, to answer


def call_timeout(timeout: float, wait: float | None) -> float:
    """A call's timeout: the client's, or longer for one the daemon may spend `wait` seconds on by
    request (a sync that waits for its pushes)."""
    return timeout if wait is None else max(timeout, wait + WAIT_MARGIN)


def complete_body(content, chat, model, provider, stream: bool) -> dict:
    body = {k: x for k, x in dict(content=content, chat=chat, model=model, provider=provider).items() if x is not None}
    if stream:
        body["stream"] = True
    return body


class CallOptions(TypedDict, total=False):
    """A call's options (Api._call's keywords)."""

    key: str | None  # its Idempotency-Key (an append's, a question's)
    wait: float | None  # the seconds the daemon may take by request (call_timeout)
    headers: dict[str, str] | None  # its other headers


class Calls:
    """What the calls ask of a client: `_call`, the transport (Client's, AsyncClient's), and `_append`. Api's
    calls are on top of it; AsyncClient's type (aiocalls.AsyncApi) puts its awaitable calls on top of it too."""

    _closings = 0  # the transport's close() calls: one made during a call fails that call (_check_open)

    def _check_open(self, closings: int, method: str, path: str, key: str | None) -> None:
        """Raise errors.closed_during if the client was closed since its `_closings` was `closings` (read as a
        call began): the app's close() closed the call's connection under it, and the call is not retried."""
        if self._closings != closings:
            raise closed_during(method, path, key) from None

    def _call(self, method: str, path: str, body: Any = None, **options: Unpack[CallOptions]):  # pragma: no cover
        raise NotImplementedError

    def _append(self, sid: str, body: dict, key: str):
        """POST /v1/sessions/{sid}/messages; the clients send it on their append stream (GET /v1/appends) when
        the daemon has one: the same append, answered the same, for less of the daemon's CPU."""
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/messages", body, key=key)


class Api(Calls):
    """Every route of the API, written once, on the client's `_call` (Client, AsyncClient). Each call's types are
    the blocking client's: AsyncClient's, the same calls, are typed by aiocalls.AsyncApi (generated from these)."""

    # daemon
    def status(self) -> Status:
        return self._call("GET", "/v1/status")

    def openapi(self) -> OpenAPIDocument:
        return self._call("GET", "/v1/openapi.json")

    # sessions
    def create_session(self, **spec: Unpack[SessionCreate]) -> Session:
        return self._call("POST", "/v1/sessions", {k: v for k, v in spec.items() if v is not None})

    def list_sessions(
        self,
        *,
        user: str | None = None,
        no_user: bool | None = None,
        status: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> SessionList:
        """`no_user=True`: the sessions with no user (none set, or an empty one an older sessiond stored)."""
        params = dict(user=user, no_user=no_user, status=status, tag=tag, limit=limit, after=after)
        return self._call("GET", "/v1/sessions" + query_string(params))

    def get_session(self, sid: str) -> Session:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}")

    def update_session(self, sid: str, **fields: Unpack[SessionPatch]) -> Session:
        return self._call("PATCH", f"/v1/sessions/{quote_id(sid)}", fields)

    def delete_session(self, sid: str, *, force: bool = False) -> Deleted:
        """`force`: delete a shared session even though changes written here are not pushed (they are lost)."""
        return self._call("DELETE", f"/v1/sessions/{quote_id(sid)}" + query_string({"force": force or None}))

    def pause(self, sid: str) -> Session:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/pause")

    def resume(self, sid: str) -> Session:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/resume")

    def end(self, sid: str) -> Ended:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/end")

    # chats
    def create_chat(self, sid: str, **spec: Unpack[ChatCreate]) -> Chat:
        return self._call(
            "POST", f"/v1/sessions/{quote_id(sid)}/chats", {k: v for k, v in spec.items() if v is not None}
        )

    def list_chats(self, sid: str) -> ChatList:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/chats")

    def update_chat(self, sid: str, chat: str, **fields: Unpack[ChatPatch]) -> Chat:
        """Change chat `chat` (id or name) of session `sid`: the fields given replace its own, None clears one;
        settings and policy are merged per field."""
        return self._call("PATCH", f"/v1/sessions/{quote_id(sid)}/chats/{quote_id(chat)}", fields)

    def switch_chat(self, sid: str, chat: str) -> Session:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/switch", {"chat": chat})

    # messages
    # An append carries an idempotency key (a new one per call unless given), so that a retry after a
    # broken connection is answered with the first result instead of storing the messages twice.
    def append(
        self, sid: str, role: str, content: str, *, idempotency_key: str | None = None, **extra: Any
    ) -> Message:  # extra: MessageIn's other fields (tokens, chat, name, tool_calls, call_fields, ...)
        return self._append(
            sid,
            {"role": role, "content": content, **{k: v for k, v in extra.items() if v is not None}},
            key_for(idempotency_key),
        )

    def append_many(
        self, sid: str, messages: list[MessageIn], chat: str | None = None, *, idempotency_key: str | None = None
    ) -> AppendedBatch:
        body: dict = {"messages": messages}
        if chat is not None:
            body["chat"] = chat
        return self._append(sid, body, key_for(idempotency_key))

    def messages(
        self,
        sid: str,
        *,
        chat: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        after: str | None = None,
        all_chats: bool | None = None,
        last: bool | None = None,
    ) -> MessageList:
        """A page of messages, oldest first: the first `limit` (past `after`), or the last ones (before
        `before`, or with `last` the latest of all); `next` the cursor of the following page (`after`),
        or with `before`/`last` of the page before (`before`)."""
        return self._call(
            "GET",
            f"/v1/sessions/{quote_id(sid)}/messages"
            + query_string(dict(chat=chat, limit=limit, before=before, after=after, all=all_chats, last=last)),
        )

    # talking to a model (issue 16)
    def complete(
        self,
        sid: str,
        content: str | None = None,
        *,
        chat: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Append `content` as the user's message (if given), ask the session's model, and return the
        answer as stored (with its usage, response times, and "interrupted" if it stopped early)."""
        return self._call(
            "POST",
            f"/v1/sessions/{quote_id(sid)}/complete",
            complete_body(content, chat, model, provider, False),
            key=key_for(idempotency_key),
        )

    def asked(self, sid: str, key: str) -> Asked:
        """What the question sent with Idempotency-Key `key` (complete's or complete_stream's
        `idempotency_key`) recorded: {"question", "answer"} (each a message, or None), once no request with
        that key is being answered; for an app that left mid-answer (closed a stream) to learn what is kept."""
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/complete" + query_string({"key": key}))

    # session management
    def quota(self, sid: str) -> Quota:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/quota")

    def context(self, sid: str, chat: str | None = None) -> Context:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/context" + query_string(dict(chat=chat)))

    def compact(self, sid: str, *, chat: str | None = None, target_tokens: int | None = None) -> Context:
        return self._call(
            "POST",
            f"/v1/sessions/{quote_id(sid)}/compact",
            {k: v for k, v in dict(chat=chat, target_tokens=target_tokens).items() if v is not None},
        )

    def uncompact(self, sid: str, *, chat: str | None = None) -> Context:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/uncompact", {"chat": chat} if chat is not None else {})

    def clone(self, sid: str, *, new_id: str | None = None, name: str | None = None) -> Session:
        return self._call(
            "POST",
            f"/v1/sessions/{quote_id(sid)}/clone",
            {k: v for k, v in dict(id=new_id, name=name).items() if v is not None},
        )

    def fork(self, sid: str, at: str, *, new_id: str | None = None, name: str | None = None) -> Session:
        return self._call(
            "POST",
            f"/v1/sessions/{quote_id(sid)}/fork",
            {k: v for k, v in dict(at=at, id=new_id, name=name).items() if v is not None},
        )

    def checkpoint(self, sid: str) -> Checkpoint:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/checkpoints")

    def checkpoints(self, sid: str) -> CheckpointList:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/checkpoints")

    def verify_proof(self, sid: str, proof: dict) -> ProofResult:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/verify-proof", {"proof": proof})

    def stats(self, session: str | None = None, user: str | None = None, *, no_user: bool | None = None) -> Stats:
        """One session's statistics (SessionStats), or several sessions' (SessionsStats: a user's, with
        `no_user=True` those of the sessions with no user (none set, or an empty one an older sessiond stored),
        or the daemon's)."""
        return self._call("GET", "/v1/stats" + query_string(dict(session=session, user=user, no_user=no_user)))

    def search(
        self,
        q: str,
        *,
        session: str | None = None,
        user: str | None = None,
        no_user: bool | None = None,
        role: str | None = None,
        limit: int | None = None,
    ) -> SearchResult:
        """Full-text search over every message on the daemon's device (FTS5 query syntax), best first;
        `no_user=True`: in the sessions with no user."""
        params = dict(q=q, session=session, user=user, no_user=no_user, role=role, limit=limit)
        return self._call("GET", "/v1/search" + query_string(params))

    def cleanup(self, older_than: float, *, dry_run: bool = False) -> CleanupResult:
        return self._call("POST", "/v1/cleanup", {"older_than": older_than, "dry_run": dry_run})

    def export(self, sid: str, fmt: str = "json", chat: str | None = None) -> Export:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/export" + query_string(dict(format=fmt, chat=chat)))

    def import_file(self, data: Any, fmt: str | None = None) -> ImportFileResult:
        """Import a parsed file; `fmt` None lets the daemon tell the format by the file's shape. Of the
        conversations an earlier import of the same export made sessions of, the answer names those `skipped`
        (up to date, or refused), `appended` (their new messages) and `diverged` (made a new session)."""
        return self._call("POST", "/v1/import-file", {"data": data} if fmt is None else {"format": fmt, "data": data})

    # sharing
    def share(
        self, sid: str, *, write: bool = False, passphrase: str | None = None, expires_in: float | None = None
    ) -> ShareResult:
        body: dict = {"write": write}
        if passphrase is not None:
            body["passphrase"] = passphrase
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/share", body)

    def rekey(self, sid: str, drop: list[str] | None = None) -> RekeyResult:
        return self._call("POST", f"/v1/sessions/{quote_id(sid)}/rekey", {"drop": drop or []})

    def shares(self, session: str | None = None) -> ShareList:
        return self._call("GET", "/v1/shares" + query_string(dict(session=session)))

    def unshare(self, sid: str, device: str | None = None) -> UnshareResult:
        return self._call(
            "POST", f"/v1/sessions/{quote_id(sid)}/unshare", {"device": device} if device is not None else {}
        )

    def devices(self, sid: str) -> DeviceList:
        return self._call("GET", f"/v1/sessions/{quote_id(sid)}/devices")

    def gc(self, *, grace: float | None = None, dry_run: bool = False) -> GcReport:
        body: dict = {"dry_run": dry_run}
        if grace is not None:
            body["grace"] = grace
        return self._call("POST", "/v1/gc", body)

    def import_code(self, code: str, passphrase: str | None = None, *, store: str | None = None) -> ImportResult:
        body = {"code": code}
        if passphrase is not None:
            body["passphrase"] = passphrase
        if store is not None:  # where the session is, when neither the daemon's store nor the code's hints hold it
            body["store"] = store
        return self._call("POST", "/v1/import", body)

    # sync
    def sync(self, session: str | None = None, *, wait: bool = False, timeout: float | None = None) -> SyncResult:
        body: dict = {"wait": wait}
        if session is not None:
            body["session"] = session
        if timeout is not None:
            body["timeout"] = timeout
        # waiting, the daemon answers within `timeout` (its default 60 s), however long the client's own
        return self._call("POST", "/v1/sync", body, wait=(60.0 if timeout is None else timeout) if wait else None)

    def models(self, *, provider: str | None = None, session: str | None = None, chat: str | None = None) -> Any:
        """The models a provider offers, as it lists them: OpenAI's {"object": "list", "data": [{"id", ...}]}.
        Those of `provider` (config.toml's [providers.NAME]), else of the provider a question to session
        `session` goes to (chat `chat`'s own settings.provider, by the chat's id or name, else the current
        chat's, else the session's), else the default provider's."""
        named = {SESSION_HEADER: session, CHAT_HEADER: chat}
        headers = {k: sendable_header(k, x) for k, x in named.items() if x is not None}
        return self._call("GET", "/openai/v1/models" + query_string({"provider": provider}), headers=headers or None)

    def doctor(self, *, verify: bool = True) -> DoctorReport:
        return self._call("GET", "/v1/doctor" + ("" if verify else "?verify=false"))

    def verify(self, session: str | None = None) -> VerifyReport:
        return self._call("POST", "/v1/verify", {"session": session} if session is not None else {})
