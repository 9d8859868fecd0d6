"""ChatGPT's export gives each message its own time (`create_time`, Unix seconds): an import keeps it as the
message's `created_at`, as a fork's copies and a session file's messages keep theirs (times are not in the
checkpoints' hash, docs/FORMATS.md sections 4 and 8). A message without a usable time (null, text, negative,
not yet come) takes the time of the message before it on its branch (the first ones the first usable one's
after them), the import's on a branch with none."""

from __future__ import annotations

import copy
import json
import time

import pytest

from conftest import cli_json, run_cli

T0 = 1714554001.25  # 2024-05-01


def _node(nid: str, parent: str | None, role: str, text: str, when) -> dict:
    message = {"id": nid, "author": {"role": role}, "content": {"content_type": "text", "parts": [text]}}
    if when != "absent":
        message["create_time"] = when
    return {"id": nid, "parent": parent, "children": [], "message": message}


def _conversation(cid: str, turns: list[tuple], branch: list[tuple] = ()) -> dict:
    """(node, role, text, create_time) turns in a line, and a branch off its first message."""
    mapping: dict = {"root": {"id": "root", "parent": None, "children": [], "message": None}}
    parent = "root"
    for nid, role, text, when in turns:
        mapping[nid] = _node(nid, parent, role, text, when)
        mapping[parent]["children"].append(nid)
        parent = nid
    current = parent
    parent = turns[0][0]
    for nid, role, text, when in branch:
        mapping[nid] = _node(nid, parent, role, text, when)
        mapping[parent]["children"].append(nid)
        parent = nid
    return {"id": cid, "title": "times", "mapping": mapping, "current_node": current}


def _write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _times(c, sid: str) -> dict[str, float]:
    return {m["metadata"]["id"]: m["created_at"] for m in c.messages(sid, limit=1000)["messages"]}


def test_chatgpt_messages_keep_their_own_times(make_daemon, store_dir, tmp_path):
    """Before: every imported ChatGPT message got the import's time as its created_at, and the export's
    `create_time` was dropped (unlike Claude's, Open WebUI's and llm's, kept in metadata): a conversation of
    last year read as written today (`log`, the Markdown export, the answer times in `stats`). Now each message
    keeps its own time, the fork of a branch too, and a re-import's appended messages; the times sync as they
    are, and the checkpoints and `verify` hold."""
    future = time.time() + 10 * 365 * 86400
    conv = _conversation(
        "c-times",
        [
            ("u1", "user", "Hello?", T0),
            ("a1", "assistant", "Hi.", T0 + 9),
            ("u2", "user", "no time", None),
            ("a2", "assistant", "text time", "yesterday"),
            ("u3", "user", "negative", -5),
            ("a3", "assistant", "not yet", future),
            ("u4", "user", "true", True),
            ("a4", "assistant", "absent", "absent"),
            ("u5", "user", "milliseconds", T0 * 1000),
        ],
        branch=[("b1", "assistant", "Another hi.", T0 + 20)],
    )
    url = f"file://{store_dir}"
    a = make_daemon(url).start()
    c = a.client()
    made = cli_json(a.home, "import-file", _write(tmp_path, "a.json", [conv]), "--format", "chatgpt")["sessions"]
    sid, branch = made[0]["id"], made[1]["id"]
    times = _times(c, sid)
    assert times["u1"] == pytest.approx(T0, abs=1e-3) and times["a1"] == pytest.approx(T0 + 9, abs=1e-3)
    for node in ("u2", "a2", "u3", "a3", "u4", "a4", "u5"):  # no usable time: the one before it's
        assert times[node] == pytest.approx(T0 + 9, abs=1e-3), (node, times[node])
    assert "created_at" not in (c.messages(sid)["messages"][0]["metadata"])  # (kept as the message's own)
    # the branch's fork: its copy of the shared message and its own, each at its time
    assert _times(c, branch) == {"u1": pytest.approx(T0, abs=1e-3), "b1": pytest.approx(T0 + 20, abs=1e-3)}
    # the Markdown export shows the original time
    md = c.export(sid, "markdown")["markdown"]
    assert "### user · 2024-05-01 09:00:01 UTC" in md, md
    # continued in ChatGPT: the appended message keeps its time too
    later = copy.deepcopy(conv)
    later["mapping"]["u6"] = _node("u6", "u5", "assistant", "later", T0 + 3600)
    later["mapping"]["u5"]["children"].append("u6")
    later["current_node"] = "u6"
    out = cli_json(a.home, "import-file", _write(tmp_path, "b.json", [later]), "--format", "chatgpt")
    assert [(x["session"], x["messages"]) for x in out["appended"]] == [(sid, 1)], out
    assert _times(c, sid)["u6"] == pytest.approx(T0 + 3600, abs=1e-3)
    # pushed, proven and verified; another device reads the same times
    c.checkpoint(sid)
    run_cli(a.home, "sync", "--wait", check=True)
    assert cli_json(a.home, "verify")["ok"], cli_json(a.home, "verify")
    code = c.share(sid)["code"]
    b = make_daemon(url).start()
    b.client().import_code(code)
    assert _times(b.client(), sid) == pytest.approx(_times(c, sid), abs=1e-3)
    assert cli_json(b.home, "verify")["ok"]


