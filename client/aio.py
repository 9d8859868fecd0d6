"""`AsyncClient`: the asyncio client, aiohttp over the daemon's Unix socket (aiohttp is imported on first
use, so that importing the client stays standard library only). The same methods as `Client`
(calls.Api), each returning an awaitable; the streams are async iterators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.locate import resolve_home, socket_path
from .calls import IDEMPOTENCY_HEADER, Api, complete_body, new_idempotency_key, quote_id, retryable
from .errors import ClientError, DaemonNotRunning, lost, raise_for
from .streams import SseParser, StreamedAnswer, stream_event

if TYPE_CHECKING:
    import aiohttp


class AsyncClient(Api):
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
                    raise_for(resp.status, data)
                    return data
            except aiohttp.ClientConnectorError as exc:
                raise DaemonNotRunning(self.socket, str(exc.os_error.strerror or "")) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # aiohttp itself retries a GET on a kept-alive connection; an append with its key is
                # retried here once (answered with the first result if the daemon had committed it)
                if not retryable(method, key):
                    raise lost(method, path) from None
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

        holder = StreamedAnswer()
        try:
            resp = await self._http().post(
                f"http://localhost/v1/sessions/{quote_id(sid)}/complete",
                json=complete_body(content, chat, model, provider, True),
                headers={IDEMPOTENCY_HEADER: idempotency_key or new_idempotency_key()},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=self.timeout),
            )
        except aiohttp.ClientConnectorError as exc:
            raise DaemonNotRunning(self.socket, str(exc.os_error.strerror or "")) from None
        try:
            if resp.status >= 400:
                raise_for(resp.status, await resp.json(content_type=None))
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                yield await resp.json(content_type=None)
                return
            parser = SseParser()
            async for raw in resp.content:
                done = parser.feed(raw)
                if done is None:
                    continue
                text = stream_event(*done, holder)
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
        parser = SseParser()
        async with resp:
            async for raw in resp.content:
                done = parser.feed(raw)
                if done is not None:
                    yield done[1]
