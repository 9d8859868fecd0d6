"""Sharing between real daemons in separate homes over one file:// store."""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import appends_meanwhile, cli_json, run_cli, wait_for
from sessiond.client import ApiError


@pytest.fixture
def pair(make_daemon, store_dir):
    url = "file://" + store_dir
    a = make_daemon(url).start()
    b = make_daemon(url).start()
    return a, b


def contents(d, sid, **kw):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=100_000, **kw)["messages"]]


def ids(d, sid):
    return [m["id"] for m in d.client().messages(sid, limit=100_000, all_chats=True)["messages"]]


def session_count(d):
    return d.client().status()["counts"]["sessions"]


def test_read_only_share_import_resume_follow(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    s = ca.create_session(
        name="shared",
        system_prompt="You are a pirate.",
        model="m-7",
        user="ann",
        settings={"temperature": 0.7, "max_tokens": 100},
        tags=["t1"],
        initial_messages=[{"role": "user", "content": "ahoy"}],
        metadata={"x": [1, 2]},
    )
    sid = s["id"]
    ca.append_many(sid, [{"role": "user", "content": f"q{i}"} for i in range(20)])
    side = ca.create_chat(sid, name="side", system_prompt="other prompt")
    ca.append(sid, "user", "in the side chat", chat=side["id"])
    code = ca.share(sid)
    assert code["capability"] == "read-only" and code["code"].startswith("sessiond1")
    res = cb.import_code(code["code"])
    assert res["session"] == sid and res["capability"] == "read-only"
    sa, sb = ca.get_session(sid), cb.get_session(sid)
    for k in (
        "name",
        "system_prompt",
        "model",
        "user",
        "settings",
        "tags",
        "initial_messages",
        "metadata",
        "current_chat",
        "status",
        "message_count",
        "chat_count",
    ):
        assert sa[k] == sb[k], k
    assert sb["access"] == "read"
    assert ids(a, sid) == ids(b, sid)
    assert cb.list_chats(sid) == ca.list_chats(sid)
    with pytest.raises(ApiError) as e:
        cb.append(sid, "user", "not allowed")
    assert e.value.status == 409 and "read-only" in e.value.message
    # the way out is a command for the device that shares it, so not given B's --home, and naming the session
    # (main: "ask for a code made with `sessiond share --home B --write`", which B cannot do)
    for args in (["add", sid, "--role", "user", "no"], ["pause", sid], ["set", sid, "--name", "no"]):
        res = run_cli(b.home, *args)
        assert res.returncode == 1 and f"`sessiond share {sid} --write` on " in res.stderr, (args, res.stderr)
        assert "`sessiond share --home" not in res.stderr and f"`sessiond import --home {b.home}` here" in res.stderr
    # live: A's new messages reach B by themselves
    ca.append(sid, "assistant", "arr, live")
    wait_for(lambda: contents(b, sid)[-1:] == [("assistant", "arr, live")], timeout=10)
    ca.pause(sid)
    wait_for(lambda: cb.get_session(sid)["status"] == "paused", timeout=10)
    # importing again changes nothing
    again = cb.import_code(code["code"])
    assert again["already"] and ids(a, sid) == ids(b, sid)
    assert session_count(b) == 1
    assert cli_json(b.home, "verify")["ok"]


def test_read_write_both_ways(pair):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="rw")["id"]
    ca.append(sid, "user", "from A")
    cb.import_code(ca.share(sid, write=True)["code"])
    assert cb.get_session(sid)["access"] == "write"
    cb.append(sid, "assistant", "from B")
    wait_for(lambda: ("assistant", "from B") in contents(a, sid), timeout=10)
    ca.append(sid, "user", "A again")
    wait_for(lambda: ("user", "A again") in contents(b, sid), timeout=10)
    cb.create_chat(sid, name="b-chat")
    cb.update_session(sid, name="renamed by B")
    wait_for(lambda: ca.get_session(sid)["name"] == "renamed by B" and len(ca.list_chats(sid)["chats"]) == 2)
    ca.sync(wait=True)
    cb.sync(wait=True)
    assert ids(a, sid) == ids(b, sid)
    for d in (a, b):
        rep = cli_json(d.home, "verify")
        assert rep["ok"] and rep["sessions"][0]["devices"] == 2, rep


