"""An app's export imported again, a month later: each conversation continued in the app since comes in
as its new messages, appended to the session the earlier import made of it; nothing already here is made
twice; a conversation whose history here and in the export part before the export's tail (continued here,
or edited in the app) is imported as a session of its own, said so, the one here left as it was."""

from __future__ import annotations

import copy
import json
import os
import sqlite3

from conftest import cli_json, run_cli

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name: str):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def chatgpt_grown(conv: dict, at: str, *turns: tuple[str, str, str], current: bool = False) -> dict:
    """The ChatGPT conversation as a later export has it: (node, role, text) said after node `at`, in turn (a
    new branch when `at` has children already); `current`: the app now shows that branch."""
    conv = copy.deepcopy(conv)
    for node, role, text in turns:
        conv["mapping"][node] = {
            "id": node,
            "parent": at,
            "children": [],
            "message": {"id": node, "author": {"role": role}, "content": {"content_type": "text", "parts": [text]}},
        }
        conv["mapping"][at]["children"].append(node)
        at = node
    if current:
        conv["current_node"] = at
    return conv


def chatgpt_continued(conv: dict, *texts: str) -> dict:
    """The ChatGPT conversation as a later export has it: `texts` said after its current node, in turn."""
    at = conv["current_node"]
    last_role = conv["mapping"][at]["message"]["author"]["role"]
    turns = [
        (f"{at}-next{i}", ("user", "assistant")[(i + (last_role == "user")) % 2], text) for i, text in enumerate(texts)
    ]
    return chatgpt_grown(conv, at, *turns, current=True)


def claude_continued(conv: dict, *texts: str) -> dict:
    """The Claude conversation as a later export has it: `texts` said after its last message, in turn."""
    conv = copy.deepcopy(conv)
    last = conv["chat_messages"][-1]["sender"]
    for i, text in enumerate(texts):
        sender = ("human", "assistant")[(i + (last == "human")) % 2]
        conv["chat_messages"].append(
            {
                "uuid": f"{conv['uuid'][:8]}-0000-4000-8000-{len(conv['chat_messages']):012d}",
                "text": text,
                "content": [{"type": "text", "text": text}],
                "sender": sender,
                "created_at": f"2024-06-0{i + 1}T10:00:00Z",
            }
        )
    return conv


def contents(daemon, sid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in daemon.client().messages(sid, limit=1000)["messages"]]


def listed(daemon) -> list[str]:
    return sorted(s["id"] for s in cli_json(daemon.home, "ls")["sessions"])


FORMATS = {
    "chatgpt": ("chatgpt_conversations.json", chatgpt_continued),
    "claude": ("claude_conversations.json", claude_continued),
}


def _write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _appends_the_new_tail(daemon, tmp_path, fmt: str) -> None:
    name, continued = FORMATS[fmt]
    first = fixture(name)
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", fmt)
    sid, other = made["sessions"][0]["id"], made["sessions"][-1]["id"]
    before = contents(daemon, sid)
    sessions = listed(daemon)
    later = [continued(first[0], "One more question?", "One more answer."), *first[1:]]
    path = _write(tmp_path, "b.json", later)
    again = cli_json(daemon.home, "import-file", path, "--format", fmt)
    assert again["sessions"] == [] and again["diverged"] == []
    assert [(a["session"], a["messages"], a["source"]) for a in again["appended"]] == [(sid, 2, fmt)]
    # (the history's other branches, ChatGPT's, are compared too: tests/test_reimport_branches.py)
    assert [(s["session"], s["reason"]) for s in again["skipped"] if "branch" not in s] == [(other, "up_to_date")]
    assert contents(daemon, sid) == [*before, ("user", "One more question?"), ("assistant", "One more answer.")]
    assert listed(daemon) == sessions  # nothing made twice
    # the same export once more: nothing new, nothing doubled
    res = run_cli(daemon.home, "import-file", path, "--format", fmt, check=True)
    assert res.stdout == "" and "nothing new" in res.stderr, res.stderr
    assert len(contents(daemon, sid)) == len(before) + 2
    # the text output names what was appended to which session
    third = [continued(later[0], "Last?"), *first[1:]]
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "c.json", third), "--format", fmt, check=True)
    assert f"1 new message appended to session {sid}" in res.stderr, res.stderr
    assert listed(daemon) == sessions


