"""Progress bars on standard error for long work the daemon does (a push, verify, an import): drawn
with rich from the daemon's own `progress` events (GET /v1/events: {"task", "session", "done",
"total"}, sync/context.py), only when standard error is a terminal. Nothing is drawn otherwise, and
standard output (--json included) is never touched. And the notices of a wait for a store that fails
(StoreWaits), on standard error whatever it is."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..client import Client, ClientError
from ..storage.clock import wait_said
from .output import for_home, safe


class Progress:
    """`with Progress(client, {"push"}, sessions): ...` shows a bar per (task, session) the daemon
    reports while the block runs; `sessions` None: every session. `labels`: a task's bar named so (else by
    the task's name)."""

    def __init__(
        self,
        client: Client,
        tasks: set[str],
        sessions: set[str] | None = None,
        labels: dict[str, str] | None = None,
    ):
        self.client, self.tasks, self.sessions = client, tasks, sessions
        self.labels = labels or {}
        self.enabled = sys.stderr.isatty()
        self._bars: dict[tuple[str, str], Any] = {}
        self._open: set[tuple[str, str]] = set()
        self._seen = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._view: Any = None

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        try:
            self._stream = Client(self.client.home, socket=self.client.socket).event_stream()
        except ClientError:
            self.enabled = False  # no bar is no failure: the command itself says what went wrong
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self._view = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._view.start()
        self._thread = threading.Thread(target=self._read, name="sessiond-progress", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for ev in self._stream:
            if ev.get("type") != "progress" or ev.get("task") not in self.tasks:
                continue
            sid = ev.get("session", "")
            if self.sessions is not None and sid not in self.sessions:
                continue
            key = (ev["task"], sid)
            bar = self._bars.get(key)
            if bar is None:
                bar = self._bars[key] = self._view.add_task(
                    f"{self.labels.get(ev['task'], ev['task'])} {sid}", total=ev["total"]
                )
            self._view.update(bar, completed=ev["done"], total=ev["total"])
            if ev["done"] < ev["total"]:
                self._open.add(key)
            else:
                self._open.discard(key)
            self._seen.set()

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled or self._view is None:
            return
        # The daemon publishes a task's last event before it answers; let the stream deliver it.
        self._seen.wait(0.3)
        deadline = time.monotonic() + 1.0
        while self._open and time.monotonic() < deadline and exc[0] is None:
            time.sleep(0.02)  # a poll interval: the reader thread closes the open bars
        self._stream.close()
        if self._thread is not None:
            self._thread.join(2)
        self._view.stop()


_AN_ID = re.compile(r"\b(?:[0-9a-z]{26}|[0-9a-f]{32,})\b")  # an object's hash, a session's id, in a failure
STREAM_OPEN_WAIT = 5.0  # seconds StoreWaits waits for the daemon to open its event stream


class StoreWaits:
    """While a command waits for pushes (`sync --wait`; `rm` and `end`, whose daemon waits for a shared session's
    push as long as a store call may take, store_timeout): a line on standard error each time the daemon says a
    session waits for its store's Retry-After (the `sync.waiting` event), and once per failure a push (or, with
    `pulls`, a pull) meets (the `sync.error` event: a store down, unreachable, refusing), with what the command
    does meanwhile (`meanwhile(seconds left of its timeout)`), so that the wait is not a silent hang (60 s by
    default for `sync --wait`, with nothing on the screen)."""

    def __init__(self, c, sid: str | None, timeout: float, meanwhile: Callable[[float], str], pulls: bool = True):
        self.sid = sid
        self.meanwhile, self.pulls = meanwhile, pulls
        self.home = c.home
        self.deadline = time.monotonic() + timeout
        self.said: set[tuple[str, str]] = set()  # (push or pull, the failure) said once: the retries fail alike
        self.stream: Any = None
        self.thread: threading.Thread | None = None
        self.told = threading.Event()  # a notice was printed
        try:
            # its own connection (c waits on the command's request); a daemon that does not answer it at once
            # is left to the command's request to name (stuck), not waited for twice
            self.stream = Client(c.home, socket=c.socket, timeout=STREAM_OPEN_WAIT).event_stream()
        except ClientError:
            return  # no notice is no failure: the answer says the rest
        self.thread = threading.Thread(target=self._read, name="sessiond-store-waits", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for ev in self.stream:
                if self.sid and ev.get("session") != self.sid:
                    continue
                if ev.get("type") == "sync.error" and not ev.get("retry_after"):  # (Retry-After: sync.waiting)
                    self._failed(ev)
                    continue
                if ev.get("type") != "sync.waiting":
                    continue
                wait, left = float(ev.get("retry_in") or 0), float(ev.get("deadline_in") or 0)
                why = f" ({ev['error']})" if ev.get("error") else ""
                print(
                    safe(
                        f"{ev.get('session')}: waiting {wait_said(wait)} for the store's Retry-After before the next"
                        " try"
                        + why
                        + ("" if wait <= left else f"; that is past --timeout ({left:.0f} s left), so not waiting")
                    ),
                    file=sys.stderr,
                    flush=True,
                )
                self.told.set()
        except (ClientError, OSError, ValueError):
            pass

    def _failed(self, ev: dict) -> None:
        """A push (the event names its retry) or a pull of a session failed: said once per failure."""
        kind = "push" if "retry_in" in ev else "pull"
        error = str(ev.get("error") or "")
        same = _AN_ID.sub("…", error)  # the same failure of another object or session (a folder store's) is not new
        if (kind, same) in self.said or (kind == "pull" and not self.pulls):
            return
        self.said.add((kind, same))
        left = max(0.0, self.deadline - time.monotonic())
        what = "not pushed yet" if kind == "push" else "cannot pull yet"
        # a failure waiting does not mend ends the daemon's wait at once: what the command would do meanwhile
        # (wait until its timeout) is not what it does
        meanwhile = (
            "waiting does not mend this, so the wait ends now (the daemon tries again by itself)"
            if ev.get("settled")
            else self.meanwhile(left)
        )
        print(
            safe(f"{ev.get('session')}: {what}: {for_home(error, self.home)}; {meanwhile}"),
            file=sys.stderr,
            flush=True,
        )

    def close(self, expected: bool = False) -> None:
        """`expected`: the answer says a session waits for its store (the daemon told so before it
        answered): let the stream deliver that notice first."""
        if expected and self.thread is not None:
            self.told.wait(1.0)
        if self.stream is not None:
            self.stream.close()
        if self.thread is not None:
            self.thread.join(2)
