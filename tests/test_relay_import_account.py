"""Importing a code shared through a relay whose registration is closed, on a device with no account there
(its own store a folder): the import fails as the store refusing credentials (kind `store`), and says the
fix the README gives: an invite from the relay's owner, in the store URL of `sessiond import --store-file`
(the API's error carries it in `details.fix` too). With that, the import works."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import PY, run_cli
from sessiond.client import ApiError


def _invite(data: str) -> str:
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_an_import_through_a_relay_without_an_account_names_the_invite_fix(make_daemon, invite_relay, tmp_path):
    data, host = invite_relay
    a = make_daemon(f"s5+http://{_invite(data)}@{host}").start()
    b = make_daemon().start()  # a folder store: no account on the relay
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="relayed", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid)["code"]

    with pytest.raises(ApiError) as e:
        cb.import_code(code)
    err = e.value
    assert err.code == "store" and err.status == 503, (err.code, err.message)
    assert "refusing our credentials" in err.message
    fix = err.details.get("fix")
    assert fix and "sessiond import --store-file" in fix and "sessiond serve invite" in fix, err.details
    assert f"INVITE@{host}" in fix
    assert fix in err.message  # the message says it too, for whoever reads only that
    assert cb.list_sessions()["sessions"] == []

    res = run_cli(b.home, "import", input=code)  # the CLI's message, and its --json error, name it
    assert res.returncode == 1 and "--store-file FILE" in res.stderr, res.stderr
    res = run_cli(b.home, "import", "--json", input=code)
    assert res.returncode == 1
    assert "--store-file FILE" in json.loads(res.stdout)["error"]["message"]

    # the fix, followed: an invite in the store URL, given in a file
    store_file = tmp_path / "relay-store"
    store_file.write_text(f"s5+http://{_invite(data)}@{host}\n")
    os.chmod(store_file, 0o600)
    res = run_cli(b.home, "import", "--store-file", str(store_file), input=code)
    assert res.returncode == 0, res.stderr
    assert cb.get_session(sid)["initial_messages"] == ca.get_session(sid)["initial_messages"]


def test_an_import_through_a_relay_with_a_spent_invite_names_the_fix_too(make_daemon, invite_relay, tmp_path):
    data, host = invite_relay
    spent = _invite(data)
    a = make_daemon(f"s5+http://{spent}@{host}").start()
    b = make_daemon().start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="relayed")["id"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid)["code"]
    with pytest.raises(ApiError) as e:  # A's invite, spent by A's registration
        cb.import_code(code, store=f"s5+http://{spent}@{host}")
    assert e.value.code == "store" and "sessiond serve invite" in e.value.details.get("fix", ""), e.value.message
    assert "sessiond serve invite" in e.value.message