def test_three_devices_converge(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b, c = (make_daemon(url).start() for _ in range(3))
    sid = a.client().create_session()["id"]
    code = a.client().share(sid, write=True)["code"]
    b.client().import_code(code)
    c.client().import_code(code)
    for round_ in range(3):
        for name, d in (("a", a), ("b", b), ("c", c)):
            d.client().append_many(sid, [{"role": "user", "content": f"{name}{round_}.{i}"} for i in range(5)])

    def converged():
        for d in (a, b, c):
            d.client().sync(wait=True)
        got = [ids(d, sid) for d in (a, b, c)]
        return len(got[0]) == 45 and got[0] == got[1] == got[2]

    wait_for(converged, timeout=20, interval=0.3)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 4), st.booleans()), min_size=1, max_size=8))
def test_concurrent_appends_converge(pair, steps):
    a, b = pair
    sid = a.client().create_session()["id"]
    b.client().import_code(a.client().share(sid, write=True)["code"])
    sent = []
    for who, n, sync in steps:
        d = a if who == "a" else b
        msgs = [{"role": "user", "content": f"{who}-{len(sent) + i}"} for i in range(n)]
        d.client().append_many(sid, msgs)
        sent += [m["content"] for m in msgs]
        if sync:
            d.client().sync(wait=True)

    def same():
        a.client().sync(wait=True)
        b.client().sync(wait=True)
        x, y = contents(a, sid), contents(b, sid)
        return x == y and len(x) == len(sent)

    wait_for(same, timeout=20, interval=0.2)
    got = [c for _, c in contents(a, sid)]
    assert sorted(got) == sorted(sent)  # nothing lost, nothing duplicated
    a.client().sync(wait=True)  # re-syncing changes nothing
    assert [c for _, c in contents(b, sid)] == got


def test_passphrase_and_expiry(pair, tmp_path):
    a, b = pair
    sid = a.client().create_session()["id"]
    pf = tmp_path / "pass"
    pf.write_text("correct horse battery\n")
    res = run_cli(a.home, "share", sid, "--passphrase-file", str(pf), "--json")
    assert res.returncode == 0, res.stderr
    code = json.loads(res.stdout)["code"]
    assert "correct horse" not in res.stdout
    r = run_cli(b.home, "import", input=code)
    assert r.returncode == 1 and "passphrase" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("wrong wrong wrong\n")
    r = run_cli(b.home, "import", "--passphrase-file", str(bad), input=code)
    assert r.returncode == 1 and "wrong passphrase" in r.stderr
    # and what to do: the code is whole (its checksum held), the passphrase is what to check, exactly as sent
    assert "the code itself is whole" in r.stderr and "spaces and case count" in r.stderr, r.stderr
    assert session_count(b) == 0
    r = run_cli(b.home, "import", "--passphrase-file", str(pf), input=code)
    assert r.returncode == 0 and r.stdout.strip() == sid
    sid2 = a.client().create_session()["id"]
    shared = a.client().share(sid2, expires_in=1)
    code2 = shared["code"]
    # not a wait for an event: the scenario is a code past its expiry, and the clock (the same one the
    # importer reads) is what has to move on
    wait_for(lambda: time.time() > shared["expires_at"], timeout=5, what="the code's expiry")
    r = run_cli(b.home, "import", input=code2)
    assert r.returncode == 1 and "expired" in r.stderr
    assert session_count(b) == 1


