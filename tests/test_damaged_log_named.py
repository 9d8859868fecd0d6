"""A member's log found damaged (or forged) in the store, while an import or a pull reads it, was said as
"the log of device D is damaged: object H is damaged: ...": no session named (an import's user may not
know which session a code is of; `sync` of every session, a log line, doctor, show many) and nothing said
of what to do. Now the error names the session and says what mends it (`sessiond verify` names what is
wrong; the device that wrote the log pushes it again; a store serving forged or old heads is not one to
keep), through the CLI's text and --json, `sync --wait` and status. Real daemons, one folder store, a
real blob of it overwritten."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os

from conftest import cli_json, run_cli
from sessiond.stores.file import FileStore
from sessiond.sync.heads import manifest_hash_of
from sessiond.sync.keys import KeyStore


def _damage_manifest(store_dir: str, home: str, sid: str) -> None:
    """The manifest the head of `home`'s device for `sid` points to, overwritten in part in the store."""
    pk = KeyStore(os.path.join(home, "keys")).head_pk(sid)
    head = asyncio.run(FileStore(store_dir, create=False).get_head(pk))
    assert head is not None
    (path,) = glob.glob(os.path.join(store_dir, "**", manifest_hash_of(head).hex()), recursive=True)
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)


def _written(make_daemon, store_dir) -> tuple:
    """Device A's session, pushed, and a share code of it: (a, sid, code, A's device id)."""
    a = make_daemon("file://" + store_dir).start()
    c = a.client()
    sid = c.create_session(name="damaged later")["id"]
    c.append(sid, "user", "hello")
    assert c.sync(sid, wait=True, timeout=20)["complete"]
    code = c.share(sid)["code"]
    return a, sid, code, c.status()["device_id"]


def _followed(make_daemon, store_dir, damage) -> tuple:
    """Device A's session (_written), imported on device B, then written to on A and pushed, and `damage`d in the
    store (store_dir, A's home, sid) before B can pull it: (a, b, sid, A's device id). (B is stopped meanwhile:
    running, it followed A's head and could pull the revision whole before the damage, and its sync then found
    nothing wrong.)"""
    a, sid, code, device = _written(make_daemon, store_dir)
    b = make_daemon("file://" + store_dir).start()
    b.client().import_code(code)
    assert b.stop() == 0
    a.client().append(sid, "user", "then")
    assert a.client().sync(sid, wait=True, timeout=20)["complete"]
    damage(store_dir, a.home, sid)
    return a, b.start(), sid, device


def _says_what_to_do(said: str, sid: str, device: str) -> None:
    assert f"session {sid}" in said, said
    assert f"device {device}" in said and "damaged" in said, said
    # on the device that wrote it, its verify finds the damage and its sync pushes its log again
    assert f"`sessiond verify {sid} && sessiond sync --wait {sid}` on device {device}" in said, said


def test_an_import_of_a_damaged_log_names_the_session_and_what_to_do(make_daemon, store_dir):
    a, sid, code, device = _written(make_daemon, store_dir)
    _damage_manifest(store_dir, a.home, sid)
    b = make_daemon("file://" + store_dir).start()
    res = run_cli(b.home, "import", input=code)
    assert res.returncode != 0, res.stdout
    _says_what_to_do(res.stderr, sid, device)
    res = run_cli(b.home, "import", "--json", input=code)
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "damaged", err
    _says_what_to_do(err["message"], sid, device)
    assert "; `sessiond import" in err["message"] and "< code.txt` again once `sessiond verify" in err["message"], (
        err
    )  # an import's fix


def test_a_pull_of_a_damaged_log_names_the_session_and_what_to_do(make_daemon, store_dir):
    a, b, sid, device = _followed(make_daemon, store_dir, _damage_manifest)
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20", "--json")
    assert res.returncode != 0, res.stdout
    _says_what_to_do(json.loads(res.stdout)["sessions"][sid]["pull_error"], sid, device)
    _says_what_to_do(cli_json(b.home, "status")["sync"][sid]["pull_error"], sid, device)
    assert f"sessiond verify {sid}" in run_cli(b.home, "sync", sid, "--wait", "--timeout", "20").stdout
    findings = json.loads(run_cli(b.home, "doctor", "--no-verify", "--json").stdout)["findings"]
    doctor = [f for f in findings if f["check"] == "pull"]
    assert any(sid in f["message"] and f["fix"].startswith("sessiond verify") and sid in f["fix"] for f in doctor)
    res = run_cli(b.home, "verify", sid, "--json")
    (rep,) = json.loads(res.stdout)["sessions"]
    assert f"`sessiond verify {sid} && sessiond sync --wait {sid}` on device {device}" in rep.get("repair", ""), rep
    # and what it says mends it: on A, verify and sync --wait; then B's pull reads it all
    run_cli(a.home, "verify", sid)
    assert run_cli(a.home, "sync", sid, "--wait", "--timeout", "20").returncode == 0
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [m["content"] for m in b.client().messages(sid)["messages"]] == ["hello", "then"]


def _forge_head(store_dir: str, home: str, sid: str) -> None:
    """The head of `home`'s device for `sid` in the store, one byte of its signature flipped (a head that
    does not verify: damaged on the disk, or written by someone without the key)."""
    _forge_entry(store_dir, KeyStore(os.path.join(home, "keys")).head_pk(sid))


