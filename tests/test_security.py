"""Local security: what other local users, logs, process lists and the store can learn (issue 6)."""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess

import pytest

from conftest import PY, cli_json, run_cli, wait_for

# The test reading the command lines of the processes it starts is marked `real_exec` (started as new programs);
# the others start theirs from the fork server.

_READ = {"x86_64": 0, "aarch64": 63, "arm64": 63}  # the read(2) system call's number


def reading_stdin(pid: int) -> bool:
    """Whether the process is blocked in read(0, ...): it has done all it does before its input comes.
    Where /proc/PID/syscall cannot tell (another architecture, no permission), whether it has started."""
    nr = _READ.get(platform.machine())
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        nr = None
    if nr is None:
        return os.path.exists(f"/proc/{pid}/cmdline")
    return len(fields) > 1 and fields[0] == str(nr) and fields[1] == "0x0"


def all_text(home: str) -> str:
    out = []
    for root, _, files in os.walk(os.path.join(home, "logs")):
        for f in files:
            out.append(open(os.path.join(root, f), "rb").read().decode(errors="replace"))
    return "\n".join(out)


@pytest.mark.real_exec  # reads the command lines of the processes it starts
def test_no_secret_in_logs_errors_or_process_lists(make_daemon, store_dir, tmp_path):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    marker = "SECRETMARKER-7f3a"
    sid = cli_json(a.home, "new", "--system", marker)["id"]
    run_cli(a.home, "add", sid, "--role", "user", f"{marker} message", check=True)
    pf = tmp_path / "pass"
    passphrase = "hunter2-but-longer"
    pf.write_text(passphrase)
    code = cli_json(a.home, "share", sid, "--write", "--passphrase-file", str(pf))["code"]
    mnemonic = cli_json(a.home, "key", "export")["mnemonic"]
    session_key = open(os.path.join(a.home, "keys", "sessions", sid + ".key"), "rb").read()

    # an import whose standard input is still open: look at it from outside while it waits
    proc = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "import", "--home", b.home, "--passphrase-file", str(pf)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: reading_stdin(proc.pid), timeout=30, what="the import waiting on its standard input")
    cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    out, err = proc.communicate(code.encode(), timeout=60)
    assert proc.returncode == 0, err
    for secret in (code, passphrase, mnemonic, session_key.hex()):
        assert secret not in cmdline and secret not in ps
    # wrong passphrase, mistyped code: the errors name the problem, not the secret
    (tmp_path / "wrong").write_text("not the passphrase")
    bad = run_cli(b.home, "import", "--passphrase-file", str(tmp_path / "wrong"), input=code)
    typo = run_cli(b.home, "import", input=code[:-4] + "aaaa")
    for res in (bad, typo):
        assert res.returncode != 0
        for secret in (code, passphrase, "not the passphrase", code[:-4]):
            assert secret not in res.stderr and secret not in res.stdout
    # a literal code on the command line is refused, before it is used
    lit = run_cli(b.home, "import", code)
    assert lit.returncode == 2 and "standard input" in lit.stderr
    for d in (a, b):
        daemon_args = open(f"/proc/{d.proc.pid}/cmdline", "rb").read().decode(errors="replace")
        for secret in (code, passphrase, mnemonic, session_key.hex()):
            assert secret not in daemon_args
        d.stop()
        text = all_text(d.home)
        assert text  # the daemons did log
        for secret in (code, passphrase, mnemonic, session_key.hex(), marker):
            assert secret not in text, secret


def test_store_and_key_files_after_a_full_run(daemon):
    c = daemon.client()
    sid = c.create_session(name="PLAINTEXT-NAME")["id"]
    c.append(sid, "user", "PLAINTEXT-MESSAGE")
    c.checkpoint(sid)
    c.share(sid, write=True)
    c.sync(wait=True)
    store = os.path.join(daemon.home, "store")
    for root, _dirs, files in os.walk(store):
        for f in files:
            data = open(os.path.join(root, f), "rb").read()
            assert b"PLAINTEXT" not in data and sid.encode() not in data
    for root, dirs, files in os.walk(os.path.join(daemon.home, "keys")):
        for f in files:
            assert os.stat(os.path.join(root, f)).st_mode & 0o777 == 0o600
        for d in dirs:
            assert os.stat(os.path.join(root, d)).st_mode & 0o777 == 0o700


def test_home_open_to_others_is_refused_with_what_to_run(daemon):
    """start and key export on a 0755 home: one line saying what to run, never a traceback."""
    daemon.stop()
    os.chmod(daemon.home, 0o755)
    try:
        for args in (["start"], ["key", "export"], ["daemon"]):
            res = run_cli(daemon.home, *args)
            assert res.returncode != 0, (args, res)
            assert "Traceback" not in res.stderr and f"chmod 700 {daemon.home}" in res.stderr, (args, res.stderr)
            assert "mnemonic" not in res.stdout and len(res.stdout.split()) < 24
            if args == ["daemon"]:  # the foreground daemon reports on standard error only
                continue
            res = run_cli(daemon.home, *args, "--json")
            assert res.returncode != 0 and "chmod 700" in json.loads(res.stdout)["error"]["message"], args
        assert os.stat(daemon.home).st_mode & 0o777 == 0o755  # changed nothing
    finally:
        os.chmod(daemon.home, 0o700)


def test_the_store_can_count_a_logs_operations_as_security_md_says(daemon):
    """What the storage host learns beyond the content, as docs/SECURITY.md lists it: each push writes its
    operations' objects, padded, and a manifest that is not padded and grows with the log's entries, so the
    sizes of what one push writes tell how many operations the log holds, one message at a time."""
    c = daemon.client()
    sid = c.create_session(name="counted")["id"]
    c.sync(wait=True)
    store = os.path.join(daemon.home, "store")

    def sizes() -> dict:
        return {
            os.path.join(r, f): os.path.getsize(os.path.join(r, f))
            for r, _, fs in os.walk(os.path.join(store, "objects"))
            for f in fs
        }

    seen, manifests = sizes(), []
    for _ in range(6):  # within one level of the manifest (15 entries): one entry more per push
        c.append(sid, "user", "hi")
        c.sync(wait=True)
        now = sizes()
        new = sorted(s for p, s in now.items() if p not in seen)
        seen = now
        assert len(new) == 2 and new[0] % 256 == 16, new  # a page: 256 bytes padded, one tag; and the manifest
        manifests.append(new[1])
    steps = [b - a for a, b in itertools.pairwise(manifests)]
    # about the same growth per operation (an entry; its numbers' encodings grow now and then): the host counts
    assert min(steps) > 64 and max(steps) - min(steps) <= 8, manifests


def test_an_ipns_record_tells_whoever_reads_it_when_its_device_signed_it():
    # docs/SECURITY.md, the storage host's "Sees": on a Kubo store a head is an IPNS record, which any node or
    # gateway serves to whoever asks by its name; its end of life is in clear, the moment of signing by the
    # device's own clock plus the lifetime, to the microsecond (stores/ipns.py)
    import datetime as dt

    from nacl.signing import SigningKey

    from sessiond.storage.clock import wall_utc
    from sessiond.stores import ipns

    before = wall_utc()
    raw = ipns.create_record(SigningKey.generate(), b"/ipfs/x", 3)
    after = wall_utc()
    signed = ipns.parse_validity(ipns.decode_entry(raw)["validity"]) - ipns.lifetime()  # no key needed
    assert before - dt.timedelta(microseconds=1) <= signed <= after
