"""A 503 `store` refusal (an import, a share, a rekey whose store failed) said the store, its failure and what
mends it in its message only: no `details` an app could act on, where other refusals whose way on is the
owner's carry `details.owner`. Each store failure's class now gives its `details`: `store` (shown without
credentials), `failure` (the class), `retry` (whether waiting mends it), `retry_after` (when the store said)
and `owner` (what mends it, in words; none for a rate limit, which the app waits out alone)."""

from __future__ import annotations

import json

import pytest

from conftest import ReservedPort, run_cli
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Threaded
from sessiond.client import ApiError
from sessiond.daemon.syncrefusals import share_error
from sessiond.stores.errors import (
    AccountRevoked,
    AuthRefused,
    FolderAway,
    FolderDenied,
    FolderFileTooLarge,
    LyingServer,
    NoRelayAccount,
    ObjectTooLarge,
    RateLimited,
    ReadOnlyStore,
    ServerError,
    ShortAnswer,
    StoreFull,
    StoreOffline,
    StoreRedirected,
    StoreTimeout,
    StoreUnreachable,
    TlsRefused,
)
from sessiond.sync.errors import store_failed
from sessiond.sync.sharecode import ShareCode, decode

URL = "s5+http://device:hunter2-secret@relay.example:5050"

# (the store's failure, details.failure, details.retry)
CLASSES = [
    (StoreUnreachable("connection refused"), "unreachable", True),
    (FolderAway("the store folder /mnt/share is missing"), "folder_away", False),
    (StoreTimeout("no answer"), "timeout", True),
    (TimeoutError(), "timeout", True),
    (AuthRefused("401"), "credentials_refused", False),
    (NoRelayAccount("registration closed (sessiond serve invite)"), "no_account", False),
    (AccountRevoked("revoked"), "account_revoked", False),
    (FolderDenied("permission denied"), "permission_denied", False),
    (TlsRefused("self-signed"), "tls_refused", False),
    (RateLimited("slow down", None), "rate_limited", True),
    (ServerError("500", 500), "server_error", True),
    (ShortAnswer("cut short", 200), "short_answer", True),
    (StoreFull("no room"), "full", False),
    (FolderFileTooLarge("past the limit", 1 << 20), "file_size_limit", False),
    (ObjectTooLarge("413"), "too_large", False),
    (StoreOffline("offline"), "offline", False),
    (LyingServer("another CID"), "lying", False),
    (ReadOnlyStore("a gateway"), "read_only", False),
    (StoreRedirected("307 to another server"), "redirected", False),
]


@pytest.mark.parametrize(("failure", "code", "retry"), CLASSES, ids=[f"{type(f).__name__}" for f, _, _ in CLASSES])
def test_each_store_failure_class_gives_its_details(failure, code, retry):
    err = share_error(store_failed(failure, URL, "cannot share s1"))
    assert (err.status, err.code) == (503, "store"), (err.status, err.code)
    d = err.details
    assert d["store"] == "s5+http://***@relay.example:5050" and "hunter2" not in str(d), d  # no credentials
    assert d["failure"] == code and d["retry"] is retry, d
    assert "retry_after" not in d, d  # the store did not say
    if isinstance(failure, RateLimited):
        assert "owner" not in d, d  # waited out by the app alone
    else:
        [owner] = d["owner"]
        assert owner and owner in err.message, (owner, err.message)  # the message's own way on


def test_a_rate_limit_gives_the_stores_wait():
    err = share_error(store_failed(RateLimited("slow down; retry after 120 s", 120.0), URL))
    assert err.details["failure"] == "rate_limited" and err.details["retry_after"] == 120, err.details
    assert err.details["retry"] is True and "owner" not in err.details
    err = share_error(store_failed(RateLimited("slow down", 7200.0), URL))
    assert err.details["retry_after"] == 900, err.details  # (honoured up to 15 min, as the daemon does)


