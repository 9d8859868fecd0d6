"""POST /v1/import's refusals named the CLI's options as their way on: a code with a passphrase, given none,
was refused "give it with --passphrase-file", and a code whose session neither this device's store nor the
code's hints hold, "import again with --store URL". An app on the socket API gives `passphrase` and `store` in
the request: each refusal names the field (beside the CLI's option) and carries the request in API terms
(`details.api`), as the API's other refusals do. Nothing is imported."""

from __future__ import annotations

import os

import pytest

from sessiond.client import ApiError


def _refused_naming(c, code: str, kind: str, field: str, option: str, api: str) -> None:
    """The import of `code` refused as `kind`, naming the request's `field` and the CLI's `option`, with the
    request in API terms; nothing imported."""
    with pytest.raises(ApiError) as exc:
        c.import_code(code)
    err = exc.value
    assert err.code == kind, err
    assert f"`{field}`" in err.message and option in err.message, err.message
    assert err.details["api"] == [api], err.details
    assert c.list_sessions()["sessions"] == []


def test_a_code_with_a_passphrase_given_none_names_the_field(daemon):
    c = daemon.client()
    sid = c.create_session(name="locked")["id"]
    code = c.share(sid, passphrase="correct horse")["code"]
    c.delete_session(sid, force=True)
    api = 'POST /v1/import {"code": CODE, "passphrase": PASSPHRASE}'
    _refused_naming(c, code, "passphrase_required", "passphrase", "--passphrase-file", api)
    assert c.import_code(code, "correct horse")["session"] == sid  # the way on, followed


def test_a_session_no_store_known_holds_names_the_field(make_daemon, tmp_path):
    shared, other = tmp_path / "shared", tmp_path / "other"
    a = make_daemon(f"file://{shared}").start()
    b = make_daemon(f"file://{other}").start()
    sid = a.client().create_session(name="away")["id"]
    a.client().append(sid, "user", "hello")
    code = a.client().share(sid)["code"]
    a.stop()
    os.rename(shared, tmp_path / "moved")  # the code's hint, a folder, is not there any more
    c = b.client()
    _refused_naming(c, code, "store_needed", "store", "--store", 'POST /v1/import {"code": CODE, "store": STORE_URL}')
    assert c.import_code(code, store=f"file://{tmp_path / 'moved'}")["session"] == sid  # the way on, followed
