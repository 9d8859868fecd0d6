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
        self._stepping = 0  # steps under way (a task inside the items' generator, which none may close meanwhile)

    @property
    def closed(self) -> bool:
        """aclose() was called (its items' generator ends at its next step)."""
        return self._closed

    async def _begin(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _seen(self, item: Any) -> None:
        """An item on its way to the app."""

    async def _send(self) -> Self:
        if self._items is None and not self._closed:
            self.resp, self._items = await self._begin()
            if self._closed:  # closed (by another task) while it was being sent: its answer closed too
                await self._close_answer()
        return self

    def __await__(self):
        return self._send().__await__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
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