@pytest.fixture
def shared(make_daemon):
    """A daemon (folder store) with a session shared read-only, its code, and a second daemon to import it."""
    a = make_daemon().start()
    ca = a.client()
    sid = ca.create_session(name="shared", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    code = ca.share(sid)["code"]
    return sid, code, make_daemon().start().client()


def _refused(call) -> dict:
    with pytest.raises(ApiError) as e:
        call()
    assert (e.value.status, e.value.code) == (503, "store"), (e.value.status, e.value.code, e.value.message)
    return e.value.details


def test_an_import_from_a_failing_store_gives_its_details(shared, portal):
    """Through the API: an import naming a store that is unreachable, refuses this device's credentials,
    fails with server errors, or rate-limits it with a Retry-After."""
    sid, code, cb = shared
    p, portal_url = portal
    kubo = Threaded(make_rpc_app(Node(auth="Bearer not-ours"))).start()
    try:
        with ReservedPort() as nothing:  # (bound, not listening: a connection to it is refused)
            down = f"s5+http://127.0.0.1:{nothing.port}"
            d = _refused(lambda: cb.import_code(code, store=down))
        assert (d["store"], d["failure"], d["retry"]) == (down, "unreachable", True), d
        assert d["owner"] and "running" in d["owner"][0], d

        guarded = f"ipfs+http://127.0.0.1:{kubo.port}"
        d = _refused(lambda: cb.import_code(code, store=guarded))
        assert (d["store"], d["failure"], d["retry"]) == (guarded, "credentials_refused", False), d
        assert "credentials" in d["owner"][0], d

        p.faults.status, p.faults.times = 500, 10**6
        d = _refused(lambda: cb.import_code(code, store=portal_url))
        assert (d["store"], d["failure"], d["retry"]) == (portal_url, "server_error", True), d
        assert "operator" in d["owner"][0], d

        p.faults.status, p.faults.retry_after = 429, "120"
        d = _refused(lambda: cb.import_code(code, store=portal_url))
        assert (d["failure"], d["retry"], d["retry_after"]) == ("rate_limited", True, 120), d
        assert "owner" not in d, d
    finally:
        kubo.stop()
    assert cb.list_sessions()["sessions"] == []  # nothing imported


def test_a_share_whose_store_fails_gives_its_details(make_daemon, portal):
    """Through the API: a share whose push the store refuses, full (507) or lying (another CID answered)."""
    p, portal_url = portal
    ca = make_daemon(portal_url).start().client()
    for fault, failure, says in (("status", "full", "free space"), ("wrong_cid", "lying", "not one to keep")):
        if fault == "status":
            p.faults.status, p.faults.times = 507, 10**6
        else:
            p.faults.status, p.faults.wrong_cid = None, True
        sid = ca.create_session(name=failure, initial_messages=[{"role": "user", "content": "hello"}])["id"]
        d = _refused(lambda sid=sid: ca.share(sid))
        assert (d["store"], d["failure"], d["retry"]) == (portal_url, failure, False), d
        assert says in d["owner"][0], d
    assert ca.shares()["shares"] == []


def test_a_lying_store_under_a_share_a_rekey_or_an_unshare_is_a_store_refusal(make_daemon, portal):
    """A store that answers another CID for the members object a first share, a rekey or an unshare writes
    was answered 500 internal ('see the daemon log'): a store's answer, refused as a `store` failure, with its
    details, like the same store failing to answer."""
    p, portal_url = portal
    ca = make_daemon(portal_url).start().client()
    first = ca.create_session(name="first share", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    shared = ca.create_session(name="shared")["id"]
    ca.share(shared, write=True)
    assert ca.sync(first, wait=True, timeout=30)["complete"]  # pushed: the share's members object is what fails
    p.faults.wrong_cid = True
    for call in (lambda: ca.share(first), lambda: ca.rekey(shared), lambda: ca.unshare(shared)):
        d = _refused(call)
        assert (d["store"], d["failure"], d["retry"]) == (portal_url, "lying", False), d
        assert "not one to keep" in d["owner"][0], d
    assert [s["session"] for s in ca.shares()["shares"]] == [shared]  # no code issued


def test_the_clis_json_error_carries_the_refusals_details(make_daemon):
    """`--json` errors printed the refusal's code and message only: a script had to call the API to learn which store
    failed, how, and whether and when to retry (README's errors). They carry the daemon's `details` too."""
    a = make_daemon().start()
    ca = a.client()
    sid = ca.create_session(name="shared", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    code = ca.share(sid)["code"]
    b = make_daemon().start()
    with ReservedPort() as nothing:  # (bound, not listening: a connection to it is refused)
        down = f"s5+http://127.0.0.1:{nothing.port}"
        res = run_cli(b.home, "import", "--store", down, "--json", input=code)
    assert res.returncode == 1, res
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "store", err
    assert (err["details"]["store"], err["details"]["failure"], err["details"]["retry"]) == (down, "unreachable", True)
    res = run_cli(b.home, "show", "nothing-here", "--json")  # (a refusal without details: none printed)
    assert set(json.loads(res.stdout)["error"]) == {"code", "message"}, res.stdout


def test_an_import_whose_every_store_fails_names_each_stores_failure(shared, portal):
    """A code whose hints name several stores, each failing differently: the refusal's `details` named only the
    last store asked (`store`, `failure`, `owner`), though the message named them all; the user could not tell
    which store was down and which refused this device. `details.stores` now lists each store asked that failed,
    in the order asked, with its own failure, retry and owner; the top-level fields stay the last one's."""
    sid, code, cb = shared
    p, portal_url = portal
    c = decode(code)
    kubo = Threaded(make_rpc_app(Node(auth="Bearer not-ours"))).start()
    try:
        with ReservedPort() as nothing:  # (bound, not listening: a connection to it is refused)
            down = f"s5+http://127.0.0.1:{nothing.port}"
            guarded = f"ipfs+http://127.0.0.1:{kubo.port}"
            p.faults.status, p.faults.times = 500, 10**6
            hints = (("s5", down), ("ipfs", guarded), ("s5", portal_url))
            many = ShareCode(c.session_id, c.session_key, c.announce_pk, locations=hints).encode()
            d = _refused(lambda: cb.import_code(many))
    finally:
        kubo.stop()
    got = [(s["store"], s["failure"], s["retry"]) for s in d["stores"]]
    assert got == [
        (down, "unreachable", True),
        (guarded, "credentials_refused", False),
        (portal_url, "server_error", True),
    ], d
    owners = [s["owner"][0] for s in d["stores"]]
    assert "running" in owners[0] and "credentials" in owners[1] and "operator" in owners[2], owners
    assert (d["store"], d["failure"]) == (portal_url, "server_error"), d  # the last one's, as before
    assert cb.list_sessions()["sessions"] == []  # nothing imported


def test_a_single_stores_refusal_lists_it_alone():
    err = share_error(store_failed(StoreUnreachable("connection refused"), URL))
    [one] = err.details["stores"]
    assert one == {k: err.details[k] for k in ("store", "failure", "retry", "owner")}, err.details


def test_an_import_through_a_mirror_whose_every_store_fails_names_each(make_daemon, portal):
    """This device's store a mirror of several, all failing, and the code's hint too: the mirror's part of the
    refusal said one failure of the mirror as a whole (`failing`, its URLs joined), its first store's error alone in
    words. Each store of it is now named in `details.stores` with its own failure, beside the hint's."""
    p, portal_url = portal
    a = make_daemon().start()
    ca = a.client()
    sid = ca.create_session(name="shared", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    c = decode(ca.share(sid)["code"])
    with ReservedPort() as nothing, ReservedPort() as away:
        down, hint = f"s5+http://127.0.0.1:{nothing.port}", f"s5+http://127.0.0.1:{away.port}"
        cb = make_daemon([down, portal_url]).start().client()
        p.faults.status, p.faults.times = 500, 10**6
        code = ShareCode(c.session_id, c.session_key, c.announce_pk, locations=(("s5", hint),)).encode()
        d = _refused(lambda: cb.import_code(code))
    got = [(s["store"], s["failure"]) for s in d["stores"]]
    assert got == [(down, "unreachable"), (portal_url, "server_error"), (hint, "unreachable")], d
    assert cb.list_sessions()["sessions"] == []
