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


def test_a_session_file_keeps_an_empty_part_notes_a_users_own_note_like_line_content(served_openai, tmp_path):
    """(The round trip of a message's notes: test_openai_media_parts.py.) A user's own `[image]` line, sent as text,
    is stored with `part_notes: []` (its lines are its user's, none a note): the file's empty list was dropped at
    the import, and the copy's line read as 0.37.0's note, an edit leaving it out then unseen."""
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi\n[image]"}])
    assert c.messages(sid)["messages"][0]["part_notes"] == []
    copy = imported_back(d.home, sid, tmp_path)
    assert c.messages(copy)["messages"][0].get("part_notes") == [], c.messages(copy)["messages"][0]


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
