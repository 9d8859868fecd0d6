"""A daemon killed between an atomic write into its home and the rename (the home's store-url, the OpenAI
endpoint's key, a portal token in store-tokens/, a pin request id in pinning/) left the temporary file
there for good, a secret in some of them: the next start deletes them, as it deletes those of keys/."""

from __future__ import annotations

import os
import time

import pytest

from conftest import DaemonProc, write_config

LONG_AGO = time.time() - 3600


def _leftover(path: str) -> str:
    with open(path, "w") as f:
        f.write("sk-secret-left-behind\n")
    os.utime(path, (LONG_AGO, LONG_AGO))
    return path


def _temps(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-") or n.endswith(".tmp"))


def test_the_temporary_files_of_writes_into_the_home_cut_short_are_deleted_at_the_next_start(home):
    write_config(home, openai_listen="127.0.0.1:0")
    d = DaemonProc(home, env={"SESSIOND_CRASH_AT": "write:store-url"})  # a new home's first start: store-url
    with pytest.raises(RuntimeError):
        d.start()
    assert [n.rsplit("-", 1)[0] for n in _temps(home)] == [".tmp-store-url"]
    d.env["SESSIOND_CRASH_AT"] = "write:openai-api-key"  # the endpoint's key, made at its first start
    with pytest.raises(RuntimeError):
        d.start()  # (this start deleted the first one's)
    assert [n.rsplit("-", 1)[0] for n in _temps(home)] == [".tmp-openai-api-key"]
    for name in _temps(home):
        os.utime(os.path.join(home, name), (LONG_AGO, LONG_AGO))
    _leftover(os.path.join(home, "openai-api-key.4242.tmp"))  # the name earlier versions wrote the key under
    for sub, name in (("store-tokens", "s5-portal.token"), ("pinning", "pins-service.json")):
        os.makedirs(os.path.join(home, sub), mode=0o700, exist_ok=True)
        _leftover(os.path.join(home, sub, f".tmp-{name}-0123456789ab"))
        _leftover(os.path.join(home, sub, name))  # the file itself stays
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    try:
        assert _temps(home) == []
        for sub, name in (("store-tokens", "s5-portal.token"), ("pinning", "pins-service.json")):
            assert os.listdir(os.path.join(home, sub)) == [name]
        assert open(os.path.join(home, "openai-api-key")).read().startswith("sk-sessiond-")
        assert d.client().status()["device_id"]
    finally:
        d.stop()
