"""The relay's login tokens expire (`sessiond serve --token-ttl`, default 30 days) and an operator can
cut a lost device off (`sessiond serve revoke`) and list the accounts (`sessiond serve accounts`): a
device whose token expired logs in again by itself, the expired token is refused and its file deleted;
a revoked account's tokens go and it cannot log in again until `revoke --undo`, while the other devices
go on syncing. A real `sessiond serve` process and real daemons on loopback."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time

import aiohttp
import pytest

from conftest import DaemonProc, relay_served, run_cli, wait_for
from sessiond.stores.errors import AuthRefused


def serve(data: str, *args: str):
    return run_cli(None, "serve", *args, "--data", data)


def invite(data: str, label: str | None = None) -> str:
    res = serve(data, "invite", "--json", *(["--label", label] if label else []))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["invite"]


def token_files(data: str) -> list[str]:
    return sorted(os.listdir(os.path.join(data, "tokens")))


def home_token(home: str) -> str:
    (path,) = glob.glob(os.path.join(home, "store-tokens", "s5-*.token"))
    return open(path).read().strip()


def current_token(home: str, data: str) -> tuple[str, float] | None:
    """The token the daemon holds and when the relay has it expire, read from the relay's file of that
    token (named by its hash); None while there is none: the daemon is between the refusal of its expired
    token (the relay then deleted the file) and its new login."""
    token = home_token(home)
    try:
        with open(os.path.join(data, "tokens", hashlib.sha256(token.encode()).hexdigest())) as f:
            return token, json.load(f)["expires"]
    except FileNotFoundError:
        return None


def sync(home: str):
    res = run_cli(home, "sync", "--wait", "--timeout", "60", "--json")
    return res.returncode, json.loads(res.stdout)


@contextlib.contextmanager
def laptop_and_lost_phone(tmp_path):
    """A relay served from tmp_path/relay, and two daemons syncing through it with an invite each, labelled
    laptop and lost-phone: (its data folder, its port, the laptop, the phone); both stopped after."""
    data = str(tmp_path / "relay")
    with relay_served(data) as info:
        host = f"127.0.0.1:{info['port']}"
        kept = DaemonProc(str(tmp_path / "laptop"), f"s5+http://{invite(data, 'laptop')}@{host}").start()
        lost = DaemonProc(str(tmp_path / "phone"), f"s5+http://{invite(data, 'lost-phone')}@{host}").start()
        try:
            yield data, info["port"], kept, lost
        finally:
            kept.stop()
            lost.stop()


async def status_with(port: int, token: str) -> int:
    url = f"http://127.0.0.1:{port}/s5/registry/changes?since=0"
    async with aiohttp.ClientSession() as s, s.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def test_an_expired_token_is_refused_and_deleted_and_the_device_logs_in_again(tmp_path):
    data = str(tmp_path / "relay")
    with relay_served(data, "--token-ttl", "2s") as info:
        home = str(tmp_path / "home")
        d = DaemonProc(home, f"s5+http://{invite(data)}@127.0.0.1:{info['port']}").start()
        try:
            c = d.client()
            sid = c.create_session(name="t", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            assert sync(home)[0] == 0
            # the token's life is 1 to 2 s from its login (whole seconds), and the daemon's own calls (its feed)
            # may find it expired and log in again at any time: the token and its file are read as a pair
            old, expires = wait_for(lambda: current_token(home, data), timeout=30, what="the daemon's token")
            old_file = hashlib.sha256(old.encode()).hexdigest()
            wait_for(lambda: time.time() > expires + 0.5, timeout=10, what="the token's expiry")
            assert await status_with(info["port"], old) == 401  # expired: refused, and its file deleted
            assert old_file not in token_files(data)
            c.append(sid, "user", "after the token expired")
            code, out = sync(home)
            assert code == 0, out  # the daemon logged in again by itself
            assert home_token(home) != old
            assert len(token_files(data)) <= 1  # expired files do not pile up
        finally:
            d.stop()


async def test_revoke_cuts_off_a_lost_device_and_undo_restores_it(tmp_path):
    with laptop_and_lost_phone(tmp_path) as (data, port, kept, lost):
        sids = {}
        for d in (kept, lost):
            sids[d] = d.client().create_session(name="s", initial_messages=[{"role": "user", "content": "x"}])["id"]
            assert sync(d.home)[0] == 0
        res = serve(data, "accounts", "--json")
        assert res.returncode == 0, res.stderr
        accounts = {a["label"]: a for a in json.loads(res.stdout)["accounts"]}
        assert set(accounts) == {"laptop", "lost-phone"}
        assert all(a["tokens"] >= 1 and a["used"] > 0 and a["heads"] >= 1 for a in accounts.values()), accounts
        assert not any(a["revoked"] for a in accounts.values())
        phone_token = home_token(lost.home)

        res = serve(data, "revoke", "lost-phone", "--json")
        assert res.returncode == 0, res.stderr
        done = json.loads(res.stdout)
        assert done["id"] == accounts["lost-phone"]["id"] and done["tokens_deleted"] >= 1
        assert await status_with(port, phone_token) == 401  # at once, the relay still running
        lost.client().append(sids[lost], "user", "from the lost phone")
        code, out = sync(lost.home)
        assert code == 1 and "revoked" in out["sessions"][sids[lost]]["last_error"], out
        # doctor's fix is the owner's undo; main: a new invite, which a revoked account's key cannot use
        report = json.loads(run_cli(lost.home, "doctor", "--no-verify", "--json").stdout)
        problems = [f for f in report["findings"] if f["level"] == "problem"]
        fixes = [f["fix"] for f in problems if f["check"] in ("store", "push", "pull")]
        assert fixes and all("serve revoke --undo" in f and "invite" not in f for f in fixes), fixes
        kept.client().append(sids[kept], "user", "the laptop goes on")
        assert sync(kept.home)[0] == 0
        listed = {a["label"]: a for a in json.loads(serve(data, "accounts", "--json").stdout)["accounts"]}
        assert listed["lost-phone"]["revoked"] and listed["lost-phone"]["tokens"] == 0
        assert not listed["laptop"]["revoked"]
        text = serve(data, "accounts")
        assert text.returncode == 0 and "REVOKED" in text.stdout and "laptop" in text.stdout

        res = serve(data, "revoke", accounts["lost-phone"]["id"][:8], "--undo", "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["revoked"] is None, res.stdout + res.stderr
        lost.client().append(sids[lost], "user", "found again")
        wait_for(lambda: sync(lost.home)[0] == 0, timeout=60, interval=0.5, what="the restored device syncing")


async def test_a_revoked_account_s_failed_pulls_are_mended_by_the_owner_s_undo_not_a_sync(tmp_path):
    """A device whose relay account was revoked cannot pull the sessions shared with it either: doctor's
    finding for each such pull gave `sessiond sync --wait ID` as its fix, a sync the relay refuses again at
    once (README, doctor: such a failure gets what mends it, not a `sync --wait`). Its fix is the relay
    owner's `serve revoke --undo`, as the failed push's is."""
    with laptop_and_lost_phone(tmp_path) as (data, port, kept, lost):
        sid = kept.client().create_session(name="s", initial_messages=[{"role": "user", "content": "x"}])["id"]
        code = kept.client().share(sid, write=True)["code"]
        lost.client().import_code(code)
        assert sync(lost.home)[0] == 0
        assert serve(data, "revoke", "lost-phone").returncode == 0
        kept.client().append(sid, "user", "written after the revocation")
        assert sync(kept.home)[0] == 0

        def pull_failed() -> bool:
            return bool(sync(lost.home)[1]["sessions"].get(sid, {}).get("pull_error"))

        wait_for(pull_failed, timeout=60, interval=0.5, what="the revoked device's pull failing")
        report = json.loads(run_cli(lost.home, "doctor", "--no-verify", "--json").stdout)
        pulls = [f for f in report["findings"] if f["check"] == "pull" and "cannot pull" in f["message"]]
        assert pulls, report["findings"]
        for finding in pulls:
            assert "serve revoke --undo" in finding["fix"], finding
            assert not finding["fix"].startswith("sessiond sync"), finding


def test_revoke_and_accounts_fail_clearly(tmp_path):
    data = str(tmp_path / "relay")
    assert serve(data, "invite").returncode == 0  # makes the folder, no account yet
    os.makedirs(os.path.join(data, "accounts"), exist_ok=True)
    res = serve(data, "revoke", "nobody", "--json")
    assert res.returncode == 1 and "no account 'nobody'" in json.loads(res.stdout)["error"]["message"]
    res = serve(data, "accounts", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["accounts"] == []
    for args in (("accounts",), ("revoke", "x")):
        res = serve(str(tmp_path / "not-a-relay"), *args)
        assert res.returncode == 2 and "not a relay's data folder" in res.stderr, res.stderr
    res = run_cli(None, "serve", "--token-ttl", "0s", "--data", data)
    assert res.returncode == 2 and "at least 1s" in res.stderr


async def test_tokens_of_an_earlier_version_expire_a_ttl_after_they_were_written(tmp_path):
    """A token file of an earlier relay holds the bare account id and never expired: after the upgrade it
    lasts the --token-ttl from its mtime; one older than that is deleted when the relay starts."""
    data = str(tmp_path / "relay")
    folder = os.path.join(data, "tokens")
    os.makedirs(folder, mode=0o700)
    for token, age in (("recent-token", 60), ("old-token", 31 * 86400)):
        path = os.path.join(folder, hashlib.sha256(token.encode()).hexdigest())
        with open(path, "w") as f:
            f.write("0123456789abcdef0123456789abcdef")
        os.utime(path, (time.time() - age, time.time() - age))
    with relay_served(data) as info:
        assert len(token_files(data)) == 1
        assert await status_with(info["port"], "recent-token") == 200
        assert await status_with(info["port"], "old-token") == 401


async def test_a_revoked_account_s_token_is_refused_even_if_its_file_stayed(tmp_path):
    """`serve revoke` marks the account, then deletes its tokens: cut between the two (killed, a full
    disk, a token file it could not delete), the lost device's token went on working for the rest of
    its life (30 days) while `serve accounts` showed the account revoked. A token now holds only for an
    account that is not revoked."""
    from sessiond.relay.accounts import read_json
    from sessiond.storage.fsutil import atomic_write
    from test_relay import Served, store_for

    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    store = store_for(served, tmp_path)
    try:
        await store.put(b"before")
        token = store._token
        assert await status_with(served.port, token) == 200
        (name,) = os.listdir(os.path.join(data, "accounts"))
        path = os.path.join(data, "accounts", name)
        doc = read_json(path)
        atomic_write(path, json.dumps({**doc, "revoked": int(time.time())}).encode())  # revoke's first step only
        assert token_files(data)  # its token file is still there
        assert await status_with(served.port, token) == 401
        with pytest.raises(AuthRefused, match="revoked"):
            await store.put(b"after")
    finally:
        await store.close()
        await served.stop()


async def test_a_label_a_device_registered_with_cannot_write_to_the_operator_s_terminal(tmp_path):
    """A device registering without a labelled invite names its account itself (the JSON field
    `label`), and `serve accounts` / `serve revoke` printed that name as it came: escape sequences
    from any client that could register rewrote the operator's terminal (its title, the screen)."""
    import base64

    from nacl.signing import SigningKey

    from sessiond.stores.s5account import b64url, challenge_response
    from test_relay import Served

    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    key = SigningKey(b"\x33" * 32)
    pub = b64url(b"\xed" + bytes(key.verify_key))
    evil = "\x1b]0;owned\x07\x1b[2J\x1b[31mlaptop"
    base = f"http://127.0.0.1:{served.port}/s5/account/register"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base, params={"pubKey": pub}) as r:
                challenge = base64.urlsafe_b64decode((await r.json())["challenge"] + "=")
            response, signature = challenge_response(key, 1, challenge, f"127.0.0.1:{served.port}")
            body = {"pubKey": pub, "response": b64url(response), "signature": b64url(signature), "label": evil}
            async with s.post(base, json=body) as r:
                assert r.status == 200, await r.text()
    finally:
        await served.stop()
    listed = serve(data, "accounts")
    assert listed.returncode == 0 and "laptop" in listed.stdout
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout, repr(listed.stdout)
    as_json = json.loads(serve(data, "accounts", "--json").stdout)["accounts"]
    assert as_json[0]["label"] == evil  # --json: the exact data, for scripts
    revoked = serve(data, "revoke", as_json[0]["id"])
    assert revoked.returncode == 0 and "\x1b" not in revoked.stdout and "laptop" in revoked.stdout


