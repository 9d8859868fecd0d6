"""`sessiond status` for a newcomer: each thing it says is wrong comes with the exact command to run for this home.
A push that failed was said as its error alone, and past five such sessions the rest were left out unsaid."""

from __future__ import annotations

import os
import shutil

from conftest import run_cli, wait_for, write_config


def test_status_says_the_command_for_each_push_that_failed(make_daemon, store_dir):
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=0.05)
    d.start()
    c = d.client()
    sids = [c.create_session(name=f"s{i}")["id"] for i in range(7)]
    assert c.sync(None, wait=True)["complete"]
    shutil.rmtree(store_dir)  # the share unmounted
    os.mkdir(store_dir)
    for sid in sids:
        c.append_many(sid, [{"role": "user", "content": "hello"}])
    wait_for(lambda: all(s.get("last_error") for s in c.status()["sync"].values()), timeout=30, what="failed")
    out = run_cli(d.home, "status").stdout
    said = [line for line in out.splitlines() if line.split(":")[0].strip() in sids]
    assert len(said) == 5, out  # the first five, whole: each with what mends it
    assert all(f"`sessiond sync --home {d.home} --wait`" in line for line in said), out
    # main: the other two left out, unsaid
    assert f"and 2 more session(s) whose push failed: `sessiond status --home {d.home} --sessions`" in out, out
    d.stop()


def test_a_failing_store_is_said_under_the_store_not_under_the_provider(make_daemon, store_dir):
    """With a provider configured, `status` printed the store's failure last, indented under the `provider:` line
    ("provider: local (default)" then "  failing: cannot use the store: ..."), as if the provider were failing. It is
    said right under the `store:` line it is about."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, default_provider="local")
    with open(os.path.join(d.home, "config.toml"), "a") as f:
        f.write('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n')
    d.start()
    c = d.client()
    sid = c.create_session(name="s")["id"]
    assert c.sync(None, wait=True)["complete"]
    shutil.rmtree(store_dir)  # the share unmounted
    c.append(sid, "user", "hello")
    wait_for(lambda: c.status()["stores"][0]["reachable"] is False, timeout=30, what="the store failing")
    lines = run_cli(d.home, "status").stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("store:"))
    assert lines[at + 1].startswith("  failing: ") and "store folder" in lines[at + 1], lines
    provider = next(i for i, line in enumerate(lines) if line.startswith("provider:"))
    assert provider + 1 == len(lines) or not lines[provider + 1].startswith("  "), lines
    d.stop()
