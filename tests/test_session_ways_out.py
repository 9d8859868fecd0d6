"""What a refusal of the session features tells a user to do, followed as printed: a chat's id or name
taken, a chat's own context policy, a chat full, a token quota nearing its end. Each way out named is a
command that works, with the setting where it is set. And what `show` says of when a session will end."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

import pytest

from conftest import cli_json, run_cli, started_with
from sessiond.client import ApiError


def test_a_new_chat_whose_id_is_another_chats_name_is_told_to_choose_another_id(daemon):
    """`chat new ID --id side` where another chat is named "side", no name given (so its name would be its id):
    the refusal said "already has a chat named 'side' ...; choose another name", a name never given; the way
    out is another id (or the other chat renamed)."""
    h = daemon.home
    sid = cli_json(h, "new", "--id", "named")["id"]
    cli_json(h, "chat", "new", sid, "--id", "c1", "--name", "side")
    before = cli_json(h, "chat", "ls", sid)
    res = run_cli(h, "chat", "new", sid, "--id", "side")
    assert res.returncode == 1 and "'side'" in res.stderr and "choose another id" in res.stderr, res.stderr
    assert "choose another name" not in res.stderr, res.stderr
    with pytest.raises(ApiError) as e:
        daemon.client().create_chat(sid, id="side")
    assert e.value.status == 409 and "choose another id" in e.value.message, e.value.message
    assert cli_json(h, "chat", "ls", sid) == before  # refused: nothing written


def test_a_chats_own_context_policy_is_named_with_the_command_that_changes_it(daemon):
    """A chat made with its own budget and `--no-auto-compact` (`chat new`), full: the refusal named only
    `compact` and a new chat. The setting that refuses is the chat's own, which `chat set ID CHAT
    --auto-compact` turns on and `chat set ID CHAT --max-context-tokens N` raises (the session's `set` does
    neither: the chat's own policy wins); each way out works as printed."""
    h = daemon.home
    sid = cli_json(h, "new", "--id", "own")["id"]
    cli_json(h, "chat", "new", sid, "--id", "tight", "--max-context-tokens", "20", "--no-auto-compact", "--switch")
    for i in range(2):
        cli_json(h, "add", sid, "--role", "user", "--tokens", "7", f"m{i}")
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "7", "one too many")
    turn_on = f"`sessiond chat set --home {h} {sid} tight --auto-compact`"
    assert res.returncode == 1 and turn_on in res.stderr, res.stderr
    assert "`sessiond set " not in res.stderr, res.stderr  # the session's setting is not what refuses
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "30", "too big for the chat")
    raise_it = f"`sessiond chat set --home {h} {sid} tight --max-context-tokens N`"
    assert res.returncode == 1 and raise_it in res.stderr and "`sessiond set " not in res.stderr, res.stderr
    assert cli_json(h, "context", sid)["messages"] == 2  # both refusals stored nothing
    args = shlex.split(turn_on.strip("`"))[1:]
    del args[args.index("--home") : args.index("--home") + 2]  # (run_cli gives it)
    assert run_cli(h, *args).returncode == 0
    assert cli_json(h, "add", sid, "--role", "user", "--tokens", "7", "one too many")["chat"] == "tight"


