"""Small defects left open by the audits (h-smalls23), each through a real daemon."""

from __future__ import annotations

from conftest import cli_json


def test_the_quota_thresholds_the_answer_names_are_where_its_level_changes(daemon):
    """`GET .../quota` names its thresholds, and the level it gives changes exactly there: the thresholds are
    defined once (storage/quotalevel.py), not also as a literal next to them or again in storage/schema.py."""
    from sessiond.storage import quotalevel, schema

    assert not hasattr(schema, "WARNING_LEVELS")  # one definition: the schema's copy was unused
    c = daemon.client()
    sid = c.create_session(token_quota=1000)["id"]
    q = c.quota(sid)
    thresholds = q["thresholds"]
    assert thresholds == {name: limit for limit, name in quotalevel.WARNING_LEVELS if limit}
    below, used = "safe", 0
    for name, limit in sorted(thresholds.items(), key=lambda kv: kv[1]):
        at = round(limit * 1000)
        c.append(sid, "user", "x", tokens=at - 1 - used)
        assert c.quota(sid)["level"] == below
        c.append(sid, "user", "x", tokens=1)
        assert c.quota(sid)["level"] == name
        below, used = name, at
    assert cli_json(daemon.home, "quota", sid)["thresholds"] == thresholds


def test_context_shows_the_policy_in_force_and_names_the_defaults(daemon):
    """`sessiond context ID --json` gave `context_margin` and `auto_compact` as null when at their defaults
    (0.8, on): it shows the values in force, and `defaults` names those no chat or session set (what `show`
    leaves out of its policy, which is what `new` and `set` gave)."""
    h = daemon.home
    sid = cli_json(h, "new", "--max-context-tokens", "1000")["id"]
    c = cli_json(h, "context", sid)
    assert c["policy"] == {"max_context_tokens": 1000, "context_margin": 0.8, "auto_compact": True}, c
    assert c["defaults"] == ["context_margin", "auto_compact"], c
    assert cli_json(h, "show", sid)["policy"] == {"max_context_tokens": 1000}
    cli_json(h, "set", sid, "--context-margin", "0.5", "--no-auto-compact")
    c = cli_json(h, "context", sid)
    assert c["policy"] == {"max_context_tokens": 1000, "context_margin": 0.5, "auto_compact": False}, c
    assert c["defaults"] == [], c
    cli_json(h, "chat", "set", sid, "main", "--auto-compact")  # the chat's own wins over the session's
    cli_json(h, "set", sid, "--unset", "context-margin", "--unset", "max-context-tokens")
    c = daemon.client().context(sid)
    assert c["policy"] == {"max_context_tokens": None, "context_margin": 0.8, "auto_compact": True}, c
    assert c["defaults"] == ["max_context_tokens", "context_margin"], c
    # compact and uncompact answer the same shape
    assert daemon.client().uncompact(sid)["defaults"] == c["defaults"]


def test_a_quota_used_up_exactly_refuses_a_0_token_append_as_one_used_past_it_does(daemon):
    """A 0-token append was taken at exactly 100 % of the quota but refused once the use was past it. One rule
    now: a quota at 100 % is `exhausted`, and an exhausted quota takes nothing more, as a question to a model
    is refused from 100 % on; below it, an append is taken if it fits (up to 100 % exactly)."""
    from sessiond.client import ApiError

    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    c.append(sid, "user", "x", tokens=0)  # room left: a 0-token append is taken
    c.append(sid, "user", "x", tokens=100)  # to the brim: taken
    assert c.quota(sid)["level"] == "exhausted"
    for quota in (100, 50):  # exactly used up, and lowered below the use: the same answer
        c.update_session(sid, token_quota=quota)
        try:
            c.append(sid, "user", "y", tokens=0)
        except ApiError as e:
            assert e.status == 429 and e.code == "quota_exceeded", e
            assert "has exhausted its token quota: used 100 of its" in e.message, e.message
        else:
            raise AssertionError(f"a 0-token append taken with a quota of {quota} used up")
    assert c.quota(sid)["tokens_used"] == 100 and len(c.messages(sid)["messages"]) == 2