def test_a_pull_of_a_head_that_does_not_verify_names_the_session_and_what_to_do(make_daemon, store_dir):
    """A pull reads the members' heads itself (not through the manifest's read): a head there that did not
    verify was said as "registry entry signature does not verify (forged or damaged head)", no session,
    no device, nothing to do."""
    a, sid, code, device = _written(make_daemon, store_dir)
    b = make_daemon("file://" + store_dir).start()
    b.client().import_code(code)
    _forge_head(store_dir, a.home, sid)
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20", "--json")
    assert res.returncode != 0, res.stdout
    said = json.loads(res.stdout)["sessions"][sid]["pull_error"]
    assert f"the head of device {device} of session {sid} is not validly signed" in said, said
    assert f"`sessiond verify {sid} && sessiond sync --wait {sid}` on device {device}" in said, said


def test_what_mends_a_head_that_does_not_verify_mends_it(make_daemon, store_dir):
    """Followed literally, the fix (`verify` and `sync --wait` on the device that wrote the head) left it
    as it was: that device's verify named the head but marked nothing for repair, and its sync, with
    nothing new to push, said all was pushed; the other device's pull kept failing."""
    a, b, sid, device = _followed(make_daemon, store_dir, _forge_head)
    assert run_cli(b.home, "sync", sid, "--wait", "--timeout", "20").returncode != 0
    res = run_cli(a.home, "verify", sid, "--json")
    (rep,) = json.loads(res.stdout)["sessions"]
    assert not rep["ok"] and "`sessiond sync`" in rep.get("repair", ""), rep
    assert run_cli(a.home, "sync", sid, "--wait", "--timeout", "20").returncode == 0
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [m["content"] for m in b.client().messages(sid)["messages"]] == ["hello", "then"]
    assert json.loads(run_cli(a.home, "verify", sid, "--json").stdout)["sessions"][0]["ok"]


def test_what_mends_a_members_entry_that_does_not_verify_mends_it(make_daemon, store_dir):
    """The session's members slot's entry not validly signed (damaged on the disk, or written without the
    key): the fix said (`verify` and `sync --wait` on a writer of the session writes the slot again) did
    nothing, the writer's own pull failing as the reader's did, both for good."""
    a, sid, code, _ = _written(make_daemon, store_dir)
    b = make_daemon("file://" + store_dir).start()
    b.client().import_code(code)  # (a read-only code: only A writes the slot)
    remote = _announce_pk(b, sid)
    # A stopped while B looks: A's own pull meets the entry too and writes the slot again (a forged entry
    # counts as lost), which would mend it before B's look
    a.stop()
    _forge_entry(store_dir, b"\xed" + remote)
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20", "--json")
    assert res.returncode != 0, res.stdout
    said = json.loads(res.stdout)["sessions"][sid]["pull_error"]
    assert f"the members entry of session {sid} is not validly signed" in said, said
    assert f"`sessiond verify {sid} && sessiond sync --wait {sid}` on a writer of the session" in said, said
    a.start()
    rep = json.loads(run_cli(a.home, "verify", sid, "--json").stdout)["sessions"][0]
    # A's pull at its start may have written the slot again already: then verify finds it whole; otherwise
    # it names the repair that `sync` makes
    assert rep["ok"] or "`sessiond sync` writes the session's members slot again" in rep.get("repair", ""), rep
    res = run_cli(a.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr


def _announce_pk(d, sid: str) -> bytes:
    # read-only, beside the running daemon: a Database of its own would checkpoint the daemon's WAL into the
    # file from this process, which the daemon takes for a copy over its database (storage/dbfile.py)
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{os.path.join(d.home, 'sessions.db')}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT announce_pk FROM remotes WHERE session_id=?", (sid,)).fetchone()
    assert row is not None
    return bytes(row[0])


def _forge_entry(store_dir: str, pk: bytes) -> None:
    """The head (or members entry) `pk` in the store, one byte of its signature flipped."""
    path = os.path.join(store_dir, "heads", pk.hex())
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[-5] ^= 1
    with open(path, "wb") as f:
        f.write(bytes(raw))


def test_the_fix_in_a_pull_error_runs_as_printed_on_this_home(make_daemon, store_dir):
    """The fix a pull's error ends with gave this device's command unquoted, doctor's way (`sessiond verify
    SID  # names what is wrong; ...`), so `sync --wait` and `status` printed it without this home's --home
    (which the CLI adds to each quoted command): run as printed, it asked the default home's daemon."""
    a, b, sid, device = _followed(make_daemon, store_dir, _damage_manifest)
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode != 0, res.stdout
    assert f"`sessiond verify --home {b.home} {sid}` names what is wrong" in res.stdout, res.stdout
    assert f"`sessiond verify {sid} && sessiond sync --wait {sid}` on device {device}" in res.stdout, res.stdout
    status = run_cli(b.home, "status", check=True).stdout
    assert f"`sessiond verify --home {b.home} {sid}`" in status, status
    said = json.loads(run_cli(b.home, "import", "--json", input=code_of(a, sid)).stdout)
    assert "sessiond import < code.txt  #" not in json.dumps(said), said


def code_of(a, sid: str) -> str:
    return a.client().share(sid)["code"]
