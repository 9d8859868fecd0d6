"""A message an app sends the OpenAI-compatible endpoint with parts that are not text (an image, audio, a file)
is recorded with a note of each such part in its place (`[image]`), sessiond keeping text. The parts were
dropped without a trace: a vision app's question "what is this" beside its image was recorded as "what is
this", and an image sent alone as a user's message with no text at all (""), which the session's own append
refuses as blank, and which `sessiond ask` then sent the model as an empty question. The provider is still
sent the parts as the app gave them, and the app's history, sent again with its next call, matches what was
recorded (also as an older sessiond recorded it, the text alone): nothing is appended twice."""

from __future__ import annotations

from conftest import imported_back, openai_app

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def _kept(c, sid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in c.messages(sid)["messages"]]


def test_an_image_alone_is_recorded_as_a_note_not_as_a_blank_message(served_openai):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    history = [{"role": "user", "content": [IMAGE]}]
    answer = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    assert p.requests[-1]["messages"] == history  # the provider is sent the image as the app gave it
    assert _kept(c, sid) == [("user", "[image]"), ("assistant", answer)]
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": [AUDIO]}]
    again = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    assert _kept(c, sid) == [("user", "[image]"), ("assistant", answer), ("user", "[audio]"), ("assistant", again)]


def _text_and_image(d):
    """A new session, its app, and the app's first call: a question's text beside an image, answered.
    (client, session id, app, the call's history, the answer)"""
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    history = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE]}]
    answer = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    return c, sid, app, history, answer


def test_text_beside_an_image_keeps_the_image_s_place_and_matches_when_sent_again(served_openai):
    d, p = served_openai
    c, sid, app, history, answer = _text_and_image(d)
    history += [{"role": "assistant", "content": answer}, {"role": "user", "content": "and now?"}]
    app.chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, sid)
    assert kept[:3] == [("user", "what is this\n[image]"), ("assistant", answer), ("user", "and now?")], kept
    assert len(kept) == 4
    assert p.requests[-1]["messages"][0] == history[0]


def test_a_history_an_older_sessiond_recorded_without_its_image_still_matches(served_openai):
    """An older sessiond kept a message's text parts alone: the app's history, sent again, matches that."""
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "what is this")  # as recorded before: the text, not the image
    c.append(sid, "assistant", "a cat")
    app = openai_app(d, sid)
    history = [
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, IMAGE]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "and now?"},
    ]
    app.chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, sid)
    assert kept[:3] == [("user", "what is this"), ("assistant", "a cat"), ("user", "and now?")], kept
    assert len(kept) == 4, kept


def test_a_history_resent_with_its_older_images_left_out_still_matches(served_openai):
    """An app that sends a turn's image once, and its later calls that turn's text alone (older images left out,
    as apps do to keep a request small), sends the history the chat holds: nothing is appended twice. Recorded
    with its note (`what is this` and `[image]`), the message matched its text alone no longer, and the whole
    history from it on was appended again after the chat's end, as a history that parted from the chat's."""
    d, _ = served_openai
    c, sid, app, _, answer = _text_and_image(d)
    alone = [{"role": "user", "content": [IMAGE]}]
    history = [{"role": "user", "content": "what is this"}, {"role": "assistant", "content": answer}, *alone]
    again = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    history[2:] = [{"role": "user", "content": ""}, {"role": "assistant", "content": again}]
    history.append({"role": "user", "content": "and now?"})
    app.chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, sid)
    assert kept[:5] == [
        ("user", "what is this\n[image]"),
        ("assistant", answer),
        ("user", "[image]"),
        ("assistant", again),
        ("user", "and now?"),
    ], kept
    assert len(kept) == 6, kept


def test_several_text_parts_resent_without_their_image_still_match(served_openai):
    """A message of several text parts and an image is recorded as its parts' lines (`look here`, `and here`,
    `[image]`); resent with the image left out, its text parts alone are one text (OpenAI's parts of text are
    joined as they are), which matched the recorded message's text without its note no longer: the history from
    it on was appended again, as one that parted from the chat's (one text part resent alone matched)."""
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    texts = [{"type": "text", "text": "look here"}, {"type": "text", "text": "and here"}]
    history = [{"role": "user", "content": [*texts, IMAGE]}]
    answer = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    assert _kept(c, sid)[0] == ("user", "look here\nand here\n[image]")
    history = [{"role": "user", "content": texts}, {"role": "assistant", "content": answer}]
    history.append({"role": "user", "content": "and now?"})
    app.chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, sid)
    assert kept[:3] == [("user", "look here\nand here\n[image]"), ("assistant", answer), ("user", "and now?")], kept
    assert len(kept) == 4, kept