def test_preferences_and_an_absolute_expiry_are_set_through_the_cli(daemon):
    """`preferences` and an absolute `expires_at` could be set through the API only: `new` and `set` take
    --preferences JSON (as --metadata) and --expires-at TIME (ISO 8601 with its zone, as --expires-in's
    alternative); a time without a zone, or not a time, is refused naming the option, and changes nothing."""
    from conftest import run_cli

    h = daemon.home
    s = cli_json(h, "new", "--preferences", '{"theme": "dark"}', "--expires-at", "2030-01-01T00:00:00Z")
    assert s["preferences"] == {"theme": "dark"} and s["expires_at"] == 1893456000, s
    sid = s["id"]
    s = cli_json(h, "set", sid, "--preferences", '{"lang": "fr"}', "--expires-at", "2031-06-01T12:30:00+02:00")
    assert s["preferences"] == {"lang": "fr"} and s["expires_at"] == 1938076200, s  # replaced whole
    count = len(cli_json(h, "ls")["sessions"])
    for args, words in (
        (("--expires-at", "2030-01-01T00:00:00"), "time zone"),
        (("--expires-at", "next tuesday"), "ISO 8601"),
        (("--expires-at", "2030-01-01T00:00:00Z", "--expires-in", "7d"), "not allowed with"),
        (("--preferences", "{oops"), "--preferences is not valid JSON"),
    ):
        for cmd in (("new",), ("set", sid)):
            res = run_cli(h, *cmd, *args)
            assert res.returncode == 2 and words in res.stderr, (cmd, args, res.stderr)
    res = run_cli(h, "set", sid, "--expires-at", "2001-01-01T00:00:00Z")
    assert res.returncode == 2 and "--expires-at" in res.stderr and "is past" in res.stderr, res.stderr
    res = run_cli(h, "set", sid, "--preferences", "[1]")
    assert res.returncode == 2 and "--preferences" in res.stderr, res.stderr
    res = run_cli(h, "set", sid, "--expires-in", "7d", "--unset", "expires-at")
    assert res.returncode == 2 and "contradict" in res.stderr, res.stderr
    s = cli_json(h, "show", sid)
    assert s["preferences"] == {"lang": "fr"} and s["expires_at"] == 1938076200  # nothing changed
    assert len(cli_json(h, "ls")["sessions"]) == count
    s = cli_json(h, "set", sid, "--unset", "preferences", "--unset", "expires-at")
    assert s["preferences"] == {} and s["expires_at"] is None, s


def test_a_folder_store_a_session_was_imported_through_names_a_way_on_that_fits_it(make_daemon, tmp_path):
    """B imports A's session through A's folder store, B's own store another folder. That folder gone, B's push
    and pull errors said "or move this device to another store (--change-store)", which moves B's own store,
    not the session's: they name what fits a session imported through another store."""
    import json
    import os

    from conftest import run_cli, write_config

    s1, s2, away = str(tmp_path / "s1"), str(tmp_path / "s2"), str(tmp_path / "away")
    a = make_daemon(f"file://{s1}").start()
    b = make_daemon(f"file://{s2}")
    write_config(b.home, push_delay=3600)  # only an asked sync pushes
    b.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared")["id"]
    ca.append(sid, "user", "first")
    assert ca.sync(sid, wait=True, timeout=10)["complete"]
    code = ca.share(sid, write=True)["code"]
    assert cli_json(b.home, "import", "--store", f"file://{s1}", input=code)["session"] == sid
    a.stop()
    os.rename(s1, away)  # the share that store is on, not mounted
    cb.append(sid, "user", "while away")
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "3", "--json")
    assert res.returncode != 0, res.stdout
    st = json.loads(res.stdout)["sessions"][sid]
    for what in ("last_error", "pull_error"):
        said = st.get(what) or ""
        assert f"the store folder {s1} is missing or not a folder" in said, (what, st)
        assert "--change-store" not in said and "imported through" in said, (what, said)
    status = cli_json(b.home, "status")["sync"][sid]
    assert "--change-store" not in json.dumps(status) and "imported through" in status["last_error"], status
    doctor = run_cli(b.home, "doctor", "--json")  # its store's finding, its pushes' and pulls', verify's
    findings = [f for f in json.loads(doctor.stdout)["findings"] if f["level"] != "ok"]
    assert {f["check"] for f in findings} >= {"store", "push", "verify"}, findings
    for f in findings:
        assert "--change-store" not in f["message"] and "imported through" in f["message"], f


