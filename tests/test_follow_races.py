"""A follower misses nothing the store told it while it could not act on it yet (issue 17, the follower's
possible miss): a head that moved while its session was being imported, a poll round that failed after
the store had said what changed."""

from __future__ import annotations

from devices import watch_pulls
from sessiond.stores.file import FileStore
from sessiond.sync import importer


async def _followed(devices, name: str) -> str:
    """A session of A with one message, imported read-only on B (B adds no head of its own)."""
    dba, a, b = devices.dba, devices.a, devices.b
    sid = (await dba.create_session({"name": name}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await b.import_code((await a.share(sid, write=False, passphrase=None, expires_in=None))["code"], None)
    return sid


async def _poll_failing(b, db, name: str, monkeypatch) -> None:
    """One poll of B's follower with database method `name` failing (a disk I/O error), then put back."""
    real = getattr(db, name)

    async def fails(*args):
        raise OSError("disk I/O error")

    monkeypatch.setattr(db, name, fails)
    try:
        await b.follower.poll()
    except OSError:
        pass  # the worker logs a failed round and polls again
    monkeypatch.setattr(db, name, real)


async def test_a_head_that_moves_while_its_session_is_imported_is_pulled_after_the_import(devices, monkeypatch):
    """B's import reads A's log, A pushes more, and B's poll sees A's head move before the import has
    written the session (so the poll knows no session following that head). The import then lands what
    it read: the session is pulled at the next poll, not when A next writes (or the 300 s full round)."""
    a, b = await devices.open(store_b=FileStore(devices.store_path))
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    await _followed(devices, "followed before")  # so B follows something, and its poll has its first look
    await b.follower.poll()

    sid = (await dba.create_session({"name": "imported"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    real_fetch = importer.fetch_logs

    async def fetch_then_news(*args, **kw):
        out = await real_fetch(*args, **kw)
        await dba.append_messages(sid, [{"role": "user", "content": "news"}])  # A writes and pushes ...
        await a.sync_now(sid, wait=True, timeout=10)
        await b.follower.poll()  # ... and B's poll sees the head move, mid-import
        return out

    monkeypatch.setattr(importer, "fetch_logs", fetch_then_news)
    await b.import_code(code, None)
    monkeypatch.setattr(importer, "fetch_logs", real_fetch)
    assert len(await dbb.list_messages(sid)) == 1  # what the import read

    await b.follower.poll()
    assert [m["content"] for m in await dbb.list_messages(sid)] == ["first", "news"]


async def test_a_poll_round_that_fails_after_the_store_said_what_changed_is_not_lost(devices, monkeypatch):
    """The store's change feed moves on when it answers; a round that fails after that (here: the
    database's look-up of the sessions following the changed heads) must not lose those changes."""
    a, b = await devices.open(store_b=FileStore(devices.store_path))
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = await _followed(devices, "followed")
    await b.follower.poll()  # the first look

    await dba.append_messages(sid, [{"role": "user", "content": "news"}])
    await a.sync_now(sid, wait=True, timeout=10)
    await _poll_failing(b, dbb, "sessions_with_heads", monkeypatch)
    await b.follower.poll()
    assert [m["content"] for m in await dbb.list_messages(sid)] == ["first", "news"]


async def test_an_import_with_no_poll_meanwhile_costs_the_follower_no_extra_pull(devices):
    """Only an import that polls overlapped is pulled again: with none, every change after its reads is
    still in the store's feed for the next poll. Here a poll between the share and the import took the
    share's head changes (no session followed them yet), and the import read those heads: nothing to pull."""
    a, b = await devices.open(store_b=FileStore(devices.store_path))
    dba = devices.dba
    await a.start()
    await _followed(devices, "followed before")
    await b.follower.poll()
    sid = (await dba.create_session({"name": "imported, quiet"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "first"}])
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await b.follower.poll()  # the share's heads: named, and followed by no session here yet
    started, _ = watch_pulls(b)
    await b.import_code(code, None)
    await b.follower.poll()
    assert started == []


class ResettingStore(FileStore):
    """A folder store whose change feed resets on demand, as a relay's does when it restarts without its
    feed's state: a token from before the reset answers "cannot tell" (pks None), and the reset's answer
    names no head (head_revisions: {}), so a follower reads every head it follows there (_not_held)."""

    epoch = 0

    def reset(self) -> None:
        self.epoch += 1

    async def head_changes(self, since):
        inner = await super().head_changes(since[1] if isinstance(since, tuple) else None)
        if inner is None:
            return None
        token = (self.epoch, inner[0])
        if not isinstance(since, tuple) or since[0] != self.epoch:
            return token, None
        return token, inner[1]

    async def head_revisions(self):
        return {}


async def test_a_reset_whose_read_of_the_heads_held_fails_is_read_again_at_the_next_poll(devices, monkeypatch):
    """After a change feed's reset, the follower reads what it holds to know which heads to read
    (_not_held). The feed's token moved on before that read ended: a read that failed (a database
    error, the daemon stopping) left the heads changed meanwhile unread until the next full round
    (FULL_PULL_EVERY). The token moves on only once the read is done: the next poll resets again."""
    store_b = ResettingStore(devices.store_path)
    a, b = await devices.open(store_b=store_b)
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = await _followed(devices, "followed")
    await b.follower.poll()  # the first look
    await b.follower.poll()  # the feed followed from here on (no reset)

    await dba.append_messages(sid, [{"role": "user", "content": "news"}])
    await a.sync_now(sid, wait=True, timeout=10)
    store_b.reset()
    await _poll_failing(b, dbb, "held_revisions", monkeypatch)
    assert [m["content"] for m in await dbb.list_messages(sid)] == ["first"]
    started, _ = watch_pulls(b)
    await b.follower.poll()
    assert not b.follower.pull_now  # no full round: the reset read again
    assert started == [sid]
    assert [m["content"] for m in await dbb.list_messages(sid)] == ["first", "news"]