def test_a_chatgpt_conversation_keeps_its_own_time_in_the_session_s_metadata(daemon, tmp_path):
    """Claude's, Open WebUI's and llm's imports keep a conversation's time in its session's metadata
    (`created_at`), as docs/FORMATS.md says of them all; ChatGPT's dropped its `create_time`. Now it is kept
    there too; a conversation with none usable keeps none."""
    conv = _conversation("c-conv-time", [("u1", "user", "Hi", T0), ("a1", "assistant", "Hello", T0 + 1)])
    timeless = {**_conversation("c-none", [("u1", "user", "Hi", T0)]), "create_time": "today"}
    made = cli_json(
        daemon.home, "import-file", _write(tmp_path, "a.json", [{**conv, "create_time": T0 - 60}, timeless])
    )["sessions"]
    assert made[0]["metadata"] == {"source": "chatgpt", "conversation": "c-conv-time", "created_at": T0 - 60}
    assert made[1]["metadata"] == {"source": "chatgpt", "conversation": "c-none"}


def test_a_chatgpt_message_without_a_time_takes_the_one_before_it_s(daemon, tmp_path):
    """Before: a message with no usable `create_time` took the import's time, later than the messages after
    it: its chat's times went backwards (stats' answer times, `log`, the events read it as written today).
    Now it takes the time of the message before it on its branch (a branch's fork too); the first of a
    conversation, the first usable one's after it (not the import's, from which its times went back)."""
    conv = _conversation(
        "c-gaps",
        [
            ("u1", "user", "Hi", T0),
            ("a1", "assistant", "none", None),
            ("u2", "user", "neg", -5),
            ("a2", "assistant", "ok", T0 + 30),
        ],
        branch=[("b1", "assistant", "branch, none", "absent")],
    )
    first = _conversation("c-first", [("f1", "user", "none", None), ("f2", "assistant", "timed", T0)])
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", [conv, first]))["sessions"]
    c = daemon.client()
    assert _times(c, made[0]["id"]) == {
        "u1": pytest.approx(T0, abs=1e-3),
        "a1": pytest.approx(T0, abs=1e-3),
        "u2": pytest.approx(T0, abs=1e-3),
        "a2": pytest.approx(T0 + 30, abs=1e-3),
    }
    assert _times(c, made[1]["id"]) == {"u1": pytest.approx(T0, abs=1e-3), "b1": pytest.approx(T0, abs=1e-3)}
    lone = _times(c, made[2]["id"])
    assert lone == {"f1": pytest.approx(T0, abs=1e-3), "f2": pytest.approx(T0, abs=1e-3)}


def test_a_chatgpt_time_above_0_that_rounds_to_0_takes_the_one_before_it_s(daemon, tmp_path):
    """A `create_time` above 0 but under half a millisecond (0.0004) is 0 to the millisecond a log keeps.
    Before: it was kept as 0, which the append takes for no time: the message got the import's time, today,
    between two of last year, and the message after it with no time of its own too. Now it is no usable
    time (not above 0 as kept): it takes the one before it's, as one of 0 does."""
    conv = _conversation(
        "c-tiny",
        [
            ("u1", "user", "Hi", T0),
            ("a1", "assistant", "tiny", 0.0004),
            ("u2", "user", "none", None),
            ("a2", "assistant", "ok", T0 + 30),
        ],
    )
    [made] = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", [conv]), "--format", "chatgpt")["sessions"]
    assert _times(daemon.client(), made["id"]) == {
        "u1": pytest.approx(T0, abs=1e-3),
        "a1": pytest.approx(T0, abs=1e-3),
        "u2": pytest.approx(T0, abs=1e-3),
        "a2": pytest.approx(T0 + 30, abs=1e-3),
    }
