"""The socket API answered 409 `conflict` for many different refusals (an id taken, a session paused, one ended,
a read-only import, a chat's name taken, ...), and an app could tell them apart only by parsing the message. Every
such refusal now also carries a machine-readable `details.reason` (the code stays `conflict`, so an app that reads
it is not broken), each reason documented in api/errors.py's CONFLICT_REASONS, the README's errors and the
OpenAPI document, and exposed typed by the Python client as `ApiError.reason`."""

from __future__ import annotations

import ast
import json
import os
import typing

import pytest

from sessiond.api.errors import CONFLICT_REASONS, ConflictReason
from sessiond.client import ApiError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("api", "cli", "client", "daemon", "relay", "storage", "stores", "sync")


def _refused(call) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    return e.value


def _reason(call) -> str | None:
    err = _refused(call)
    assert err.status == 409 and err.code == "conflict", (err.status, err.code, err.message)
    assert err.details.get("reason") == err.reason, err.details
    return err.reason


def _conflicts() -> list[tuple[str, int, ast.Call]]:
    """Every place in the package that makes a refusal answered as `conflict`: a Conflict or NoLongerExpired made,
    or the sync engine's ImportError_ of kind "conflict"."""
    found = []
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if not isinstance(node, ast.Call):
                        continue
                    fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                    kind = node.args[0] if node.args else None
                    if fn in ("Conflict", "NoLongerExpired") or (
                        fn == "ImportError_" and isinstance(kind, ast.Constant) and kind.value == "conflict"
                    ):
                        found.append((os.path.relpath(path, ROOT), node.lineno, node))
    return found


