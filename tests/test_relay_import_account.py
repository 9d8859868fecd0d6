"""Importing a code shared through a relay whose registration is closed, on a device with no account there
(its own store a folder): the import fails as the store refusing credentials (kind `store`), and says the
fix the README gives: an invite from the relay's owner, in the store URL of `sessiond import --store-file`
(the API's error carries it in `details.fix` too). With that, the import works."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from sessiond.client import ApiError


def _invite(data: str, *label: str) -> str:
    return run_cli(
        None, "serve", "invite", "--data", data, *(("--label", *label) if label else ()), check=True
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
    # for an app: the invite is its owner's to ask for (details.owner); the import again with it a request
    [owner] = err.details["owner"]
    assert "sessiond serve invite" in owner and "invite" in owner, err.details
    assert err.details["api"] == [f'POST /v1/import {{"code": CODE, "store": "s5+http://INVITE@{host}"}}'], err.details

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
    # and the API's way, followed by an app on a third device: the request, its invite filled in
    c3 = make_daemon().start().client()
    with pytest.raises(ApiError) as e:
        c3.import_code(code)
    way = json.loads(e.value.details["api"][0].removeprefix("POST /v1/import ").replace("CODE", json.dumps(code)))
    assert c3.import_code(way["code"], store=way["store"].replace("INVITE", _invite(data)))["session"] == sid


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


def _forget_account(data: str, label: str) -> None:
    """The relay loses an account (its data restored from before it, or the account's file removed): its file
    and its tokens go, as if it had never registered."""
    accounts = os.path.join(data, "accounts")
    for name in os.listdir(accounts):
        with open(os.path.join(accounts, name)) as f:
            doc = json.load(f)
        if doc.get("label") == label:
            os.unlink(os.path.join(accounts, name))
            acct = name.removesuffix(".json")
    tokens = os.path.join(data, "tokens")
    for name in os.listdir(tokens):
        with open(os.path.join(tokens, name)) as f:
            held = f.read()
        if acct in held:
            os.unlink(os.path.join(tokens, name))


def test_a_later_pull_refused_for_want_of_an_account_names_the_invite_fix(make_daemon, invite_relay, tmp_path):
    """A device that imported through a relay with an invite, whose account there is gone since (the relay's
    data restored from before it, the account removed): its pulls were refused as "refusing our credentials",
    and status, doctor and sync --wait said to check the credentials or restart with --store-file, which is
    this device's own store's fix, not the relay's it imported from. Now they name the import's fix: an
    invite, given with `sessiond import --store-file`; and following it, the pulls work again."""
    data, host = invite_relay
    a = make_daemon(f"s5+http://{_invite(data)}@{host}").start()
    b = make_daemon().start()  # its own store a folder
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="relayed", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    code = ca.share(sid, write=True)["code"]
    store_file = tmp_path / "relay-store"
    store_file.write_text(f"s5+http://{_invite(data, 'b')}@{host}\n")
    os.chmod(store_file, 0o600)
    run_cli(b.home, "import", "--store-file", str(store_file), input=code, check=True)

    _forget_account(data, "b")
    b.restart()  # (its tokens held in memory gone too: it logs in again, and the relay knows it no more)
    ca.append(sid, "user", "written since")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]

    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode != 0, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert "sessiond serve invite" in said and "--store-file FILE" in said and f"INVITE@{host}" in said, said
    res = run_cli(b.home, "sync", sid, "--wait", "--timeout", "20", "--json")
    assert "sessiond serve invite" in res.stdout, res.stdout
    res = run_cli(b.home, "status")
    assert "sessiond serve invite" in res.stdout + res.stderr, res.stdout + res.stderr
    res = run_cli(b.home, "doctor", "--json")
    assert res.returncode != 0
    findings = json.loads(res.stdout)["findings"]
    found = [f for f in findings if sid in f.get("message", "")]
    assert found and "sessiond serve invite" in found[0]["fix"] and "--store-file" in found[0]["fix"], found
    # the relay's own check too: the import's fix, not a restart onto the relay, which is not this device's store
    (relay,) = [f for f in findings if f["check"] == "store" and f["level"] == "problem"]
    assert "sessiond import" in relay["fix"] and "sessiond start" not in relay["fix"], relay
    res = run_cli(b.home, "doctor")
    assert "sessiond serve invite" in res.stdout, res.stdout

    # the fix, followed: a new invite, with the same code
    store_file.write_text(f"s5+http://{_invite(data)}@{host}\n")
    run_cli(b.home, "import", "--store-file", str(store_file), input=code, check=True)
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    assert [m["content"] for m in cb.messages(sid)["messages"]][-1] == "written since"


def test_the_relay_s_own_refusal_names_the_invite_s_place_whole(make_daemon, invite_relay):
    """The relay's refusal of a device with no invite said to "use the store URL s5+http://INVITE@HOST:PORT";
    every message the daemon shows passes the redaction that hides a URL's user part, so the user read "use
    the store URL s5+http://***@HOST:PORT", the invite's place the one part hidden. The relay names the place
    without a scheme before it, as the daemon's own fix does."""
    data, host = invite_relay
    a = make_daemon(f"s5+http://{_invite(data)}@{host}").start()
    b = make_daemon().start()  # a folder store: no account on the relay
    ca = a.client()
    sid = ca.create_session(name="relayed")["id"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    res = run_cli(b.home, "import", "--json", input=ca.share(sid)["code"])
    message = json.loads(res.stdout)["error"]["message"]
    assert "registration on this relay is closed" in message, message
    assert "***@HOST" not in message and "s5+http://HOST:PORT" in message and "(INVITE@HOST:PORT)" in message
