"""A share racing its session's `rm`: refused 404 (h-small39a), and leaving no key file of the session behind."""

from __future__ import annotations

import os

from asking import in_thread
from conftest import wait_for
from sessiond.client import ApiError


def _shared_while_deleted(make_daemon, tmp_path, point: str) -> ApiError:
    """A session's share held at the pause point `point`, the session deleted meanwhile, the share let go: what the
    share was refused with (checked to be a refusal), once no key file of the session is left."""
    flag = str(tmp_path / point)
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"{point}:{flag}"}).start()
    sid = d.client().create_session(model="echo-1")["id"]
    d.client().append(sid, "user", "hello")
    shared: list = []
    sharing = in_thread(lambda: d.client().share(sid), shared)
    wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the share held at {point}")
    d.client().delete_session(sid, force=True)
    os.remove(flag)
    sharing.join(timeout=30)
    assert shared and isinstance(shared[0], ApiError), shared
    keys = os.path.join(d.home, "keys", "sessions")
    assert [n for n in os.listdir(keys) if n.startswith(sid)] == [], os.listdir(keys)
    return shared[0]


def test_a_share_racing_its_sessions_rm_leaves_no_key_of_it(make_daemon, tmp_path):
    """The share pushed the session, then `rm` deleted it (its rows, its key files) while the share went on: the
    share made the session's write secret (keys/sessions/ID.write) for a session gone, before its remote's insert
    was refused 404, and that secret stayed on disk after `rm` (until a restart deleted it, logging a delete cut
    short that never was). The share looks at the session under the lock `rm` takes before it makes the secret."""
    refused = _shared_while_deleted(make_daemon, tmp_path, "share.pushed")
    assert refused.code == "not_found", refused


def test_a_share_whose_session_is_deleted_between_its_locked_steps_says_it_is_gone(make_daemon, tmp_path):
    """`rm` between the share's two locked steps (its remote made, then this device added to the members slot)
    deleted the write secret the share had just seen, and the share was refused as `conflict`, 'this device cannot
    add writers to ID (no write secret)': a device told it may not write to a session it owns. It is refused as the
    session gone (404 not_found), and leaves no key file of it."""
    refused = _shared_while_deleted(make_daemon, tmp_path, "share.member")
    assert refused.code == "not_found" and "no write secret" not in str(refused), refused
