"""A store URL's secrets (a relay invite, a password, a token) never shown back: not in `status` (text
or --json), the daemon's banner and logs, its errors and `doctor`, nor in the daemon's command line
(/proc/PID/cmdline, which every local user can read). `--store-file` keeps them out of argv altogether."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

import secretcheck
from conftest import cli_json, run_cli

# The tests here that read a daemon's command line read that of the daemon `sessiond start` started: marked
# `exec_start`, `start` runs it as a new program (sys.executable -m sessiond.cli.main daemon) wherever `start`
# itself runs (else the suite's `start` forks it: cli/forkstart.py), so none needs the `real_exec` mark
# (which starts every CLI call of the test as a new program, ~0.65 s of imports each); each asserts the
# command line it reads is the daemon's own.


@pytest.mark.exec_start  # reads the command line of the daemon `start` ran
def test_a_relay_invite_in_start_store_is_in_no_status_log_or_cmdline(
    invite_relay, secret_homes, tmp_path, monkeypatch
):
    data, host = invite_relay
    invite = secretcheck.invite(data)
    home = secret_homes("a")
    url = f"s5+http://{invite}@{host}"
    # `start` run from a folder holding a module of a name the daemon imports (a project's nacl.py, a file another
    # user dropped in /tmp): the daemon, `python -m` a new program, put that folder first on its sys.path, and ran
    # the folder's module in its place (so ended: "the daemon did not start")
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "nacl.py").write_text("raise SystemExit('nacl.py of the folder start ran in was imported')\n")
    monkeypatch.chdir(here)
    res = run_cli(home, "start", "--store", url)  # the old form still works
    assert res.returncode == 0, res.stderr
    monkeypatch.undo()
    st = cli_json(home, "status")
    cmdline = secretcheck.cmdline(st["pid"])  # what any local user can read (ps)
    assert "sessiond.cli.main daemon" in cmdline and invite not in cmdline, cmdline
    # the daemon got its store (through a pipe, not argv): a message pushed, the invite spent on the relay
    sid = cli_json(home, "new", "--system", "hello")["id"]
    run_cli(home, "sync", sid, "--wait", check=True)
    assert len(os.listdir(os.path.join(data, "accounts"))) == 1
    text = run_cli(home, "status", check=True).stdout
    assert st["store"] == f"s5+http://***@{host}" and f"store:    s5+http://***@{host}" in text
    again = run_cli(home, "start", "--store", url)  # already running, on that store
    assert again.returncode == 0 and "already running" in again.stdout
    doctor = run_cli(home, "doctor", "--json")
    run_cli(home, "stop", check=True)
    banner = open(os.path.join(home, "logs", "daemon.out")).read()
    assert f"store: s5+http://***@{host}" in banner
    for shown in (cmdline, text, json.dumps(st), banner, secretcheck.logs(home), again.stdout, doctor.stdout):
        assert invite not in shown, shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.exec_start  # reads the command line of the daemon `start` ran
def test_passwords_and_tokens_of_store_urls_are_never_shown(secret_homes, reserved_port):
    """A Kubo RPC behind basic auth (user:password@) with a token in its query, down: the failures
    name the store, never its password or token, in status, sync, doctor, logs and start's errors."""
    home = secret_homes("k")
    password, token = "PASSWORD-e81f", "TOKEN-5d2c9a"
    # nothing listens: every push fails, naming the store (a port held for the test: one found free and let go may
    # be given to another worker's server meanwhile, whose answers are no "cannot connect")
    port = reserved_port.port
    url = f"ipfs+http://alice:{password}@127.0.0.1:{port}"
    # a token in a query cannot reach a store (no store URL takes one): refused, without showing it
    query = run_cli(home, "start", "--store", f"{url}/?access_token={token}")
    assert query.returncode != 0 and "query" in query.stderr, query.stderr
    res = run_cli(home, "start", "--store", url)
    assert res.returncode == 0, res.stderr
    sid = cli_json(home, "new")["id"]
    # (a store refusing connections is waited for until --timeout: 3 s, the failure is seen at the first push)
    sync = run_cli(home, "sync", sid, "--wait", "--timeout", "3")
    assert sync.returncode != 0 and "cannot connect" in sync.stdout, sync.stdout  # the failure is reported
    st = cli_json(home, "status")
    assert st["store"] == f"ipfs+http://***@127.0.0.1:{port}"
    assert all(s["url"] == f"ipfs+http://127.0.0.1:{port}" for s in st["stores"])  # a store's identity: no credentials
    text = run_cli(home, "status", "--sessions").stdout
    doctor = run_cli(home, "doctor")
    assert "cannot connect" in doctor.stdout
    # another store asked of a running daemon: refused, naming both without their secrets
    other = run_cli(home, "start", "--store", f"ipfs+http://bob:{password}@127.0.0.1:1")
    assert other.returncode != 0 and "***@127.0.0.1:1" in other.stderr
    cmdline = secretcheck.cmdline(st["pid"])  # what any local user can read (ps)
    assert "sessiond.cli.main daemon" in cmdline, cmdline  # the daemon's own, `start` ran it as a new program
    run_cli(home, "stop", check=True)
    # a URL the daemon refuses: the error quotes it without its credentials
    bad = run_cli(home, "daemon", "--store", f"s5+https://user:{password}@/?token={token}")
    moved = run_cli(home, "start", "--store", f"s5+http://{token}@127.0.0.1:{port}")  # not without --change-store
    assert bad.returncode != 0 and moved.returncode != 0 and "--change-store" in moved.stderr, moved.stderr
    seen = [query.stderr, sync.stdout, json.dumps(st), text, doctor.stdout, other.stderr, cmdline, bad.stderr]
    seen.append(moved.stderr)
    for shown in [*seen, secretcheck.logs(home)]:
        assert password not in shown and token not in shown, shown


