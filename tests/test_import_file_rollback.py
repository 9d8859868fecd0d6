"""`sessiond import-file`: the sessions it makes are hidden until the whole file is in (not listed,
searched, counted nor pushed), and one that fails part-way with an ordinary error (not a crash) removes
them as a crashed import's rollback at start does: their key files go too, not only their rows."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import PY, cli_json, run_cli, wait_for


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


def _store_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def test_a_file_import_is_hidden_until_it_ends_and_a_failed_one_leaves_nothing(make_daemon, tmp_path):
    flag = tmp_path / "paused"
    store = tmp_path / "store"
    d = make_daemon(store=f"file://{store}", env={"SESSIOND_TEST_PAUSE": f"import-file.batch:{flag}"})
    os.makedirs(d.home, mode=0o700, exist_ok=True)
    # the file's second conversation cannot be made: one active session at most (an ordinary refusal)
    (tmp_path / "config.toml").write_text("max_active_sessions = 1\n")
    os.replace(tmp_path / "config.toml", os.path.join(d.home, "config.toml"))
    d.start()
    c = d.client()
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([_conversation("first", "Hi", "Hello!"), _conversation("second", "Again", "Yes?")]))
    assert c.sync(wait=True, timeout=30)["complete"]  # whatever the start writes to the store, first
    keys_before, objects_before = _key_files(d.home), _store_files(str(store))
    imp = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "import-file", str(path), "--format", "chatgpt", "--home", d.home],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # the first conversation's session is written (the import paused after its messages), and nothing
        # of it shows: not listed, searched, counted or pushed, until the whole file is in
        wait_for(flag.exists, timeout=60, interval=0.01, what="the import's first session written")
        assert c.list_sessions()["sessions"] == []
        assert c.search("Hello")["hits"] == []
        assert c.stats()["sessions"] == 0
        assert c.sync(wait=True, timeout=30)["complete"]
        assert _store_files(str(store)) == objects_before and _key_files(d.home) == keys_before
    finally:
        flag.unlink(missing_ok=True)  # the import goes on, and fails at its second conversation
        out, err = imp.communicate(timeout=120)
    assert imp.returncode != 0, out
    assert b"max_active_sessions" in err, err
    assert c.list_sessions()["sessions"] == []
    assert _key_files(d.home) == keys_before  # no key file of the removed session is left
    # and the home is as before the import: it runs whole once it fits, and then shows and is pushed
    d.stop()
    d.env.pop("SESSIOND_TEST_PAUSE")
    os.unlink(os.path.join(d.home, "config.toml"))
    d.start()
    c = d.client()
    res = run_cli(d.home, "import-file", str(path), "--format", "chatgpt", "--json")
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)["sessions"]
    assert len(made) == 2
    assert sorted(s["id"] for s in c.list_sessions()["sessions"]) == sorted(s["id"] for s in made)
    assert len(c.search("Hello")["hits"]) == 1
    assert c.sync(wait=True, timeout=30)["complete"]
    assert _store_files(str(store)) > objects_before
    assert {f"{s['id']}.key" for s in made} <= _key_files(d.home)


def test_a_file_import_past_its_checkpoint_interval_gets_its_checkpoint_when_it_shows(make_daemon, tmp_path):
    # its appends, hidden, announce nothing: the end of the import says it is due, as they would have
    d = make_daemon().start()
    c = d.client()
    path = tmp_path / "long.json"
    path.write_text(json.dumps([{"role": ("user", "assistant")[i % 2], "content": "word " * 50} for i in range(100)]))
    (made,) = cli_json(d.home, "import-file", str(path), "--format", "openai")["sessions"]
    assert made["tokens"] > 1000  # past the default checkpoint interval
    wait_for(lambda: c.checkpoints(made["id"])["checkpoints"], timeout=30, what="the import's checkpoint")
    (cp,) = c.checkpoints(made["id"])["checkpoints"]
    assert cp["messages"] == 100, cp
