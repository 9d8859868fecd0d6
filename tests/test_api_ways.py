"""The refusals left naming only `sessiond` commands as their way on (h-apiways): limit_reached and
tool_call_unanswered name it in API terms too (`details.api`), and each way, followed as given, works."""

from __future__ import annotations

import test_model
from conftest import started_with, write_config
from test_smalls24 import _follow, _refusal, _ways

# test_model's fixtures: the loopback provider (`provider`), and daemons whose default provider it is
provider, setup = test_model.provider, test_model.setup


def test_the_active_session_limits_name_their_ways_on_in_api_terms(make_daemon):
    """max_active_sessions(_per_user) said `sessiond ls --status active`, `sessiond pause ID` ...: now also the
    active sessions the limit counts listed (the user's, for hers), then one paused, ended or deleted."""
    d = started_with(make_daemon, max_active_sessions=2, max_active_sessions_per_user=1)
    c = d.client()
    first = c.create_session(name="first", user="ann b")["id"]
    err = _refusal(lambda: c.create_session(name="second", user="ann b"))
    assert err.code == "limit_reached" and "sessiond pause" in err.message, err.message
    listed = "GET /v1/sessions?status=active&user=ann%20b, then "
    pause, end, delete = _ways(err)
    assert (pause, end, delete) == (
        f"{listed}POST /v1/sessions/SESSION_ID/pause",
        f"{listed}POST /v1/sessions/SESSION_ID/end",
        f"{listed}DELETE /v1/sessions/SESSION_ID",
    )
    found, paused = _follow(c, pause, SESSION_ID=first)
    assert [s["id"] for s in found["sessions"]] == [first] and paused["status"] == "paused"
    second = c.create_session(name="second", user="ann b")["id"]
    c.create_session(name="third")
    err = _refusal(lambda: c.resume(first))  # the daemon's limit: its active sessions, anyone's
    assert err.code == "limit_reached" and err.details["limit"] == "max_active_sessions", err.details
    _, end, delete = _ways(err)
    assert end == "GET /v1/sessions?status=active, then POST /v1/sessions/SESSION_ID/end", end
    found, _ = _follow(c, end, SESSION_ID=second)
    assert second in [s["id"] for s in found["sessions"]]
    assert c.resume(first)["status"] == "active"
    err = _refusal(lambda: c.create_session(name="fourth"))
    _follow(c, _ways(err)[2], SESSION_ID=first)
    assert c.create_session(name="fourth")["status"] == "active"


def test_the_chat_and_message_limits_name_their_ways_on_in_api_terms(make_daemon):
    """max_chats_per_session (another chat of the session; a new session for a copy that would pass it) and
    max_messages_per_chat (another chat while one may be made, a clone; a fork at an earlier message)."""
    d = started_with(make_daemon, max_chats_per_session=2, max_messages_per_chat=3)
    c = d.client()
    sid = c.create_session(name="limits")["id"]
    path = f"/v1/sessions/{sid}"
    for i in range(3):
        c.append(sid, "user", f"m{i}", tokens=1)
    err = _refusal(lambda: c.append(sid, "user", "one too many"))
    assert err.code == "limit_reached" and "sessiond chat new" in err.message, err.message
    new_chat, clone = _ways(err)
    assert new_chat == f'POST {path}/chats {{"switch": true}}' and clone == f"POST {path}/clone", _ways(err)
    made = _follow(c, new_chat)[0]["id"]
    assert c.append(sid, "user", "one too many")["chat"] == made
    assert _follow(c, clone)[0]["id"] != sid

    err = _refusal(lambda: c.create_chat(sid, id="third"))
    assert err.code == "limit_reached" and "sessiond chat switch" in err.message, err.message
    assert _ways(err) == [f'POST {path}/switch {{"chat": CHAT}}']
    assert _follow(c, _ways(err)[0], CHAT="main")[0]["current_chat"] == "main"
    err = _refusal(lambda: c.append(sid, "user", "main is full"))  # no room for a chat: a clone only
    assert _ways(err) == [f"POST {path}/clone"], _ways(err)

    d.stop()  # the limits lowered below what the session holds
    write_config(d.home, max_chats_per_session=1, max_messages_per_chat=2)
    d.start()
    err = _refusal(lambda: c.clone(sid))
    assert err.code == "limit_reached" and "sessiond new" in err.message, err.message
    assert _ways(err) == ["POST /v1/sessions"]
    assert _follow(c, _ways(err)[0])[0]["status"] == "active"
    one = c.create_session(name="one chat")["id"]
    d.stop()
    write_config(d.home, max_messages_per_chat=3)
    d.start()
    kept = [c.append(one, "user", f"m{i}", tokens=1)["id"] for i in range(3)]
    d.stop()
    write_config(d.home, max_messages_per_chat=2)
    d.start()
    err = _refusal(lambda: c.fork(one, kept[2]))
    assert err.code == "limit_reached" and "fork at an earlier message" in err.message, err.message
    fork, clone = _ways(err)
    assert fork == f'POST /v1/sessions/{one}/fork {{"at": MESSAGE_ID}}' and clone == f"POST /v1/sessions/{one}/clone"
    assert _follow(c, fork, MESSAGE_ID=kept[1])[0]["id"] != one
    assert _follow(c, clone)[0]["id"] != one


