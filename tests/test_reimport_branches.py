"""A ChatGPT export imported again brings its conversations' other branches up to date as it does their
history (the branch at current_node): a branch imported before (a fork of the conversation's session) with
nothing new is skipped as up to date, one that grew gets its new messages appended, and one new since (an
answer regenerated, a question edited in ChatGPT) is made a fork of the conversation's session; the branch
the app now shows (current_node moved to an old branch) is compared with the branches' forks too."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli
from test_reimport import _write, fixture, listed
from test_reimport import chatgpt_grown as grown

BREAD = "6650a1b2-0000-8000-9000-0000000000a1"


def texts(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=1000)["messages"]]


def said(lines: list[dict], *keys: str) -> list[tuple]:
    return sorted(tuple(x.get(k) for k in keys) for x in lines)


def test_a_chatgpt_conversation_s_branches_are_brought_up_to_date(daemon, tmp_path):
    """Before: a re-import compared only a conversation's history with the session here; each of its other
    branches (imported the first time as a fork, `TITLE (branch)`) was named every time as not brought up to
    date, its new messages never came in, and a conversation whose app had moved on to an old branch came in
    whole as a new session (diverged), its branches made again. Now each branch is compared as the history is."""
    c = daemon.client()
    first = fixture("chatgpt_conversations.json")
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")["sessions"]
    sid, branch, haiku = (s["id"] for s in made)
    assert [s["name"] for s in made] == ["Bread hydration", "Bread hydration (branch)", "Haiku"]
    a_user_s_fork = c.fork(sid, c.messages(sid)["messages"][0]["id"])["id"]  # (the user's own: not a branch)
    sessions = listed(daemon)

    # the same export again: the branch is up to date, as the history is
    again = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")
    assert again["sessions"] == [] and again["appended"] == [] and again["diverged"] == [], again
    assert again["branches"] == []
    assert said(again["skipped"], "session", "reason", "branch") == sorted(
        [(sid, "up_to_date", None), (branch, "up_to_date", "b2"), (haiku, "up_to_date", None)]
    )
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt", check=True)
    assert "not brought up to date" not in res.stderr, res.stderr
    assert f"its branch ending at node 'b2' was already imported as session {branch}" in res.stderr, res.stderr

    # continued in ChatGPT: the branch grew, and the history too
    bread = grown(first[0], "b2", ("b2u", "user", "And at 85%?"), ("b2a", "assistant", "A wetter dough."))
    bread = grown(bread, "b5", ("b6", "user", "Thanks!"), current=True)
    later = [bread, first[1]]
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", later), "--format", "chatgpt")
    assert out["sessions"] == [] and out["diverged"] == [] and out["branches"] == [], out
    assert said(out["appended"], "session", "messages", "branch") == sorted([(sid, 1, None), (branch, 2, "b2a")])
    assert texts(c, branch)[-2:] == ["And at 85%?", "A wetter dough."]
    assert texts(c, sid)[-1] == "Thanks!"
    assert texts(c, a_user_s_fork) == ["What hydration for a first loaf?"]  # left as it is
    assert listed(daemon) == sessions  # nothing made twice
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "b.json", later), "--format", "chatgpt", check=True)
    assert res.stdout == "" and "nothing new" in res.stderr, res.stderr

    # an answer regenerated in ChatGPT: a new branch, made a fork of the conversation's session where it parts
    regen = grown(bread, "b4", ("b5x", "assistant", "1.8 to 2%."))
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "c.json", [regen]), "--format", "chatgpt")
    [new] = out["sessions"]
    assert out["appended"] == [] and out["diverged"] == [], out
    assert said(out["branches"], "session", "node", "messages", "new_session") == [(sid, "b5x", 4, new["id"])]
    assert new["name"] == "Bread hydration (branch)" and new["provenance"]["session"] == sid
    at = c.messages(sid)["messages"][2]  # "And the salt?", the last message the two share
    assert new["provenance"]["message"] == at["id"] and at["content"] == "And the salt?"
    assert texts(c, new["id"]) == [*texts(c, sid)[:3], "1.8 to 2%."]
    assert texts(c, a_user_s_fork) == ["What hydration for a first loaf?"]
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "c.json", [regen]), "--format", "chatgpt", check=True)
    assert res.stdout == "" and "'b5x' was already imported" in res.stderr, res.stderr
    sessions = listed(daemon)

    # the app moved on to the old branch and continued it there: appended to that branch's fork, nothing made
    moved = grown(regen, "b2a", ("b2u2", "user", "How long to proof?"), current=True)
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "d.json", [moved]), "--format", "chatgpt")
    assert out["sessions"] == [] and out["diverged"] == [] and out["branches"] == [], out
    assert said(out["appended"], "session", "messages") == [(branch, 1)]
    assert {(s["session"], s.get("branch")) for s in out["skipped"]} == {(sid, "b6"), (new["id"], "b5x")}
    assert texts(c, branch)[-1] == "How long to proof?"
    assert listed(daemon) == sessions


def test_a_branch_an_earlier_sessiond_imported_is_recognised(daemon, tmp_path):
    """A branch's fork made by sessiond before branches were compared has no `branch` mark in its metadata:
    it is known by its name, `TITLE (branch)`, and brought up to date as one made now."""
    c = daemon.client()
    first = fixture("chatgpt_conversations.json")[:1]
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")["sessions"]
    sid, branch = (s["id"] for s in made)
    assert c.get_session(branch)["metadata"] == {**c.get_session(sid)["metadata"], "branch": True}
    c.update_session(branch, metadata={"source": "chatgpt", "conversation": BREAD})  # as the earlier one made it
    later = [grown(first[0], "b2", ("b2u", "user", "And at 85%?"))]
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", later), "--format", "chatgpt")
    assert out["sessions"] == [] and said(out["appended"], "session", "messages") == [(branch, 1)], out
    assert [(s["session"], s["reason"]) for s in out["skipped"]] == [(sid, "up_to_date")]


def test_two_lines_going_on_from_one_session_and_a_branch_that_refuses(daemon, tmp_path):
    """The history and a new branch both going on from the end of the conversation's session (an answer
    regenerated after the last one here): the history's messages are appended to it, the branch made a fork
    of it from there (not appended after the history's). A branch's fork that refuses its new messages
    (paused) is named with the refusal, the rest imported, exit 1."""
    c = daemon.client()
    first = fixture("chatgpt_conversations.json")[:1]
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")["sessions"]
    sid, branch = (s["id"] for s in made)
    run_cli(daemon.home, "pause", branch, check=True)
    later = grown(first[0], "b5", ("b6", "user", "Thanks!"), current=True)
    later = grown(later, "b5", ("b6x", "user", "And the yeast?"))
    later = grown(later, "b2", ("b2u", "user", "And at 85%?"))
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "b.json", [later]), "--format", "chatgpt", "--json")
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    [new] = out["sessions"]
    assert said(out["appended"], "session", "messages") == [(sid, 1)]
    assert said(out["branches"], "session", "node", "new_session") == [(sid, "b6x", new["id"])]
    assert texts(c, new["id"]) == [*texts(c, sid)[:4], "And the yeast?"]
    assert new["provenance"]["message"] == c.messages(sid)["messages"][3]["id"]
    [refused] = out["skipped"]
    assert (refused["session"], refused["reason"], refused["branch"]) == (branch, "refused", "b2u")
    assert "paused" in refused["error"]
    res = run_cli(daemon.home, "import-file", _write(tmp_path, "b.json", [later]), "--format", "chatgpt")
    assert res.returncode == 1 and "its branch ending at node 'b2u': its new messages were not" in res.stderr
    run_cli(daemon.home, "resume", branch, check=True)
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", [later]), "--format", "chatgpt")
    assert said(out["appended"], "session", "messages", "branch") == [(branch, 1, "b2u")] and out["sessions"] == []


def test_an_answer_regenerated_in_the_app_it_now_shows_is_a_new_branch_not_a_new_conversation(daemon, tmp_path):
    """ChatGPT shows the answer it regenerated (an edited question too): current_node moves to the new
    branch, and the history imported before is one of the conversation's other branches now. Before: the
    history, matching no session here, made the whole conversation a session of its own (diverged), its
    branches made again as forks of it: three sessions more, two of them copies. Now the conversation is
    known by the old history, still in the export: the new history is made a fork of its session, from the
    last message the two share; the rest is up to date, and the same export again makes nothing."""
    c = daemon.client()
    first = fixture("chatgpt_conversations.json")[:1]
    made = cli_json(daemon.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")["sessions"]
    sid, branch = (s["id"] for s in made)
    sessions = listed(daemon)
    regen = grown(first[0], "b4", ("b5x", "assistant", "1.8 to 2%."), current=True)
    out = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", [regen]), "--format", "chatgpt")
    [new] = out["sessions"]
    assert out["diverged"] == [] and out["appended"] == [], out
    assert said(out["branches"], "session", "node", "messages", "new_session") == [(sid, "b5x", 4, new["id"])]
    assert said(out["skipped"], "session", "reason", "branch") == sorted(
        [(sid, "up_to_date", "b5"), (branch, "up_to_date", "b2")]
    )
    assert new["name"] == "Bread hydration (branch)" and new["provenance"]["session"] == sid
    assert new["provenance"]["message"] == c.messages(sid)["messages"][2]["id"]
    assert texts(c, new["id"]) == [*texts(c, sid)[:3], "1.8 to 2%."]
    assert listed(daemon) == sorted([*sessions, new["id"]])
    # the same export again: nothing new
    again = cli_json(daemon.home, "import-file", _write(tmp_path, "b.json", [regen]), "--format", "chatgpt")
    assert again["sessions"] == [] and again["appended"] == [] and again["diverged"] == [], again
    assert again["branches"] == [] and {s["reason"] for s in again["skipped"]} == {"up_to_date"}
    assert said(again["skipped"], "session", "branch") == sorted([(new["id"], None), (sid, "b5"), (branch, "b2")])
    assert listed(daemon) == sorted([*sessions, new["id"]])