async def test_async_complete_stream_sends_the_question_when_awaited_or_entered_as_the_blocking_one(slow_stream):
    """Client.complete_stream() sends the question when it returns; AsyncClient's sent it only at the first
    step of its iteration, and had no `async with`. Now it is sent when awaited or entered (as
    AsyncClient.events() subscribes), else at the first step; `async with` closes it (the answer recorded,
    interrupted); the stored answer is the last item and `.message`, as the blocking stream's."""
    from waiting import eventually

    d = slow_stream
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    blocking = c.complete_stream(sid, "one")  # sent at the call
    assert [m["content"] for m in c.messages(sid)["messages"]][:1] == ["one"]
    assert "".join(blocking) == "echo: one" and blocking.message["content"] == "echo: one"

    async def questions():
        return [m["content"] for m in (await ac.messages(sid))["messages"] if m["role"] == "user"]

    async with d.aclient() as ac:
        stream = await ac.complete_stream(sid, "two")  # sent here, before any step
        assert await questions() == ["one", "two"]
        parts = [x async for x in stream]
        assert "".join(parts[:-1]) == "echo: two" and parts[-1] == stream.message
        assert stream.message["content"] == "echo: two"
        async with ac.complete_stream(sid, "a b c d e f g h i j") as stream:  # sent at the entry
            assert (await questions())[-1] == "a b c d e f g h i j"
            async for _ in stream:
                break

        async def answered():
            ms = (await ac.messages(sid))["messages"]
            return ms[-1] if ms[-1]["role"] == "assistant" and len(ms) == 6 else None

        answer = await eventually(answered, timeout=20, what="the answer recorded")
        assert answer["interrupted"] is True, answer  # closed at the block's end: the generation stopped
        # unchanged: iterated without an await, it is sent at its first step
        assert "".join([x async for x in ac.complete_stream(sid, "three") if isinstance(x, str)]) == "echo: three"


def test_doctor_s_fix_for_a_full_store_a_session_was_imported_through_fits_that_store(make_daemon, tmp_path):
    """B's own store a folder, a session imported through a relay whose quota B's pushes fill: doctor's fix for
    the push named the folder's remedy ("free space") and a move of B's own store (`--change-store`), neither
    of which is that session's store: it names the relay's (its owner raises the quota) and a new share code."""
    import json

    from conftest import relay_served, run_cli

    with relay_served(str(tmp_path / "relay"), "--open-registration", "--quota", "64K") as info:
        a = make_daemon(info["url"]).start()
        b = make_daemon(f"file://{tmp_path / 'own'}").start()
        ca, cb = a.client(), b.client()
        sid = ca.create_session(name="shared")["id"]
        ca.append(sid, "user", "first")
        assert ca.sync(sid, wait=True, timeout=10)["complete"]
        code = ca.share(sid, write=True)["code"]
        assert cli_json(b.home, "import", "--store", info["url"], input=code)["session"] == sid
        cb.append(sid, "user", "z" * 200_000)  # past B's account's 64 KiB on the relay
        res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "30", "--json")
        assert res.returncode == 1 and "quota" in json.loads(res.stdout)["sessions"][sid]["last_error"], res.stdout
        doctor = json.loads(run_cli(b.home, "doctor", "--json").stdout)["findings"]
        (push,) = [f for f in doctor if f["check"] == "push" and sid in f["message"]]
        assert "--change-store" not in push["fix"] and "free space" not in push["fix"], push
        assert "--quota (sessiond serve)" in push["fix"] and "sessiond import" in push["fix"], push
