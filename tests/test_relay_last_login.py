"""`sessiond serve accounts` said an account's last login was its newest live token's issue: once that token
expired (its --token-ttl after the login) or the account was revoked (its tokens deleted), the account read
"last login never", though it had logged in, which is what an operator deciding whether a device is lost
wants to know. Each login (a registration's too) is now noted in DATA/logins/ACCOUNT, which outlives the
tokens; an account's last login is the newest noted."""

from __future__ import annotations

import time

from conftest import wait_for
from sessiond.relay.accounts import Accounts, account_id
from sessiond.relay.admin import list_accounts, revoke


def _last_login(data: str) -> int | None:
    (acct,) = list_accounts(data)
    return acct["last_login"]


def test_the_last_login_outlives_its_token_and_a_revocation(tmp_path):
    data = str(tmp_path / "relay")
    accounts = Accounts(data, open_registration=True, token_ttl=1)
    pub = b"\xed" + bytes(range(32))
    before = int(time.time())
    accounts._register(pub, "phone", None)  # (its signed challenge's check aside: the relay's own path after it)
    first = _last_login(data)
    assert first is not None and before <= first <= time.time(), first
    wait_for(lambda: list_accounts(data)[0]["tokens"] == 0, timeout=10, what="the token's expiry")
    assert _last_login(data) == first  # its token expired: the login is still the last one
    wait_for(lambda: int(time.time()) > first, timeout=5, what="the next second")
    accounts._login(pub)
    again = _last_login(data)
    assert again is not None and again > first, (again, first)
    revoke(data, account_id(pub))
    assert _last_login(data) == again  # revoked, its tokens deleted: when it last logged in is still known
