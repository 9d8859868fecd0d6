"""A copy's name as asked, and `stats` in words: what an app or a user asking for them saw."""

from __future__ import annotations


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