def test_a_full_chat_names_the_ways_on_that_work(make_daemon):
    """max_messages_per_chat reached: the refusal said "Start another chat or clone the session", no command,
    not the limit's setting, and "another chat" even where max_chats_per_session allowed no more (that
    refusal in turn named config.toml). It names the commands, as the other limits do, only those that can
    work, and the setting; each way out named works as printed."""
    d = started_with(make_daemon, max_chats_per_session=2, max_messages_per_chat=2)
    h = d.home
    sid = cli_json(h, "new", "--id", "full")["id"]
    for i in range(2):
        cli_json(h, "add", sid, "--role", "user", f"m{i}")
    res = run_cli(h, "add", sid, "--role", "user", "one too many")
    new_chat, clone = f"`sessiond chat new --home {h} {sid} --switch`", f"`sessiond clone --home {h} {sid}`"
    assert res.returncode == 1 and new_chat in res.stderr and clone in res.stderr, res.stderr
    assert "max_messages_per_chat in the daemon's config.toml" in res.stderr, res.stderr
    args = shlex.split(new_chat.strip("`"))[1:]
    del args[args.index("--home") : args.index("--home") + 2]  # (run_cli gives it)
    assert run_cli(h, *args).returncode == 0  # the session's second chat: max_chats_per_session reached
    for i in range(2):
        cli_json(h, "add", sid, "--role", "user", f"n{i}")
    with pytest.raises(ApiError) as e:
        d.client().append(sid, "user", "one too many")
    assert e.value.code == "limit_reached" and f"`sessiond clone {sid}`" in e.value.message, e.value.message
    assert "chat new" not in e.value.message, e.value.message  # no room for a third chat: not offered
    assert cli_json(h, "stats", sid)["messages"] == 4  # the refusals stored nothing


def test_add_says_when_the_session_nears_or_passes_its_token_quota(daemon):
    """`ask` says on standard error once an answer leaves the session's token quota at its warning level or
    past it; `add`, the other way a message goes in from the CLI, said nothing until an append was refused
    for good (the levels only in `sessiond quota`). It says so the same way, the message's id alone on
    standard output; nothing below 70 % or for a session with no quota."""
    h = daemon.home
    sid = cli_json(h, "new", "--id", "capped", "--token-quota", "100")["id"]
    free = cli_json(h, "new", "--id", "uncapped")["id"]
    quiet = run_cli(h, "add", sid, "--role", "user", "--tokens", "60", "below the warning level")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet
    for tokens, level in (("15", "warning"), ("20", "critical"), ("5", "exhausted")):
        res = run_cli(h, "add", sid, "--role", "user", "--tokens", tokens, "nearer")
        used = cli_json(h, "quota", sid)["tokens_used"]
        note = f"this session has used {used} of its 100 tokens ({level}); see `sessiond quota --home {h} {sid}`"
        assert res.returncode == 0 and note in res.stderr, res
        assert res.stdout.strip().startswith(daemon.client().status()["device_id"]), res.stdout  # the id alone
    res = run_cli(h, "add", free, "--role", "user", "--tokens", "1000000", "no quota")
    assert res.returncode == 0 and res.stderr == "", res
    json_capped = cli_json(h, "new", "--token-quota", "100")["id"]
    res = run_cli(h, "add", json_capped, "--json", "--role", "user", "--tokens", "75", "json")
    assert json.loads(res.stdout)["role"] == "user" and "(warning)" in res.stderr, res
    # exhausted: nothing more is taken, not even 0 tokens (the quota's rule), and nothing noted as added
    res = run_cli(h, "add", sid, "--role", "user", "--tokens", "0", "past it")
    assert res.returncode == 1 and "exhausted its token quota" in res.stderr, res


def test_the_active_session_limits_name_the_commands_and_the_setting(make_daemon):
    """max_active_sessions and max_active_sessions_per_user said "pause, end or delete one first": no command
    (which are active? how?), and not the setting, where max_chats_per_session's refusal names config.toml.
    Each now names the listing of the sessions it counts, the command that frees one, and the setting; the
    listing printed lists exactly those sessions."""
    d = started_with(make_daemon, max_active_sessions=3, max_active_sessions_per_user=2)
    h = d.home
    anns = [cli_json(h, "new", "--user", "ann smith")["id"] for _ in range(2)]
    res = run_cli(h, "new", "--user", "ann smith")
    listing = f"`sessiond ls --home {h} --user 'ann smith' --status active`"
    assert res.returncode == 1 and listing in res.stderr, res.stderr
    assert f"`sessiond pause --home {h} ID`" in res.stderr, res.stderr
    assert "max_active_sessions_per_user in the daemon's config.toml" in res.stderr, res.stderr
    args = shlex.split(listing.strip("`"))[1:]
    del args[args.index("--home") : args.index("--home") + 2]  # (run_cli gives it)
    assert sorted(s["id"] for s in cli_json(h, *args)["sessions"]) == sorted(anns)
    other = cli_json(h, "new")["id"]
    with pytest.raises(ApiError) as e:
        d.client().create_session()
    said = e.value.message
    assert e.value.code == "limit_reached" and "`sessiond ls --status active`" in said, said
    assert "max_active_sessions in the daemon's config.toml" in said and "`sessiond pause ID`" in said, said
    assert sorted(s["id"] for s in cli_json(h, "ls", "--status", "active")["sessions"]) == sorted([*anns, other])


