"""A session imported with `--store URL` where URL carries a Kubo node's user:password: the session's store
is recorded by its identity (no credentials, by design), and the credentials are kept apart (a 0600 file in
the home's keys folder), so that its pulls still work after the daemon restarts; and they are in no log, no
status and not in sessions.db."""

from __future__ import annotations

import base64
import glob
import json
import os
import stat

import pytest

import secretcheck
from conftest import cli_json, run_cli, wait_for
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Threaded
from sessiond.client import ClientError

PASSWORD = "kubo-pw-7f3a9c"
USER = "alice"


@pytest.fixture
def guarded_kubo():
    """A strict loopback Kubo node that answers only requests with alice's Basic credentials."""
    n = Node(auth="Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
    server = Threaded(make_rpc_app(n)).start()
    yield n, server.port
    server.stop()


def contents(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def test_an_import_from_a_store_with_credentials_still_pulls_after_a_restart(make_daemon, guarded_kubo):
    n, port = guarded_kubo
    url = f"ipfs+http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    a = make_daemon(url).start()  # the owner syncs through the guarded node
    b = make_daemon().start()  # the follower's own store is a folder: the session's is another one
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="guarded")["id"]
    ca.append(sid, "user", "before")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid)["code"]
    cb.import_code(code, store=url)
    assert contents(b, sid) == ["before"]

    b.restart()
    cb = b.client()
    ca.append(sid, "user", "after the restart")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    cb.sync(sid)  # a pull now, rather than at the next poll
    wait_for(lambda: contents(b, sid) == ["before", "after the restart"], timeout=30, what="the pull after the restart")
    assert not b.client().get_session(sid)["sync"].get("error")

    # kept in a private file of the keys folder; nowhere a person or the database shows it
    (kept,) = [p for p in glob.glob(os.path.join(b.home, "keys", "*")) if os.path.isfile(p) and "store" in p]
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    assert PASSWORD in open(kept).read()
    status = json.dumps(cli_json(b.home, "status"))
    assert PASSWORD not in status
    b.stop()
    assert PASSWORD not in secretcheck.logs(b.home)
    for db_file in glob.glob(os.path.join(b.home, "sessions.db*")):
        assert PASSWORD.encode() not in open(db_file, "rb").read(), db_file


def _owner_and_follower(make_daemon, guarded_kubo):
    """The owner, syncing through the guarded node; the follower, whose own store is a folder; the
    node's URL with the credentials."""
    _, port = guarded_kubo
    url = f"ipfs+http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    return make_daemon(url).start(), make_daemon().start(), url


def _pushed(c, text: str) -> str:
    """A new session named and holding `text`, pushed; its id."""
    sid = c.create_session(name=text)["id"]
    c.append(sid, "user", text)
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    return sid


def test_the_credentials_go_with_the_last_session_imported_from_their_store(make_daemon, guarded_kubo):
    # a store's password or invite does not outlive the sessions that sync through it
    a, b, url = _owner_and_follower(make_daemon, guarded_kubo)
    ca, cb = a.client(), b.client()
    sids = []
    for name in ("one", "two"):
        sid = _pushed(ca, name)
        cb.import_code(ca.share(sid)["code"], store=url)
        sids.append(sid)
    kept = os.path.join(b.home, "keys", "store-credentials")
    assert PASSWORD in open(kept).read()
    cb.delete_session(sids[0])
    assert PASSWORD in open(kept).read()  # the other session still syncs through that store
    cb.delete_session(sids[1])
    assert PASSWORD not in open(kept).read() and json.loads(open(kept).read()) == {}
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    # imported again, with the credentials given again: kept again, and it syncs after a restart
    cb.import_code(ca.share(sids[0])["code"], store=url)
    assert PASSWORD in open(kept).read()
    b.restart()
    ca.append(sids[0], "user", "again")
    assert ca.sync(sids[0], wait=True, timeout=30)["complete"]
    b.client().sync(sids[0])
    wait_for(lambda: contents(b, sids[0]) == ["one", "again"], timeout=30, what="the pull after the restart")