async def test_logins_of_one_account_keep_a_bounded_number_of_tokens(tmp_path):
    """Every login wrote a token file that lasted the whole --token-ttl (30 days): one device key logging
    in again and again (a loop, a stolen key) piled up files without bound, which no quota counts and
    every later login had to read through. An account keeps its newest MAX_TOKENS_PER_ACCOUNT tokens."""
    from sessiond.relay.accounts import MAX_TOKENS_PER_ACCOUNT
    from sessiond.stores.s5 import S5Store
    from test_relay import Served

    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    tokens = []
    try:
        for _ in range(MAX_TOKENS_PER_ACCOUNT + 12):
            store = S5Store(f"s5+http://127.0.0.1:{served.port}", account_seed=b"\x55" * 32)  # no token kept
            try:
                await store.put(b"x")
                tokens.append(store._token)
            finally:
                await store.close()
        assert len(token_files(data)) == MAX_TOKENS_PER_ACCOUNT
        assert await status_with(served.port, tokens[-1]) == 200  # the newest hold
        assert await status_with(served.port, tokens[-MAX_TOKENS_PER_ACCOUNT]) == 200
        assert await status_with(served.port, tokens[0]) == 401  # the oldest went
    finally:
        await served.stop()


def test_tokens_issued_within_one_tick_of_the_file_clock_keep_the_newest(tmp_path, monkeypatch):
    """An account keeps its newest MAX_TOKENS_PER_ACCOUNT tokens, told apart within a second by their files'
    mtime. A file's mtime comes from a coarse clock on many kernels (a jiffy: 1 to 10 ms; before Linux 6.13
    every file's), and a device logging in again within that (the test above logs in every ~4 ms) wrote a
    token whose mtime ties its predecessor's: which of the two a later login deleted was left to the order of
    their files' names (hashes): about half the time the newest, which its device then found refused. Here
    every login comes within one second and every token file has the same mtime, as on a coarse clock."""
    import types

    from sessiond.relay import accounts as module

    base = float(int(time.time()))
    ticks = iter(range(1000))
    monkeypatch.setattr(
        module, "time", types.SimpleNamespace(time=lambda: base + next(ticks) / 1000, monotonic=time.monotonic)
    )
    data = str(tmp_path / "relay")
    accounts = module.Accounts(data, open_registration=True)
    acct = "0" * 32
    accounts._create(acct, b"\xed" + b"\x01" * 32, "laptop", None)
    folder = os.path.join(data, "tokens")
    issued = []
    for _ in range(module.MAX_TOKENS_PER_ACCOUNT + 12):
        issued.append(hashlib.sha256(accounts._issue(acct).encode()).hexdigest())
        for name in os.listdir(folder):  # every token file written in the same tick of the file clock
            os.utime(os.path.join(folder, name), ns=(1_700_000_000_000_000_000,) * 2)
    assert token_files(data) == sorted(issued[-module.MAX_TOKENS_PER_ACCOUNT :])


