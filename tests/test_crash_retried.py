"""kill -9 at random moments of appends each sent again with its Idempotency-Key until answered (as an app
does after a broken connection): whether the kill came before the append's commit or after it (committed,
never answered), the retry after the restart stores it once, and answers the message stored. Singles and
batches; every message there exactly once, in the order asked, verify and doctor clean. CRASH_KILLS sets
how many kills."""

from __future__ import annotations

import os
import threading
import time

from conftest import cli_json, run_cli
from killing import killed_while
from sessiond.client import ApiError, Client, ClientError

KILLS = int(os.environ.get("CRASH_KILLS", 10))


def test_appends_sent_again_with_their_key_across_kill_9_are_stored_once(make_daemon, store_dir):
    d = make_daemon(f"file://{store_dir}").start()
    sid = d.client().create_session(name="retried")["id"]
    answered: dict[str, str] = {}  # content -> the id its answer named
    asked: list[str] = []
    errors: list[BaseException] = []

    def appender(stop: threading.Event) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            key = f"key-{i}"
            batch = i % 4 == 0
            contents = [f"m{i}.{j}" for j in range(3)] if batch else [f"m{i}"]
            asked.extend(contents)
            while True:  # sent again with its key until answered
                try:
                    with Client(d.home, timeout=10) as c:
                        if batch:
                            got = c.append_many(
                                sid, [{"role": "user", "content": t} for t in contents], idempotency_key=key
                            )
                            ids = got["ids"]
                        else:
                            ids = [c.append(sid, "user", contents[0], idempotency_key=key)["id"]]
                    answered.update(zip(contents, ids, strict=True))
                    break
                except ApiError as exc:
                    errors.append(exc)
                    return
                except (ClientError, OSError):
                    time.sleep(0.02)  # killed mid-request: asked again with the same key

    killed_while([appender], [d], KILLS, hi=0.3)
    assert not errors, errors
    got = d.client().messages(sid, limit=100_000)["messages"]
    assert [m["content"] for m in got] == asked  # each once, in the order asked
    assert {m["content"]: m["id"] for m in got} == answered  # the retry answered the message stored
    assert cli_json(d.home, "sync", "--wait")
    assert cli_json(d.home, "verify")["ok"]
    assert run_cli(d.home, "doctor", "--json").returncode == 0
