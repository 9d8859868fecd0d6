"""An async iterator over a request's answer whose request is sent only when it is awaited, entered or first
stepped (`SentLater`), and AsyncClient's two such streams: its change events and its streamed answers, whose
requests and items are the client's (client/aio.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

if TYPE_CHECKING:
    from ..api.messages import Message

T = TypeVar("T")


class StreamsOf(Protocol):
    """What AsyncEvents and AsyncCompletionStream ask of their client (AsyncClient): each stream's request, and its
    items' async iterator."""

    async def _event_stream(self, last_event_id: str | None) -> Any: ...

    def _events(self, resp: Any, owner: AsyncEvents, reconnect: bool, retry_for: float) -> AsyncIterator[Any]: ...

    async def _post_complete(self, sid: str, body: dict, key: str) -> tuple[Any, Any]: ...

    def _answer_events(self, resp: Any, sid: str, key: str) -> AsyncIterator[Any]: ...


class SentLater(Generic[T]):
    """An async iterator over a request's answer (of `T`s), the request sent when awaited or entered (`async with`),
    else at its first step (`_begin`: the answer and its items' async iterator); aclose() (or the `async
    with`'s end) ends the iteration and closes the answer's connection."""

    def __init__(self) -> None:
        self.resp: Any = None  # the answer (aiohttp's response), once sent
        self._items: Any = None  # its items, once sent
        self._closed = False
        self._stepping = 0  # steps under way (a task inside the items' generator, which none may close meanwhile)

    @property
    def closed(self) -> bool:
        """aclose() was called (its items' generator ends at its next step)."""
        return self._closed

    async def _begin(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _seen(self, item: T) -> None:
        """An item on its way to the app."""

    async def _send(self) -> Self:
        if self._items is None and not self._closed:
            self.resp, self._items = await self._begin()
            if self._closed:  # closed (by another task) while it was being sent: its answer closed too
                await self._close_answer()
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self._send().__await__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        await self._send()
        if self._closed:
            raise StopAsyncIteration
        self._stepping += 1
        try:
            item = await self._items.__anext__()
        except Exception:
            if self._closed:  # its connection closed under it by aclose() from another task: the end
                raise StopAsyncIteration from None
            raise
        finally:
            self._stepping -= 1
        if self._closed:  # closed by another task meanwhile: the generator, left to it, closed now
            await self._close_answer()
            raise StopAsyncIteration
        self._seen(item)
        return item

    async def aclose(self) -> None:
        """End the iteration and close the answer's connection, from any task: one iterating it meanwhile sees
        its iteration end."""
        self._closed = True
        await self._close_answer()

    async def _close_answer(self) -> None:
        # the connection first: a task inside the items' generator (which Python refuses to close while it
        # runs: "already running") is woken by it, and that step ends the iteration (__anext__)
        if self.resp is not None:
            self.resp.close()  # (also an answer sent but never read: its generator never began)
        if self._items is not None and not self._stepping:
            await self._items.aclose()

    async def __aenter__(self) -> Self:
        return await self._send()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class AsyncEvents(SentLater[dict]):
    """AsyncClient.events(): an async iterator of change events, subscribed when awaited or entered (`async
    with`), else at its first step. `last_event_id`: the last event read (or the stream's start), to resume
    after."""

    def __init__(self, client: StreamsOf, last_event_id: str | None, reconnect: bool, retry_for: float):
        super().__init__()
        self._client, self._reconnect, self._retry_for = client, reconnect, retry_for
        self.last_event_id = last_event_id

    async def _begin(self) -> tuple[Any, Any]:
        resp = await self._client._event_stream(self.last_event_id)
        return resp, self._client._events(resp, self, self._reconnect, self._retry_for)


class AsyncCompletionStream(SentLater["str | Message"]):
    """AsyncClient.complete_stream(): a streamed answer, its question sent when awaited or entered (`async
    with`), as Client.complete_stream() sends it when it returns, else at its first step. Its items: the
    answer's texts as they arrive, then the stored answer (a dict), also kept as `.message`. aclose() (or
    the `async with`'s end) early stops the generation: the daemon records what arrived, marked interrupted."""

    def __init__(self, client: StreamsOf, sid: str, body: dict, key: str):
        super().__init__()
        self._client, self._sid, self._body, self._key = client, sid, body, key
        self.message: Message | None = None

    async def _begin(self) -> tuple[Any, Any]:
        resp, answered = await self._client._post_complete(self._sid, self._body, self._key)
        if answered is not None:  # a JSON answer (no stream: the model's whole answer at once), its one item
            return resp, _one(answered)
        try:
            return resp, self._client._answer_events(resp, self._sid, self._key)
        except BaseException:  # (cancelled before the app has the stream to close): closed here, so that the
            # daemon sees the app leave and stops the generation; else it recorded the model's whole answer
            resp.close()
            raise

    def _seen(self, item: str | Message) -> None:
        if isinstance(item, dict):
            self.message = item


async def _one(item: Any):
    yield item