def test_a_chatgpt_export_imported_again_appends_what_a_conversation_gained(daemon, tmp_path):
    """Before: a conversation continued in ChatGPT since the last import was skipped whole (its new
    messages never came in unless the session here was deleted first); now its new messages are appended
    to the session made of it (compared by the messages' ChatGPT node ids, which they keep now)."""
    _appends_the_new_tail(daemon, tmp_path, "chatgpt")


def test_a_claude_export_imported_again_appends_what_a_conversation_gained(daemon, tmp_path):
    """The same for Claude's export, compared by the messages' uuids, which the new ones keep too."""
    _appends_the_new_tail(daemon, tmp_path, "claude")
    first = fixture("claude_conversations.json")[0]
    sid = next(s["id"] for s in cli_json(daemon.home, "ls")["sessions"] if s["name"] == first["name"])
    msgs = daemon.client().messages(sid, limit=1000)["messages"]
    assert msgs[-1]["metadata"]["id"].startswith(first["uuid"][:8]) and msgs[-1]["metadata"]["source"] == "claude"


def test_a_conversation_continued_here_is_not_overwritten(daemon, tmp_path):
    """A session continued here since its import: the export of the app it came from, unchanged, brings
    nothing (no copy made); the app's conversation continued too is imported as a new session, named as
    diverged, the one here left as it is; that export again then makes nothing more."""
    first = fixture("claude_conversations.json")
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "claude")
    sid = made["sessions"][0]["id"]
    daemon.client().append(sid, "user", "Asked here, not in Claude")
    mine = contents(daemon, sid)
    again = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "claude")
    assert again["sessions"] == [] and again["appended"] == [] and again["diverged"] == []
    assert [s["reason"] for s in again["skipped"]] == ["up_to_date", "up_to_date"]
    sessions = listed(daemon)
    later = [claude_continued(first[0], "Asked in Claude"), *first[1:]]
    path = _write(tmp_path, "b.json", later)
    res = run_cli(daemon.home, "import-file", path, "--format", "claude", "--json", check=True)
    out = json.loads(res.stdout)
    new = [s["id"] for s in out["sessions"]]
    assert len(new) == 1 and out["appended"] == []
    assert [(x["session"], x["new_session"]) for x in out["diverged"]] == [(sid, new[0])]
    assert contents(daemon, sid) == mine  # not overwritten
    assert contents(daemon, new[0])[-1] == ("user", "Asked in Claude")
    assert listed(daemon) == sorted([*sessions, new[0]])
    # the text output says so
    res = run_cli(daemon.home, "import-file", path, "--format", "claude", check=True)
    assert res.stdout == "" and "nothing new" in res.stderr, res.stderr
    assert listed(daemon) == sorted([*sessions, new[0]])
    # an edit in the app before the tail (another conversation, not continued here): a session of its own
    edited = copy.deepcopy(later)
    edited[1]["chat_messages"][0].update(uuid="e0000000-0000-4000-8000-000000000001", text="Edited in Claude")
    edited[1]["chat_messages"][0]["content"] = [{"type": "text", "text": "Edited in Claude"}]
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "c.json", edited), "--format", "claude", check=True)
    (third,) = res.stdout.split()
    assert f"differs from session {made['sessions'][1]['id']}" in res.stderr and third in res.stderr, res.stderr
    assert contents(daemon, third)[0] == ("user", "Edited in Claude")


def test_a_tail_that_cannot_be_appended_is_named_and_the_rest_imported(daemon, tmp_path):
    """A session paused here cannot take the tail: that conversation is named with the refusal and what to
    do, exit 1; the export's other conversations are imported all the same."""
    first = fixture("chatgpt_conversations.json")
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")
    sid = made["sessions"][0]["id"]
    run_cli(daemon.home, "pause", sid, check=True)
    later = [chatgpt_continued(first[0], "More?", "More."), chatgpt_continued(first[1], "Another")]
    path = _write(tmp_path, "b.json", later)
    res = run_cli(daemon.home, "import-file", path, "--json")
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert [(a["session"], a["messages"]) for a in out["appended"]] == [(made["sessions"][-1]["id"], 1)]
    (refused,) = [s for s in out["skipped"] if s["reason"] == "refused"]
    assert refused["session"] == sid and refused["reason"] == "refused" and "paused" in refused["error"]
    res = run_cli(daemon.home, "import-file", path)
    assert res.returncode == 1 and "paused" in res.stderr and "`sessiond resume " in res.stderr, res.stderr
    assert f"{sid}`" in res.stderr, res.stderr
    run_cli(daemon.home, "resume", sid, check=True)
    out = cli_json(daemon.home, "import-file", path)
    assert [(a["session"], a["messages"]) for a in out["appended"]] == [(sid, 2)]