def test_import_inputs_that_cannot_work_are_usage_errors(pair, tmp_path):
    """`import --passphrase-file -` with the code on standard input too: one input cannot hold both, and
    the error says so and what to do (it read the code, then said "the passphrase file is empty"; both
    lines in the pipe made the code "have characters that cannot appear in a code"). An empty --store was
    taken for no --store (and the error then said to give one)."""
    a, b = pair
    sid = a.client().create_session()["id"]
    pf = tmp_path / "pass"
    pf.write_text("correct horse battery\n")
    code = a.client().share(sid, passphrase="correct horse battery")["code"]
    for args, stdin in (
        (("--passphrase-file", "-"), code + "\n"),
        (("--passphrase-file", "-"), code + "\ncorrect horse battery\n"),
        (("--passphrase-file", "-", "--code-file", "-"), code + "\n"),
        (("--store-file", "-", "--passphrase-file", "-", "--code-file", str(pf)), "file:///nowhere\n"),
    ):
        r = run_cli(b.home, "import", *args, "--json", input=stdin)
        assert r.returncode == 2, (args, r.stderr)
        assert "standard input" in r.stderr and "--code-file" in r.stderr, (args, r.stderr)
        assert json.loads(r.stdout)["error"]["code"] == "usage", r.stdout
    assert session_count(b) == 0
    r = run_cli(b.home, "import", "--store", "", "--json", input=code)  # `--store "$URL"`, URL unset
    assert r.returncode == 2 and "--store is empty" in r.stderr, r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "usage", r.stdout
    cf = tmp_path / "code"
    cf.write_text(code + "\n")
    r = run_cli(b.home, "import", "--code-file", str(cf), "--passphrase-file", "-", input="correct horse battery\n")
    assert r.returncode == 0 and r.stdout.strip() == sid, r.stderr


def test_bad_codes_are_named_and_write_nothing(pair):
    a, b = pair
    sid = a.client().create_session()["id"]
    a.client().append(sid, "user", "x")
    code = a.client().share(sid)["code"]
    mid = len(code) // 2
    typo = code[:mid] + ("a" if code[mid] != "a" else "b") + code[mid + 1 :]
    for bad, expect in (
        (code[:-10], "truncated|checksum"),
        (typo, "checksum"),
        ("hello", "not a sessiond share code"),
        ("sessiond1!!", "characters"),
        ("", "required|share code"),
    ):
        r = run_cli(b.home, "import", input=bad)
        assert r.returncode != 0
        assert any(word in r.stderr for word in expect.split("|")), (bad, r.stderr)
    assert session_count(b) == 0
    assert not os.listdir(os.path.join(b.home, "keys", "sessions"))


def test_tampered_store_fails_import_and_writes_nothing(pair, store_dir):
    a, b = pair
    # one request, so one push: every object in the store is then one the import reads (a push of the
    # create alone, at once, would leave its manifest behind unreferenced by the newer head)
    sid = a.client().create_session(initial_messages=[{"role": "user", "content": f"m{i}"} for i in range(50)])["id"]
    code = a.client().share(sid)["code"]
    objects = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(store_dir, "objects")) for f in fs]
    for victim in objects:
        good = open(victim, "rb").read()
        bad = bytearray(good)
        bad[-1] ^= 1
        open(victim, "wb").write(bytes(bad))
        r = run_cli(b.home, "import", input=code)
        assert r.returncode == 1 and ("damaged" in r.stderr or "cannot be read" in r.stderr), r.stderr
        open(victim, "wb").write(good)
        assert session_count(b) == 0
    heads = os.path.join(store_dir, "heads")
    members = [f for f in os.listdir(heads) if not f.startswith(".")]
    # a head under a key the session does not know: swap the two head files' contents
    contents_ = {f: open(os.path.join(heads, f), "rb").read() for f in members}
    f1, f2 = members
    open(os.path.join(heads, f1), "wb").write(contents_[f2])
    open(os.path.join(heads, f2), "wb").write(contents_[f1])
    r = run_cli(b.home, "import", input=code)
    assert r.returncode == 1 and ("signed by another key" in r.stderr or "not validly signed" in r.stderr), r.stderr
    for f, data in contents_.items():
        open(os.path.join(heads, f), "wb").write(data)
    assert run_cli(b.home, "import", input=code).returncode == 0


