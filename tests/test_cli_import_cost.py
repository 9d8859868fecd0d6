"""A `sessiond` command started as a program imports neither aiohttp nor pydantic before it parses its arguments:
they were ~60% of its start-up (~0.27 s of ~0.45 s of CPU on the 2-core CI machine), paid by every command,
`sessiond --help` included, though only the daemon, a relay and a network store use them (imported when they
run). stores/config.py imported stores/http.py (aiohttp) for a constant, cli/commands/daemon.py api/meta.py
(pydantic) for an annotation."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "pydantic")


def test_the_cli_imports_neither_aiohttp_nor_pydantic_to_start():
    code = f"import json, sys; import sessiond.cli.main; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