def test_show_says_when_an_idle_timeout_ends_the_session(daemon):
    """`show` of a session made with `--idle-timeout 1h` said `expires: -`, as if it never would, though the
    daemon ends it an hour after its last activity; it now gives that time and why (the earlier of the two
    when it has an expiry too). `--json` gives the fields as they are."""
    import time

    h = daemon.home
    sid = cli_json(h, "new", "--idle-timeout", "1h")["id"]
    s = cli_json(h, "show", sid)
    line = next(x for x in run_cli(h, "show", sid).stdout.splitlines() if x.startswith("expires:"))
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["last_activity"] + 3600))
    assert at in line and "idle" in line, line
    assert s["expires_at"] is None  # (the field as stored)
    both = cli_json(h, "new", "--idle-timeout", "1h", "--expires-in", "10m")["id"]
    line = next(x for x in run_cli(h, "show", both).stdout.splitlines() if x.startswith("expires:"))
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cli_json(h, "show", both)["expires_at"]))
    assert at in line and "idle" not in line, line
    never = cli_json(h, "new")["id"]
    assert "expires:       -" in run_cli(h, "show", never).stdout


def test_chat_switch_by_name_says_the_name_given(daemon):
    """`chat switch ID side` said "current chat is now 01m9...", an id the user never typed: it says the name
    given, with the id; a chat picked by its id is said by it alone."""
    h = daemon.home
    sid = cli_json(h, "new")["id"]
    cid = cli_json(h, "chat", "new", sid, "--name", "side")["id"]
    res = run_cli(h, "chat", "switch", sid, "side")
    assert res.returncode == 0 and res.stdout == f"{sid}: current chat is now side ({cid})\n", res.stdout
    res = run_cli(h, "chat", "switch", sid, "main")
    assert res.stdout == f"{sid}: current chat is now main\n", res.stdout


def test_log_all_heads_each_message_with_its_chats_name(daemon):
    """`log --all` headed each message with its chat's id ("user (01m9...)"), where `chat ls`, `--chat` and
    `add --chat` go by the name the user gave: it heads them with the name (the id when it is the name)."""
    h = daemon.home
    sid = cli_json(h, "new")["id"]
    cli_json(h, "chat", "new", sid, "--name", "side")
    cli_json(h, "add", sid, "--role", "user", "in main")
    cli_json(h, "add", sid, "--role", "user", "--chat", "side", "in side")
    heads = [x for x in run_cli(h, "log", sid, "--all").stdout.splitlines() if x.startswith("[")]
    assert [x.split("] ")[1].split(" ")[:2] for x in heads] == [["user", "(main)"], ["user", "(side)"]], heads


def test_an_app_following_events_is_told_when_an_append_changes_the_quota_level(daemon):
    """The quota's levels were only in `GET .../quota`: an app had to poll it after every append (or answer) to
    warn its user. The `messages.appended` event of an append that brings the session's token quota to
    another level names it (`quota_level`: warning, critical, exhausted), once per level reached; none for
    one that leaves it where it was, nor for a session with no quota."""
    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    free, last = c.create_session()["id"], c.create_session()["id"]

    def work() -> None:
        for tokens in (60, 5, 10, 5, 15, 5):  # 60 safe, 65, 75 warning, 80, 95 critical, 100 exhausted
            c.append(sid, "user", "x", tokens=tokens)
        c.append(free, "user", "x", tokens=10**6)
        c.append(last, "user", "the end")

    seen = _events_around(daemon, "messages.appended", lambda: c.append(free, "user", "probe", tokens=1), work, last)
    levels = [ev.get("quota_level") for ev in seen if ev["session"] == sid]
    assert levels == [None, None, "warning", None, "critical", "exhausted"], seen
    assert all("quota_level" not in ev for ev in seen if ev["session"] in (free, last)), seen


