"""`sessiond import-file` that fails part-way with an ordinary error (not a crash) removes the sessions it
made as a crashed import's rollback at start does: their key files go too, not only their rows."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import PY, wait_for


def _conversation(title: str, *texts: str) -> dict:
    """A linear ChatGPT conversation (conversations.json's shape)."""
    mapping = {}
    for i, text in enumerate(texts):
        mapping[f"n{i}"] = {
            "id": f"n{i}",
            "parent": f"n{i - 1}" if i else None,
            "children": [f"n{i + 1}"] if i + 1 < len(texts) else [],
            "message": {
                "author": {"role": ("user", "assistant")[i % 2]},
                "content": {"content_type": "text", "parts": [text]},
            },
        }
    return {"title": title, "mapping": mapping, "current_node": f"n{len(texts) - 1}"}


def _key_files(home: str) -> set[str]:
    folder = os.path.join(home, "keys", "sessions")
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def test_a_failed_import_file_leaves_no_key_of_the_sessions_it_removed(make_daemon, tmp_path):
    flag = tmp_path / "paused"
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"import-file.batch:{flag}"})
    os.makedirs(d.home, mode=0o700, exist_ok=True)
    # the file's second conversation cannot be made: one active session at most (an ordinary refusal)
    (tmp_path / "config.toml").write_text("max_active_sessions = 1\n")
    os.replace(tmp_path / "config.toml", os.path.join(d.home, "config.toml"))
    d.start()
    c = d.client()
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([_conversation("first", "Hi", "Hello!"), _conversation("second", "Again", "Yes?")]))
    keys_before = _key_files(d.home)
    imp = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "import-file", str(path), "--format", "chatgpt", "--home", d.home],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # the first conversation's session is written (the import paused after its messages): pushed, it
        # has its key file, as a session pushed during a long import has
        wait_for(flag.exists, timeout=60, interval=0.01, what="the import's first session written")
        (first,) = c.list_sessions()["sessions"]
        assert c.sync(first["id"], wait=True, timeout=30)["complete"]
        assert f"{first['id']}.key" in _key_files(d.home)
    finally:
        flag.unlink(missing_ok=True)  # the import goes on, and fails at its second conversation
        out, err = imp.communicate(timeout=120)
    assert imp.returncode != 0, out
    assert b"max_active_sessions" in err, err
    assert c.list_sessions()["sessions"] == []
    assert _key_files(d.home) == keys_before  # no key file of the removed session is left
    # and the home is as before the import: it runs whole once it fits
    d.stop()
    d.env.pop("SESSIOND_TEST_PAUSE")
    os.unlink(os.path.join(d.home, "config.toml"))
    d.start()
    res = subprocess.run(
        [PY, "-m", "sessiond.cli.main", "import-file", str(path), "--format", "chatgpt", "--home", d.home, "--json"],
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["sessions"]) == 2
