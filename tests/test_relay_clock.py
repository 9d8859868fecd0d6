"""A relay's clock stepped back (an NTP step, its machine's clock set right): an account keeps its newest
MAX_TOKENS_PER_ACCOUNT logins' tokens, a login past them deleting its oldest. Was: "newest" was judged by the
tokens' times, so after a step back the tokens issued since looked the oldest, and the next login deleted
the one just issued: that device's requests refused until it logged in again, which deleted another's, as
long as the step. The relay's clock is the test clock here (storage/clock.py), as a daemon's is."""

from __future__ import annotations

import os

from clocks import DAY, Clock
from conftest import relay_served
from sessiond.relay.accounts import MAX_TOKENS_PER_ACCOUNT
from sessiond.storage.clock import ENV
from sessiond.stores.http import RetryPolicy
from sessiond.stores.s5 import S5Store


async def test_a_relay_clock_stepped_back_keeps_an_accounts_newest_logins(tmp_path, monkeypatch):
    clock = Clock(str(tmp_path / "clock"), 0.0)
    monkeypatch.setenv(ENV, clock.path)  # (the relay's process takes the environment)
    data = str(tmp_path / "relay")
    tokens = os.path.join(data, "tokens")
    with relay_served(data, "--open-registration") as info:
        url = f"s5+http://127.0.0.1:{info['port']}"

        async def login(i: int) -> str:
            """A device of the account logging in (a store of its own token folder): its token's file."""
            before = set(os.listdir(tokens)) if os.path.isdir(tokens) else set()
            store = S5Store(
                url,
                account_seed=b"\x31" * 32,
                token_dir=str(tmp_path / f"device{i}"),
                retry=RetryPolicy(attempts=1),
                timeout=10,
            )
            try:
                await store.put(b"from device %d" % i)
            finally:
                await store.close()
            [new] = set(os.listdir(tokens)) - before
            return new

        for i in range(MAX_TOKENS_PER_ACCOUNT):
            await login(i)
        clock.step(-DAY)
        newest = await login(MAX_TOKENS_PER_ACCOUNT)
        await login(MAX_TOKENS_PER_ACCOUNT + 1)  # a login past the limit: the oldest token goes
        assert newest in os.listdir(tokens), "the token issued just before was deleted as the oldest"
        assert len(os.listdir(tokens)) == MAX_TOKENS_PER_ACCOUNT
