"""Claims of README.md and docs/SECURITY.md that a newcomer's walk through them checked, held by tests: which
refusal of a question to a model keeps the question and which does not, and the modes of every file and
folder a daemon writes in its home."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from conftest import cli_json, run_cli, started_with_provider, write_config
from servers.openai_server import Provider, serve_threaded
from sessiond.sync import sharecode


def _questions(home: str, sid: str) -> list[str]:
    page = cli_json(home, "log", sid)
    return [m["content"] for m in page["messages"] if m["role"] == "user"]


def test_no_provider_records_no_question_and_a_provider_failure_keeps_it(make_daemon):
    # README, "Talk to a model": a provider's failure (here the model it does not have, model_not_found)
    # leaves the question recorded; `no_provider` is a refusal before anything is recorded or sent
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
        sid = cli_json(d.home, "new", "--model", "echo-1")["id"]
        res = run_cli(d.home, "ask", sid, "--provider", "other", "refused first", "--json")
        assert res.returncode == 1 and '"no_provider"' in res.stdout, res
        assert _questions(d.home, sid) == [] and p.requests == []
        res = run_cli(d.home, "ask", sid, "--model", "nosuch", "asked, then failed", "--json")
        assert res.returncode == 1 and '"model_not_found"' in res.stdout, res
        assert _questions(d.home, sid) == ["asked, then failed"]
    finally:
        server.stop()


def test_every_file_a_daemon_writes_in_its_home_is_private(make_daemon):
    # docs/SECURITY.md, "Another local user", and README's list of a home's files: the home and every folder
    # in it 0700, every file 0600 (the database and its -wal and -shm, the keys, store-url, daemon.lock, the
    # logs, the OpenAI listener's key, the default folder store's objects and heads), the socket 0600
    d = make_daemon()
    write_config(d.home, openai_listen="127.0.0.1:0")
    os.chmod(os.path.join(d.home, "config.toml"), 0o600)  # (the user's own file: not the daemon's to set)
    d.start()
    c = d.client()
    sid = c.create_session(name="modes")["id"]
    c.append(sid, "user", "x")
    c.share(sid, write=True)
    c.sync(wait=True)
    seen = set()
    wide = []
    for root, dirs, files in os.walk(d.home):
        for name in dirs:
            path = os.path.join(root, name)
            if stat.S_IMODE(os.lstat(path).st_mode) != 0o700:
                wide.append((path, oct(stat.S_IMODE(os.lstat(path).st_mode))))
        for name in files:
            path = os.path.join(root, name)
            seen.add(os.path.relpath(path, d.home))
            if stat.S_IMODE(os.lstat(path).st_mode) != 0o600:
                wide.append((path, oct(stat.S_IMODE(os.lstat(path).st_mode))))
    assert stat.S_IMODE(os.stat(d.home).st_mode) == 0o700
    for name in ("sessions.db", "store-url", "daemon.lock", "openai-api-key", "keys/device.key"):
        assert name in seen, (name, sorted(seen))
    assert any(n.startswith("logs/") for n in seen) and any(n.startswith("store/objects/") for n in seen)
    assert wide == []


def test_the_openapi_document_names_the_statuses_readme_lists(daemon):
    # README's errors: 413 `too_large` for a body over 256 MiB (any route that reads one) and 503 for
    # `database_lost` as well as a store's failure; the OpenAPI document, which apps and the fuzzers read,
    # listed neither 413 nor the database
    doc = daemon.client().openapi()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
    answers = doc["paths"]["/v1/sessions/{id}/messages"]["post"]["responses"]
    assert "database_lost" in answers["503"]["description"], answers["503"]
    # and, as README's errors say, what a `store` refusal's details hold (an app reads them to retry or to tell
    # its user): the document named none
    said = doc["paths"]["/v1/import"]["post"]["responses"]["503"]["description"]
    for key in ("details.store", "failure", "retry", "retry_after", "owner"):
        assert key in said, (key, said)


def _code_bytes(code: str) -> bytes:
    data = code[len("sessiond1") :].upper()
    return base64.b32decode(data + "=" * ((-len(data)) % 8))


def test_what_a_share_code_carries_read_only_read_write_and_behind_a_passphrase(daemon):
    # docs/SECURITY.md, "What a share code grants": the session's id and key, the announce key and hints;
    # the write secret only in a read-write code; without a passphrase all of it in clear, with one none of it
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "x")
    keys = os.path.join(daemon.home, "keys", "sessions")
    ro = c.share(sid)["code"]  # (the session's key file is written by then: a new session's by a worker thread)
    with open(os.path.join(keys, sid + ".key"), "rb") as f:
        key_file = f.read()
    rw = c.share(sid, write=True)["code"]
    with open(os.path.join(keys, sid + ".write"), "rb") as f:
        write_file = f.read()
    read = sharecode.decode(ro)
    assert read.session_id == sid and read.session_key in key_file and read.write_secret is None
    assert read.capability == "read-only"
    wrote = sharecode.decode(rw)
    assert wrote.session_key == read.session_key and wrote.write_secret and wrote.write_secret in write_file
    assert wrote.write_secret not in _code_bytes(ro)  # not carried, however encoded
    assert read.session_key in _code_bytes(ro) and wrote.write_secret in _code_bytes(rw)  # in clear
    locked = c.share(sid, write=True, passphrase="correct horse")["code"]
    raw = _code_bytes(locked)
    assert read.session_key not in raw and wrote.write_secret not in raw and sid.encode() not in raw
    with pytest.raises(sharecode.ShareCodeError) as e:
        sharecode.decode(locked)
    assert e.value.kind == "passphrase_required"
    opened = sharecode.decode(locked, "correct horse")
    assert (opened.session_key, opened.write_secret) == (read.session_key, wrote.write_secret)


def test_gc_dry_run_says_what_it_would_do_not_that_it_did(daemon):
    # `gc --dry-run` printed each store's line as a real run's, "(deleted)", while it deleted nothing
    c = daemon.client()
    sid = c.create_session()["id"]
    for i in range(3):  # each push moves the head on: the manifest it left is let go
        c.append(sid, "user", f"m{i}")
        c.sync(sid, wait=True)
    store = os.path.join(daemon.home, "store", "objects")
    before = sorted(os.path.join(r, f) for r, _, fs in os.walk(store) for f in fs)
    out = run_cli(daemon.home, "gc", "--dry-run", "--grace", "0", check=True).stdout
    assert out.startswith("would free ") and "would be deleted" in out and "(deleted)" not in out, out
    assert sorted(os.path.join(r, f) for r, _, fs in os.walk(store) for f in fs) == before
    out = run_cli(daemon.home, "gc", "--grace", "0", check=True).stdout
    assert out.startswith("freed ") and "(deleted)" in out, out
