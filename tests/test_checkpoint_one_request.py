"""`sessiond checkpoint` asked the daemon for the session's proofs (GET .../checkpoints) before asking it for
one (POST), to tell a proof just made from one that stands because nothing changed since it: two requests, the
first reading every proof of the session. The POST's answer now says which it is (`made`: true for a proof this
request made, false for this device's latest, which stands), and the CLI makes that one request."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading

from conftest import cli_json, run_cli
from sessiond.api.locate import SOCKET_NAME
from unixproxy import UnixProxy, pipe


class Counting(UnixProxy):
    """The daemon's socket behind a proxy that notes each request line an app sends."""

    def __init__(self, upstream: str, path: str):
        self.lines: list[str] = []
        super().__init__(upstream)
        os.unlink(self.path)  # (the socket at `path`, a home's, in its place)
        self.srv.close()
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        def note(data: bytes) -> bytes:
            self.lines += re.findall(r"(?m)^([A-Z]+ /\S*) HTTP/1\.1\r$", data.decode("latin-1"))
            return data

        threading.Thread(target=pipe, args=(app, daemon, note), daemon=True).start()
        threading.Thread(target=pipe, args=(daemon, app), daemon=True).start()


def test_checkpoint_is_one_request_whose_answer_says_whether_it_made_one(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "hello")
    first = c.checkpoint(sid)
    again = c.checkpoint(sid)
    assert first["made"] is True and again["made"] is False, (first, again)
    assert {**again, "made": True} == first  # the same proof: the one that stands
    assert c.verify_proof(sid, again)["ok"] is True
    home = tempfile.mkdtemp(prefix="sd-cp-")  # a home whose socket is the proxy, in front of the daemon
    os.chmod(home, 0o700)
    proxy = Counting(daemon.socket, os.path.join(home, SOCKET_NAME))
    try:
        said = run_cli(home, "checkpoint", sid, check=True).stdout
        assert "no new checkpoint" in said and "#1" in said, said
        assert proxy.lines == [f"POST /v1/sessions/{sid}/checkpoints"], proxy.lines
        c.append(sid, "user", "more")
        proxy.lines.clear()
        made = cli_json(home, "checkpoint", sid)  # the proof as listed (the answer's `made` not part of it)
        assert made["number"] == 2 and made == c.checkpoints(sid)["checkpoints"][-1], made
        assert proxy.lines == [f"POST /v1/sessions/{sid}/checkpoints"], proxy.lines
    finally:
        proxy.close()
