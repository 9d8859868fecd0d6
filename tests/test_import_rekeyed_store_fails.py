"""An import of a share code whose session was rekeyed after it was made checks the rekey notice's
author (its head, read from the store) before it says the code was revoked. A store that fails during
that read said nothing of the author: the import said "this share code was revoked" (the wrong cause,
and no retry would help by it); now it says the store's failure (kind store, what to do), and the same
code, tried again with the store back, is refused as revoked."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


def test_a_store_failing_while_the_rekey_s_author_is_read_is_not_a_revoked_code(make_daemon, portal):
    p, url = portal
    a = make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="rekeyed")["id"]
    ca.append(sid, "user", "before the rekey")
    assert ca.sync(sid, wait=True, timeout=10)["complete"]
    heads = set(p.registry)  # A's head alone: no members slot before a share
    read_code = ca.share(sid)["code"]
    ca.rekey(sid)
    d = make_daemon(url).start()
    cd = d.client()

    p.faults.fail_heads = heads  # the store fails reading the author's head
    with pytest.raises(ApiError) as e:
        cd.import_code(read_code)
    assert e.value.code == "store", (e.value.code, str(e.value))
    assert "revoked" not in str(e.value) and url in str(e.value) and "try again" in str(e.value), str(e.value)
    assert cd.status()["counts"]["sessions"] == 0

    p.faults.fail_heads = set()  # the store back: the code is refused as revoked
    with pytest.raises(ApiError) as e:
        cd.import_code(read_code)
    assert e.value.code == "revoked", (e.value.code, str(e.value))