def test_an_import_tried_again_with_the_credentials_it_lacked_works_at_once(make_daemon, guarded_kubo):
    # the store opened without credentials (or with wrong ones) is not kept for the retry that gives
    # the right ones: before, the retry was refused as well, until the daemon restarted
    a, b, url = _owner_and_follower(make_daemon, guarded_kubo)
    ca, cb = a.client(), b.client()
    sid = _pushed(ca, "hello")
    code = ca.share(sid)["code"]
    bare = url.replace(f"{USER}:{PASSWORD}@", "")
    for wrong in (bare, url.replace(PASSWORD, "not-the-password")):
        with pytest.raises(ClientError) as exc:
            cb.import_code(code, store=wrong)
        assert "not-the-password" not in exc.value.message, exc.value.message
    cb.import_code(code, store=url)  # no restart between
    assert contents(b, sid) == ["hello"]
    ca.append(sid, "user", "and more")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    cb.sync(sid)
    wait_for(lambda: contents(b, sid) == ["hello", "and more"], timeout=30, what="the pull with the credentials")


def _killed_at(d, point: str, *args: str, input: str | None = None) -> None:
    """Run `sessiond ARGS` on `d` with the daemon set to die at `point` (as under kill -9), then start it."""
    d.env["SESSIOND_CRASH_AT"] = point
    d.restart()
    res = run_cli(d.home, *args, "--json", input=input)
    assert res.returncode != 0, res.stdout  # the daemon died answering it
    d.proc.wait(10)
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()


def test_an_import_killed_before_its_credentials_were_kept_still_pulls_after_the_restart(make_daemon, guarded_kubo):
    """The import committed the session (its store recorded without the credentials), then kept the
    credentials: killed between the two, the session was there after the restart but every pull of it
    was refused by its store, whose credentials this home had never kept."""
    a, b, url = _owner_and_follower(make_daemon, guarded_kubo)
    ca = a.client()
    sid = _pushed(ca, "before")
    _killed_at(b, "import:applied", "import", "--store", url, input=ca.share(sid)["code"])
    assert contents(b, sid) == ["before"]  # the import's transaction was committed
    ca.append(sid, "user", "after the crash")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    b.client().sync(sid)
    wait_for(lambda: contents(b, sid) == ["before", "after the crash"], timeout=30, what="the pull after the restart")
    assert not b.client().get_session(sid)["sync"].get("error")


def test_a_delete_killed_before_the_credentials_went_forgets_them_at_the_next_start(make_daemon, guarded_kubo):
    """`rm` of the last session imported from a store deletes its rows, then its keys and the store's
    credentials: killed between the two, the password stayed in the keys folder for good (until some
    later `rm`), for a store no session here uses."""
    a, b, url = _owner_and_follower(make_daemon, guarded_kubo)
    ca, cb = a.client(), b.client()
    sid = _pushed(ca, "one")
    cb.import_code(ca.share(sid)["code"], store=url)
    kept = os.path.join(b.home, "keys", "store-credentials")
    assert PASSWORD in open(kept).read()
    _killed_at(b, "delete.rows", "rm", sid)
    assert sid not in [s["id"] for s in b.client().list_sessions()["sessions"]]
    assert PASSWORD not in open(kept).read()


def test_a_write_of_the_credentials_killed_before_its_rename_leaves_no_copy_of_them(make_daemon, guarded_kubo):
    """A daemon killed while it wrote the credentials file (the new file written, not yet renamed over the
    old) left that temporary file in the keys folder for good, the store's password in it, whatever later
    deletes did: the start removed only the temporary files of the session keys' folder."""
    a, b, url = _owner_and_follower(make_daemon, guarded_kubo)
    ca = a.client()
    sid = _pushed(ca, "one")
    _killed_at(b, "write:store-credentials", "import", "--store", url, input=ca.share(sid)["code"])
    keys = os.path.join(b.home, "keys")
    assert sid not in [s["id"] for s in b.client().list_sessions()["sessions"]]  # the import did not happen
    for name in os.listdir(keys):
        path = os.path.join(keys, name)
        assert not (os.path.isfile(path) and PASSWORD in open(path, errors="replace").read()), name
