"""An import of a share code whose members slot holds a rekey notice leaving this device out checks the
notice (its author's head, the other members' heads: rekeyproof.check_exclusion) before it says the code
was revoked. A notice another member's head contradicts (two devices claim to have rekeyed the slot), or
one met by a member's damaged log, was said to be "this share code was revoked ... ask for a new code": a
revocation, though no rekey is known to have happened. Now the import says what check_exclusion found
(kind rekey_conflict or damaged, with its message), through the real CLI. Real daemons, one file://
store; the rekeys are writers' own keys used on the store (test_rekey_forgery._forge), as a modified
sessiond would."""

from __future__ import annotations

import asyncio
import glob
import json
import os

from conftest import cli_json, run_cli
from sessiond.stores.file import FileStore
from sessiond.sync.heads import manifest_hash_of
from sessiond.sync.keys import KeyStore
from test_rekey_forgery import _device, _forge, _three_writers


def _refused(make_daemon, store_dir, code) -> tuple[str, str]:
    """A new device's `sessiond import --json` of `code`, refused: (error code, stderr). It holds nothing."""
    n = make_daemon("file://" + store_dir).start()
    res = run_cli(n.home, "import", "--json", input=code)
    assert res.returncode != 0, res
    assert cli_json(n.home, "status")["counts"]["sessions"] == 0
    return json.loads(res.stdout)["error"]["code"], res.stderr


def _rekeyed_by_d(make_daemon, store_dir):
    """Writers R, K and D (all stopped) of a session, a read-only code of it made by R, and D's rekey of it
    after that (claimed in D's head, boxed to every member): (r, k, sid, code, device ids by letter)."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    ids = {"r": _device(r), "k": _device(k), "d": _device(d)}
    code = cli_json(r.home, "share", sid)["code"]
    for dev in (r, k, d):
        dev.stop()
    asyncio.run(_forge(store_dir, d.home, sid, author=ids["d"], claim=True, leave_out="no-such-device"))
    return r, k, sid, code, ids


def test_a_code_of_a_slot_whose_notice_another_member_contradicts_is_refused_as_a_conflict(make_daemon, store_dir):
    _r, k, sid, code, ids = _rekeyed_by_d(make_daemon, store_dir)
    k_id, d_id = ids["k"], ids["d"]
    # K writes over D's notice one of its own, which it claims too: two members' heads claim a rekey of the slot
    asyncio.run(_forge(store_dir, k.home, sid, author=k_id, claim=True))
    kind, err = _refused(make_daemon, store_dir, code)
    assert kind == "rekey_conflict", (kind, err)
    assert "revoked" not in err, err
    assert f"names device {k_id}" in err and f"device(s) {d_id} claim another rekey" in err, err
    # said to a device that is importing: it has no key or access of the session to keep (the pull's
    # wording), nothing was imported, and the way on is a new code from a device that took a rekey
    assert "keeps its key" not in err and "its access" not in err, err
    assert f"session {sid} cannot be imported with this code (nothing was imported)" in err, err
    assert f"new share code of {sid}" in err and "`sessiond import" in err, err


def test_a_code_of_a_slot_whose_notice_meets_a_damaged_members_log_is_refused_as_damaged(make_daemon, store_dir):
    r, _k, sid, code, ids = _rekeyed_by_d(make_daemon, store_dir)
    r_id = ids["r"]
    # R's manifest (the object its head points to) damaged in the store
    r_pk = KeyStore(os.path.join(r.home, "keys")).head_pk(sid)
    head = asyncio.run(FileStore(store_dir, create=False).get_head(r_pk))
    assert head is not None
    (path,) = glob.glob(os.path.join(store_dir, "**", manifest_hash_of(head).hex()), recursive=True)
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)
    kind, err = _refused(make_daemon, store_dir, code)
    assert kind == "damaged", (kind, err)
    assert "revoked" not in err and f"the log of device {r_id} of session {sid} is damaged" in err, err
