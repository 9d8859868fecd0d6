"""Progress bars on standard error for long work the daemon does (a push, verify, an import): drawn
with rich from the daemon's own `progress` events (GET /v1/events: {"task", "session", "done",
"total"}, sync/context.py), only when standard error is a terminal. Nothing is drawn otherwise, and
standard output (--json included) is never touched."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ..client import Client, ClientError


class Progress:
    """`with Progress(client, {"push"}, sessions): ...` shows a bar per (task, session) the daemon
    reports while the block runs; `sessions` None: every session."""

    def __init__(self, client: Client, tasks: set[str], sessions: set[str] | None = None):
        self.client, self.tasks, self.sessions = client, tasks, sessions
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
                bar = self._bars[key] = self._view.add_task(f"{ev['task']} {sid}", total=ev["total"])
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