def test_replayed_old_head_is_refused(pair, store_dir):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session()["id"]
    ca.append(sid, "user", "one")
    cb.import_code(ca.share(sid)["code"])
    heads = os.path.join(store_dir, "heads")
    a_head = [os.path.join(heads, f) for f in os.listdir(heads) if not f.startswith(".")]
    snapshot = {p: open(p, "rb").read() for p in a_head}
    ca.append(sid, "user", "two")
    ca.sync(wait=True)
    wait_for(lambda: len(contents(b, sid)) == 2)
    for p, data in snapshot.items():  # the store rolls A's head back
        open(p, "wb").write(data)
    before = contents(b, sid)
    res = cb.sync(sid, wait=True, timeout=5)
    assert not res["complete"] and "replayed" in res["sessions"][sid]["pull_error"], res
    assert contents(b, sid) == before == [("user", "one"), ("user", "two")]  # B never goes backwards
    rep = run_cli(b.home, "verify", sid)
    assert rep.returncode == 1 and "replayed" in rep.stdout
    assert "rolled back" in run_cli(a.home, "verify", sid).stdout
    ca.append(sid, "user", "three")  # A's next push publishes above the replayed head, and B follows again
    wait_for(lambda: contents(b, sid)[-1] == ("user", "three"), timeout=10)


def test_rekey_keeps_writers_and_locks_out_old_codes(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b, c, d = (make_daemon(url).start() for _ in range(4))
    ca, cb, cc, cd = a.client(), b.client(), c.client(), d.client()
    sid = ca.create_session(name="secret plans")["id"]
    ca.append(sid, "user", "before the rekey")
    write_code = ca.share(sid, write=True)["code"]
    read_code = ca.share(sid)["code"]
    cb.import_code(write_code)
    cb.append(sid, "assistant", "B was here")  # B becomes a member (a writer)
    cb.sync(wait=True)
    cc.import_code(read_code)
    wait_for(lambda: len(contents(c, sid)) == 2)
    res = ca.rekey(sid)
    assert res["kept"] == [cb.status()["device_id"]]
    ca.append(sid, "user", "after the rekey")
    # B (kept) follows and can still write; C (read-only follower) gets nothing new
    wait_for(lambda: ("user", "after the rekey") in contents(b, sid), timeout=15)
    cb.append(sid, "assistant", "B after the rekey")
    wait_for(lambda: ("assistant", "B after the rekey") in contents(a, sid), timeout=15)
    st = cc.sync(sid, wait=True, timeout=5)  # C has looked (a whole pull) and ...
    assert "rekeyed" in st["sessions"][sid].get("pull_error", ""), st
    assert ("user", "after the rekey") not in contents(c, sid)  # ... found nothing it can read
    # a code made before the rekey no longer imports
    with pytest.raises(ApiError) as e:
        cd.import_code(read_code)
    assert e.value.code == "revoked"
    assert session_count(d) == 0
    # a new code does, with the whole history
    cd.import_code(ca.share(sid)["code"])
    assert [x for _, x in contents(d, sid)] == [x for _, x in contents(a, sid)]
    for dev in (a, b, d):
        assert cli_json(dev.home, "verify")["ok"], dev.home


def test_a_message_larger_than_an_object_travels_in_parts(pair, store_dir):
    a, b = pair
    ca, cb = a.client(), b.client()
    sid = ca.create_session()["id"]
    big = "".join(f"{i} l\u00e9gende \u4e2d " for i in range(300_000))  # ~5.4 MB of UTF-8, non-ASCII
    ca.append(sid, "user", "before")
    ca.append(sid, "assistant", big)
    ca.append(sid, "user", "after")
    ca.sync(sid, wait=True)
    objects = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(store_dir, "objects")) for f in fs]
    assert max(map(os.path.getsize, objects)) <= 1 << 20  # every object stays a valid IPFS block
    assert cli_json(a.home, "verify")["ok"]
    cb.import_code(ca.share(sid)["code"])
    assert contents(b, sid) == [("user", "before"), ("assistant", big), ("user", "after")]
    assert cli_json(b.home, "verify")["ok"]
    # a part lost from the store is named, not read around
    part = sorted(objects, key=os.path.getsize)[-1]
    os.unlink(part)
    r = run_cli(a.home, "verify")
    assert r.returncode != 0 and os.path.basename(part)[:16] in r.stdout + r.stderr, r.stdout + r.stderr


