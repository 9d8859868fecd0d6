"""`sessiond log ID --all --short` printed every chat's messages interleaved, one line each, `role: text`, with
nothing saying which chat a line is in (the long form heads each message with its chat's name): a user
reading a session of several chats could not tell the research chat's question from the main one's. Each
line names its chat now, as the long form does; a log of one chat stays `role: text`."""

from __future__ import annotations

from conftest import run_cli


def test_every_chat_s_short_lines_name_their_chat(daemon):
    c = daemon.client()
    sid = c.create_session(model="m")["id"]
    c.append(sid, "user", "the main question")
    side = c.create_chat(sid, name="research")["id"]
    c.append(sid, "user", "the side question", chat=side)
    c.append(sid, "assistant", "the main answer", chat="main")
    out = run_cli(daemon.home, "log", sid, "--all", "--short", check=True).stdout.splitlines()
    assert out == [
        "     user (main): the main question",
        "     user (research): the side question",
        "assistant (main): the main answer",
    ], out
    one = run_cli(daemon.home, "log", sid, "--short", check=True).stdout.splitlines()
    assert one == ["     user: the main question", "assistant: the main answer"], one
