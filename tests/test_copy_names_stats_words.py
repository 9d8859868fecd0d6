"""A copy's name as asked, and `stats` in words: what an app or a user asking for them saw."""

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
