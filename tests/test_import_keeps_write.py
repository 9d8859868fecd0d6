"""A read-only code imported on a device that already writes the session leaves it a writer (`show`:
access write), but the import answered `capability: read-only` and the CLI said "imported ID (read-only,
already here: brought up to date)", as if this device could no longer write it. The answer now says the
access this device has after the import."""

from __future__ import annotations

from conftest import follower_pair, run_cli


def test_a_read_only_code_over_a_writer_s_copy_says_it_still_writes(store_dir, tmp_path):
    a, b, sid = follower_pair("file://" + store_dir, tmp_path)  # B imported it read-write
    try:
        ca, cb = a.client(), b.client()
        res = cb.import_code(ca.share(sid)["code"])  # a read-only code of it, imported again
        assert res["already"], res
        assert cb.get_session(sid)["access"] == "write"
        assert res["capability"] == "read-write", res
        said = run_cli(b.home, "import", input=ca.share(sid)["code"] + "\n", check=True).stderr
        assert "(read-write, already here" in said, said
        cb.append(sid, "user", "still writes")  # and it does
    finally:
        a.stop()
        b.stop()
