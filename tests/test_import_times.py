"""Claude's, Open WebUI's and llm's histories give each message its own time: an import keeps it as the
message's `created_at` (its log operation's `t`, which no checkpoint hashes: docs/FORMATS.md sections 4 and
10), as ChatGPT's import does. A message with no usable time (none, not above 0, later than this device's
clock) takes the time of the message before it in its conversation (the first ones the first one's after
them that has one), else the import's: a chat's times do not go backwards (stats' answer times rely on it).
The times sync as they are: another device reads the same."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from conftest import cli_json, run_cli
from test_import_formats import LLM_SCHEMA

T0 = 1714554000.0  # 2024-05-01 09:00:00 UTC
FUTURE = time.time() + 10 * 365 * 86400


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{round(t % 1 * 1e6):06d}Z"


def _write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _log(home: str, sid: str) -> list[tuple[str, float]]:
    """(content, created_at) of each message, as `log --json` shows them."""
    return [(m["content"], m["created_at"]) for m in cli_json(home, "log", sid)["messages"]]


def _imported(make_daemon, store_dir, path: str, fmt: str) -> tuple:
    """The file imported on a daemon with a folder store: (daemon, the sessions made, when the import ran)."""
    a = make_daemon(f"file://{store_dir}").start()
    before = time.time()
    made = cli_json(a.home, "import-file", path, "--format", fmt)["sessions"]
    return a, made, (before - 1, time.time() + 1)


def _on_another_device(make_daemon, store_dir, a, sid: str) -> list[tuple[str, float]]:
    """The session pushed to the folder store and imported on a second daemon: its log there."""
    c = a.client()
    c.checkpoint(sid)
    run_cli(a.home, "sync", "--wait", check=True)
    assert cli_json(a.home, "verify")["ok"], cli_json(a.home, "verify")
    b = make_daemon(f"file://{store_dir}").start()
    b.client().import_code(c.share(sid)["code"])
    assert cli_json(b.home, "verify")["ok"]
    return _log(b.home, sid)


def _kept(make_daemon, store_dir, a, sid: str, want: list[tuple[str, float]]) -> None:
    """The session's messages at the `want`ed times, here and on another device it is pushed to."""
    for got in (_log(a.home, sid), _on_another_device(make_daemon, store_dir, a, sid)):
        assert [x for x, _ in got] == [x for x, _ in want], got
        for (text, t), (_, w) in zip(got, want, strict=True):
            assert t == pytest.approx(w, abs=1e-3), (text, t, w)


def test_claude_messages_keep_their_own_times(make_daemon, store_dir, tmp_path):
    """Before: each message Claude's export gave (`created_at`, ISO) was kept only in its metadata, and every
    message got the import's time: `log`, stats' answer times and the events read a chat of last year as
    written today. Now each keeps its own (a turn's several messages, a tool's, share it); one with none takes
    the one before it's; one of the future the one before it's; the first with none, the import's."""
    msg = lambda uid, sender, text, when: {  # noqa: E731
        "uuid": uid,
        "sender": sender,
        "text": text,
        "content": [{"type": "text", "text": text}],
        **({"created_at": when} if when is not None else {}),
    }
    tool_turn = msg("m2", "assistant", "", _iso(T0 + 10.25))
    tool_turn["content"] = [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "t1", "name": "web_search", "input": {"q": "x"}},
        {"type": "tool_result", "tool_use_id": "t1", "content": "found"},
        {"type": "text", "text": "Found it."},
    ]
    convs = [
        {
            "uuid": "conv-1",
            "name": "Timed",
            "created_at": _iso(T0),
            "chat_messages": [
                msg("m1", "human", "Hello?", _iso(T0 + 1)),
                tool_turn,
                msg("m3", "human", "no time", None),
                msg("m4", "assistant", "not yet", _iso(FUTURE)),
                msg("m5", "human", "later", "2024-05-01T10:00:00+00:00"),
            ],
        },
        {"uuid": "conv-2", "name": "Timeless", "chat_messages": [msg("n1", "human", "first, no time", None)]},
    ]
    a, made, (lo, hi) = _imported(make_daemon, store_dir, _write(tmp_path, "c.json", convs), "claude")
    at_turn = [(text, T0 + 10.25) for text in ("Looking.", "found", "Found it.", "no time", "not yet")]
    want = [("Hello?", T0 + 1), *at_turn, ("later", T0 + 3600)]
    [(_, first)] = _log(a.home, made[1]["id"])
    assert lo <= first <= hi
    # the source's time is still in the metadata, as before
    assert a.client().messages(made[0]["id"])["messages"][0]["metadata"]["created_at"] == T0 + 1
    # stats' answer times are the conversation's: 9.25 s, then 0 s (before: 0 s each, one instant)
    [chat] = a.client().stats(made[0]["id"])["per_chat"]
    assert chat["avg_response_seconds"] == pytest.approx(4.625, abs=1e-3)
    _kept(make_daemon, store_dir, a, made[0]["id"], want)