def _edited(d, first: str, again: str):
    """A session whose app's first question is `first` (a string: the user's own text), answered; then its history
    sent again with that question as `again` and a next one. (client, session id, the first answer)"""
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    answer = app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": first}])
    answer = answer.choices[0].message.content
    history = [{"role": "user", "content": again}, {"role": "assistant", "content": answer}]
    app.chat.completions.create(model="echo-1", messages=[*history, {"role": "user", "content": "and now?"}])
    return c, sid, answer


def test_a_users_own_line_like_a_note_is_content_not_a_note(served_openai):
    """Lines such as `[x]` were taken out of both messages before they were matched, whoever wrote them: a user's
    question whose own text has the line `[x]`, edited in the app to leave it out, matched the recorded one, and the
    edit was not recorded (the model was asked the edited history, the session kept the first). Only the notes the
    daemon wrote for a message's parts that are not text are left out now: the edited question is a new one."""
    d, _ = served_openai
    c, sid, answer = _edited(d, "hello\n[x]", "hello")
    kept = _kept(c, sid)
    assert kept[:4] == [("user", "hello\n[x]"), ("assistant", answer), ("user", "hello"), ("assistant", answer)], kept
    assert kept[4] == ("user", "and now?") and len(kept) == 6, kept


def test_a_line_like_a_note_sent_as_text_is_content(served_openai):
    """A message recorded with its image's note, sent again as text whose own line is `[x]` (no part that is not
    text: the user's words) is another message, not the recorded one with its notes left out."""
    d, _ = served_openai
    c, sid, app, history, answer = _text_and_image(d)
    history = [{"role": "user", "content": "what is this\n[x]"}, {"role": "assistant", "content": answer}]
    app.chat.completions.create(model="echo-1", messages=[*history, {"role": "user", "content": "and now?"}])
    kept = _kept(c, sid)
    assert kept[:3] == [("user", "what is this\n[image]"), ("assistant", answer), ("user", "what is this\n[x]")], kept
    assert len(kept) == 6, kept


def test_the_notes_named_are_the_lines_text_of_wrote():
    """part_notes numbers the very lines text_of wrote for the parts that are not text (a text part of several lines
    counted as they are); a stored message's numbers that its text does not have (another device's) are not read."""
    from sessiond.daemon.openai_history import part_notes, past_stored, request_messages, text_of

    content = [{"type": "text", "text": "a\n[x]"}, IMAGE, {"type": "text", "text": "c"}, AUDIO]
    lines = text_of(content).split("\n")
    assert [lines[n] for n in part_notes(content)] == ["[image]", "[audio]"] and part_notes(content) == [2, 4]
    assert part_notes("a\n[image]") == part_notes([{"type": "text", "text": "a"}]) == []
    [sent] = request_messages({"messages": [{"role": "user", "content": content[:1] + content[2:3]}]})
    stored = {"role": "user", "content": "a\n[x]\n[image]\nc\n[audio]", "part_notes": [2, 4, 9, "1"]}
    assert past_stored([sent], [stored]) == ([], False)  # the same message, its media left out
    stored["part_notes"] = [1]  # (the user's own line named: not the message the app sent)
    assert past_stored([sent], [stored])[1]


def test_a_message_recorded_with_its_note_by_0_37_still_matches_without_its_image(served_openai):
    """0.37.0 recorded the notes without naming their lines: there the lines `[image]`, `[audio]` and `[file]` are
    notes (no other), and such a message sent again with its image left out still matches."""
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "what is this\n[image]")  # (as 0.37.0 recorded it: no part_notes)
    c.append(sid, "assistant", "a cat")
    history = [{"role": "user", "content": "what is this"}, {"role": "assistant", "content": "a cat"}]
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=[*history, {"role": "user", "content": "so?"}])
    assert [m["content"] for m in c.messages(sid)["messages"]][:3] == ["what is this\n[image]", "a cat", "so?"]