def test_two_logins_of_one_account_at_one_moment_are_counted_apart(tmp_path, monkeypatch):
    """A token's "n" counts its account's logins, what orders its tokens (the oldest past the cap deleted). Two
    logins of one account at one moment (two threads of the relay) each counted 1 past the highest of the live
    tokens they read, before either wrote its own: both got the same "n", and their order fell back to times. The
    count is taken one login at a time now. Here the first login is held between its read of the tokens and its
    count while the second runs whole."""
    import threading

    from sessiond.relay import accounts as module

    data = str(tmp_path / "relay")
    accounts = module.Accounts(data, open_registration=True)
    acct = "0" * 32
    accounts._create(acct, b"\xed" + b"\x01" * 32, "laptop", None)
    accounts._issue(acct)  # (one login before: counts from 1)
    swept, go, calls = threading.Event(), threading.Event(), []
    real = module.sweep_tokens

    def held_sweep(*args, **kw):
        out = real(*args, **kw)
        calls.append(1)
        if len(calls) == 1:  # the first login, its tokens read: held until the second is done
            swept.set()
            assert go.wait(timeout=60), "the test never let the first login go"
        return out

    monkeypatch.setattr(module, "sweep_tokens", held_sweep)
    first: list[str] = []
    t = threading.Thread(target=lambda: first.append(accounts._issue(acct)))
    t.start()
    try:
        assert swept.wait(timeout=60), "the first login never read its tokens"
        second = accounts._issue(acct)
    finally:
        go.set()
        t.join(timeout=60)
    assert first, "the first login failed"

    def n_of(token: str) -> int:
        with open(os.path.join(data, "tokens", hashlib.sha256(token.encode()).hexdigest())) as f:
            return json.load(f)["n"]

    assert sorted([n_of(first[0]), n_of(second)]) == [2, 3], (n_of(first[0]), n_of(second))
