"""A session file (`export --format json`) left out a message's `part_notes`, the lines of its text that note the
parts an OpenAI-endpoint app sent that are not text (`[image]`, `[video_url]`): imported back (`import-file`),
the copy named none, and an app that went on with it, sending its history again without an older turn's media,
was matched by the lines `[image]`, `[audio]` and `[file]` alone. A part of another kind (`[video_url]`) was then
taken for the user's own text: the history no longer matched, and the conversation from there was appended again
(every message twice, charged twice to the quota). The file keeps them now, and an import reads them back, as a
fork's copy keeps them (a 0.37.0 import, which knows none, leaves them out)."""

from __future__ import annotations

import json

import pytest

from conftest import imported_back, openai_app, run_cli
from sessiond.storage.errors import Invalid

VIDEO = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}


def test_a_session_file_keeps_part_notes_and_the_import_still_matches_without_the_media(served_openai, tmp_path):
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    history = [{"role": "user", "content": [{"type": "text", "text": "what happens"}, VIDEO]}]
    answer = openai_app(d, sid).chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    [asked] = [m for m in c.messages(sid)["messages"] if m["role"] == "user"]
    assert asked["content"] == "what happens\n[video_url]" and asked["part_notes"] == [1]
    copy = imported_back(d.home, sid, tmp_path)
    kept = c.messages(copy)["messages"]
    assert [m.get("part_notes") for m in kept] == [[1], None]
    # the app goes on with the copy, its older turn's video left out
    resent = [
        {"role": "user", "content": [{"type": "text", "text": "what happens"}]},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and then?"},
    ]
    openai_app(d, copy).chat.completions.create(model="echo-1", messages=resent)
    assert [m["content"] for m in c.messages(copy)["messages"]] == [
        "what happens\n[video_url]",
        answer,
        "and then?",
        "echo: and then?",
    ]


@pytest.mark.parametrize("notes", [[2], ["1"], [0, 0], {"1": 1}, [-1]])
def test_a_session_file_s_part_notes_that_name_no_line_of_the_text_are_refused(notes, tmp_path, daemon):
    from sessiond.daemon.sessionfile import part_notes

    m = {"role": "user", "content": "a\n[image]", "part_notes": notes}
    with pytest.raises(Invalid, match=r"messages\[0\]\.part_notes"):
        part_notes(m, "messages[0]")
    assert part_notes({**m, "part_notes": [1]}, "messages[0]") == {"part_notes": [1]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": "sessiond.session.v1", "session": {}, "messages": [m]}))
    res = run_cli(daemon.home, "import-file", str(path), "--format", "json")
    assert res.returncode != 0 and "part_notes" in res.stderr, res
