"""An S5 portal whose delete endpoint is turned off (S5's node answers DELETE /s5/delete/{cid} with 401
\"Endpoint disabled in config.toml\" when its config leaves http.api.delete off): on main `sessiond gc` took
the 401 for its credentials refused, logged in again, met the same 401 and said the store was refusing this
device's credentials (an error, exit 1), though every other request of the device went through. It is a store
that does not delete: gc says so, as for a portal without the route (405/501), keeps the candidates, and
changes nothing else."""

from __future__ import annotations

import json

from conftest import run_cli


def test_gc_through_a_portal_with_delete_disabled_says_it_does_not_delete(make_daemon, portal):
    p, url = portal
    d = make_daemon(url).start()
    c = d.client()
    sid = c.create_session(name="kept")["id"]
    for i in range(3):
        c.append(sid, "user", f"m{i}")
        assert run_cli(d.home, "sync", "--wait", "--timeout", "20").returncode == 0
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