def test_appends_do_not_wait_for_an_import_s_proof_checks(make_daemon, store_dir):
    """An import checks the session's checkpoint proofs before it takes the writer: local appends go
    on meanwhile. On B the proof check takes 3 s (a fault hook: the checks of a very long session on
    a slow device); no append may wait for it."""
    url = "file://" + store_dir
    a = make_daemon(url).start()
    b = make_daemon(url, env={"SESSIOND_FAULT_SLOW_PROOF_CHECK": "3"}).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="big")["id"]
    for i in range(0, 20_000, 10_000):
        ca.append_many(
            sid, [{"role": "user", "content": f"{j} a message of a typical length"} for j in range(i, i + 10_000)]
        )
    ca.checkpoint(sid)
    code = ca.share(sid)["code"]
    local = cb.create_session(name="local")["id"]
    with appends_meanwhile(b, local) as spans:
        wait_for(lambda: len(spans) >= 5)
        t0 = time.monotonic()
        assert cb.import_code(code)["new"] >= 20_000
        t1 = time.monotonic()
    assert t1 - t0 >= 3  # the (slow) proof check did run
    during = [end - start for start, end in spans if end > t0 and start < t1]
    assert len(during) >= 5 and max(during) < 1.0, f"an append waited {max(during):.2f} s for the import"
    assert cb.get_session(sid)["message_count"] == 20_000


def test_rekey_keeps_a_writer_that_has_not_written_yet(make_daemon, store_dir):
    """A device that imported a read-write code is a writer from the import on, before it writes
    anything: a rekey keeps it, and it reads and writes under the new key."""
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="silent writer")["id"]
    ca.append(sid, "user", "before the rekey")
    cb.import_code(ca.share(sid, write=True)["code"])  # B writes nothing
    res = ca.rekey(sid)
    assert res["kept"] == [cb.status()["device_id"]], res
    ca.append(sid, "user", "after the rekey")
    wait_for(lambda: ("user", "after the rekey") in contents(b, sid), timeout=15)
    cb.append(sid, "assistant", "B after the rekey")
    wait_for(lambda: ("assistant", "B after the rekey") in contents(a, sid), timeout=15)
    for dev in (a, b):
        assert cli_json(dev.home, "verify")["ok"], dev.home


def test_an_empty_passphrase_names_where_it_was_read_from(pair, tmp_path):
    """`share --passphrase-file -` with nothing on standard input said "the passphrase file is empty": there
    was no file; it names standard input now (and a file by its path)."""
    a, _ = pair
    sid = a.client().create_session()["id"]
    r = run_cli(a.home, "share", sid, "--passphrase-file", "-", input="\n")
    assert r.returncode == 2 and "standard input holds no passphrase" in r.stderr, r.stderr
    empty = tmp_path / "pass"
    empty.write_text("")
    r = run_cli(a.home, "share", sid, "--passphrase-file", str(empty))
    assert r.returncode == 2 and f"the passphrase file {empty} is empty" in r.stderr, r.stderr
    assert a.client().shares(sid)["shares"] == []
