"""Where daemon A's event-loop CPU per append goes, measured, not sampled: bench/loopcpu.py (the daemon on
this process's main thread, sync idle, 16 clients in another process on the append stream) with the
thread's CPU clock read around each synchronous part it can be read around. Prints JSON.

Parts (us of the loop thread's CPU per append):
* every SQLite statement the writer runs on the loop, by its text (the append's own and anything else on
  the writer meanwhile), the COMMIT apart;
* the append stream's parts: the frame's head line, the body's check (pydantic), the answer's JSON, the
  frame's send (`WebSocketResponse.send_str`: aiohttp's writer and the socket's write) and the bytes
  read (`RequestHandler.data_received`: the frame parsed by aiohttp's reader);
* what a committed append sets off: the listeners (events, the sync worker's notify, automatic
  checkpoints' scheduling).

What is left (`unmeasured`) is the loop's own scheduling, the Python of the storage layer around the
statements (the transaction's machinery, the rows and answer's dicts, the request's digest), aiohttp's
receive() and the handler's coroutine. Each clock read costs ~0.3-1 us, counted in its part: the parts are
a little high and `unmeasured` a little low. BENCH_APPENDS, BENCH_ROUNDS as loopcpu.py.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import os
import sys
import threading
import time

from aiohttp import web, web_protocol

sys.path.insert(0, os.path.dirname(__file__))
import loopcpu

from sessiond.daemon import server
from sessiond.daemon.routes import appends
from sessiond.storage import groupcommit

LOOP = threading.get_ident()  # loopcpu runs the daemon on this thread
spent: collections.Counter[str] = collections.Counter()
clock = time.thread_time_ns


class _Rows:
    """A SELECT's rows, read inside the timed part (the cursor's fetch is SQLite's work too)."""

    def __init__(self, rows: list):
        self.rows = rows
        self.rowcount = -1

    def fetchall(self) -> list:
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def __iter__(self):
        return iter(self.rows)


class TimedWriter:
    """The writer connection, its statements timed when run on the loop's thread."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql: str, args: tuple = ()):
        if threading.get_ident() != LOOP:
            return self._conn.execute(sql, args)
        t = clock()
        cur = self._conn.execute(sql, args)
        out = _Rows(cur.fetchall()) if sql.lstrip()[:6].upper() == "SELECT" else cur
        spent["sql: " + " ".join(sql.split())[:70]] += clock() - t
        return out

    def executemany(self, sql: str, rows):
        t = clock()
        cur = self._conn.executemany(sql, rows)
        spent["sql (many): " + " ".join(sql.split())[:64]] += clock() - t
        return cur

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def _timed(owner, name: str, part: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args, **kw):
        t = clock()
        try:
            return fn(*args, **kw)
        finally:
            spent[part] += clock() - t

    setattr(owner, name, timed)


def _timed_send(fn):
    @functools.wraps(fn)
    async def send_str(self, data, compress=None):
        t = clock()  # (a send that must wait for the socket would count the wait's other work: none here)
        try:
            return await fn(self, data, compress)
        finally:
            spent["stream: send the answer (send_str)"] += clock() - t

    return send_str


def instrument() -> None:
    init = groupcommit.GroupCommit.__init__

    def timed_init(self, writer, *args, **kw):
        init(self, TimedWriter(writer), *args, **kw)

    groupcommit.GroupCommit.__init__ = timed_init  # type: ignore[method-assign]
    _timed(appends, "_head", "stream: the head line")
    _timed(appends, "append_body", "stream: the body's check")
    _timed(appends, "_encode", "stream: the answer's JSON")
    _timed(server.Daemon, "_on_change", "after commit: listeners (events, sync notify)")
    _timed(web_protocol.RequestHandler, "data_received", "stream: bytes read (data_received)")
    web.WebSocketResponse.send_str = _timed_send(web.WebSocketResponse.send_str)  # type: ignore[method-assign]


def main() -> dict:
    instrument()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        loopcpu.main()
    result = json.loads(printed.getvalue())
    appended = loopcpu.APPENDS * loopcpu.ROUNDS + loopcpu.CLIENTS * 20  # the rounds and the warm-up
    parts = {k: round(v / 1e3 / appended, 1) for k, v in spent.most_common()}
    sql = round(sum(v for k, v in parts.items() if k.startswith("sql")), 1)
    measured = round(sum(parts.values()), 1)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "loopcpu": {k: v for k, v in result.items() if k != "rounds"},
        "us_per_append": {
            "loop_in_all": result["loop_cpu_us_per_append"],
            "sqlite_in_all": sql,
            "measured_parts": measured,
            "unmeasured": round(result["loop_cpu_us_per_append"] - measured, 1),
        },
        "parts_us_per_append": {k: v for k, v in parts.items() if v >= 0.1},
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
