"""`export -o` naming something that is no regular file to keep (a named pipe; a shell's process substitution,
`-o >(gzip > s.json.gz)`, which is /dev/fd/N; /dev/stdout) was refused as an existing file, and the --force that
the refusal names put a regular file in its place (renamed over it: as root, over /dev/stdout itself). Nothing is
lost by writing into such a thing: the export is written into it, with or without --force, and it stays what
it is."""

from __future__ import annotations

import json
import os
import stat

from conftest import cli_json, run_cli


def _drain(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    return out


def test_export_into_a_named_pipe_writes_into_it_and_leaves_it_a_pipe(daemon, tmp_path):
    sid = cli_json(daemon.home, "new", "--name", "piped")["id"]
    pipe = str(tmp_path / "pipe")
    os.mkfifo(pipe, 0o600)
    for force in ((), ("--force",)):
        # (a reader first: the CLI's open for writing does not wait for one; the export fits the pipe's buffer)
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        try:
            res = run_cli(daemon.home, "export", sid, "-o", pipe, *force)
            assert res.returncode == 0, res
            assert stat.S_ISFIFO(os.lstat(pipe).st_mode), "the pipe was replaced by a file"
            os.set_blocking(fd, True)
            assert json.loads(_drain(fd))["session"]["name"] == "piped"
        finally:
            os.close(fd)
    assert os.listdir(tmp_path) == ["pipe"]  # (no temporary file left beside it)


def test_export_through_a_link_writes_the_file_it_names(daemon, tmp_path):
    """`-o LINK --force` renamed the export over the link itself (the file it named left as it was, the link gone):
    through /dev/stdout with standard output sent to a file, that is /dev's own link replaced. The file a link
    names is the one refused without --force, and replaced with it; the link stays."""
    sid = cli_json(daemon.home, "new", "--name", "linked")["id"]
    (tmp_path / "exports").mkdir()
    target = tmp_path / "exports" / "latest.json"
    target.write_text("an earlier export")
    link = tmp_path / "latest"
    link.symlink_to(target)
    res = run_cli(daemon.home, "export", sid, "-o", str(link))
    assert res.returncode == 2 and "exists" in res.stderr and "--force" in res.stderr, res
    assert target.read_text() == "an earlier export"
    run_cli(daemon.home, "export", sid, "-o", str(link), "--force", check=True)
    assert link.is_symlink() and os.readlink(link) == str(target), "the link was replaced"
    assert json.loads(target.read_text())["session"]["name"] == "linked"
    assert sorted(os.listdir(tmp_path)) == ["exports", "latest"] and os.listdir(tmp_path / "exports") == ["latest.json"]
