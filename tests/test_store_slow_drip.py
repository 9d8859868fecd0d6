"""A storage host that answers at once and then sends its answer a byte at a time (a slow drip: an
overloaded server, a link this slow). On main the request timed out as one that had no answer at all: \"no
answer within 1 s\", a store \"not answering (timed out)\" whose fix was to check a store that \"accepts
connections but does not answer\". It is told apart now: the store answered, and its answer was still arriving
when the time was up (so many of so many bytes), which a store_timeout (config.toml) long enough for it, or a
faster store or link, mends; still a timeout (`failure` timeout, retried). A read the daemon bounds itself (an
import's, a pull's, verify's: store_timeout too) is cut by that bound first: what had arrived is read then
(stores/bounded.py), so it is said as a slow answer there too; the import takes nothing, and goes through once
the host is quick again."""

from __future__ import annotations

import json

from conftest import run_cli, write_config
from portalstore import failure_of, one_session, s5, served_portal
from sessiond.stores.errors import StoreTimeout, describe_failure, failure_code, settled


async def test_a_slow_drip_is_said_as_an_answer_still_arriving_not_as_no_answer(tmp_path):
    async with served_portal() as p:
        store = s5(p, tmp_path, "a", timeout=1)
        h = await store.put(b"x" * 100)
        p.faults.drip = 0.1  # 100 bytes: 10 s, past the client's 1 s
        try:
            failure = await failure_of(store.get(h), StoreTimeout)
        finally:
            p.faults.drip = None  # (the answer being dripped ends at once)
            await store.close()
        said = describe_failure(failure, "s5+http://portal")
        assert failure_code(failure) == "timeout" and not settled(failure), said
        assert "still arriving" in said and "of 100 bytes" in said and "store_timeout" in said, said
        assert "does not answer" not in said and "no answer" not in said, said  # main: both


def test_an_import_through_a_dripping_host_says_so_and_takes_nothing(make_daemon, portal):
    p, url = portal
    _, ca, sid = one_session(make_daemon, url, "drip")
    code = ca.share(sid)["code"]
    c = make_daemon(url)
    write_config(c.home, store_timeout=1)
    c.start()
    p.faults.drip = 0.2
    res = run_cli(c.home, "import", "--json", input=code)
    assert res.returncode == 1, res.stdout + res.stderr
    err = json.loads(res.stdout)["error"]
    assert err["details"]["failure"] == "timeout" and err["details"]["retry"] is True, err
    # the import's own bound on each read (store_timeout too) fires first: what had arrived is read then, so the
    # drip is said as one there too (main: a bare timeout, "it accepts connections but does not answer")
    said = err["message"] + " " + " ".join(err["details"]["owner"])
    assert "still arriving" in said and "bytes in" in said and "store_timeout" in said, err
    assert "does not answer" not in said, err
    assert c.client().list_sessions()["sessions"] == []
    p.faults.drip = None
    res = run_cli(c.home, "import", "--json", input=code)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [m["content"] for m in c.client().messages(sid)["messages"]] == ["one"]


def test_doctor_s_check_of_a_dripping_host_says_its_answer_was_still_arriving(make_daemon, portal):
    p, url = portal
    d = make_daemon(url)
    write_config(d.home, store_timeout=1)
    d.start()
    p.faults.drip = 0.2
    try:
        res = run_cli(d.home, "doctor", "--json")
    finally:
        p.faults.drip = None
    assert res.returncode == 1, res.stdout + res.stderr
    (f,) = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "store"]
    # main: "did not answer within 1 s", doctor's own bound on the probe firing first
    assert f["level"] == "problem" and "still arriving" in f["message"] and "bytes in" in f["message"], f
    assert "store_timeout" in f["message"] + (f["fix"] or ""), f