def test_openwebui_messages_keep_their_own_times(make_daemon, store_dir, tmp_path):
    """Before: each message's `timestamp` (Unix seconds) was kept only in its metadata, every message given
    the import's time. Now each keeps its own (an answer's tool calls and results share it); one with none, or
    of 0, takes the one before it's."""
    calls = (
        'Let me look.<details type="tool_calls" done="true" id="c1" name="clock" arguments="&quot;{}&quot;"'
        ' result="&quot;noon&quot;"><summary>Tool Executed</summary></details>It is noon.'
    )
    nodes = {
        "u1": {"id": "u1", "parentId": None, "role": "user", "content": "Time?", "timestamp": int(T0) + 5},
        "a1": {"id": "a1", "parentId": "u1", "role": "assistant", "content": calls, "timestamp": int(T0) + 7},
        "u2": {"id": "u2", "parentId": "a1", "role": "user", "content": "no time"},
        "a2": {"id": "a2", "parentId": "u2", "role": "assistant", "content": "zero", "timestamp": 0},
        "u3": {"id": "u3", "parentId": "a2", "role": "user", "content": "ms", "timestamp": (T0 + 60) * 1000},
    }
    chat = {"id": "w1", "title": "Timed", "chat": {"history": {"messages": nodes, "currentId": "u3"}}}
    a, made, _ = _imported(make_daemon, store_dir, _write(tmp_path, "w.json", [chat]), "openwebui")
    at_answer = [(text, T0 + 7) for text in ("Let me look.", "noon", "It is noon.", "no time", "zero")]
    want = [("Time?", T0 + 5), *at_answer, ("ms", T0 + 60)]
    _kept(make_daemon, store_dir, a, made[0]["id"], want)


def test_llm_messages_keep_their_own_times(make_daemon, store_dir, tmp_path):
    """Before: each response's `datetime_utc` was kept only in its messages' metadata, every message given the
    import's time. Now a response's prompt, the tools' results it sent and its answer keep it (a system
    prompt changed with it too); a response of a time not come yet takes the one before it's."""
    path = str(tmp_path / "logs.db")
    con = sqlite3.connect(path)
    con.executescript(LLM_SCHEMA)
    con.execute("INSERT INTO conversations VALUES ('conv-1', 'Timed', 'gpt-4o-mini')")
    rows = [
        ("r1", "Hi", "Be brief.", "Hello.", "2024-05-01T09:00:02.500000"),
        ("r2", "Again", "Be long.", "Hello again.", "2024-05-01T09:01:00"),
        ("r3", "Later", "Be long.", "Not yet.", _iso(FUTURE)[:-1]),
    ]
    con.executemany(
        "INSERT INTO responses(id, model, conversation_id, prompt, system, response, datetime_utc)"
        " VALUES (?, 'gpt-4o-mini', 'conv-1', ?, ?, ?, ?)",
        rows,
    )
    con.commit()
    con.close()
    a, made, _ = _imported(make_daemon, store_dir, path, "llm")
    at_r2 = [(text, T0 + 60) for text in ("Be long.", "Again", "Hello again.", "Later", "Not yet.")]
    want = [("Hi", T0 + 2.5), ("Hello.", T0 + 2.5), *at_r2]
    _kept(make_daemon, store_dir, a, made[0]["id"], want)


def test_messages_before_the_first_timed_one_take_its_time_not_the_import_s(daemon, tmp_path):
    """A conversation whose first messages have no usable time, and later ones do. Before: those first ones
    took the import's time, today, and the chat's times went back from there to the conversation's own (a
    year before): `log` showed the answer before its question, and stats' wait for the answer was negative.
    Now they take the first usable time after them; only a conversation with none takes the import's."""
    msg = lambda uid, sender, text, when: {  # noqa: E731
        "uuid": uid,
        "sender": sender,
        "text": text,
        "content": [{"type": "text", "text": text}],
        **({"created_at": when} if when is not None else {}),
    }
    convs = [
        {
            "uuid": "conv-3",
            "name": "Late start",
            "chat_messages": [
                msg("k1", "human", "no time", None),
                msg("k2", "assistant", "of the future", _iso(FUTURE)),
                msg("k3", "human", "timed", _iso(T0 + 30)),
                msg("k4", "assistant", "answered", _iso(T0 + 40)),
            ],
        }
    ]
    [made] = cli_json(daemon.home, "import-file", _write(tmp_path, "c.json", convs), "--format", "claude")["sessions"]
    got = _log(daemon.home, made["id"])
    want = [("no time", T0 + 30), ("of the future", T0 + 30), ("timed", T0 + 30), ("answered", T0 + 40)]
    assert [x for x, _ in got] == [x for x, _ in want], got
    for (text, t), (_, w) in zip(got, want, strict=True):
        assert t == pytest.approx(w, abs=1e-3), (text, t, w)
    [chat] = daemon.client().stats(made["id"])["per_chat"]
    assert chat["avg_response_seconds"] == pytest.approx(5.0, abs=1e-3)  # 0 s, then 10 s


def test_stats_do_not_count_an_answer_its_source_timed_before_its_question(daemon, tmp_path):
    """An app's export may give an answer a time before its question's (a clock set back, an edit): the
    import keeps both as given. Before: stats counted the answer's wait as negative, and the chat's average
    wait came out lower than every real one (here 2.5 s of 10 s), or below 0. Now a wait below 0 is not a
    wait that was measured: it is left out of the average."""
    msg = lambda uid, sender, text, when: {  # noqa: E731
        "uuid": uid,
        "sender": sender,
        "text": text,
        "content": [{"type": "text", "text": text}],
        "created_at": _iso(when),
    }
    convs = [
        {
            "uuid": "conv-4",
            "name": "Out of order",
            "chat_messages": [
                msg("o1", "human", "asked", T0 + 10),
                msg("o2", "assistant", "answered before", T0 + 5),
                msg("o3", "human", "asked again", T0 + 20),
                msg("o4", "assistant", "answered", T0 + 30),
            ],
        }
    ]
    [made] = cli_json(daemon.home, "import-file", _write(tmp_path, "c.json", convs), "--format", "claude")["sessions"]
    assert [t for _, t in _log(daemon.home, made["id"])] == [T0 + 10, T0 + 5, T0 + 20, T0 + 30]  # as given
    [chat] = daemon.client().stats(made["id"])["per_chat"]
    assert chat["avg_response_seconds"] == pytest.approx(10.0, abs=1e-3)
