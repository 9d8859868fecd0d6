"""A provider that cannot be connected to (nothing listening on its port) was refused with aiohttp's own words,
"Cannot connect to host 127.0.0.1:9 ssl:default [Connect call failed ('127.0.0.1', 9)]": an "ssl:default" of a
plain http:// URL, which reads as a TLS problem. The refusal now says it as a store's unreachable connection is
said: the provider's URL, "cannot connect", and the cause in the system's words ("Connection refused")."""

from __future__ import annotations

import errno
import os

import pytest

from conftest import ReservedPort, run_cli, started_with_provider
from sessiond.client import ApiError


def test_a_closed_port_is_said_as_the_url_and_a_refused_connection(make_daemon):
    with ReservedPort() as nobody:
        url = f"http://127.0.0.1:{nobody.port}/v1"
        d = started_with_provider(make_daemon, url, name="p")
        c = d.client()
        sid = c.create_session(model="m")["id"]
        for stream in (False, True):
            with pytest.raises(ApiError) as e:
                if stream:
                    list(c.complete_stream(sid, "anyone?"))
                else:
                    c.complete(sid, "anyone?")
            err = e.value
            assert err.code == "provider_unreachable" and err.status == 502, err
            said = err.message
            assert url in said and f"cannot connect ({os.strerror(errno.ECONNREFUSED)})" in said, said
            assert "ssl:" not in said and "Cannot connect to host" not in said, said
        res = run_cli(d.home, "ask", sid, "via cli")
    assert res.returncode == 1 and url in res.stderr and "ssl:" not in res.stderr, res.stderr
