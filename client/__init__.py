"""Python client for the sessiond socket API.

    from . import Client, AsyncClient
    with Client() as c:                       # the daemon of $SESSIOND_HOME or the default home
        s = c.create_session(name="demo", system_prompt="Be brief.")
        c.append(s["id"], "user", "Hello")
        print(c.messages(s["id"]))

    async with AsyncClient(home="/tmp/h") as c:
        await c.status()

Both classes expose the same methods (one per API route); the async one returns awaitables.
Errors from the daemon raise `ApiError` (with .status, .code, .message); no daemon raises
`DaemonNotRunning`.

The types of the keyword arguments and of the answers are the API's models (sessiond.api: TypedDicts,
so an answer is a plain dict). They are imported for type checkers only: the models need pydantic,
which the client (standard library only, so that the CLI starts fast) does not load.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from ..api.locate import resolve_home, socket_path

if TYPE_CHECKING:  # the API's models, for type checkers (see above)
    import aiohttp
    from typing_extensions import Unpack

    from ..api.chats import Chat, ChatCreate, ChatList
    from ..api.manage import Checkpoint, CheckpointList, CleanupResult, Context, ImportFileResult, ProofResult, Quota
    from ..api.messages import AppendedBatch, Message, MessageIn, MessageList
    from ..api.meta import Status
    from ..api.sessions import Deleted, Session, SessionCreate, SessionList, SessionPatch
    from ..api.sharing import ImportResult, RekeyResult, ShareResult, VerifyReport


class ClientError(Exception):
    pass


class DaemonNotRunning(ClientError):
    def __init__(self, path: str, why: str = ""):
        super().__init__(
            f"no sessiond daemon answers on {path}{f' ({why})' if why else ''}; "
            f"start one with `sessiond start` (background) or `sessiond daemon` (foreground)"
        )
        self.path = path


class ApiError(ClientError):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def _q(sid: str) -> str:
    return quote(sid, safe="")


def _query(params: dict) -> str:
    items = {k: v for k, v in params.items() if v is not None}
    for k, v in items.items():
        if isinstance(v, bool):
            items[k] = "1" if v else "0"
    return ("?" + urlencode(items)) if items else ""


IDEMPOTENCY_HEADER = "Idempotency-Key"


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _retryable(method: str, key: str | None) -> bool:
    """Whether a request may be sent again after its connection broke with no answer: the daemon may
    have done it already. A GET changes nothing; an append carrying an idempotency key is answered by
    its first result. Anything else is not repeated blindly."""
    return method == "GET" or key is not None


def _lost(method: str, path: str) -> ClientError:
    return ClientError(
        f"the connection to the daemon broke before it answered {method} {path}; the request may "
        f"or may not have been done: check (e.g. `sessiond ls`, `sessiond show`) before repeating it"
    )


def _raise_for(status: int, data: Any) -> None:
    if status >= 400:
        err = data.get("error", {}) if isinstance(data, dict) else {}
        raise ApiError(status, err.get("code", "http_error"), err.get("message", f"HTTP {status}"), err.get("details"))


class _Api:
    """Every route of the API, written once; `_call` does the transport."""

    def _call(self, method: str, path: str, body: Any = None, key: str | None = None):  # pragma: no cover
        raise NotImplementedError

    # daemon
    def status(self) -> Status:
        return self._call("GET", "/v1/status")

    def openapi(self):
        return self._call("GET", "/v1/openapi.json")

    # sessions
    def create_session(self, **spec: Unpack[SessionCreate]) -> Session:
        return self._call("POST", "/v1/sessions", {k: v for k, v in spec.items() if v is not None})

    def list_sessions(
        self,
        *,
        user: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> SessionList:
        return self._call(
            "GET", "/v1/sessions" + _query(dict(user=user, status=status, tag=tag, limit=limit, after=after))
        )

    def get_session(self, sid: str) -> Session:
        return self._call("GET", f"/v1/sessions/{_q(sid)}")

    def update_session(self, sid: str, **fields: Unpack[SessionPatch]) -> Session:
        return self._call("PATCH", f"/v1/sessions/{_q(sid)}", fields)

    def delete_session(self, sid: str) -> Deleted:
        return self._call("DELETE", f"/v1/sessions/{_q(sid)}")

    def pause(self, sid: str) -> Session:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/pause")

    def resume(self, sid: str) -> Session:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/resume")

    def end(self, sid: str) -> Session:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/end")

    # chats
    def create_chat(self, sid: str, **spec: Unpack[ChatCreate]) -> Chat:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/chats", {k: v for k, v in spec.items() if v is not None})

    def list_chats(self, sid: str) -> ChatList:
        return self._call("GET", f"/v1/sessions/{_q(sid)}/chats")

    def switch_chat(self, sid: str, chat: str) -> Session:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/switch", {"chat": chat})

    # messages
    # An append carries an idempotency key (a new one per call unless given), so that a retry after a
    # broken connection is answered with the first result instead of storing the messages twice.
    def append(
        self, sid: str, role: str, content: str, *, idempotency_key: str | None = None, **extra: Any
    ) -> Message:  # extra: MessageIn's other fields (tokens, chat, name, ...)
        return self._call(
            "POST",
            f"/v1/sessions/{_q(sid)}/messages",
            {"role": role, "content": content, **{k: v for k, v in extra.items() if v is not None}},
            key=idempotency_key or new_idempotency_key(),
        )

    def append_many(
        self, sid: str, messages: list[MessageIn], chat: str | None = None, *, idempotency_key: str | None = None
    ) -> AppendedBatch:
        body: dict = {"messages": messages}
        if chat is not None:
            body["chat"] = chat
        return self._call(
            "POST", f"/v1/sessions/{_q(sid)}/messages", body, key=idempotency_key or new_idempotency_key()
        )

    def messages(
        self,
        sid: str,
        *,
        chat: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        after: str | None = None,
        all_chats: bool | None = None,
    ) -> MessageList:
        return self._call(
            "GET",
            f"/v1/sessions/{_q(sid)}/messages"
            + _query(dict(chat=chat, limit=limit, before=before, after=after, all=all_chats)),
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
    ):
        """Append `content` as the user's message (if given), ask the session's model, and return the
        answer as stored (with its usage, response times, and "interrupted" if it stopped early)."""
        return self._call(
            "POST",
            f"/v1/sessions/{_q(sid)}/complete",
            _complete_body(content, chat, model, provider, False),
            key=idempotency_key or new_idempotency_key(),
        )

    # session management
    def quota(self, sid: str) -> Quota:
        return self._call("GET", f"/v1/sessions/{_q(sid)}/quota")

    def context(self, sid: str, chat: str | None = None) -> Context:
        return self._call("GET", f"/v1/sessions/{_q(sid)}/context" + _query(dict(chat=chat)))

    def compact(self, sid: str, *, chat: str | None = None, target_tokens: int | None = None) -> Context:
        return self._call(
            "POST",
            f"/v1/sessions/{_q(sid)}/compact",
            {k: v for k, v in dict(chat=chat, target_tokens=target_tokens).items() if v is not None},
        )

    def uncompact(self, sid: str, *, chat: str | None = None) -> Context:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/uncompact", {"chat": chat} if chat else {})

    def clone(self, sid: str, *, new_id: str | None = None, name: str | None = None) -> Session:
        return self._call(
            "POST",
            f"/v1/sessions/{_q(sid)}/clone",
            {k: v for k, v in dict(id=new_id, name=name).items() if v is not None},
        )

    def fork(self, sid: str, at: str, *, new_id: str | None = None, name: str | None = None) -> Session:
        return self._call(
            "POST",
            f"/v1/sessions/{_q(sid)}/fork",
            {k: v for k, v in dict(at=at, id=new_id, name=name).items() if v is not None},
        )

    def checkpoint(self, sid: str) -> Checkpoint:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/checkpoints")

    def checkpoints(self, sid: str) -> CheckpointList:
        return self._call("GET", f"/v1/sessions/{_q(sid)}/checkpoints")

    def verify_proof(self, sid: str, proof: dict) -> ProofResult:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/verify-proof", {"proof": proof})

    def stats(self, session: str | None = None, user: str | None = None):
        return self._call("GET", "/v1/stats" + _query(dict(session=session, user=user)))

    def cleanup(self, older_than: float, *, dry_run: bool = False) -> CleanupResult:
        return self._call("POST", "/v1/cleanup", {"older_than": older_than, "dry_run": dry_run})

    def export(self, sid: str, fmt: str = "json", chat: str | None = None):
        return self._call("GET", f"/v1/sessions/{_q(sid)}/export" + _query(dict(format=fmt, chat=chat)))

    def import_file(self, data: Any, fmt: str) -> ImportFileResult:
        return self._call("POST", "/v1/import-file", {"format": fmt, "data": data})

    # sharing
    def share(
        self, sid: str, *, write: bool = False, passphrase: str | None = None, expires_in: float | None = None
    ) -> ShareResult:
        body: dict = {"write": write}
        if passphrase is not None:
            body["passphrase"] = passphrase
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._call("POST", f"/v1/sessions/{_q(sid)}/share", body)

    def rekey(self, sid: str, drop: list[str] | None = None) -> RekeyResult:
        return self._call("POST", f"/v1/sessions/{_q(sid)}/rekey", {"drop": drop or []})

    def import_code(self, code: str, passphrase: str | None = None) -> ImportResult:
        body = {"code": code}
        if passphrase is not None:
            body["passphrase"] = passphrase
        return self._call("POST", "/v1/import", body)

    # sync
    def sync(self, session: str | None = None, *, wait: bool = False, timeout: float | None = None):
        body: dict = {"wait": wait}
        if session is not None:
            body["session"] = session
        if timeout is not None:
            body["timeout"] = timeout
        return self._call("POST", "/v1/sync", body)

    def verify(self, session: str | None = None) -> VerifyReport:
        return self._call("POST", "/v1/verify", {"session": session} if session else {})


def _complete_body(content, chat, model, provider, stream: bool) -> dict:
    body = {k: x for k, x in dict(content=content, chat=chat, model=model, provider=provider).items() if x is not None}
    if stream:
        body["stream"] = True
    return body


def _stream_event(event: str, data: Any, stream) -> str | None:
    """One event of a streamed answer: a delta's text, or None (the stored message is kept on the
    stream as .message; an error raises ApiError, with the partial answer as recorded in .details)."""
    if event == "delta":
        return data.get("content", "")
    if event == "message":
        stream.message = data
    elif event == "error":
        err = data.get("error", {})
        details = dict(err.get("details") or {})
        if data.get("message") is not None:
            stream.message = details["message"] = data["message"]
        raise ApiError(
            502 if err.get("code") != "provider_timeout" else 504,
            err.get("code", "provider_error"),
            err.get("message", "the model's answer failed"),
            details,
        )
    return None


class CompletionStream:
    """A streamed answer: iterate over it for the text as it arrives; afterwards .message is the stored
    answer. close() (or leaving a `with` block) early stops the generation; the daemon records what
    arrived, marked interrupted."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._conn, self._resp = conn, resp
        self.message: dict | None = None

    def __iter__(self) -> Iterator[str]:
        event, data = "message", []
        try:
            while True:
                raw = self._resp.readline()
                if not raw:
                    break
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    text = _stream_event(event, json.loads("\n".join(data)), self)
                    event, data = "message", []
                    if text:
                        yield text
        finally:
            self.close()
        if self.message is None:
            raise ClientError("the daemon's answer stream ended before the stored message")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection that is readable has been closed by the daemon (EOF)."""
    if conn.sock is None:
        return False
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Client(_Api):
    """Blocking client (standard library only, so the CLI starts fast)."""

    def __init__(self, home: str | None = None, *, socket: str | None = None, timeout: float = 300.0):
        self.home = resolve_home(home)
        self.socket = socket or socket_path(self.home)
        self.timeout = timeout
        self._conn: _UnixHTTPConnection | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: Any = None, key: str | None = None):
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        retry = _retryable(method, key)
        for attempt in (0, 1):
            if self._conn is not None and not retry and _closed_by_peer(self._conn):
                self.close()  # what cannot be retried is not sent on a connection the daemon already closed
            if self._conn is None:
                self._conn = _UnixHTTPConnection(self.socket, self.timeout)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                return self._conn.getresponse()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                self.close()
                raise DaemonNotRunning(self.socket, exc.strerror or "") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the daemon closed: retry once on a fresh one
                if not retry:
                    raise _lost(method, path) from None
                if attempt:
                    raise DaemonNotRunning(self.socket, "the connection was closed") from None
            except PermissionError:
                self.close()
                raise ClientError(f"permission denied on {self.socket}: the daemon belongs to another user") from None
            except TimeoutError:
                self.close()
                raise ClientError(f"the daemon on {self.socket} did not answer within {self.timeout:g} s") from None
            except OSError as exc:  # e.g. a home that is a file, a path too long for a socket
                self.close()
                raise ClientError(f"cannot connect to {self.socket}: {exc.strerror or exc}") from None

    def _call(self, method: str, path: str, body: Any = None, key: str | None = None):
        resp = self._request(method, path, body, key)
        raw = resp.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise ClientError(f"the daemon sent a reply that is not JSON (HTTP {resp.status})") from None
        _raise_for(resp.status, data)
        return data

    def complete_stream(
        self,
        sid: str,
        content: str | None = None,
        *,
        chat: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ) -> CompletionStream:
        """As complete(), streamed: `for text in c.complete_stream(...)` gives the answer as it arrives,
        then the stream's .message is the stored answer."""
        conn = _UnixHTTPConnection(self.socket, self.timeout)  # its own: closing it stops the generation
        body = json.dumps(_complete_body(content, chat, model, provider, True)).encode()
        try:
            conn.request(
                "POST",
                f"/v1/sessions/{_q(sid)}/complete",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key(),
                },
            )
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise DaemonNotRunning(self.socket, exc.strerror or "") from None
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            try:
                data = json.loads(raw)
            except ValueError:
                raise ClientError(f"the daemon sent a reply that is not JSON (HTTP {resp.status})") from None
            _raise_for(resp.status, data)
        if not resp.getheader("Content-Type", "").startswith("text/event-stream"):
            stream = CompletionStream(conn, resp)
            stream.message = json.loads(resp.read())
            conn.close()
            return stream
        return CompletionStream(conn, resp)

    def events(self) -> Iterator[dict]:
        """Yield change events as they happen (blocking)."""
        conn = _UnixHTTPConnection(self.socket, None)  # type: ignore[arg-type]
        try:
            conn.request("GET", "/v1/events")
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(self.socket, exc.strerror or "") from None
        resp = conn.getresponse()
        data = None
        while True:
            raw = resp.fp.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                yield data
                data = None