def test_several_text_parts_resent_with_the_images_left_out_still_match(served_openai):
    """A question in several text parts beside its images (an app's caption and question, each a part) is recorded
    with the parts a line each (`compare these`, `two photos`, `[image]`); sent again with the images left out, its
    text parts alone were put together with nothing between them (`compare thesetwo photos`), which matched the
    record with its notes left out no longer: the whole history from that message on was appended again after the
    chat's end (every message twice, each charged twice to the quota)."""
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    texts = [{"type": "text", "text": "compare these"}, {"type": "text", "text": "two photos"}]
    first = app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": [*texts, IMAGE, IMAGE]}])
    answer = first.choices[0].message.content
    used = c.quota(sid)["tokens_used"]
    history = [
        {"role": "user", "content": texts},  # (the images left out, the text parts as they were)
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and now?"},
    ]
    app.chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, sid)
    assert kept[:3] == [
        ("user", "compare these\ntwo photos\n[image]\n[image]"),
        ("assistant", answer),
        ("user", "and now?"),
    ], kept
    assert len(kept) == 4, kept
    [q, a] = c.messages(sid)["messages"][2:]  # the quota charged the new question and its answer, nothing again
    assert c.quota(sid)["tokens_used"] == used + q["tokens"] + a["tokens"] + a["usage"]["prompt_tokens"]


def test_a_session_exported_and_imported_back_keeps_which_lines_are_notes(served_openai, tmp_path):
    """`export` (json) left a message's `part_notes` out, and `import-file` of it had none: the imported session's
    messages were as 0.37.0 recorded them, where only `[image]`, `[audio]` and `[file]` lines are notes. A note of
    another kind (`[video_url]`, a part some providers take) was then the user's text: the app's history, sent to
    the imported session with its video left out, matched no longer, and was appended again whole."""
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    video = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}
    first = [{"role": "user", "content": [{"type": "text", "text": "see this"}, video]}]
    answer = openai_app(d, sid).chat.completions.create(model="echo-1", messages=first).choices[0].message.content
    new = imported_back(d.home, sid, tmp_path)
    assert c.messages(new)["messages"][0].get("part_notes") == [1], c.messages(new)["messages"][0]
    history = [
        {"role": "user", "content": [{"type": "text", "text": "see this"}]},  # (the video left out)
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and now?"},
    ]
    openai_app(d, new).chat.completions.create(model="echo-1", messages=history)
    kept = _kept(c, new)
    assert kept[:3] == [("user", "see this\n[video_url]"), ("assistant", answer), ("user", "and now?")], kept
    assert len(kept) == 4, kept


def test_a_users_own_image_line_is_content_in_a_message_this_daemon_recorded(served_openai):
    """A line `[image]` of a user's own text (no image part sent: a string) was taken for a note all the same, as
    in a message 0.37.0 recorded, which names no notes: the question edited in the app to leave the line out
    matched the recorded one, and the edit was not recorded. A message recorded now names its notes, none there."""
    d, _ = served_openai
    c, sid, answer = _edited(d, "hello\n[image]", "hello")
    kept = _kept(c, sid)
    assert kept[:4] == [("user", "hello\n[image]"), ("assistant", answer), ("user", "hello"), ("assistant", answer)]
    assert kept[4] == ("user", "and now?") and len(kept) == 6, kept


def test_a_message_0_37_recorded_of_a_note_like_line_alone_is_the_users_text():
    """0.37.0 named no notes, so a message it recorded is read with every `[image]`, `[audio]` and `[file]` line a
    note; one of such a line alone, `[image]` (a user's own text, or an image alone), was then read as nothing at all:
    an app's message sent in its place with no text of its own (another part alone, an audio clip; a blank) matched
    it, and was not recorded. A message that would be left with no text is the user's text as it stands; one with text
    beside its notes still matches without its image (test_a_message_recorded_with_its_note_by_0_37_...)."""
    from sessiond.daemon.openai_history import past_stored, request_messages

    for content in ([AUDIO], "", "[image]\n[image]"):
        for recorded in ("[image]", "[image]\n[image]"):
            [sent] = request_messages({"messages": [{"role": "user", "content": content}]})
            if sent["content"] != recorded:
                assert past_stored([sent], [{"role": "user", "content": recorded}])[1], (content, recorded)
    [sent] = request_messages({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}]}]})
    assert past_stored([sent], [{"role": "user", "content": "what is this\n[image]"}]) == ([], False)
