"""POST /v1/import's refusals named the CLI's options as their way on: a code with a passphrase, given none,
was refused "give it with --passphrase-file", and a code whose session neither this device's store nor the
code's hints hold, "import again with --store URL". An app on the socket API gives `passphrase` and `store` in
the request: each refusal names the field and carries the request in API terms (`details.api`), as the API's
other refusals do (the passphrase's names the field alone, and `sessiond import` says its option instead; the
store's names the CLI's options beside it). Nothing is imported."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
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
    """Each surface names its own way to give the passphrase: the API its request's field (not the CLI's option,
    which an app has no use for), the CLI its option (not the API's field, which a user of it cannot give). The
    message said both in one sentence, "give it (the import's `passphrase`; `--passphrase-file` of ...)"."""
    c = daemon.client()
    sid = c.create_session(name="locked")["id"]
    code = c.share(sid, passphrase="correct horse")["code"]
    c.delete_session(sid, force=True)
    with pytest.raises(ApiError) as exc:
        c.import_code(code)
    err = exc.value
    assert err.code == "passphrase_required", err
    assert "`passphrase`" in err.message and "--passphrase" not in err.message, err.message
    assert err.details["api"] == ['POST /v1/import {"code": CODE, "passphrase": PASSPHRASE}'], err.details

    res = run_cli(daemon.home, "import", input=code)
    assert res.returncode == 1 and "--passphrase-file" in res.stderr and "`passphrase`" not in res.stderr, res.stderr
    res = run_cli(daemon.home, "import", "--json", input=code)
    out = json.loads(res.stdout)["error"]
    assert out["code"] == "passphrase_required" and "--passphrase-file" in out["message"], out
    assert "`passphrase`" not in out["message"], out
    assert c.list_sessions()["sessions"] == []
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
