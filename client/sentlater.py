"""An async iterator over a request's answer whose request is sent only when it is awaited, entered or first
stepped: the base of AsyncClient's change events and streamed answers (client/aio.py)."""

from __future__ import annotations

from typing import Any, Self


class SentLater:
    """An async iterator over a request's answer, the request sent when awaited or entered (`async with`),
    else at its first step (`_begin`: the answer and its items' async iterator); aclose() (or the `async
    with`'s end) ends the iteration and closes the answer's connection."""

    def __init__(self) -> None:
        self.resp: Any = None  # the answer (aiohttp's response), once sent
        self._items: Any = None  # its items, once sent
        self._closed = False

    async def _begin(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _seen(self, item: Any) -> None:
        """An item on its way to the app."""

    async def _send(self) -> Self:
        if self._items is None and not self._closed:
            self.resp, self._items = await self._begin()
        return self

    def __await__(self):
        return self._send().__await__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        await self._send()
        if self._closed:
            raise StopAsyncIteration
        item = await self._items.__anext__()
        self._seen(item)
        return item

    async def aclose(self) -> None:
        """End the iteration and close the answer's connection."""
        self._closed = True
        if self._items is not None:
            await self._items.aclose()
        if self.resp is not None:
            self.resp.close()  # (an answer sent but never read: its generator never began)

    async def __aenter__(self) -> Self:
        return await self._send()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