def _events_around(daemon, kind: str, probe: Callable[[], object], work: Callable[[], None], last: str) -> list[dict]:
    """The daemon's events of type `kind` from the first that `probe` (called until the stream shows one: a deadline,
    not a guess at how long it takes to open) causes, through `work`, up to the first of session `last`."""
    import asyncio

    from sessiond.client import AsyncClient

    async def run() -> list[dict]:
        seen: list[dict] = []
        following = asyncio.Event()

        async def follow() -> None:
            async with AsyncClient(home=daemon.home) as ac:
                async for ev in ac.events():
                    if ev.get("type") == kind:
                        following.set()  # (its first: the stream is open, nothing later is missed)
                        seen.append(ev)
                        if ev["session"] == last:
                            return

        task = asyncio.create_task(follow())
        for _ in range(60):
            await asyncio.to_thread(probe)
            try:
                await asyncio.wait_for(following.wait(), 0.5)
                break
            except TimeoutError:
                pass
        await asyncio.to_thread(work)
        await asyncio.wait_for(task, 30)
        return seen

    return asyncio.run(run())


def test_messages_larger_than_the_whole_token_quota_are_not_sent_to_a_clone_or_fork(daemon):
    """An append of more tokens than the session's whole quota was told to go on in a clone or a fork, each with
    the same quota (a clone's starting at 0 tokens used), where it cannot fit either: an app following
    `details.api` made a session and was refused again. It is told the quota itself is too small: raise it,
    or send less; a copy is still named when the messages would fit in one."""
    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    c.append(sid, "user", "first", tokens=50)
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "huge", tokens=150)
    said, details = e.value.message, e.value.details
    assert e.value.code == "quota_exceeded" and "150" in said and "whole token quota (100)" in said, said
    assert "--token-quota N" in said and "sessiond clone" not in said and "sessiond fork" not in said, said
    assert details["api"] == [f'PATCH /v1/sessions/{sid} {{"token_quota": N}}'], details
    with pytest.raises(ApiError) as e:  # fits a clone (0 used): the copies are among the ways on
        c.append(sid, "user", "big", tokens=60)
    assert "sessiond clone" in e.value.message and len(e.value.details["api"]) == 3, e.value.message
    res = run_cli(daemon.home, "add", sid, "--role", "user", "--tokens", "101", "x")
    assert res.returncode == 1 and "whole token quota" in res.stderr and "sessiond clone" not in res.stderr, res.stderr


def test_an_app_following_events_is_told_when_a_change_of_the_quota_moves_its_level(daemon):
    """A pull that moved the quota's level (another device's writes or quota) said so on `session.synced`, an append
    on `messages.appended`, but this device's own change of the quota (`set --token-quota`, a PATCH) said nothing on
    its `session.updated`: an app warning its user of a spent quota missed that lowering it spent it. The event names
    the level it moved to (`safe` too, when raised), and none for a change that leaves it, or changes no quota."""
    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    c.append(sid, "user", "half", tokens=50)
    opening, last = c.create_session()["id"], c.create_session()["id"]

    def work() -> None:
        for quota in (60, 58, 50, 1000):  # warning, warning still, exhausted, safe
            c.update_session(sid, token_quota=quota)
        c.update_session(sid, name="renamed")
        c.update_session(last, name="the end")

    seen = _events_around(daemon, "session.updated", lambda: c.update_session(opening, name="opening"), work, last)
    levels = [ev.get("quota_level") for ev in seen if ev["session"] == sid]
    assert levels == ["warning", None, "exhausted", "safe", None], seen
