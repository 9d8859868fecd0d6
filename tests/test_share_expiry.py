"""What a share code's expiry does, and what it does not (docs/SECURITY.md, "A share code's expiry"):
an importing daemon refuses a code past its expiry, by its own clock; nothing else changes at that
time. A device that imported before keeps reading and (with a read-write code) writing, and the
code's keys are in it, readable by any program that skips the check. Only a rekey ends access."""

from __future__ import annotations

import os
import time

import pytest

from conftest import run_cli, wait_for
from sessiond.sync import sharecode


@pytest.fixture
def pair(make_daemon, store_dir):
    url = "file://" + store_dir
    return make_daemon(url).start(), make_daemon(url).start()


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=1000)["messages"]]


def test_expiry_stops_new_imports_only_and_the_keys_stay_in_the_code(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session()["id"]
    ca.append(sid, "user", "before")
    shared = ca.share(sid, write=True, expires_in=3)
    code = shared["code"]
    assert cb.import_code(code)["session"] == sid  # imported in time
    # not a wait for an event: the scenario is a code past its expiry, and the clock is what moves on
    wait_for(lambda: time.time() > shared["expires_at"], timeout=10, what="the code's expiry")
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
    assert [s["status"] for s in ca.shares(sid)["shares"]] == ["expired"]  # shown, not enforced
