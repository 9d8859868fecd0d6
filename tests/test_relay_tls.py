"""A relay served over TLS with a certificate of its own (`sessiond serve --cert`), which a device does not
trust until told to: its pushes fail as a TLS refusal (not "unreachable", not retried, `sync --wait` does
not wait on it, doctor names the fix), and once the daemon is started with SSL_CERT_FILE the same home
syncs. Real processes: the relay and the daemon."""

from __future__ import annotations

import json
import time

import pytest

from conftest import DaemonProc, relay_served, run_cli
from sessiond.stores import errors
from test_relay import self_signed


def test_a_relay_certificate_this_device_does_not_trust_is_a_tls_refusal_not_a_store_down(tmp_path):
    made = self_signed(tmp_path)
    if made is None:
        pytest.skip("no openssl to make a certificate with")
    cert, key = made
    home = str(tmp_path / "home")
    with relay_served(str(tmp_path / "relay"), "--open-registration", "--cert", cert, "--key", key) as info:
        url = info["url"]
        assert url.startswith("s5+https://127.0.0.1:")
        d = DaemonProc(home, url).start()
        try:
            c = d.client()
            sid = c.create_session(name="tls", initial_messages=[{"role": "user", "content": "hello"}])["id"]
            t0 = time.monotonic()
            res = run_cli(home, "sync", "--wait", "--timeout", "60", "--json")
            took = time.monotonic() - t0
            assert res.returncode == 1, res.stdout + res.stderr
            error = json.loads(res.stdout)["sessions"][sid]["last_error"]
            assert "TLS certificate is not trusted" in error and "SSL_CERT_FILE" in error, error
            assert "cannot connect" not in error and "is the server running" not in error, error
            assert took < 30, f"sync --wait ran {took:.1f} s of its 60 s timeout on a certificate refused"
            doctor = run_cli(home, "doctor").stdout
            assert "SSL_CERT_FILE=" in doctor and "unreachable" not in doctor, doctor
        finally:
            d.stop()
        d = DaemonProc(home, env={"SSL_CERT_FILE": cert}).start()  # the same home, told to trust the certificate
        try:
            res = run_cli(home, "sync", "--wait", "--timeout", "60", "--json")
            assert res.returncode == 0, res.stdout + res.stderr
        finally:
            d.stop()


def test_a_tls_refusal_is_its_own_class():
    exc = errors.TlsRefused("GET https://relay.example/s5/registry: the server's TLS certificate is not trusted")
    assert errors.settled(exc) and not errors.settled(errors.StoreUnreachable("down"))
    said = errors.describe_failure(exc, "s5+https://relay.example")
    assert "not trusted for a secure connection (TLS)" in said and "SSL_CERT_FILE" in said
