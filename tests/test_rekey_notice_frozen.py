"""A rekey's own freezes reach the devices that take its notice even when its author never writes the new slot.

A drops C: it freezes C's log and publishes its notice, then is killed before it writes the new members slot (or
its device is lost). B takes the notice and writes the new slot; then B, finding A gone dark, drops A. A freeze of
C's log lived only in A's rekey record (and, resumed, A could no longer write a slot holding B's notice): no device
ever froze C's log, so a device importing B's code never had what C wrote, which B shows (the devices diverged for
good). The notice's members object carries the frozen logs the new slot will hold (docs/FORMATS.md §6)."""

from __future__ import annotations

import os
import subprocess

from conftest import cli_json, popen_cli, wait_for
from killing import session_key, shared_writers


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid)["messages"]]


def test_a_drop_whose_author_dies_after_its_notice_still_carries_the_dropped_log(make_daemon, store_dir, tmp_path):
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, "noticefrozen")
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid, write=True)["code"])
    c.client().append(sid, "user", "from c")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    a_id, c_id = (cli_json(d.home, "status")["device_id"] for d in (a, c))

    def both_read_c() -> bool:
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
        return all("from c" in _contents(d, sid) for d in (a, b))

    wait_for(both_read_c, timeout=30, what="A and B read C's log")
    old = session_key(b, sid)

    flag = str(tmp_path / "held")
    a.env["SESSIOND_TEST_PAUSE"] = f"rekey.published:{flag}"
    a.restart()
    rekey = popen_cli(["rekey", sid, "--drop", c_id, "--home", a.home], env=dict(os.environ), stdout=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=30, what="A held with its notice out, no new slot")
        a.kill()  # the notice is out; A's freeze of C is in its rekey record only
    finally:
        rekey.kill()
        rekey.wait()
        rekey.stdout.close()

    def b_took() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return session_key(b, sid) != old

    wait_for(b_took, timeout=30, what="B takes A's rekey")
    b.client().rekey(sid, drop=[a_id])  # A went dark: B drops it

    a.env.pop("SESSIOND_TEST_PAUSE")
    a.start()  # resumed, A finishes its rekey on a slot that now holds B's notice: it is dropped

    def a_told() -> bool:
        a.client().sync(sid, wait=True, timeout=10)
        return a.client().get_session(sid)["access"] == "revoked"

    wait_for(a_told, timeout=30, what="A learns B dropped it")

    e = make_daemon(url).start()  # a device importing B's code now holds what B holds, C's message included
    e.client().import_code(b.client().share(sid, write=True)["code"])

    def e_has_c() -> bool:
        e.client().sync(sid, wait=True, timeout=10)
        return "from c" in _contents(e, sid)

    assert "from c" in _contents(b, sid)
    wait_for(e_has_c, timeout=30, what="the import from B holds C's message, as B does")