def test_an_llm_logs_db_imported_again_appends_the_responses_logged_since(daemon, tmp_path):
    """llm's logs.db, compared by its responses' ids (a prompt and its answer share one): the responses
    logged in a conversation since the last import are appended, nothing doubled."""
    from test_import_formats import GOOD_RESPONSES, make_logs_db

    db = make_logs_db(str(tmp_path / "logs.db"), GOOD_RESPONSES)
    made = cli_json(daemon.home, "import-file", db)
    sid = next(s["id"] for s in made["sessions"] if s["name"] == "Capital cities")
    before = contents(daemon, sid)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO responses(id, model, conversation_id, prompt, response, datetime_utc) VALUES (?,?,?,?,?,?)",
        ("01hresp4", "gpt-4o-mini", "01hconv0000000000000000001", "And Chile?", "Santiago.", "2024-06-01T10:02:00"),
    )
    con.commit()
    con.close()
    again = cli_json(daemon.home, "import-file", db)
    assert again["sessions"] == [] and [(a["session"], a["messages"]) for a in again["appended"]] == [(sid, 2)]
    assert contents(daemon, sid) == [*before, ("user", "And Chile?"), ("assistant", "Santiago.")]
    assert cli_json(daemon.home, "import-file", db)["appended"] == []


def test_an_open_webui_export_imported_again_appends_the_branch_s_new_messages(daemon, tmp_path):
    """Open WebUI's export, compared by its messages' ids along the branch the user sees: an answer given
    since is appended; the same export again brings nothing."""
    first = fixture("openwebui_export.json")
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "openwebui")
    sid = made["sessions"][0]["id"]
    before = contents(daemon, sid)
    later = copy.deepcopy(first)
    history = later[0]["chat"]["history"]
    history["messages"]["m4"]["childrenIds"] = ["m5"]
    history["messages"]["m5"] = {"id": "m5", "parentId": "m4", "role": "assistant", "content": "You're welcome."}
    history["currentId"] = "m5"
    path = _write(tmp_path, "b.json", later)
    again = cli_json(daemon.home, "import-file", path, "--format", "openwebui")
    assert again["sessions"] == [] and [(a["session"], a["messages"]) for a in again["appended"]] == [(sid, 1)]
    assert contents(daemon, sid) == [*before, ("assistant", "You're welcome.")]
    assert cli_json(daemon.home, "import-file", path, "--format", "openwebui")["appended"] == []


def test_a_turn_that_gained_its_tool_use_is_not_taken_for_the_old_one(daemon, tmp_path):
    """A conversation imported before the importers kept tool use: its last answer came in as one message
    of its text, under the turn's uuid. Imported again, the same turn is the answer's text with its calls,
    the tools' messages and the text after them, all under that uuid: compared by uuid alone the old answer
    was taken for the new first one, and the rest appended after it (the answer's text twice). A message
    that calls tools is not the same as one that calls none: the conversation is imported as a new session
    (diverged), the old one left as it was."""
    turn = {
        "uuid": "7e570000-0000-4000-8000-000000000002",
        "sender": "assistant",
        "text": "Let me look.\n\nIt is sunny.",
        "created_at": "2024-06-01T10:00:01Z",
    }
    conv = {
        "uuid": "7e570000-0000-4000-8000-00000000c0de",
        "name": "weather",
        "chat_messages": [
            {"uuid": "7e570000-0000-4000-8000-000000000001", "sender": "human", "text": "Weather?",
             "content": [{"type": "text", "text": "Weather?"}], "created_at": "2024-06-01T10:00:00Z"},
            {**turn, "content": [{"type": "text", "text": "Let me look.\n\nIt is sunny."}]},
        ],
    }  # fmt: skip
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "old.json", [conv]), "--format", "claude")
    sid = made["sessions"][0]["id"]
    before = contents(daemon, sid)
    conv["chat_messages"][1] = {
        **turn,
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_result", "name": "weather", "content": [{"type": "text", "text": "sunny"}]},
            {"type": "text", "text": "It is sunny."},
        ],
    }
    again = cli_json(daemon.home, "import-file", _write(tmp_path, "new.json", [conv]), "--format", "claude")
    assert again["appended"] == [] and [d["session"] for d in again["diverged"]] == [sid], again
    assert contents(daemon, sid) == before
    [new] = again["sessions"]
    assert [
        m.get("tool_calls", [{}])[0].get("function", {}).get("name")
        for m in daemon.client().messages(new["id"])["messages"]
    ][1] == "weather"


