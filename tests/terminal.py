"""A CLI command run on a pseudo-terminal, for what it does when a person is there to answer it: a
question asked, echo turned off."""

from __future__ import annotations

import os
import select
import time

from conftest import popen_cli


def on_terminal(argv: list[str], prompt: bytes, answer: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """`sessiond *argv` on a new pseudo-terminal: once it has shown `prompt`, `answer` is typed; its exit
    code and all the terminal showed."""
    master, slave = os.openpty()
    try:
        proc = popen_cli(argv, env=dict(os.environ), stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + timeout
        while prompt not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        os.write(master, answer)
        code = proc.wait(timeout=timeout)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    return code, seen
