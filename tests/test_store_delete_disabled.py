"""An S5 portal whose delete endpoint is turned off (S5's node answers DELETE /s5/delete/{cid} with 401
\"Endpoint disabled in config.toml\" when its config leaves http.api.delete off): on main `sessiond gc` took
the 401 for its credentials refused, logged in again, met the same 401 and said the store was refusing this
device's credentials (an error, exit 1), though every other request of the device went through. It is a store
that does not delete: gc says so, as for a portal without the route (405/501), keeps the candidates, and
changes nothing else."""

from __future__ import annotations

import json

from conftest import run_cli


def _three_pushes(make_daemon, url: str):
    """A daemon on the portal at `url`, a session of it pushed three times: 3 manifests let go, gc's candidates."""
    d = make_daemon(url).start()
    c = d.client()
    sid = c.create_session(name="kept")["id"]
    for i in range(3):
        c.append(sid, "user", f"m{i}")
        assert run_cli(d.home, "sync", "--wait", "--timeout", "20").returncode == 0
    return d


def test_gc_through_a_portal_with_delete_disabled_says_it_does_not_delete(make_daemon, portal):
    p, url = portal
    d = _three_pushes(make_daemon, url)
    p.faults.delete_disabled = True
    logins = p.logins
    res = run_cli(d.home, "gc", "--grace", "0", "--json")
    out = json.loads(res.stdout)
    [store] = out["stores"]
    assert res.returncode == 0, res.stdout + res.stderr  # main: 1, "refusing our credentials"
    assert not store.get("errors"), store
    assert "does not delete" in store["how"] and "disabled" in store["how"], store
    assert p.logins == logins  # main: a fresh login, for credentials that were never at fault
    assert out["objects"] == 0 and out["kept"] == 3, out  # nothing freed, the candidates kept
    text = run_cli(d.home, "status").stdout
    assert "credentials" not in text, text


def test_gc_through_a_portal_with_no_delete_route_keeps_the_candidates_and_says_it_does_not_delete(make_daemon, portal):
    """A portal with no delete route answers its router's 404 to DELETE /s5/delete/{cid} (S5's node, which has the
    route, answers it 200 whether or not the account pinned the object; only a sessiond relay answers 404 for an
    object the account keeps none of, saying so). gc took that 404 as "not ours": it dropped every candidate, said
    nothing, and the objects stayed in the store for good. It is a store that does not delete: said so, the
    candidates kept (a later gc through a store that deletes frees them), the objects still there."""
    p, url = portal
    d = _three_pushes(make_daemon, url)
    blobs = set(p.blobs)
    for _ in range(2):  # (the second: the candidates are still there to keep)
        res = run_cli(d.home, "gc", "--grace", "0", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        out = json.loads(res.stdout)
        [store] = out["stores"]
        assert not store.get("errors"), store
        assert "does not delete" in store["how"] and "404" in store["how"], store  # main: "deleted"
        assert out["objects"] == 0 and out["kept"] == 3, out  # main: kept 0, the candidates dropped
    assert set(p.blobs) == blobs