def test_an_unanswered_tool_call_names_its_ways_on_in_api_terms(setup, provider):
    """A request for the model's next answer to a chat ending in tool calls no result answers: the results
    appended (one batch), then the request again; or a question asked."""
    p, _ = provider
    d = setup[0]()
    c = d.client()
    sid = c.create_session(name="tools", model="echo-1")["id"]
    c.create_chat(sid, id="side")
    c.append(sid, "user", "what is the weather?", chat="side")
    calls = [
        {"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ("call_a", "call_b")
    ]
    c.append(sid, "assistant", "", tool_calls=calls, chat="side")
    err = _refusal(lambda: c.complete(sid, chat="side"))
    assert err.code == "tool_call_unanswered" and "sessiond add" in err.message, err.message
    results, question = _ways(err)
    tool = '{{"role": "tool", "tool_call_id": "{}", "content": RESULT}}'
    answers = f"{tool.format('call_a')}, {tool.format('call_b')}"
    complete = f"POST /v1/sessions/{sid}/complete"
    append = f'POST /v1/sessions/{sid}/messages {{"messages": [{answers}], "chat": "side"}}'
    assert results == f'{append}, then {complete} {{"chat": "side"}}', results
    assert question == f'{complete} {{"chat": "side", "content": QUESTION}}', question
    asked = len(p.requests)
    _, answer = _follow(c, results, RESULT="sunny")
    assert answer["role"] == "assistant" and answer["chat"] == "side", answer
    assert [m.get("tool_call_id") for m in p.requests[asked]["messages"]][-2:] == ["call_a", "call_b"]
    c.append(sid, "assistant", "", tool_calls=[{**calls[0], "id": "call_c"}], chat="side")
    (asked_too,) = _follow(c, _ways(_refusal(lambda: c.complete(sid, chat="side")))[1], QUESTION="and now?")
    assert asked_too["content"] == "echo: and now?", asked_too


def test_an_import_of_a_damaged_log_names_its_way_on_in_api_terms(make_daemon, store_dir):
    """An import that read a member's log damaged in the store carried its fix as a command line
    (`details.fix`: `sessiond import < code.txt  # again once sessiond verify ID && sessiond sync --wait ID on
    device D ...`): now also in API terms, verify and sync on the device that wrote it, then the import again
    here; which, followed, imports it."""
    from test_damaged_log_named import _damage_manifest, _written

    a, sid, code, device = _written(make_daemon, store_dir)
    _damage_manifest(store_dir, a.home, sid)
    b = make_daemon("file://" + store_dir).start()
    cb = b.client()
    err = _refusal(lambda: cb.import_code(code))
    assert err.code == "damaged" and err.details.get("fix", "").startswith("sessiond import"), err.details
    (way,) = _ways(err)
    verify, sync, again = way.split(", then ")
    assert verify == f'POST /v1/verify {{"session": "{sid}"}}', verify
    assert sync == f'POST /v1/sync {{"session": "{sid}", "wait": true}} on device {device}', sync
    assert again == 'POST /v1/import {"code": CODE} here', again
    _follow(a.client(), f"{verify}, then {sync}")
    assert _follow(cb, again, CODE=code)[0]["session"] == sid
    assert [m["content"] for m in cb.messages(sid)["messages"]] == ["hello"]


def _pulling_when_asked(make_daemon, store_dir) -> tuple:
    """Device A's session with one message, imported read-write on device B; A pulls only when asked to (its
    poll_interval and sync_interval an hour): (A's client, B's, the session)."""
    a = make_daemon("file://" + store_dir)
    write_config(a.home, poll_interval=3600, sync_interval=3600)
    ca = a.start().client()
    sid = ca.create_session(name="followed")["id"]
    ca.append(sid, "user", "hello")
    cb = make_daemon("file://" + store_dir).start().client()
    cb.import_code(ca.share(sid, write=True)["code"])
    return ca, cb, sid


def test_a_message_not_pulled_yet_names_its_way_on_in_api_terms(make_daemon, store_dir):
    """A message another device wrote, asked for before this device pulled it (a fork at it): 404 saying
    `sessiond sync ID --wait`, then again; now in API terms too. Followed, the fork is made."""
    ca, cb, sid = _pulling_when_asked(make_daemon, store_dir)
    mid = cb.append(sid, "user", "written on B")["id"]
    assert cb.sync(sid, wait=True, timeout=20)["complete"]
    err = _refusal(lambda: ca.fork(sid, mid))
    assert err.status == 404 and "sessiond sync" in err.message, err.message
    (way,) = _ways(err)
    assert way == f'POST /v1/sync {{"session": "{sid}", "wait": true}}', way
    _follow(ca, way)  # then the same request again
    assert [m["content"] for m in ca.messages(ca.fork(sid, mid)["id"])["messages"]] == ["hello", "written on B"]


def test_a_result_of_a_call_not_pulled_yet_names_its_ways_on_in_api_terms(make_daemon, store_dir):
    """A tool's result naming a call another device made, before this device pulled it: 422 saying the call
    is here once pulled (`sessiond sync ID`) or to add an output that answers no call without its id; now
    in API terms too. Followed: the pull, then the result is added; or the output, answering no call."""
    ca, cb, sid = _pulling_when_asked(make_daemon, store_dir)
    call = {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    cb.append(sid, "assistant", "", tool_calls=[call])
    assert cb.sync(sid, wait=True, timeout=20)["complete"]
    err = _refusal(lambda: ca.append(sid, "tool", "sunny", tool_call_id="call_b"))
    assert err.status == 422 and "sessiond sync" in err.message, err.message
    pull, no_call = _ways(err)
    assert pull == f'POST /v1/sync {{"session": "{sid}", "wait": true}}', pull
    assert no_call == f'POST /v1/sessions/{sid}/messages {{"role": "tool", "content": RESULT, "chat": "main"}}'
    assert _follow(ca, no_call, RESULT="an output")[0]["role"] == "tool"
    _follow(ca, pull)  # then the append again
    assert ca.append(sid, "tool", "sunny", tool_call_id="call_b")["tool_call_id"] == "call_b"


def test_an_import_over_a_different_session_of_its_id_names_its_way_on_in_api_terms(make_daemon, store_dir):
    """A code whose session id is that of a different session here: refused (conflict) saying to save this one
    (`sessiond export`) and delete it (`sessiond rm`) first; now in API terms too, then the import again.
    Followed: the export is the one here, and the code's session is imported."""
    a = make_daemon("file://" + store_dir).start()
    ca = a.client()
    sid = ca.create_session(name="the code's", initial_messages=[{"role": "user", "content": "theirs"}])["id"]
    code = ca.share(sid)["code"]
    cb = make_daemon("file://" + store_dir).start().client()
    cb.create_session(id=sid, name="mine", initial_messages=[{"role": "user", "content": "mine"}])
    assert cb.sync(sid, wait=True, timeout=20)["complete"]  # its key on disk, its push sealed with it
    err = _refusal(lambda: cb.import_code(code))
    assert err.code == "conflict" and "sessiond export" in err.message, err.message
    (way,) = _ways(err)
    assert way == f"GET /v1/sessions/{sid}/export, then DELETE /v1/sessions/{sid}, then " + (
        'POST /v1/import {"code": CODE} here'
    ), way
    saved, _, imported = _follow(cb, way, CODE=code)
    assert saved["session"]["name"] == "mine", saved
    assert imported["session"] == sid and cb.get_session(sid)["name"] == "the code's"