def test_every_conflict_raised_names_a_documented_reason():
    places = _conflicts()
    assert len(places) >= 20, places  # (the scan finds them: a rename of the classes would find none)
    missing = []
    for path, line, call in places:
        given = [k.value for k in call.keywords if k.arg == "reason"]
        if len(given) != 1:
            missing.append(f"{path}:{line}: no reason=")
            continue
        values = (
            [given[0].value]
            if isinstance(given[0], ast.Constant)
            else [v.value for v in ast.walk(given[0]) if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        )
        if not values or any(v not in CONFLICT_REASONS for v in values):
            missing.append(f"{path}:{line}: reason {values} not in CONFLICT_REASONS")
    assert not missing, missing
    assert set(typing.get_args(ConflictReason)) == set(CONFLICT_REASONS)


def test_the_reasons_are_documented_in_the_readme_and_the_openapi_document(daemon):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert all(f"`{r}`" in readme for r in CONFLICT_REASONS), [r for r in CONFLICT_REASONS if f"`{r}`" not in readme]
    doc = daemon.client().openapi()
    conflict = doc["paths"]["/v1/sessions"]["post"]["responses"]["409"]
    assert all(r in conflict["description"] for r in CONFLICT_REASONS), conflict["description"]
    details = doc["components"]["schemas"]["ErrorDetails"]
    assert set(CONFLICT_REASONS) <= set(details["properties"]["reason"]["enum"]), details  # (and other codes')


def test_each_conflict_of_the_api_answers_its_reason(daemon):
    c = daemon.client()
    c.create_session(id="dup", initial_messages=[{"role": "user", "content": "hi"}])
    assert _reason(lambda: c.create_session(id="dup")) == "exists"
    assert _reason(lambda: c.create_session(id="DUP")) == "case_twin"

    c.create_chat("dup", id="side", name="aside")
    assert _reason(lambda: c.create_chat("dup", id="side")) == "exists"
    assert _reason(lambda: c.create_chat("dup", id="other", name="aside")) == "name_taken"
    assert _reason(lambda: c.update_chat("dup", "side", name="main")) == "name_taken"

    c.pause("dup")
    assert _reason(lambda: c.append("dup", "user", "while paused")) == "paused"
    c.resume("dup")
    c.end("dup")
    assert _reason(lambda: c.append("dup", "user", "after the end")) == "ended"
    assert _reason(lambda: c.pause("dup")) == "ended"
    assert _reason(lambda: c.resume("dup")) == "ended"
    assert _reason(lambda: c.update_session("dup", system_prompt="new")) == "ended"
    assert _reason(lambda: c.create_chat("dup", id="late")) == "ended"

    # a session file holding a session of an id here: imported over nothing
    exported = c.export("dup", "json")
    assert _reason(lambda: c.import_file(exported, "json")) == "exists"


def test_a_read_only_import_refuses_a_change_with_its_reason(make_daemon, store_dir):
    a = make_daemon("file://" + store_dir).start()
    b = make_daemon("file://" + store_dir).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
    cb.import_code(ca.share(sid)["code"])
    assert cb.get_session(sid)["access"] == "read"
    assert _reason(lambda: cb.append(sid, "user", "from a reader")) == "read_only"
    assert _reason(lambda: cb.update_session(sid, name="renamed")) == "read_only"


def test_a_read_only_import_refuses_a_share_a_rekey_an_unshare_and_a_checkpoint_as_read_only(make_daemon, store_dir):
    """A device that imported a session with a read-only code was refused an append or a change as 409 `conflict`,
    reason `read_only`, but a share for writing, a rekey, an unshare and a checkpoint with another 409 code,
    `read_only`, which the README's errors do not name and which carries no reason: an app acting on
    `ApiError.reason == "read_only"` (ask for a read-write code) missed those four. Each is the same refusal now,
    with the way on in API terms (`details.api`), and changes nothing."""
    from conftest import run_cli

    a = make_daemon("file://" + store_dir).start()
    b = make_daemon("file://" + store_dir).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
    cb.import_code(ca.share(sid)["code"])
    before = cb.get_session(sid)
    for what, call in (
        ("share --write", lambda: cb.share(sid, write=True)),
        ("rekey", lambda: cb.rekey(sid)),
        ("unshare", lambda: cb.unshare(sid)),
        ("checkpoint", lambda: cb.checkpoint(sid)),
    ):
        err = _refused(call)
        assert (err.status, err.code, err.reason) == (409, "conflict", "read_only"), (what, err.code, err.message)
        assert "read-only" in err.message and err.details.get("api"), (what, err.message, err.details)
    after = cb.get_session(sid)
    assert after["access"] == "read" and after.get("messages") == before.get("messages"), after
    assert cb.shares(sid)["shares"] == [] and cb.checkpoints(sid)["checkpoints"] == [], cb.checkpoints(sid)
    res = run_cli(b.home, "rekey", sid, "--json")
    err = json.loads(res.stdout)["error"]
    assert res.returncode == 1 and err["code"] == "conflict" and err["details"]["reason"] == "read_only", res


def test_the_client_reason_is_none_for_other_errors(daemon):
    c = daemon.client()
    err = _refused(lambda: c.get_session("none-such"))
    assert err.code == "not_found" and err.reason is None
    body = json.loads(json.dumps({"code": "conflict", "message": "m", "details": {"reason": "paused"}}))
    assert ApiError(409, body["code"], body["message"], body["details"]).reason == "paused"


def test_a_session_made_under_the_id_of_one_being_imported_is_refused_as_importing(make_daemon, tmp_path):
    """A session file's session is written hidden while its import runs (not listed, 404 by its id). A new
    session (`POST /v1/sessions`, a clone's or a fork's `id`) under that id meanwhile was refused as `exists`,
    "a session with id X already exists": an app that then read or deleted X was answered 404, and the reason
    named none of what to do (wait for that import: one that fails frees the id). It is `importing` now, as
    an import of a share code of that id is refused meanwhile, and nothing is made."""
    import threading

    from conftest import wait_for

    flag = tmp_path / "paused"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"import-file.batch:{flag}"}).start()
    c = d.client()
    sid = c.create_session(id="filed", initial_messages=[{"role": "user", "content": "hi"}])["id"]
    c.append(sid, "user", "in the file")
    exported = c.export(sid, "json")
    c.delete_session(sid)
    other = c.create_session(name="other")["id"]
    done: dict = {}

    def imported() -> None:
        with d.client() as ci:
            done["res"] = ci.import_file(exported, "json")

    t = threading.Thread(target=imported)
    t.start()
    try:
        wait_for(flag.exists, timeout=60, interval=0.01, what="the file's session written, its import paused")
        assert _refused(lambda: c.get_session(sid)).code == "not_found"  # hidden while its import runs
        for make in (
            lambda: c.create_session(id=sid),
            lambda: c.clone(other, new_id=sid),
        ):
            err = _refused(make)
            assert (err.status, err.code, err.reason) == (409, "conflict", "importing"), (err.reason, err.message)
            assert "being imported" in err.message, err.message
    finally:
        flag.unlink()
        t.join(60)
    assert [s["id"] for s in done["res"]["sessions"]] == [sid], done
    assert [m["content"] for m in c.messages(sid)["messages"]] == ["in the file"]  # (its initial message apart)
