"""Names as asked (a copy's, a chat's), and `stats` in words: what an app or a user asking for them saw."""

from __future__ import annotations

from conftest import run_cli


def test_a_clone_or_fork_asked_for_an_empty_name_gets_it(daemon):
    """`create` and `PATCH` take `name: ""` as the name asked for, but a clone's or a fork's `""` was dropped
    (a falsy check): the copy kept its source's name, though the app asked for none. Only a name left out (or
    null) means "the source's"."""
    c = daemon.client()
    sid = c.create_session(name="orig")["id"]
    at = c.append(sid, "user", "hello")["id"]
    assert c.clone(sid, name="")["name"] == ""
    assert c.fork(sid, at, name="")["name"] == ""
    assert c.clone(sid)["name"] == "orig" and c.fork(sid, at)["name"] == "orig"  # left out: the source's
    assert c.clone(sid, name="copy")["name"] == "copy"


def test_stats_in_words_count_in_the_singular_and_say_whose(daemon):
    """`sessiond stats` said "1 chats, 1 messages" and "1 sessions", and a user's (or the no-user sessions')
    figures said nothing of whose they were: the same line as the daemon's total."""
    h = daemon.home
    c = daemon.client()
    sid = c.create_session(user="ann")["id"]
    c.append(sid, "user", "hello", tokens=1)
    one = run_cli(h, "stats", sid, check=True).stdout
    assert "1 chat, 1 message, 1 token used;" in one, one
    mine = run_cli(h, "stats", "--user", "ann", check=True).stdout
    assert mine.startswith("user ann: 1 session (1 active, 0 paused, 0 ended), 1 message, 1 token"), mine
    none = run_cli(h, "stats", "--no-user", check=True).stdout
    assert none.startswith("sessions with no user: 0 sessions"), none
    everyone = run_cli(h, "stats", check=True).stdout
    assert everyone.startswith("1 session (1 active, 0 paused, 0 ended), 1 message, 1 token"), everyone


def test_a_chat_renamed_to_an_empty_name_is_named_by_its_id_as_one_made_so(daemon):
    """A chat made with `name: ""` is named by its id (no name), but a PATCH to `""` stored the empty name: `chat
    ls` showed a blank, and no `--chat ""` could pick it by that name (an empty chat is refused). A PATCH's `""`
    is no name now, as at the chat's making and as null is: the chat's id again."""
    c = daemon.client()
    sid = c.create_session()["id"]
    assert c.create_chat(sid, id="side", name="")["name"] == "side"
    c.update_chat(sid, "side", name="Side")
    assert c.update_chat(sid, "side", name="")["name"] == "side"
    assert c.update_chat(sid, "main", name="")["name"] == "main"
    assert [ch["name"] for ch in c.list_chats(sid)["chats"]] == ["main", "side"]
    out = run_cli(daemon.home, "chat", "set", sid, "side", "--name", "", "--json", check=True).stdout
    assert '"name": "side"' in out, out
