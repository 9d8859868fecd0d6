"""A store URL saying https (s5+https://) for a server that answers plain HTTP on that port: no TLS there at
all. On main this was said as a certificate this device does not trust: \"not trusted for a secure connection
(TLS)\", and doctor's fix, like the refusal's `owner`, was to start the daemon with SSL_CERT_FILE, which no
certificate mends. The client now looks (one plain request to the same port) and says what it is: the
server answers plain HTTP there, and the way on is its HTTPS port, or an http:// URL on a network one
trusts. Still refused (its token is never sent in the clear to a URL that said https), and `sync --wait`
still ends at once on it; the writes wait for the URL that works."""

from __future__ import annotations

import json

from conftest import run_cli
from portalstore import failure_of, one_session, served_portal
from sessiond.stores.errors import TlsRefused, describe_failure, failure_code, settled
from sessiond.stores.http import HttpClient


async def test_an_https_url_to_a_plain_http_server_says_it_answers_plain_http(tmp_path):
    async with served_portal() as p:
        client = HttpClient(f"https://{p.authority}")
        try:
            failure = await failure_of(client.request("GET", "/s5/registry", params={"pk": "x"}), TlsRefused)
        finally:
            await client.close()
        said = describe_failure(failure, f"s5+https://{p.authority}")
        assert failure_code(failure) == "tls_refused" and settled(failure), said
        assert "plain HTTP" in said and "SSL_CERT_FILE" not in said and "certificate" not in said, said
        assert not [r for r in p.requests if r[1] == "/s5/registry"]  # the request itself never went in the clear


def test_doctor_and_a_share_through_an_https_url_to_a_plain_http_store_say_so(make_daemon, portal):
    p, url = portal
    d, c, sid = one_session(make_daemon, url.replace("s5+http://", "s5+https://"), "no tls")
    res = run_cli(d.home, "sync", "--wait", "--timeout", "30")
    assert res.returncode == 1 and "plain HTTP" in res.stdout + res.stderr, res.stdout + res.stderr
    doctor = json.loads(run_cli(d.home, "doctor", "--json").stdout)["findings"]
    [store] = [f for f in doctor if f["check"] == "store"]
    # main: "fix": "sessiond stop && SSL_CERT_FILE=/path/to/its-cert.pem sessiond start ..."
    assert "plain HTTP" in store["message"] and "SSL_CERT_FILE" not in store["fix"], store
    assert "--change-store" in store["fix"] and "https" in store["fix"], store
    res = run_cli(d.home, "share", sid, "--json")
    err = json.loads(res.stdout)["error"]
    assert err["details"]["failure"] == "tls_refused" and err["details"]["retry"] is False, err
    [owner] = err["details"]["owner"]
    assert "plain HTTP" in owner and "SSL_CERT_FILE" not in owner, owner
    assert c.get_session(sid)["sync"]["pending"] > 0  # nothing pushed, nothing lost
