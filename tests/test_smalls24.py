"""Small defects left open by the audits (h-smalls24), each through a real daemon."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from asking import in_thread
from conftest import wait_for
from sessiond.client import ApiError, Client


def test_a_proofs_verification_hashes_off_the_event_loop(make_daemon, tmp_path):
    """`verify-proof` hashes the whole conversation (and, for a v2 proof, the setting: prompts of megabytes);
    it did so on the daemon's event loop, and every other client waited until it was done. Held in the middle
    of its hashing (the test hook `verify.hash`, which holds the thread doing it), the daemon answers another
    request meanwhile; let go, the verification ends as before."""
    flag = str(tmp_path / "verify.hash")
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"verify.hash:{flag}"}).start()
    c = d.client()
    sid = c.create_session(system_prompt="p" * 100_000)["id"]
    for i in range(50):
        c.append(sid, "user", f"message {i}", tokens=1)
    proof = c.checkpoint(sid)
    verified: list = []
    verifying = in_thread(lambda: d.client().verify_proof(sid, proof), verified)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the verification held in its hashing")
        with Client(d.home, timeout=10) as other:  # the loop free: answered while the hashing is held
            assert other.status()
            assert other.get_session(sid)["id"] == sid
        assert not verified, "the verification ended while its hashing was held"
    finally:
        if os.path.exists(flag):
            os.remove(flag)
        verifying.join(timeout=30)
    assert verified and verified[0]["ok"], verified
    assert verified[0]["messages"] == 50


# ---------------------------------------------------------------------------------------------- ways on, in API terms
def _refusal(call) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    return e.value


def _follow(c: Client, way: str, **fill: object) -> list:
    """Each request of `way` (an item of a refusal's `details.api`: "METHOD PATH [BODY]", joined by ", then ")
    made through `c`, its placeholders (N, MESSAGE_ID, CODE, SESSION_ID, ...) given by `fill`, in a body as
    JSON and in a path as they are: the answers."""
    answers = []
    for step in way.split(", then "):
        method, path, *rest = step.split(" ", 2)
        for name, value in fill.items():
            path = re.sub(rf"(?<=/){name}(?=/|$|\?)", str(value), path)
        body = None
        if rest and rest[0].startswith("{"):
            text = rest[0][: rest[0].rindex("}") + 1]
            for name, value in fill.items():
                text = re.sub(rf"\b{name}\b", json.dumps(value), text)
            body = json.loads(text)
        answers.append(c._call(method, path, body))
    return answers


def _ways(err: ApiError) -> list[str]:
    ways = err.details.get("api")
    assert isinstance(ways, list) and ways and all(isinstance(w, str) for w in ways), err.details
    return ways


def test_paused_ended_and_quota_refusals_name_their_ways_on_in_api_terms(daemon):
    """A refusal whose message names CLI commands as its way on carried nothing else: an app talking to the
    API got `sessiond resume ID`. Its error's `details.api` now names the same ways as API requests, each of
    which works as given."""
    c = daemon.client()
    sid = c.create_session(name="ways")["id"]
    first = c.append(sid, "user", "hello", tokens=1)["id"]
    path = f"/v1/sessions/{sid}"

    c.pause(sid)
    err = _refusal(lambda: c.append(sid, "user", "while paused"))
    assert err.status == 409 and "sessiond resume" in err.message, err.message
    assert _ways(err) == [f"POST {path}/resume"]
    _follow(c, _ways(err)[0])
    c.append(sid, "user", "resumed", tokens=1)

    c.update_session(sid, token_quota=2)
    err = _refusal(lambda: c.append(sid, "user", "past the quota", tokens=1))
    assert err.code == "quota_exceeded" and "sessiond set" in err.message, err.message
    raise_it, clone, fork = _ways(err)
    asked = _refusal(lambda: c.complete(sid))  # a question to a model: the same ways
    assert asked.code == "quota_exceeded" and _ways(asked) == _ways(err), asked.details
    assert raise_it == f'PATCH {path} {{"token_quota": N}}', raise_it
    _follow(c, raise_it, N=100)
    c.append(sid, "user", "within the new quota", tokens=1)
    assert _follow(c, fork, MESSAGE_ID=first)[0]["id"] != sid
    assert _follow(c, clone)[0]["id"] != sid

    c.end(sid)
    for refused in (lambda: c.append(sid, "user", "ended"), lambda: c.resume(sid)):
        err = _refusal(refused)
        assert err.status == 409 and "sessiond clone" in err.message, err.message
        assert _ways(err) == [f"POST {path}/clone"]
    assert _follow(c, _ways(err)[0])[0]["status"] == "active"


def test_a_context_budget_refusal_names_its_ways_on_in_api_terms(daemon):
    """A full chat with its own budget and automatic compaction off: compact it, turn compaction on (the chat's
    own setting, where it is set), or a new chat; too large for the budget: raise it. Each works as given."""
    c = daemon.client()
    sid = c.create_session(name="budget")["id"]
    c.create_chat(sid, id="tight", max_context_tokens=20, auto_compact=False, switch=True)
    for i in range(2):
        c.append(sid, "user", f"m{i}", tokens=7)
    err = _refusal(lambda: c.append(sid, "user", "one too many", tokens=7))
    assert err.code == "context_overflow" and "sessiond compact" in err.message, err.message
    compact, turn_on, new_chat = _ways(err)
    chat = f"/v1/sessions/{sid}/chats/tight"
    assert compact == f'POST /v1/sessions/{sid}/compact {{"chat": "tight"}}', compact
    assert turn_on == f'PATCH {chat} {{"auto_compact": true}}', turn_on
    assert new_chat == f'POST /v1/sessions/{sid}/chats {{"switch": true}}', new_chat
    _follow(c, compact)
    assert c.append(sid, "user", "one too many", tokens=7)["chat"] == "tight"

    err = _refusal(lambda: c.append(sid, "user", "too big for the chat", tokens=30))
    assert _ways(err) == [f'PATCH {chat} {{"max_context_tokens": N}}']
    _follow(c, _ways(err)[0], N=100)
    assert c.append(sid, "user", "too big for the chat", tokens=30)["chat"] == "tight"


def test_not_pushed_names_its_ways_on_in_api_terms(make_daemon, tmp_path):
    store, away = str(tmp_path / "store"), str(tmp_path / "away")
    a = make_daemon(f"file://{store}").start()
    c = a.client()
    sid = c.create_session(name="shared")["id"]
    c.share(sid, write=True)
    assert c.sync(sid, wait=True, timeout=20)["complete"]
    os.rename(store, away)  # the share unmounted
    c.append(sid, "user", "written while the store is away")
    err = _refusal(lambda: c.delete_session(sid))
    assert err.code == "not_pushed" and "sessiond sync" in err.message, err.message
    push_first, force = _ways(err)
    assert push_first == f'POST /v1/sync {{"session": "{sid}", "wait": true}}, then DELETE /v1/sessions/{sid}'
    assert force == f"DELETE /v1/sessions/{sid}?force=true"
    os.rename(away, store)  # back: pushed, then deleted, as the way says
    assert _follow(c, push_first)[1] == {"deleted": sid}


def test_revoked_and_held_here_name_their_ways_on_in_api_terms(tmp_path):
    """A device a rekey left out: a write is refused (revoked) and a delete too (held_here: what it wrote after
    the rekey read its log is held here only); the way on, a new code from a device that kept the session,
    imported here, and for the delete giving them up, as API requests."""
    from test_revoked_rm import _dropped_after_writing

    a, b, sid, _ = _dropped_after_writing(tmp_path)
    try:
        cb = b.client()
        share = f'POST /v1/sessions/{sid}/share {{"write": true}} on a device that kept it'
        import_here = 'POST /v1/import {"code": CODE} here'
        err = _refusal(lambda: cb.append(sid, "user", "after the rekey"))
        assert err.code == "revoked" and "sessiond share" in err.message, err.message
        assert _ways(err) == [f"{share}, then {import_here}"]
        err = _refusal(lambda: cb.delete_session(sid))
        assert err.code == "held_here", err.message
        assert _ways(err) == [f"{share}, then {import_here}", f"DELETE /v1/sessions/{sid}?force=true"]
        # followed: the share on A, the import here
        code = _follow(a.client(), _ways(err)[0].split(", then ")[0])[0]["code"]
        _follow(cb, import_here, CODE=code)
        assert cb.get_session(sid)["access"] == "write"
        # a read-only import: the way on is a read-write code, from a device that writes the session
        ro = a.client().create_session(name="read only")["id"]
        cb.import_code(a.client().share(ro)["code"])
        err = _refusal(lambda: cb.append(ro, "user", "not mine to write"))
        assert err.status == 409 and "read-only" in err.message, err.message
        assert _ways(err) == [
            f'POST /v1/sessions/{ro}/share {{"write": true}} on a device that writes it, then {import_here}'
        ]
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------------------------------------- the fork server
def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not reaped by its parent yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("killed", ["run", "worker"])
def test_the_fork_server_and_its_children_go_when_the_run_is_killed(tmp_path, killed):
    """A pytest run killed (kill -9 of pytest, or of an xdist worker: the OOM killer, a CI's timeout) left
    processes that read as `tests/forkserver.py` running for good: the fork server went (its stdin, the
    run's pipe, at its end), but the daemons it had forked for the run's tests, their fixtures never torn
    down, kept running, each with the fork server's command line. They go with it now."""
    pids = str(tmp_path / "pids")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SESSIOND_"))}
    env["HELD_RUN_PIDS"] = pids
    held = os.path.join(os.path.dirname(__file__), "data", "held_run.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    xdist = ["-n", "1"] if killed == "worker" else []
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist, "--rootdir", root, held],
        env=env,
        cwd=root,
        start_new_session=True,  # (its own group: killed whole below, whatever is left)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    said: dict = {}
    try:
        wait_for(lambda: os.path.exists(pids), timeout=60, what="the run's daemon started")
        with open(pids) as f:
            said = json.load(f)
        assert _alive(said["zygote"]) and _alive(said["daemon"])
        os.kill(said["worker"] if killed == "worker" else run.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(said["zygote"]), timeout=20, what="the fork server gone")
        wait_for(lambda: not _alive(said["daemon"]), timeout=20, what="the daemon it forked gone")
    finally:
        open(pids + ".go", "w").close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        for pid in (said.get("daemon"), said.get("zygote")):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if said.get("home"):
            shutil.rmtree(os.path.dirname(said["home"]), ignore_errors=True)
