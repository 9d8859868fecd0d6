"""What a share code's expiry does, and what it does not (docs/SECURITY.md, "A share code's expiry"):
an importing daemon refuses a code past its expiry, by its own clock; nothing else changes at that
time. A device that imported before keeps reading and (with a read-write code) writing, and the
code's keys are in it, readable by any program that skips the check. Only a rekey ends access."""

from __future__ import annotations

import os
import time

import pytest

from conftest import run_cli, wait_for
from sessiond.client import ApiError
from sessiond.sync import sharecode


@pytest.fixture
def pair(make_daemon, store_dir):
    url = "file://" + store_dir
    return make_daemon(url).start(), make_daemon(url).start()


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=1000)["messages"]]


def imported_in_time(ca, cb, sid: str) -> dict:
    """A read-write code of `sid` shared by A with an expiry a few seconds away (so that the test sees it
    pass), and imported by B before it: the share's answer. The expiry is counted from the share, in whole
    seconds (2 to 3 s for 3), and a machine loaded enough can take that long to get from the share to B's
    import: B then refuses the code, rightly (its clock is past the expiry, checked here), and the code is
    shared again with twice the time, rather than the test failing on the machine's speed."""
    for expires_in in (3, 6, 12, 24):
        shared = ca.share(sid, write=True, expires_in=expires_in)
        try:
            assert cb.import_code(shared["code"])["session"] == sid
            return shared
        except ApiError as e:  # late: refused as expired, and only once past the expiry
            assert "expired" in e.message and time.time() > shared["expires_at"], e
    raise AssertionError("B could not import a code within 24 s of its share")


def test_expiry_stops_new_imports_only_and_the_keys_stay_in_the_code(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session()["id"]
    ca.append(sid, "user", "before")
    shared = imported_in_time(ca, cb, sid)
    code = shared["code"]
    # not a wait for an event: the scenario is a code past its expiry, and the clock is what moves on
    wait_for(lambda: time.time() > shared["expires_at"], timeout=40, what="the code's expiry")
    # the importer refuses it now (decoding it is its first step)
    refused = run_cli(b.home, "import", input=code)
    assert refused.returncode != 0 and "expired" in refused.stderr, refused.stderr
    with pytest.raises(sharecode.ShareCodeError) as e:
        sharecode.decode(code)
    assert e.value.kind == "expired"
    # ... but the keys are in the code: a reader that skips the check has them, and they still work
    keys = sharecode.decode(code, now=shared["expires_at"] - 1)
    with open(os.path.join(a.home, "keys", "sessions", sid + ".key"), "rb") as f:
        assert keys.session_key in f.read()
    assert keys.write_secret is not None
    # and the device that imported before the expiry goes on following and writing
    ca.append(sid, "user", "after the expiry")
    wait_for(lambda: contents(b, sid)[-1:] == [("user", "after the expiry")], timeout=20, what="b follows")
    cb.append(sid, "assistant", "b still writes")
    wait_for(lambda: contents(a, sid)[-1:] == [("assistant", "b still writes")], timeout=20, what="a follows b")
    issued = ca.shares(sid)["shares"]  # shown, not enforced (a late import's code, if any, is expired too)
    assert issued and {s["status"] for s in issued} == {"expired"}, issued