def test_the_one_helper_hides_every_kind_of_store_credential():
    from sessiond.storage.redact import scrub_text, shown_store, shown_url

    cases = {
        "s5+http://INVITE123@relay.example:5050": "s5+http://***@relay.example:5050",
        "ipfs+http://alice:pw-123@127.0.0.1:5001": "ipfs+http://***@127.0.0.1:5001",
        "ipfs+https://gw.example/?access_token=abc&x=1": "ipfs+https://gw.example/?access_token=***&x=1",
        "s5+https://portal.example?apikey=k1&sig=s2#tok": "s5+https://portal.example?apikey=***&sig=***#***",
        "s5+https://portal.example/p?v=" + "A" * 32: "s5+https://portal.example/p?v=***",
        "file:///home/me/a@b/store": "file:///home/me/a@b/store",  # a folder's path is no credential
        "ipfs+http://[::1]:5001": "ipfs+http://[::1]:5001",
        "s5+https://portal.example": "s5+https://portal.example",
    }
    for url, shown in cases.items():
        assert shown_url(url) == shown, url
    assert shown_store("file:///a\ns5+http://INV@h:1") == "file:///a s5+http://***@h:1"
    text = "POST http://bob:hunter22@h:1/api/v0/block/put: cannot connect; 'ipfs+http://u:p@x:2' down"
    assert scrub_text(text) == "POST http://***@h:1/api/v0/block/put: cannot connect; 'ipfs+http://***@x:2' down"
    assert "secret-value" not in scrub_text("the token secret-value was refused", ["secret-value"])


def test_a_store_url_mistyped_around_its_secret_is_refused_without_echoing_it():
    """A store URL whose invite or password was typed with ':' for its '@' (`s5+http://INVITE:relay:5050`), or
    inside brackets, did not parse: its refusal ("malformed") quoted the URL whole, and urlparse's reason quoted
    the rest of it, with no userinfo left for the redaction to hide; one with a third slash
    (`s5+http:///INVITE@relay`, as file:/// is written) was refused as having no host, quoting the invite as its
    path. `start --store` printed them (and --json too), as the daemon would log them; neither quotes it now."""
    from sessiond.daemon.home import HomeError, normalize_store_url
    from sessiond.storage.redact import scrub_text

    secret = "inv4f9a8b7c6d5e"
    for url in (
        f"s5+http://{secret}:relay.example:5050",
        f"http://{secret}:relay.example:5050",
        f"ipfs+http://alice:{secret}:127.0.0.1:5001",
        f"s5+http://[{secret}]",
        f"s5+http:///{secret}@relay.example:5050",
        f"s5+https:///{secret}@portal.example",
    ):
        with pytest.raises(HomeError) as refused:
            normalize_store_url(url)
        message = scrub_text(str(refused.value))  # (as `start` shows it; the daemon logs it so)
        assert secret not in message, (url, message)
        assert "store URL" in message and ("malformed" in message or "no host" in message), message
    # what is no secret is still quoted: a port not a number or out of range after the user part hidden (with no
    # user part, `HOST:abc` is `INVITE:HOST` as well, its '@' typed ':': quoted nowhere, test_store_url_two_slips.py)
    for url, said in (("ipfs+http://INVITE@h:abc", "'abc'"), ("s5+http://INVITE@h:99999", "s5+http://***@h:99999")):
        with pytest.raises(HomeError, match="malformed") as refused:
            normalize_store_url(url)
        assert said in str(refused.value) and "INVITE" not in str(refused.value), str(refused.value)


