"""A session out to a file and back in (`export`, then `import-file`), end to end through the CLI against one
daemon for the module: what the file says is what comes back, and what refuses a file names what to do."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from conftest import DaemonProc, run_cli
from sessiond.client import ApiError


@pytest.fixture(scope="module")
def d():
    tmp = tempfile.mkdtemp(prefix="sd-rt-")
    proc = DaemonProc(os.path.join(tmp, "home")).start()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def exported(d, sid: str, tmp_path, *args: str) -> str:
    f = tmp_path / f"{sid}.json"
    run_cli(d.home, "export", sid, "-o", str(f), *args, check=True)
    return str(f)


def test_openai_export_of_a_chat_gives_the_settings_and_context_its_model_is_asked_with(d, tmp_path):
    """A chat's own settings override the session's one by one when its model is asked (daemon/complete.py);
    the export replaced all of the session's with the chat's, so a chat with its own temperature lost the
    session's top_p, top_k and max_tokens. The initial messages lost their name too."""
    c = d.client()
    sid = c.create_session(
        model="gpt-x",
        settings={"temperature": 0.3, "top_p": 0.9, "top_k": 5, "max_tokens": 100, "provider": "default"},
        initial_messages=[{"role": "user", "content": "hi", "name": "alice"}],
    )["id"]
    side = c.create_chat(sid, name="side", settings={"temperature": 0.9})["id"]
    c.append(sid, "user", "in side", chat=side)
    out = json.loads(open(exported(d, sid, tmp_path, "--format", "openai", "--chat", side)).read())
    assert out["model"] == "gpt-x"
    assert {k: out.get(k) for k in ("temperature", "top_p", "top_k", "max_tokens")} == {
        "temperature": 0.9,
        "top_p": 0.9,
        "top_k": 5,
        "max_tokens": 100,
    }
    assert "provider" not in out
    assert out["messages"] == [
        {"role": "user", "content": "hi", "name": "alice"},
        {"role": "user", "content": "in side"},
    ]


def test_a_session_file_whose_id_differs_only_in_case_names_the_session_that_is_here(d, tmp_path):
    """The refusal said the file's own id was on this device and to `sessiond rm` it: no such session."""
    c = d.client()
    c.create_session(id="case-here")
    data = json.loads(open(exported(d, "case-here", tmp_path)).read())
    data["session"]["id"] = "CASE-HERE"
    f = tmp_path / "twin.json"
    f.write_text(json.dumps(data))
    res = run_cli(d.home, "import-file", str(f))
    assert res.returncode == 1, res.stderr
    assert "'case-here'" in res.stderr and "sessiond rm case-here" in res.stderr, res.stderr
    assert "sessiond rm CASE-HERE" not in res.stderr
    with pytest.raises(ApiError):
        c.get_session("CASE-HERE")
