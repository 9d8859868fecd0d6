"""What the tests of a question raced against a session's close (a delete, an end, a revocation) share: the
question sent as an app sends it, a call run in a thread of its own, and the daemon's log read by event."""

from __future__ import annotations

import json
import os
import threading

import openai

from conftest import UnixHTTP
from sessiond.client import ApiError


def logged(d, event: str) -> list[dict]:
    """The records of daemon `d`'s log whose event is `event`. The daemon may be writing one as it is read:
    a last line not ended yet is left for the next look (its first part only, not JSON yet)."""
    with open(os.path.join(d.home, "logs", "sessiond.log")) as f:
        *ended, _writing = f.read().split("\n")
    return [x for x in map(json.loads, ended) if x.get("event") == event]


def complete_raw(d, sid: str, key: str | None = None) -> tuple[int, dict]:
    """POST .../complete with no new question (nothing is written before the model's answer), as an app
    without the Python client sends it: no Idempotency-Key unless `key`."""
    status, text = posted(d, sid, {}, key)
    return status, json.loads(text)


def posted(d, sid: str, body: dict, key: str | None = None) -> tuple[int, str]:
    """POST .../complete with `body`, as an app without the Python client sends it: its status and text (a
    stream's events, whole)."""
    c = UnixHTTP(d.socket, timeout=60)
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    c.request("POST", f"/v1/sessions/{sid}/complete", body=json.dumps(body), headers=headers)
    r = c.getresponse()
    got = (r.status, r.read().decode())
    c.close()
    return got


def in_thread(fn, out: list) -> threading.Thread:
    """`fn()` run in a thread, its result (or the API error it raised) appended to `out`."""

    def go():
        try:
            out.append(fn())
        except (ApiError, openai.APIStatusError) as exc:
            out.append(exc)

    t = threading.Thread(target=go)
    t.start()
    return t