def test_store_objects_show_no_credentials(tmp_path):
    """What a store object itself shows (its repr, a pinning service's status) hides the credentials
    of its URL, which it keeps for its requests."""
    from sessiond.stores.kubo import KuboStore
    from sessiond.stores.pinning import PinningStore

    token_file = tmp_path / "pinning-token"
    token_file.write_text("bearer-token-value\n")
    kubo = KuboStore("ipfs+http://alice:PASSWORD-91c@127.0.0.1:5001")
    pinning = PinningStore(kubo, "https://pins.example/psa?key=QUERYKEY-77", token_file=str(token_file))
    shown = [repr(kubo), repr(pinning), json.dumps(pinning.status())]
    assert pinning.status()["service"] == "https://pins.example/psa?key=***"
    for text in shown:
        assert "PASSWORD-91c" not in text and "QUERYKEY-77" not in text and "bearer-token-value" not in text, text


def test_credentials_with_a_quote_or_space_are_hidden_in_errors_and_logs(secret_homes, tmp_path):
    """A password may hold a quote (' is a legal character of a URL's userinfo) or, pasted by hand, a space:
    an import refused for its --store URL names the store without the password, whatever it holds."""
    home = secret_homes("q")
    run_cli(home, "start", check=True)
    sid = cli_json(home, "new")["id"]
    code = cli_json(home, "share", sid)["code"]
    passwords = ["it's-PASSWORD-4e1", 'a"PASSWORD-9b2', "a PASSWORD-77c", "a<PASSWORD-3d0>"]
    seen = []
    for pw in passwords:
        url_file = tmp_path / "store"
        url_file.write_text(f"ipfs+http://alice:{pw}@127.0.0.1:1/?x\n")  # refused: a store URL has no query
        for json_flag in ((), ("--json",)):
            res = run_cli(home, "import", "--store-file", str(url_file), *json_flag, input=code)
            assert res.returncode != 0 and "query" in res.stdout + res.stderr, res
            seen += [res.stdout, res.stderr]
    run_cli(home, "stop", check=True)
    seen.append(secretcheck.logs(home))
    for shown in seen:
        for pw in passwords:
            assert pw.split("PASSWORD")[1] not in shown, (pw, shown)


def test_the_helper_hides_credentials_holding_a_quote_or_a_space():
    from sessiond.storage.redact import scrub_text

    for pw in ("it's-secret-1", 'a"secret-2', "a<secret-3>", "a`secret-4"):
        shown = scrub_text(f"cannot open the store ipfs+http://alice:{pw}@127.0.0.1:1/x: refused")
        assert shown == "cannot open the store ipfs+http://***@127.0.0.1:1/x: refused", shown
    # a quoted URL, and quoted words beside one, keep their quotes and words
    assert scrub_text("'ipfs+http://u:p@x:2' down") == "'ipfs+http://***@x:2' down"
    assert scrub_text("'http://host' and 'me@x'") == "'http://host' and 'me@x'"