def _chatgpt_linear(cid: str, *turns: tuple[str, str, str]) -> dict:
    """A linear ChatGPT conversation of (node id, role, text) turns."""
    mapping: dict = {}
    parent = None
    for node, role, text in turns:
        mapping[node] = {
            "id": node,
            "parent": parent,
            "children": [],
            "message": {"id": node, "author": {"role": role}, "content": {"content_type": "text", "parts": [text]}},
        }
        if parent is not None:
            mapping[parent]["children"].append(node)
        parent = node
    return {"id": cid, "title": "same words", "mapping": mapping, "current_node": parent}


def test_a_chatgpt_answer_replaced_by_one_of_the_same_text_is_a_divergence_not_a_prefix(daemon, tmp_path):
    """Before: ChatGPT's messages were compared by role and text only, so an answer regenerated in ChatGPT
    with the same text ("ok") looked like the session's history continued, and the app's new messages were
    appended after the old answer. Each message now keeps its ChatGPT node id (metadata `id`), and the two
    are compared by it: the app's history parted from the one here at the answer, so it is a branch of the
    conversation, made a fork of the session here (the old history still one of the export's branches)."""
    first = _chatgpt_linear("c-same", ("u1", "user", "ok"), ("a1", "assistant", "ok"))
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", [first]), "--format", "chatgpt")
    (sid,) = [s["id"] for s in made["sessions"]]
    msgs = daemon.client().messages(sid, limit=1000)["messages"]
    assert [(m["metadata"]["source"], m["metadata"]["id"]) for m in msgs] == [("chatgpt", "u1"), ("chatgpt", "a1")]
    # the answer regenerated in ChatGPT (the same text, another node), then the conversation went on
    later = copy.deepcopy(first)
    m = later["mapping"]
    m["a2"] = {**copy.deepcopy(m["a1"]), "id": "a2"}
    m["a2"]["message"]["id"] = "a2"
    m["u1"]["children"].append("a2")
    m["u3"] = {**copy.deepcopy(m["u1"]), "id": "u3", "parent": "a2", "children": []}
    m["u3"]["message"]["id"] = "u3"
    m["a2"]["children"] = ["u3"]
    later["current_node"] = "u3"
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", [later]), "--format", "chatgpt")
    assert out["appended"] == [] and out["diverged"] == [], out
    [(old, new)] = [(x["session"], x["new_session"]) for x in out["branches"]]
    assert old == sid and new in [s["id"] for s in out["sessions"]]
    assert contents(daemon, sid) == [("user", "ok"), ("assistant", "ok")]  # left as it was
    assert contents(daemon, new) == [("user", "ok"), ("assistant", "ok"), ("user", "ok")]
    # continued in ChatGPT once more: appended to the session of its new history, by ids
    more = chatgpt_continued(later, "Fine.")
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "c.json", [more]), "--format", "chatgpt")
    assert [(a["session"], a["messages"]) for a in out["appended"]] == [(new, 1)] and out["diverged"] == []


def test_a_chatgpt_session_imported_without_message_ids_is_still_compared_by_text(daemon, tmp_path):
    """A session an older sessiond imported (its messages keep no ChatGPT id) is compared by role and text:
    the app's conversation continued since is appended to it, not made a second session."""
    c = daemon.client()
    sid = c.create_session(name="older", metadata={"source": "chatgpt", "conversation": "c-old"})["id"]
    c.append(sid, "user", "Hi")
    c.append(sid, "assistant", "Hello!")
    later = _chatgpt_linear("c-old", ("u1", "user", "Hi"), ("a1", "assistant", "Hello!"), ("u2", "user", "Again?"))
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", [later]), "--format", "chatgpt")
    assert out["sessions"] == [] and out["diverged"] == []
    assert [(a["session"], a["messages"]) for a in out["appended"]] == [(sid, 1)]
    msgs = c.messages(sid, limit=1000)["messages"]
    assert contents(daemon, sid) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "Again?")]
    assert msgs[-1]["metadata"] == {"source": "chatgpt", "id": "u2"}
