"""A provider's streamed answer read as it arrives, so that a connection's failure never hides text that
arrived before it.

aiohttp's StreamReader raises a failure it was told (the provider dropped the connection mid-body:
ClientPayloadError; a read timeout) before any of the data it still holds: every read checks the failure
first. A stream whose reader was busy elsewhere when the provider wrote its last chunks and dropped the
connection (the daemon committing the question, writing to an app slow to read) lost those chunks, though
they had arrived. `Body` keeps aiohttp's buffer empty instead: a task of its own takes each piece as it
arrives (a task waiting for data runs before the loop reads the connection again, so before it can see the
connection's end) into a buffer of its own, and the failure is raised only after the lines before it."""

from __future__ import annotations

import asyncio

import aiohttp

# What is read ahead of the stream's reader, at most: beyond it, reading waits for the reader (and aiohttp's
# own buffer and the connection's flow control take over), and a line that long with no end is refused.
AHEAD = 1 << 20


class LineTooLong(Exception):
    """A line of the stream longer than AHEAD bytes."""


class Body:
    """`await body.readline()` as a StreamReader's: a line with its end (LF, CR or CRLF, as server-sent events
    end lines), b"" at the end of the body, the failure once every line before it was read. `stop()` ends the
    reading (the response is the caller's)."""

    def __init__(self, content: aiohttp.StreamReader):
        self._content = content
        self._buf = bytearray()
        self._end = False
        self._error: BaseException | None = None
        self._more = asyncio.Event()  # something arrived (or the end did)
        self._room = asyncio.Event()  # the reader took some: there is room again
        self._room.set()
        self._after_cr = False  # the last line ended in a CR: an LF next is its end's too
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while True:
                if len(self._buf) >= AHEAD:
                    self._room.clear()
                    await self._room.wait()
                    continue
                data = await self._content.readany()
                if not data:
                    self._end = True
                    return
                self._buf += data
                self._more.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection's failure (cut, timed out): raised after what came before
            self._error = exc
        finally:
            self._more.set()

    async def readline(self) -> bytes:
        while True:
            if self._after_cr and self._buf:  # the LF of a CRLF whose CR ended the last line
                self._after_cr = False
                if self._buf[0] == 0x0A:
                    del self._buf[:1]
            end = _line_end(self._buf)
            if end >= 0:
                if self._buf[end] == 0x0D:  # a CR: its line ended now, not once the next byte comes
                    if end + 1 < len(self._buf) and self._buf[end + 1] == 0x0A:
                        end += 1
                    else:
                        self._after_cr = True
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                self._room.set()
                return line
            if len(self._buf) >= AHEAD:
                raise LineTooLong(f"a line of the stream is longer than {AHEAD} bytes")
            if self._error is not None:
                raise self._error
            if self._end:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._more.clear()
            await self._more.wait()

    def stop(self) -> None:
        self._task.cancel()

    async def stopped(self) -> None:
        """stop(), and returns once the reading has ended (the StreamReader is free for another reader)."""
        self._task.cancel()
        await asyncio.wait([self._task])  # (a cancellation of the caller's own is raised)


def _line_end(buf: bytearray) -> int:
    """Where the first line of `buf` ends: its first CR or LF (-1: none yet)."""
    lf = buf.find(b"\n")
    cr = buf.find(b"\r", 0, lf if lf >= 0 else len(buf))  # (not past the LF: a long buffer's lines scanned once)
    return cr if cr >= 0 else lf