def test_configured_secrets_are_hidden_by_their_value_wherever_they_appear(make_daemon, tmp_path):
    """The URL pattern finds a URL's credentials only inside a URL it can read: a password holding a raw space
    (pasted by hand; a URL cannot hold one, so in running text a space ends it) quoted in free text showed its
    part after the space, and a secret quoted alone (a server echoing the password it refused, a token, a
    provider's key that looks like no known key) showed whole. Each secret the daemon is configured with is
    hidden by its value instead, wherever it appears in an error or a log line: the store URL's password, the
    home's kubo-auth, a provider's API key read from its environment variable, the OpenAI listener's own key."""
    store_pw, kubo_token, provider_key = "a PASSWORD 77c1", "KUBOAUTH-5e0b-TOKEN", "PROVKEY 9f3e 0c41"
    port = _free_port()  # nothing listens
    d = make_daemon(f"ipfs+http://alice:{store_pw}@127.0.0.1:{port}", env={"SD_TEST_PROVIDER_KEY": provider_key})
    os.makedirs(d.home, mode=0o700)
    with open(os.path.join(d.home, "kubo-auth"), "w") as f:
        f.write(f"Bearer {kubo_token}\n")
    os.chmod(os.path.join(d.home, "kubo-auth"), 0o600)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write('openai_listen = "127.0.0.1:0"\n')
        f.write('[providers.loop]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "SD_TEST_PROVIDER_KEY"\n')
    d.start()
    listener_key = open(cli_json(d.home, "status")["openai"]["api_key_file"]).read().strip()
    seen = []
    for secret in (store_pw, f"alice:{store_pw}", kubo_token, provider_key, listener_key):
        # an error quoting what it was given: here the secret itself, as a server echoing it would
        for extra in ((), ("--json",)):
            res = run_cli(d.home, "show", secret, *extra)
            assert res.returncode != 0 and "no session" in res.stdout + res.stderr, res
            seen += [res.stdout, res.stderr]
    shown = run_cli(d.home, "show", f"cannot open ipfs+http://alice:{store_pw}@127.0.0.1:{port}: refused")
    assert "ipfs+http://***@127.0.0.1" in shown.stderr and "refused" in shown.stderr, shown.stderr
    seen += [shown.stderr, json.dumps(cli_json(d.home, "status"))]
    d.stop()
    seen.append(secretcheck.logs(d.home))
    for text in seen:
        for secret in (store_pw, kubo_token, provider_key, listener_key, "PASSWORD 77c1", "9f3e 0c41"):
            assert secret not in text, (secret, text)


def test_scrubbing_a_pathological_text_takes_linear_time():
    """Every error and log line goes through scrub_text: 100 KB of text made to make its patterns backtrack
    (a run of scheme characters and no '://' after it, from every start) must not hold the daemon up. The
    URL pattern looked for a scheme of any length before '://' from every word start: 10 s and more for
    100 KB of 'a.a.a.'."""
    from sessiond.storage.redact import scrub_text

    cases = [
        "a." * 50_000 + " ://",
        "a-" * 50_000 + " ://",
        "sk-" * 33_000 + " ://",
        "a+" * 50_000 + "x ://",
        "x://" + "a" * 100_000,
        "x://" + "a@" * 50_000,
        "x://a " * 20_000,
        "Bearer " * 15_000,
        "Bearer" + " " * 100_000 + "!",
        "abcdefghij " * 10_000,
        "ab:/" * 25_000 + "://",
    ]
    for text in cases:
        started = time.monotonic()
        scrub_text(text, ["abcdefghijkl"], tokens=True)
        assert time.monotonic() - started < 2, text[:40]
    # a URL whose scheme is longer than any real one still has its credentials hidden
    assert scrub_text("at " + "x" * 200 + "://u:pw-secret@h:1/p") == "at " + "x" * 200 + "://***@h:1/p"
    assert scrub_text("see foo_http://u:pw-secret@h:1 now") == "see foo_http://***@h:1 now"


def test_a_short_configured_value_is_not_hidden_from_every_text():
    """A value under 8 characters is left to the patterns: a local server's placeholder key ("ollama") hidden
    by value would hide the provider of that name from every error; a real secret is longer."""
    from sessiond.storage.redact import hide_everywhere, scrub_text

    hide_everywhere("ollama", "PLACEHOLDER-KEY-4c1d")
    assert scrub_text("provider 'ollama' refused PLACEHOLDER-KEY-4c1d") == "provider 'ollama' refused ***"


def test_a_pull_error_shown_by_status_hides_the_secrets_this_process_knows():
    """A pull's error is kept as text for `status`, `sync --wait` and doctor (SyncContext.pull_failed), which
    are no log: the log formatter's scrubbing never saw it. A store's or a library's exception quoting a
    configured secret (a password in a URL, a token) showed it there whole."""
    from types import SimpleNamespace

    from sessiond.storage.redact import hide_everywhere
    from sessiond.sync.context import SyncContext

    hide_everywhere("pull-secret-9f3e7a21")
    ctx = SimpleNamespace(pull_errors={}, pull_kinds={}, pull_fixes={}, pull_forks=set(), pull_failures={})
    shown = SyncContext.pull_failed(ctx, "s1", OSError("cannot reach https://me:pull-secret-9f3e7a21@store.example/x"))
    assert "pull-secret" not in shown and "pull-secret" not in ctx.pull_errors["s1"], shown
    assert "store.example" in shown  # what failed is still said


