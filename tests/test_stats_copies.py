"""GET /v1/stats's totals count each message's tokens once: a fork copies its source's history with its
token counts (the fork's own total holds them: its quota counts them), but a user's or the daemon's total
counts the copied history once, in the session it was copied from, while that one is here and in the
same total."""

from __future__ import annotations

from conftest import cli_json


def _tokens(c, user: str | None = None) -> int:
    return c.stats(user=user)["tokens"]


def _by_user(c) -> dict:
    return {u["user"]: u["tokens"] for u in c.stats()["users"]}


def test_a_forks_copied_history_is_counted_once_in_the_totals(daemon):
    c = daemon.client()
    src = c.create_session(user="ann")["id"]
    c.append_many(src, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(3)])
    at = c.messages(src)["messages"][-1]["id"]
    fork = c.fork(src, at)["id"]
    c.append(fork, "user", "new in the fork", tokens=5)
    assert c.stats(src)["tokens"] == 30
    assert c.stats(fork)["tokens"] == 35  # the fork holds its history: its own total (and quota) count it
    assert _tokens(c, "ann") == 35  # 30 spent in the source, 5 in the fork: not 65
    assert c.get_session(fork)["provenance"]["copied_tokens"] == 30
    assert _tokens(c) == 35
    assert _by_user(c) == {"ann": 35}
    assert cli_json(daemon.home, "stats", "--user", "ann")["tokens"] == 35
    # a fork of the fork: its copy (the fork's 35) is counted once too
    at2 = c.messages(fork)["messages"][-1]["id"]
    fork2 = c.fork(fork, at2)["id"]
    c.append(fork2, "user", "more", tokens=1)
    assert _tokens(c, "ann") == 36
    # the fork given to another user: each user's total counts what their sessions hold, the daemon's once
    c.update_session(fork, user="bob")
    assert _tokens(c, "ann") == 30 + 36  # fork2 is ann's, copied from bob's fork: all 36 of it counts for her
    assert _tokens(c, "bob") == 35
    assert _tokens(c) == 36
    c.update_session(fork, user="ann")
    # the source deleted: the fork's copy is the only one left, counted whole
    c.delete_session(src)
    assert _tokens(c, "ann") == 36
    assert _tokens(c) == 36
    assert _by_user(c) == {"ann": 36}


def test_a_chatgpt_branchs_shared_history_is_counted_once(daemon):
    """import-file of a ChatGPT conversation makes each other branch a fork holding the shared history."""
    c = daemon.client()
    node = {"author": {"role": "user"}, "content": {"parts": []}}

    def n(i, text, parent, children, role="user"):
        return {
            "id": i,
            "parent": parent,
            "children": children,
            "message": {**node, "author": {"role": role}, "content": {"parts": [text]}},
        }

    conv = {
        "title": "Branchy",
        "id": "conv1",
        "current_node": "n3",
        "mapping": {
            "root": {"id": "root", "message": None, "parent": None, "children": ["n1"]},
            "n1": n("n1", "a" * 40, "root", ["n2"]),
            "n2": n("n2", "b" * 40, "n1", ["n3", "n4"], role="assistant"),
            "n3": n("n3", "c" * 40, "n2", []),
            "n4": n("n4", "d" * 40, "n2", []),
        },
    }
    made = c.import_file([conv], "chatgpt")["sessions"]
    main, branch = made
    assert c.stats(main["id"])["tokens"] == 30 and c.stats(branch["id"])["tokens"] == 30  # 10 tokens each
    assert _tokens(c) == 40  # the shared two messages once, and each branch's own


def test_a_forks_copied_model_answers_count_their_prompt_tokens_once_too(daemon):
    """A model's answer costs the quota its tokens and the prompt tokens the provider counted for it; a fork
    copies the answer with its usage, so its own total holds those too, and its `copied_tokens` must name
    them, or the daemon's and the user's totals count the copied prompts twice (was: only the messages'
    own tokens were named, so after `sessiond fork` of a talked-to session `stats` went up by every copied
    answer's prompt)."""
    c = daemon.client()
    data = {
        "format": "sessiond.session.v1",
        "session": {"user": "ann"},
        "chats": [{"id": "main"}],
        "messages": [
            {"chat": "main", "role": "user", "content": "q", "tokens": 2},
            {
                "chat": "main",
                "role": "assistant",
                "content": "a",
                "tokens": 3,
                "model": "m",
                "usage": {"prompt_tokens": 20, "completion_tokens": 3},
            },
        ],
    }
    src = c.import_file(data, "json")["sessions"][0]["id"]
    assert c.stats(src)["tokens"] == 25  # 2 + 3, and the answer's 20 prompt tokens
    at = c.messages(src)["messages"][-1]["id"]
    fork = c.fork(src, at)["id"]
    assert c.stats(fork)["tokens"] == 25  # the fork holds the same history: its quota counts it
    assert c.get_session(fork)["provenance"]["copied_tokens"] == 25
    assert _tokens(c) == 25 and _tokens(c, "ann") == 25 and _by_user(c) == {"ann": 25}
