"""Session semantics found in review: changing a chat after it is made (and seeing it on another device),
clearing a setting from the CLI, yes/no query parameters read strictly, no duplicate checkpoint, and the
times of a fork's copied messages. Real daemons as processes, over their sockets; two of them share a
folder store where a change must travel."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import time

import pytest

from conftest import DaemonProc, UnixHTTP, cli_json, run_cli, wait_for
from sessiond.client import AsyncClient


@pytest.fixture(scope="module")
def d():
    """One daemon for the tests of this module that need no store of their own."""
    tmp = tempfile.mkdtemp(prefix="sd-sem-")
    proc = DaemonProc(os.path.join(tmp, "home")).start()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def raw(daemon: DaemonProc, method: str, path: str, body: object = None) -> tuple[int, dict | None]:
    c = UnixHTTP(daemon.socket, timeout=10)
    c.request(
        method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"}
    )
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


# --------------------------------------------------------------------- yes/no query parameters
def test_yes_no_query_parameters_take_true_false_1_0_and_refuse_the_rest(d):
    c = d.client()
    sid = c.create_session()["id"]
    c.create_chat(sid, id="side")
    c.append(sid, "user", "in main")
    c.append(sid, "user", "in side", chat="side")
    base = f"/v1/sessions/{sid}/messages"
    for value, count in (("true", 2), ("1", 2), ("false", 1), ("0", 1)):
        status, out = raw(d, "GET", f"{base}?all={value}")
        assert status == 200 and len(out["messages"]) == count, (value, out)
    for value in ("maybe", "yes", "TRUE", "", "2"):
        status, out = raw(d, "GET", f"{base}?all={value}")
        assert status == 400, (value, status, out)
        err = out["error"]
        assert err["code"] == "bad_parameter"
        assert "all" in err["message"] and "true, false, 1 or 0" in err["message"], err
    # every route's yes/no parameters: the doctor's verify too
    for value in ("false", "0"):
        status, out = raw(d, "GET", f"/v1/doctor?verify={value}")
        assert status == 200 and not any(f["check"].startswith("verify") for f in out["findings"]), out
    status, out = raw(d, "GET", "/v1/doctor?verify=1")
    assert status == 200 and any(f["check"] == "verify" for f in out["findings"]), out
    status, out = raw(d, "GET", "/v1/doctor?verify=nope")
    assert status == 400 and "verify" in out["error"]["message"] and "1 or 0" in out["error"]["message"]
    # the OpenAPI document says which values it takes
    doc = c.openapi()
    params = {p["name"]: p for p in doc["paths"]["/v1/sessions/{id}/messages"]["get"]["parameters"]}
    assert sorted(params["all"]["schema"]["enum"]) == ["0", "1", "false", "true"]


def test_a_query_parameter_a_route_does_not_take_is_refused_and_changes_nothing(d):
    c = d.client()
    sid = c.create_session(name="typo")["id"]
    c.end(sid)
    live = c.create_session(name="live")["id"]
    # a typo must not answer as if the filter were absent (every session, ended or not)
    status, out = raw(d, "GET", "/v1/sessions?stauts=active")
    assert status == 400, out
    err = out["error"]
    assert err["code"] == "bad_parameter" and err["details"]["parameter"] == "stauts", err
    assert "'stauts'" in err["message"] and "GET /v1/sessions" in err["message"], err
    assert "status" in err["message"] and "limit" in err["message"], err  # the ones it takes
    # a route that takes none says so; a write refused so changes nothing
    status, out = raw(d, "POST", f"/v1/sessions/{live}/messages?chat=main", {"role": "user", "content": "x"})
    assert status == 400 and "takes none" in out["error"]["message"], out
    assert c.messages(live)["messages"] == []
    # the parameters a route names still work, and no query string at all
    status, out = raw(d, "GET", "/v1/sessions?status=ended")
    assert status == 200 and [s["id"] for s in out["sessions"]] == [sid], out
    status, out = raw(d, "GET", f"/v1/sessions/{sid}?")
    assert status == 200, out
    # OpenAI's routes keep ignoring what they do not know (its clients add parameters of their own)
    status, out = raw(d, "GET", "/openai/v1/models?api-version=2024-01-01")
    assert out["error"]["code"] == "no_provider", out  # (this daemon has none) not bad_parameter


def test_stats_of_a_session_and_a_user_hold_both_filters(d):
    # GET /v1/stats?session=S&user=U answered S's statistics as if user were not given, whoever S
    # belongs to: both filters hold, as in a search (S's, if it is U's; a 404 saying whose it is if not)
    c = d.client()
    sid = c.create_session(user="ann")["id"]
    c.append(sid, "user", "hello")
    status, out = raw(d, "GET", f"/v1/stats?session={sid}&user=bob")
    assert status == 404 and out["error"]["code"] == "not_found", out
    assert "'bob'" in out["error"]["message"] and "'ann'" in out["error"]["message"], out
    status, out = raw(d, "GET", f"/v1/stats?session={sid}&user=ann")
    assert status == 200 and out["session"] == sid and out["messages"] == 1, out
    assert raw(d, "GET", f"/v1/stats?session={sid}")[1]["messages"] == 1
    assert raw(d, "GET", "/v1/stats?user=ann")[1]["user"] == "ann"


# --------------------------------------------------------------------------------- checkpoints
def test_end_right_after_a_checkpoint_writes_no_second_identical_one(d):
    c = d.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello", tokens=3)
    first = c.checkpoint(sid)
    again = c.checkpoint(sid)  # nothing new: the same one answers, said not made (`made`: the POST's alone)
    assert first.pop("made") is True and again.pop("made") is False and again == first
    ended = c.end(sid)
    assert [cp["number"] for cp in ended["checkpoints"]] == [first["number"]], ended["checkpoints"]
    assert c.checkpoints(sid)["checkpoints"] == [first]
    # a message since the latest one: the end does checkpoint it
    sid2 = c.create_session()["id"]
    c.append(sid2, "user", "one", tokens=2)
    cp = c.checkpoint(sid2)
    assert cp.pop("made") is True
    c.append(sid2, "user", "two", tokens=2)
    cps = c.end(sid2)["checkpoints"]
    assert [x["messages"] for x in cps] == [1, 2] and cps[0] == cp


async def test_checkpoints_asked_for_at_once_are_one_checkpoint(d):
    # An app's POST .../checkpoints while another is under way (or an automatic one, or `end`'s final one):
    # each read the same next number and the same latest checkpoint before either was written, so the log
    # got several checkpoint.add operations of one number (every device keeping whichever it applied
    # first) and, with one already stored, a second checkpoint of the same conversation.
    sid = d.client().create_session(checkpoint_interval=1 << 30)["id"]
    async with AsyncClient(socket=d.socket) as c:
        for n in range(1, 4):
            await c.append_many(sid, [{"role": "user", "content": f"round {n} message {i}"} for i in range(40)])
            got = await asyncio.gather(*(c.checkpoint(sid) for _ in range(4)))
            assert sorted(cp.pop("made") for cp in got) == [False, False, False, True]  # one made, the rest its
            assert all(cp == got[0] for cp in got), [(cp["number"], cp["created_at"]) for cp in got]
            assert got[0]["number"] == n and got[0]["messages"] == 40 * n
        cps = (await c.checkpoints(sid))["checkpoints"]
    assert [cp["number"] for cp in cps] == [1, 2, 3] and cps[-1] == got[0]
    # and the log this device pushes holds one operation per checkpoint
    db = sqlite3.connect(f"file:{os.path.join(d.home, 'sessions.db')}?mode=ro", uri=True)
    try:
        logged = db.execute(
            "SELECT json_extract(body, '$.number') FROM ops WHERE session_id=? AND kind='checkpoint.add' ORDER BY seq",
            (sid,),
        ).fetchall()
    finally:
        db.close()
    assert [n for (n,) in logged] == [1, 2, 3]


# ------------------------------------------------------------------------------ shared sessions
@pytest.fixture(scope="module")
def pair():
    """Two daemons, A and B, sharing one folder store: a session A shares write-enabled B imports."""
    tmp = tempfile.mkdtemp(prefix="sd-sem2-")
    url = "file://" + os.path.join(tmp, "store")
    a = DaemonProc(os.path.join(tmp, "a"), url).start()
    b = DaemonProc(os.path.join(tmp, "b"), url).start()
    yield a, b
    a.stop()
    b.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def shared(a: DaemonProc, b: DaemonProc, **spec) -> str:
    """A new session of A, shared read-write with B (imported there): its id."""
    ca = a.client()
    sid = ca.create_session(**spec)["id"]
    ca.sync(sid, wait=True)
    b.client().import_code(ca.share(sid, write=True)["code"])
    return sid


# ------------------------------------------------------------------------------- forks' times
def test_a_fork_and_a_clone_keep_the_original_times_of_what_they_copy(pair):
    a, b = pair
    ca = a.client()
    sid = ca.create_session()["id"]
    ca.create_chat(sid, id="zeta")
    ca.create_chat(sid, id="alpha")
    for i in range(3):
        m = ca.append(sid, "user", f"m{i}", chat=["main", "zeta", "alpha"][i])
        wait_for(lambda: time.time() > m["created_at"] + 0.002)  # the next append's time differs, even under load
    src = ca.messages(sid, all_chats=True)["messages"]
    src_chats = ca.list_chats(sid)["chats"]
    assert len({m["created_at"] for m in src}) == 3  # three appends, three times
    wait_for(lambda: time.time() > src[-1]["created_at"] + 0.05)  # the fork's own time is later
    fork = ca.fork(sid, src[-1]["id"])
    copied = ca.messages(fork["id"], all_chats=True)["messages"]
    assert [m["created_at"] for m in copied] == [m["created_at"] for m in src]
    assert fork["created_at"] > src[-1]["created_at"]
    # the chats keep their times, so their order: main, zeta, alpha (not sorted by id)
    for copy in (fork, ca.clone(sid)):
        chats = ca.list_chats(copy["id"])["chats"]
        assert [(c["id"], c["created_at"]) for c in chats] == [(c["id"], c["created_at"]) for c in src_chats]
    # the times travel in the log: another device reads the same ones; a checkpoint of the fork verifies
    cp = ca.checkpoint(fork["id"])
    ca.sync(fork["id"], wait=True)
    cb = b.client()
    cb.import_code(ca.share(fork["id"])["code"])
    assert [m["created_at"] for m in cb.messages(fork["id"], all_chats=True)["messages"]] == [
        m["created_at"] for m in src
    ]
    assert cb.verify_proof(fork["id"], cp)["ok"]


# ------------------------------------------------------------------------------- initial messages
def test_initial_messages_given_in_a_change_get_their_token_counts_as_at_creation(d):
    # every message has a token count, the app's or an estimate: a session's creation gave its initial
    # messages theirs, a PATCH of them stored them without one
    c = d.client()
    first = [{"role": "system", "content": "You are a careful travel agent."}, {"role": "user", "content": "hi"}]
    sid = c.create_session(initial_messages=first)["id"]
    made = c.get_session(sid)["initial_messages"]
    assert [m["tokens"] for m in made] == [8, 1]
    changed = c.update_session(sid, initial_messages=[*first, {"role": "assistant", "content": "Hello!", "tokens": 40}])
    assert [m.get("tokens") for m in changed["initial_messages"]] == [8, 1, 40]
    assert c.get_session(sid)["initial_messages"] == changed["initial_messages"]
    out = cli_json(d.home, "set", sid, "--system", "x")  # a change without them leaves them as they are
    assert out["initial_messages"] == changed["initial_messages"]


# ------------------------------------------------------------------------------ changing a chat
def test_a_chat_changes_after_it_is_made_through_api_client_and_cli(d):
    c = d.client()
    sid = c.create_session(settings={"temperature": 0.5})["id"]
    c.create_chat(
        sid, id="side", name="Side", system_prompt="old", model="m1", settings={"top_k": 5}, max_context_tokens=500
    )
    # the client: by id or by name; settings and policy merged per field, a null clears one
    ch = c.update_chat(sid, "Side", system_prompt="new prompt", model="m2", settings={"max_tokens": 64, "top_k": None})
    assert (ch["id"], ch["name"], ch["system_prompt"], ch["model"]) == ("side", "Side", "new prompt", "m2")
    assert ch["settings"] == {"max_tokens": 64} and ch["policy"] == {"max_context_tokens": 500}
    ch = c.update_chat(sid, "side", name="Renamed", context_margin=0.5, policy={"auto_compact": False})
    assert ch["name"] == "Renamed" and ch["policy"] == {
        "max_context_tokens": 500,
        "context_margin": 0.5,
        "auto_compact": False,
    }
    assert next(x for x in c.list_chats(sid)["chats"] if x["id"] == "side") == ch
    # the CLI
    out = cli_json(d.home, "chat", "set", sid, "Renamed", "--temperature", "0.25", "--max-tokens", "32", "--name", "S2")
    assert out["name"] == "S2" and out["settings"] == {"max_tokens": 32, "temperature": 0.25}
    out = cli_json(d.home, "chat", "set", sid, "side", "--unset", "system", "--unset", "max-tokens", "--unset", "name")
    assert out["system_prompt"] is None and out["settings"] == {"temperature": 0.25} and out["name"] == "side"
    before = c.list_chats(sid)
    # refusals: clear, naming what went wrong, and nothing changes
    for args, code, status, words in (
        (("nochat",), {"name": "x"}, 404, "no chat 'nochat'"),
        (("side",), {"settings": {"temperature": 99}}, 422, "settings.temperature"),
        (("side",), {}, 422, "nothing to change"),
        (("side",), {"id": "other"}, 422, "id"),
        (("side",), {"context_margin": 7}, 422, "context_margin"),
    ):
        status_got, out = raw(d, "PATCH", f"/v1/sessions/{sid}/chats/{args[0]}", code)
        assert status_got == status and words in out["error"]["message"], (code, status_got, out)
    status_got, out = raw(d, "PATCH", "/v1/sessions/nosession/chats/main", {"name": "x"})
    assert status_got == 404 and "no session 'nosession'" in out["error"]["message"]
    res = run_cli(d.home, "chat", "set", sid, "side")
    assert res.returncode == 2 and "nothing to change" in res.stderr
    res = run_cli(d.home, "chat", "set", sid, "side", "--model", "x", "--unset", "model")
    assert res.returncode == 2 and "--unset model" in res.stderr
    res = run_cli(d.home, "chat", "set", sid, "side", "--unset", "colour")
    assert res.returncode == 2 and "colour" in res.stderr
    assert c.list_chats(sid) == before
    # an ended session's chats are final
    c.end(sid)
    status_got, out = raw(d, "PATCH", f"/v1/sessions/{sid}/chats/side", {"name": "late"})
    assert status_got == 409 and "ended" in out["error"]["message"] and "clone" in out["error"]["message"]
    assert c.list_chats(sid) == before
    # the OpenAPI document has the route, with its request model
    op = c.openapi()["paths"]["/v1/sessions/{id}/chats/{chat}"]["patch"]
    assert op["requestBody"] and {p["name"] for p in op["parameters"]} >= {"id", "chat"}


def test_a_chat_changed_on_one_device_shows_on_the_other(pair):
    a, b = pair
    sid = shared(a, b)
    ca, cb = a.client(), b.client()
    cli_json(a.home, "chat", "set", sid, "main", "--system", "be brief", "--model", "m-a", "--temperature", "0.3")
    ca.sync(sid, wait=True)

    def main_on(client) -> dict:
        return next(x for x in client.list_chats(sid)["chats"] if x["id"] == "main")

    wait_for(lambda: main_on(cb)["model"] == "m-a", timeout=30)
    got = main_on(cb)
    assert (got["system_prompt"], got["settings"]) == ("be brief", {"temperature": 0.3})
    # and back: B (a writer) clears what A set; A sees it cleared
    cb.update_chat(sid, "main", system_prompt=None, settings={"temperature": None}, max_context_tokens=900)
    cb.sync(sid, wait=True)
    wait_for(lambda: main_on(ca)["system_prompt"] is None, timeout=30)
    got = main_on(ca)
    assert got["settings"] == {} and got["policy"] == {"max_context_tokens": 900} and got["model"] == "m-a"


# ------------------------------------------------------------------- clearing a setting (CLI)
def test_set_unset_clears_a_session_setting_and_the_clearing_syncs(pair):
    a, b = pair
    h = a.home
    sid = cli_json(
        h,
        "new",
        "--provider",
        "local",
        "--model",
        "m",
        "--max-tokens",
        "100",
        "--temperature",
        "0.7",
        "--token-quota",
        "5000",
        "--tag",
        "x",
        "--expires-in",
        "7d",
    )["id"]
    cb = b.client()
    cb.import_code(a.client().share(sid, write=True)["code"])
    assert cb.get_session(sid)["settings"]["provider"] == "local"
    s = cli_json(
        h,
        "set",
        sid,
        "--unset",
        "provider",
        "--unset",
        "max-tokens",
        "--unset",
        "model",
        "--unset",
        "token-quota",
        "--unset",
        "tag",
        "--unset",
        "expires-in",
    )
    assert s["settings"] == {"temperature": 0.7} and s["model"] is None and s["policy"] == {}
    assert s["tags"] == [] and s["expires_at"] is None
    a.client().sync(sid, wait=True)
    wait_for(lambda: cb.get_session(sid)["settings"] == {"temperature": 0.7}, timeout=30)
    got = cb.get_session(sid)
    assert got["model"] is None and got["policy"] == {} and got["tags"] == [] and got["expires_at"] is None
    # one way, stated: --unset takes an option's name; a contradiction or an unknown name is a usage error
    for args, words in (
        (("--provider", "x", "--unset", "provider"), "--unset provider"),
        (("--unset", "providr"), "providr"),
    ):
        res = run_cli(h, "set", sid, *args)
        assert res.returncode == 2 and words in res.stderr, res.stderr
    assert "--unset" in run_cli(h, "set", "--help").stdout
    # the API's way, which --unset uses: a null clears a field; a null policy (or settings) clears all of it
    c = a.client()
    c.update_session(sid, checkpoint_interval=40, settings={"top_k": 3})
    s = c.update_session(sid, policy=None, settings=None)
    assert s["policy"] == {} and s["settings"] == {}