def test_a_store_url_with_a_slash_left_out_is_refused_without_its_invite(secret_homes, tmp_path):
    """`s5+http:/INVITE@HOST` (one slash typed, or none) is refused (as having no host, then as the '//' left
    out, naming the URL meant), and the refusal quoted the URL as written, the invite in full on the terminal:
    the hiding read credentials only after '://'."""
    home = secret_homes("typo")
    invite = "INVITE-9c41e07d2b55aa"
    for typed in (f"s5+http:/{invite}@127.0.0.1:1", f"s5+http:{invite}@127.0.0.1:1", f"ipfs+http:/u:{invite}@h:1"):
        f = tmp_path / "store"
        f.write_text(typed + "\n")
        res = run_cli(home, "start", "--store-file", str(f))
        assert res.returncode != 0 and "the '//' after its scheme is left out" in res.stderr, res
        assert invite not in res.stderr + res.stdout + secretcheck.logs(home), res.stderr
        assert "***@" in res.stderr, res.stderr  # the URL is still named, its credentials hidden


def test_a_store_url_whose_host_holds_a_percent_or_a_space_is_refused_without_quoting_it(secret_homes, tmp_path):
    """An invite mistyped (its '@' written %40, or a space for it) leaves no userinfo: the whole of
    `INVITE%40host` was taken as the host, and `status`, the banner and the logs showed it, the invite in full.
    No host name holds a '%' or a space: such a URL is refused wherever it is given, naming the mistake and
    quoting nothing of the host."""
    home = secret_homes("pct")
    invite = "INVITE-5b7e01c9d3aa42"
    typed = [f"s5+http://{invite}%40127.0.0.1:1", f"s5+http://{invite} 127.0.0.1:1", f"ipfs+http://u:pw@{invite}%20h:1"]
    seen = []
    for url in typed:
        f = tmp_path / "store"
        f.write_text(url + "\n")
        for how in (("--store", url), ("--store-file", str(f))):
            res = run_cli(home, "start", *how)
            assert res.returncode != 0 and "host" in res.stderr and "'%' or a space" in res.stderr, res
            seen += [res.stdout, res.stderr]
    for key, value in (("store", json.dumps(typed[0])), ("stores", json.dumps(["file:///tmp/x", typed[1]]))):
        os.makedirs(home, mode=0o700, exist_ok=True)
        with open(os.path.join(home, "config.toml"), "w") as cfg:
            cfg.write(f"{key} = {value}\n")
        res = run_cli(home, "start")
        assert res.returncode != 0 and "'%' or a space" in res.stderr, res
        seen += [res.stdout, res.stderr]
    os.remove(os.path.join(home, "config.toml"))
    run_cli(home, "start", check=True)
    sid = cli_json(home, "new")["id"]
    code = cli_json(home, "share", sid)["code"]
    for url in typed:
        for json_flag in ((), ("--json",)):
            res = run_cli(home, "import", "--store", url, *json_flag, input=code)
            assert res.returncode != 0 and "'%' or a space" in res.stdout + res.stderr, res
            seen += [res.stdout, res.stderr]
    seen.append(json.dumps(cli_json(home, "status")))
    run_cli(home, "stop", check=True)
    seen.append(secretcheck.logs(home))
    for shown in seen:
        assert invite not in shown and invite.lower() not in shown, shown


def test_the_refusal_of_a_host_holding_a_percent_shows_the_url_it_asks_for_whole(home, tmp_path):
    """The refusal's way on is a URL template with the invite's place in it, `s5+http://[INVITE@]HOST[:PORT]`:
    shown through the redaction of URLs that every message of the daemon's passes, its user part became
    `***@]HOST[:PORT]`, a garble that names neither the invite's place nor the host's. The template is
    given as the relay's refusal gives it: the URL without a user part, the invite's place beside it."""
    for url, json_flag in (("s5+http://inv%40127.0.0.1:1", ()), ("s5+http://a b:1", ("--json",))):
        res = run_cli(home, "start", "--store", url, *json_flag)
        said = res.stdout + res.stderr
        assert res.returncode == 2 and "'%' or a space" in said, res
        assert "***@]" not in said and "[:PORT]" in said, said
        assert "s5+http://HOST[:PORT]" in said and "(INVITE@HOST[:PORT])" in said, said
