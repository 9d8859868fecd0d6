"""POST /v1/import's refusals named the CLI's options as their way on: a code with a passphrase, given none,
was refused "give it with --passphrase-file", and a code whose session neither this device's store nor the
code's hints hold, "import again with --store URL". An app on the socket API gives `passphrase` and `store` in
the request: each refusal names the field and carries the request in API terms (`details.api`), as the API's
other refusals do; each names the field alone, and `sessiond import` says its options instead. Nothing is
imported."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from sessiond.client import ApiError


def _each_surface_names_its_own(d, code: str, kind: str, field: str, option: str, api: str) -> str:
    """The import of `code` refused as `kind`: through the API naming the request's `field` and not the CLI's
    `option` (with the request in API terms, `details.api`); through `sessiond import` (and its --json) naming
    `option` and not `field`, its code and details kept. Nothing imported. The CLI's message."""
    c = d.client()
    with pytest.raises(ApiError) as exc:
        c.import_code(code)
    err = exc.value
    assert err.code == kind, err
    assert f"`{field}`" in err.message and f"--{field}" not in err.message, err.message
    assert err.details["api"] == [api], err.details
    res = run_cli(d.home, "import", input=code)
    assert res.returncode == 1 and option in res.stderr and f"`{field}`" not in res.stderr, res.stderr
    res = run_cli(d.home, "import", "--json", input=code)
    out = json.loads(res.stdout)["error"]
    assert out["code"] == kind and option in out["message"] and f"`{field}`" not in out["message"], out
    assert out["details"]["api"] == [api], out  # (its details kept)
    assert c.list_sessions()["sessions"] == []
    return out["message"]


def test_a_code_with_a_passphrase_given_none_names_the_field(daemon):
    """Each surface names its own way to give the passphrase: the API its request's field (not the CLI's option,
    which an app has no use for), the CLI its option (not the API's field, which a user of it cannot give). The
    message said both in one sentence, "give it (the import's `passphrase`; `--passphrase-file` of ...)"."""
    c = daemon.client()
    sid = c.create_session(name="locked")["id"]
    code = c.share(sid, passphrase="correct horse")["code"]
    c.delete_session(sid, force=True)
    api = 'POST /v1/import {"code": CODE, "passphrase": PASSPHRASE}'
    _each_surface_names_its_own(daemon, code, "passphrase_required", "passphrase", "--passphrase-file", api)
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
    # main: "(the import's `store`; `--store-file` or `--store` of `sessiond import`)" to both: an app read of CLI
    # options, a user of the CLI of the API's field
    api = 'POST /v1/import {"code": CODE, "store": STORE_URL}'
    said = _each_surface_names_its_own(b, code, "store_needed", "store", "--store URL", api)
    assert "--store-file FILE" in said and f"session {sid} is shared through" in said, said  # (the rest kept)
    c = b.client()
    assert c.import_code(code, store=f"file://{tmp_path / 'moved'}")["session"] == sid  # the way on, followed


@pytest.mark.parametrize("store", ["shared", "./shared", "file:shared"])
def test_a_relative_folder_given_by_an_app_is_refused_naming_the_field(daemon, store):
    """An app's `store` a relative folder's path was made absolute from the daemon's own folder (where it was started,
    `/` under systemd), which is not the app's: another folder, or none, and the refusal named a path the app never
    meant. It is refused naming the field and the absolute path it needs (the CLI makes its own absolute); nothing
    is imported."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    code = c.share(sid)["code"]
    c.delete_session(sid, force=True)
    with pytest.raises(ApiError) as exc:
        c.import_code(code, store=store)
    err = exc.value
    assert (err.status, err.code) == (422, "invalid"), err
    assert "`store`" in err.message and "absolute" in err.message, err.message
    assert c.list_sessions()["sessions"] == []