class AsyncClient(_Api):
    """asyncio client (aiohttp over the Unix socket)."""

    def __init__(self, home: str | None = None, *, socket: str | None = None, timeout: float = 300.0):
        self.home = resolve_home(home)
        self.socket = socket or socket_path(self.home)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket), timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def _call(self, method: str, path: str, body: Any = None, key: str | None = None):
        import aiohttp

        headers = {IDEMPOTENCY_HEADER: key} if key is not None else None
        for attempt in (0, 1):
            try:
                async with self._http().request(method, "http://localhost" + path, json=body, headers=headers) as resp:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        raise ClientError(f"the daemon sent a reply that is not JSON (HTTP {resp.status})") from None
                    _raise_for(resp.status, data)
                    return data
            except aiohttp.ClientConnectorError as exc:
                raise DaemonNotRunning(self.socket, str(exc.os_error.strerror or "")) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # aiohttp itself retries a GET on a kept-alive connection; an append with its key is
                # retried here once (answered with the first result if the daemon had committed it)
                if not _retryable(method, key):
                    raise _lost(method, path) from None
                if attempt:
                    raise DaemonNotRunning(self.socket, "the connection was closed") from None

    async def complete_stream(
        self,
        sid: str,
        content: str | None = None,
        *,
        chat: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ):
        """As complete(), streamed: `async for text in c.complete_stream(...)` yields the answer as it
        arrives; the last item is not text but the stored answer, a dict (stop early by breaking out:
        the daemon records what arrived, marked interrupted)."""
        import aiohttp

        holder = CompletionStream.__new__(CompletionStream)
        holder.message = None
        try:
            resp = await self._http().post(
                f"http://localhost/v1/sessions/{_q(sid)}/complete",
                json=_complete_body(content, chat, model, provider, True),
                headers={IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key()},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self.timeout),
            )
        except aiohttp.ClientConnectorError as exc:
            raise DaemonNotRunning(self.socket, str(exc.os_error.strerror or "")) from None
        try:
            if resp.status >= 400:
                _raise_for(resp.status, await resp.json(content_type=None))
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                yield await resp.json(content_type=None)
                return
            event, data = "message", []
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    text = _stream_event(event, json.loads("\n".join(data)), holder)
                    event, data = "message", []
                    if text:
                        yield text
                    elif holder.message is not None:
                        yield holder.message
                        return
            raise ClientError("the daemon's answer stream ended before the stored message")
        finally:
            resp.close()  # early: the connection closes, and the daemon stops the generation

    async def events(self):
        """Async iterator of change events."""
        import aiohttp

        try:
            resp = await self._http().get("http://localhost/v1/events", timeout=aiohttp.ClientTimeout(total=None))
        except aiohttp.ClientConnectorError as exc:
            raise DaemonNotRunning(self.socket, str(exc.os_error.strerror or "")) from None
        data = None
        async with resp:
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and data is not None:
                    yield data
                    data = None


__all__ = ["ApiError", "AsyncClient", "Client", "ClientError", "CompletionStream", "DaemonNotRunning"]
