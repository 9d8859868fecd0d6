"""Mirrors: several stores at once (sync/mirror.py). The logic in-process over real folder stores and a
real database; then two daemons syncing through a folder and a `sessiond serve` relay while the relay is
down, and the relay catching up once it is back."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess

import pytest
from nacl.signing import SigningKey

from conftest import ReservedPort, cli_json, eventually, popen_cli, run_cli, wait_for
from sessiond.stores import FileStore, ObjectMissing, Store, StoreError
from sessiond.stores.errors import LyingServer
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store
from sessiond.sync.keys import KeyStore
from sessiond.sync.mirror import MirrorStore
from sessiond.sync.mirrorcheck import Reads, lacking


class Switch(Store):
    """A folder store that can be made unreachable."""

    def __init__(self, root: str):
        self.inner = FileStore(root)
        self.url = self.inner.url
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError(f"{self.url}: cannot connect (test: switched off)")

    async def put(self, data: bytes) -> bytes:
        self._check()
        return await self.inner.put(data)

    async def get(self, h: bytes) -> bytes:
        self._check()
        return await self.inner.get(h)

    async def has(self, h: bytes) -> bool:
        self._check()
        return await self.inner.has(h)

    async def get_head(self, pk: bytes) -> RegistryEntry | None:
        self._check()
        return await self.inner.get_head(pk)

    async def set_head(self, entry: RegistryEntry) -> None:
        self._check()
        await self.inner.set_head(entry)


def head(key: SigningKey, rev: int, data: bytes = b"\x01" * 34) -> RegistryEntry:
    return RegistryEntry.create(key, rev, data)


async def test_a_store_that_is_down_catches_up_even_after_a_restart(tmp_path, db):
    a, b = Switch(str(tmp_path / "a")), Switch(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, max_backoff=0.2)
    await m.started()
    key = SigningKey.generate()
    b.down = True
    h1 = await m.put(b"first")  # b fails: it goes to b's outbox, a has it
    await m.set_head(head(key, 1))
    h2 = await m.put(b"second")  # b is known down: straight to its outbox, no wait
    await m.set_head(head(key, 2))
    assert await a.inner.has(h1) and await a.inner.has(h2) and (await a.inner.get_head(head(key, 1).pk)).revision == 2
    st = {s["url"]: s for s in await m.status()}
    assert st[a.url] == {"url": a.url, "reachable": True, "pending": 0, "last_error": None}
    # objects, then one head: the older revision was replaced by the newer in the outbox
    assert st[b.url]["reachable"] is False and st[b.url]["pending"] == 3 and "switched off" in st[b.url]["last_error"]
    assert await m.get(h2) == b"second"  # read from whichever has it
    await m.close()

    m = MirrorStore([a, b], db.outbox, max_backoff=0.2)  # the daemon restarted: the outbox is in SQLite
    await m.started()
    assert {s["url"]: s["pending"] for s in await m.status()} == {a.url: 0, b.url: 3}
    b.down = False
    await eventually(lambda: m.health[b.url].pending == 0 and m.health[b.url].reachable, what="b caught up")
    assert await b.inner.get(h1) == b"first" and await b.inner.get(h2) == b"second"
    assert (await b.inner.get_head(head(key, 1).pk)).revision == 2
    assert (await m.status())[1] == {"url": b.url, "reachable": True, "pending": 0, "last_error": None}
    await m.close()


async def test_the_highest_revision_wins_and_reads_fall_through(tmp_path, db):
    a, b = Switch(str(tmp_path / "a")), Switch(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox)
    await m.started()
    key = SigningKey.generate()
    await a.inner.set_head(head(key, 3, b"\x01" * 34))  # a serves a stale head
    await b.inner.set_head(head(key, 7, b"\x02" * 34))
    got = await m.get_head(head(key, 1).pk)
    assert got is not None and got.revision == 7 and got.data == b"\x02" * 34
    only_b = await b.inner.put(b"only in b")
    assert await m.get(only_b) == b"only in b" and await m.has(only_b)
    with pytest.raises(ObjectMissing):
        await m.get(bytes(32))
    a.down = b.down = True  # none answers: a write fails (the push retries) and is kept for both
    with pytest.raises(StoreError, match="no store of the mirror took"):
        await m.put(b"nowhere")
    await m.close()


# ------------------------------------------------------------------------ two daemons, a folder and a relay


class Relay:
    """A `sessiond serve` relay on a loopback port held for it (conftest.ReservedPort) from its first start
    to close(): stopped (the store down) and started again on the same port, which nobody else can take
    meanwhile, and which refuses connections while the relay is stopped."""

    def __init__(self, data: str):
        self.reserved = ReservedPort()
        self.data, self.port, self.proc = data, self.reserved.port, None
        self.url = f"s5+http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self.proc = popen_cli(
            ["serve", "--listen", f"127.0.0.1:{self.port}", "--data", self.data, "--open-registration", "--json"],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert json.loads(self.proc.stdout.readline())["port"] == self.port
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc.stdout.close()

    def close(self) -> None:
        """Stopped, and its port let go."""
        self.stop()
        self.reserved.close()


@pytest.fixture
def relay(tmp_path):
    r = Relay(str(tmp_path / "relay")).start()
    yield r
    r.close()


def test_a_relay_s_port_stays_its_own_while_it_is_down(tmp_path):
    """(The tests' relay.) A port let go between two starts of the relay, or between the look for a free one
    and the first start, is anyone's meanwhile: a connection another test makes may be given it, and the
    relay then fails to start (about once in 28,000 such connections). Held, it is nobody else's and
    refuses connections, and the relay starts there again."""
    r = Relay(str(tmp_path / "relay")).start()
    try:
        r.stop()
        other = socket.socket()  # what another process's connection or server would be bound as
        with pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", r.port))
        other.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", r.port), timeout=10)
        assert r.start().port == r.port
    finally:
        r.close()


def contents(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def stores_of(d) -> dict:
    return {s["url"]: s for s in d.client().status()["stores"]}


def head_revision(store: Store, d, sid: str) -> int:
    """The revision of daemon `d`'s head of `sid` that `store` holds (0: none), read as any client would;
    the store is closed after."""

    async def read() -> int:
        try:
            entry = await store.get_head(KeyStore(os.path.join(d.home, "keys")).head_pk(sid))
        finally:
            await store.close()
        return entry.revision if entry else 0

    return asyncio.run(read())


def test_two_daemons_sync_through_a_mirror_while_one_store_is_down(make_daemon, store_dir, relay):
    folder = "file://" + store_dir
    a = make_daemon([folder, relay.url])  # a mirror: --store repeated
    b = make_daemon()
    os.makedirs(b.home, mode=0o700)
    with open(os.path.join(b.home, "config.toml"), "w") as f:
        f.write(f'stores = ["{folder}", "{relay.url}"]\n')
    a.start()
    b.start()
    ca, cb = a.client(), b.client()
    assert a.client().status()["store"] == f"{folder} {relay.url}"
    sid = ca.create_session(name="mirrored")["id"]
    ca.append(sid, "user", "before")
    cb.import_code(ca.share(sid, write=True)["code"])
    assert contents(b, sid) == ["before"]

    relay.stop()  # the relay is down: writes still reach the other device, through the folder
    ca.append(sid, "user", "while down")
    wait_for(lambda: contents(b, sid) == ["before", "while down"], timeout=10, what="b sees a's write")
    wait_for(lambda: stores_of(a)[relay.url]["pending"] > 0, what="a's relay outbox holds the write")
    status = cli_json(a.home, "status")["stores"]
    assert [s["url"] for s in status] == [folder, relay.url] and status[0]["reachable"] is True
    assert status[1]["reachable"] is False and status[1]["last_error"]
    text = run_cli(a.home, "status", check=True).stdout
    assert f"{relay.url}: unreachable" in text and "waiting" in text

    # (that the outbox outlives a restart of the daemon: test_a_store_that_is_down_catches_up_even_after_a_restart)
    relay.start()  # back: it catches up
    wait_for(lambda: stores_of(a)[relay.url]["pending"] == 0, timeout=15, what="the relay caught up")
    assert stores_of(a)[relay.url]["reachable"] is True

    # the relay holds a's log at the revision a pushed last (read as any S5 client would)
    assert head_revision(S5Store(relay.url), a, sid) == ca.status()["sync"][sid]["head_rev"] > 1


def test_stores_in_config(tmp_path):
    from sessiond.daemon.home import Config, HomeError, normalize_store_urls

    def load(text: str) -> Config:
        (tmp_path / "config.toml").write_text(text)
        return Config.load(str(tmp_path))

    cfg = load('stores = ["file:///a", "s5+https://portal.example/"]\n')
    assert normalize_store_urls(cfg.store or "") == "file:///a\ns5+https://portal.example"
    assert normalize_store_urls(["file:///a", "file:///a/"]) == "file:///a"  # the same folder once
    for bad, says in (
        ('store = "file:///a"\nstores = ["file:///b"]\n', "not both"),
        ("stores = []\n", "list of store URLs"),
        ('stores = "file:///a"\n', "list of store URLs"),
    ):
        with pytest.raises(HomeError, match=says):
            load(bad)


async def test_a_read_only_gateway_in_a_mirror_is_read_never_queued(tmp_path, db):
    from sessiond.stores.errors import ReadOnlyStore

    class Gateway(Switch):
        async def put(self, data: bytes) -> bytes:
            raise ReadOnlyStore(f"{self.url} is a read-only gateway")

        async def set_head(self, entry: RegistryEntry) -> None:
            raise ReadOnlyStore(f"{self.url} is a read-only gateway")

    a, g = Switch(str(tmp_path / "a")), Gateway(str(tmp_path / "g"))
    m = MirrorStore([a, g], db.outbox)
    await m.started()
    only_g = await g.inner.put(b"on the gateway")
    await m.put(b"x")
    await m.set_head(head(SigningKey.generate(), 1))
    assert {s["url"]: s["pending"] for s in await m.status()} == {a.url: 0, g.url: 0}
    assert await m.get(only_g) == b"on the gateway"
    await m.close()


class Hung(Switch):
    """A folder store that can be made to hang: its writes wait until it is let go (a server that accepts
    the connection and never answers)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.free = asyncio.Event()
        self.free.set()

    async def put_many(self, items, hashes=None, *, timeout=None):
        await self.free.wait()
        return await self.inner.put_many(items, hashes, timeout=timeout)

    async def set_head(self, entry: RegistryEntry) -> None:
        await self.free.wait()
        await self.inner.set_head(entry)


async def test_a_store_that_hangs_holds_a_write_only_lag_seconds_after_another_took_it(tmp_path, db):
    # The README: "a store that is down blocks none of the others". One that hangs instead of refusing
    # held every push for the mirror's whole timeout (30 s by default), and the followers reading the store
    # that answered saw the change that much later.
    a, b = Switch(str(tmp_path / "a")), Hung(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, timeout=30, max_backoff=0.2, lag=0.3)
    await m.started()
    key = SigningKey.generate()
    b.free.clear()
    h = await asyncio.wait_for(m.put(b"while b hangs"), 5)  # (it waited the 30 s before)
    await asyncio.wait_for(m.set_head(head(key, 1)), 5)  # b is known down now: straight to its outbox
    assert await a.inner.has(h) and (await a.inner.get_head(head(key, 1).pk)).revision == 1
    st = {s["url"]: s for s in await m.status()}
    assert st[b.url]["reachable"] is False and st[b.url]["pending"] == 2
    assert "no answer 0.3 s after another store of the mirror took the write" in st[b.url]["last_error"]
    b.free.set()  # it answers again: what it missed is sent from its outbox
    await eventually(lambda: m.health[b.url].pending == 0 and m.health[b.url].reachable, what="b caught up")
    assert await b.inner.get(h) == b"while b hangs" and (await b.inner.get_head(head(key, 1).pk)).revision == 1
    await m.close()


async def test_a_slow_store_is_waited_for_while_no_other_has_taken_the_write(tmp_path, db):
    a, b = Hung(str(tmp_path / "a")), Hung(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, timeout=30, max_backoff=0.2, lag=0.3)
    await m.started()
    a.free.clear()
    b.free.clear()
    put = asyncio.ensure_future(m.put(b"both slow"))
    await asyncio.sleep(0.6)  # past the lag: no store has taken it yet, so neither is given up on
    assert not put.done()
    a.free.set()
    b.free.set()
    h = await asyncio.wait_for(put, 5)
    assert await a.inner.has(h) and await b.inner.has(h)
    assert all(s["reachable"] and s["pending"] == 0 for s in await m.status())
    await m.close()


async def test_a_store_a_write_is_still_going_to_is_not_said_to_lack_it(tmp_path, db):
    """`verify` while a push is under way: the head one store took was read through the mirror, and the
    other store, its write still going (nothing in its outbox, nothing failed), was checked and said to
    lack it, so verify failed ("store ... lacks this device's log") and the whole log was pushed again.
    A store with a write under way is not checked, as one with writes waiting in its outbox."""
    a, b = Switch(str(tmp_path / "a")), Hung(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, timeout=30, max_backoff=0.2, lag=30)
    await m.started()
    entry = head(SigningKey.generate(), 1)
    b.free.clear()
    writing = asyncio.ensure_future(m.set_head(entry))

    async def a_took_it():  # as the mirror knows it: its write to a over (the file shows before it is durable)
        # the file first, then the count: the count read first is 0 before the write begins, and the file can
        # show during the read (renamed in, its folder not yet synced) with a's write still under way
        return await a.inner.get_head(entry.pk) is not None and not m.health[a.url].writing

    await eventually(a_took_it, what="a's copy of the head")
    read = Reads(heads={entry.pk: 1})  # what a verify read through the mirror meanwhile
    rows = {r["url"]: r for r in await lacking(m, read, 30)}
    assert rows[a.url]["ok"] is True, rows[a.url]
    assert rows[b.url]["ok"] is None and "under way" in rows[b.url]["not_checked"], rows[b.url]
    b.free.set()
    await asyncio.wait_for(writing, 30)
    assert [r["ok"] for r in await lacking(m, read, 30)] == [True, True]
    await m.close()


async def test_a_store_that_times_out_says_so_in_its_status(tmp_path, db):
    a, b = Hung(str(tmp_path / "a")), Hung(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, timeout=0.2, max_backoff=0.2)
    await m.started()
    key = SigningKey.generate()
    b.free.clear()
    a.free.clear()
    with pytest.raises(StoreError):  # neither took it (both kept it in their outboxes)
        await asyncio.wait_for(m.set_head(head(key, 1)), 5)
    st = {s["url"]: s for s in await m.status()}
    assert st[b.url]["last_error"] == f"{b.url}: no answer within 0.2 s"  # it said "TimeoutError"
    a.free.set()
    b.free.set()
    await m.close()


async def test_a_store_that_lies_is_said_to_lie_not_to_be_unreachable(tmp_path, db):
    """A store of a mirror whose answer is refused (a rolled-back or forged head, bytes that do not hash):
    its status names that kind of failure, which `sessiond status` shows, not "unreachable"."""

    class Liar(Switch):
        async def get_head(self, pk: bytes) -> RegistryEntry | None:
            raise LyingServer(f"{self.url}: served revision 1 of a head this device has seen at 2")

    a, b = Switch(str(tmp_path / "a")), Liar(str(tmp_path / "b"))
    m = MirrorStore([a, b], db.outbox, timeout=2, max_backoff=0.2)
    await m.started()
    key = SigningKey.generate()
    await m.set_head(head(key, 1))
    assert (await m.get_head(b"\xed" + bytes(key.verify_key))) is not None  # a's answer
    st = {s["url"]: s for s in await m.status()}
    assert st[a.url]["reachable"] is True and "failure" not in st[a.url]
    assert st[b.url]["reachable"] is False and st[b.url]["failure"] == "answering what does not verify", st
    await m.close()


async def test_rows_an_earlier_version_queued_under_a_url_with_credentials_reach_their_store(
    tmp_path, db, invite_relay
):
    # before a store's URL left its credentials out, a relay's outbox rows were keyed by
    # s5+http://INVITE@HOST:PORT (a Kubo node's by its USER:PASSWORD@): they are given to the store as it
    # is named now and sent, and no row names the secret any more
    import secretcheck
    from sessiond.stores.cid import digest

    data, host = invite_relay
    invite = secretcheck.invite(data)
    old_url = f"s5+http://{invite}@{host}"
    relay = S5Store(old_url, account_seed=b"o" * 32, token_dir=str(tmp_path / "tokens"))
    assert relay.url == f"s5+http://{host}"  # named without the invite now
    folder = FileStore(str(tmp_path / "folder"))
    key = SigningKey.generate()
    objects = [b"queued by an older sessiond", b"and another"]
    await db.outbox.add_objects(old_url, [(digest(o), o) for o in objects])  # keyed as the old version did
    await db.outbox.add_head(old_url, head(key, 3).pk, head(key, 3).to_bytes(), 3)
    await db.outbox.add_head(relay.url, head(key, 2).pk, head(key, 2).to_bytes(), 2)  # older, new name
    m = MirrorStore([folder, relay], db.outbox, max_backoff=0.2)
    await m.started()
    await eventually(lambda: m.health[relay.url].pending == 0, what="the old rows drained")
    for o in objects:
        assert await relay.get(digest(o)) == o
    assert (await relay.get_head(head(key, 3).pk)).revision == 3  # the newer revision of the head won
    assert await db.outbox.counts() == {}
    await m.close()
    # no row names the invite any more (its bytes stay in free pages until SQLite writes over them)
    rows = await db.c.writer.execute_fetchall("SELECT count(*) FROM mirror_outbox WHERE instr(store_url, ?)", (invite,))
    assert rows[0][0] == 0


async def test_a_kubo_store_gets_the_heads_that_waited_in_its_outbox(tmp_path, db):
    # an outbox keeps a head as its entry, without its key, and a Kubo node takes a head only as an IPNS
    # record signed with that key: the drain asks for this device's key of the head (KeyStore), instead
    # of failing at that row for ever (and every row after it)
    from servers.kubo import start_node
    from sessiond.stores import open_store
    from sessiond.stores.cid import digest
    from sessiond.sync.outboxrows import with_key

    keys = KeyStore(str(tmp_path / "keys"))
    sid = (await db.create_session({}))["id"]

    async def own_head_key(pk: bytes):
        return await KeyStore(str(tmp_path / "keys")).own_head_key(pk, db.session_ids)  # as after a restart

    node, rpc, gateway = await start_node()
    try:
        kubo, folder = open_store(f"ipfs+http://127.0.0.1:{rpc.port}"), FileStore(str(tmp_path / "folder"))
        manifest = b"the manifest this head names"
        entry = RegistryEntry.create(keys.head_key(sid), 4, b"\x1e" + digest(manifest))
        await db.outbox.add_objects(kubo.url, [(digest(manifest), manifest)])  # as a down store's were
        await db.outbox.add_head(kubo.url, entry.pk, entry.to_bytes(), entry.revision)
        await db.outbox.add_objects(kubo.url, [(digest(b"after the head"), b"after the head")])
        m = MirrorStore([folder, kubo], db.outbox, max_backoff=0.2, head_key=own_head_key)
        # another device's head, as an outbox keeps it: no key is found for it
        other = RegistryEntry.from_bytes(head(SigningKey.generate(), 1).to_bytes())
        assert (await with_key(other, own_head_key)).signing_key is None
        await m.started()
        await eventually(lambda: m.health[kubo.url].pending == 0, what="the head drained")
        assert (await kubo.get_head(entry.pk)).revision == 4
        assert await kubo.get(digest(b"after the head")) == b"after the head"  # the rows after it too

        await m.close()
        # a members slot's head is signed by the session's announce key (from its write secret): found too
        from sessiond.sync.members import announce_key

        ws = keys.write_secret(sid, create=True)
        slot = RegistryEntry.create(announce_key(ws), 2, b"\x1e" + digest(manifest))
        await db.outbox.add_head(kubo.url, slot.pk, slot.to_bytes(), slot.revision)
        # a head no key of this device signs any more (its session deleted since): skipped, not a stall
        gone = RegistryEntry.create(SigningKey.generate(), 1, b"\x1e" + digest(manifest))
        await db.outbox.add_head(kubo.url, gone.pk, gone.to_bytes(), gone.revision)
        await db.outbox.add_objects(kubo.url, [(digest(b"after those"), b"after those")])
        m = MirrorStore([folder, kubo], db.outbox, max_backoff=0.2, head_key=own_head_key)  # a restart
        await m.started()
        await eventually(lambda: m.health[kubo.url].pending == 0, what="the slot and the rest drained")
        assert (await kubo.get_head(slot.pk)).revision == 2
        assert await kubo.get_head(gone.pk) is None
        assert await kubo.get(digest(b"after those")) == b"after those"
        await m.close()
        await kubo.close()
    finally:
        await rpc.stop()
        await gateway.stop()


def test_a_daemon_s_kubo_mirror_store_catches_up_after_it_was_down(make_daemon, store_dir):
    # the heads a daemon wrote while its Kubo node was down wait in the node's outbox without their key;
    # the daemon finds this device's key for them (server.py -> SyncContext.own_head_key) and the node
    # catches up, head included
    from servers.kubo import Node, make_rpc_app
    from servers.s5portal import Threaded
    from sessiond.stores.kubo import KuboStore

    node = Node()
    server = Threaded(make_rpc_app(node)).start()
    kubo_url = f"ipfs+http://127.0.0.1:{server.port}"
    try:
        a = make_daemon(["file://" + store_dir, kubo_url]).start()
        ca = a.client()
        sid = ca.create_session(name="mirrored on kubo")["id"]
        ca.append(sid, "user", "before")
        assert ca.sync(sid, wait=True, timeout=30)["complete"]
        node.faults.status, node.faults.times = 503, 10**6  # the node is down
        ca.append(sid, "user", "while down")
        wait_for(lambda: stores_of(a)[kubo_url]["pending"] > 0, timeout=15, what="the node's outbox holds the write")
        node.faults.times = 0  # back
        wait_for(lambda: stores_of(a)[kubo_url]["pending"] == 0, timeout=30, what="the node caught up")
        assert head_revision(KuboStore(kubo_url), a, sid) == ca.status()["sync"][sid]["head_rev"] > 1
    finally:
        server.stop()


def named(finding: dict, *urls: str) -> str:
    """The one URL of `urls` a doctor finding names."""
    (url,) = [u for u in urls if f" {u}" in finding["message"]]
    return url


def test_doctor_checks_each_store_of_a_mirror(make_daemon, store_dir, relay):
    # doctor wrote its probe through the mirror, which a single store taking was enough for: with the relay
    # down it said "this daemon's store file:///...\ns5+http://...: a small object written, read back and
    # verified" (ok, exit 0), and skipped the clock as "a folder store"
    folder = "file://" + store_dir
    a = make_daemon([folder, relay.url]).start()
    sid = a.client().create_session(name="mirrored")["id"]
    a.client().append(sid, "user", "hello")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    rep = cli_json(a.home, "doctor")
    stores = [f for f in rep["findings"] if f["check"] == "store"]
    assert [named(f, folder, relay.url) for f in stores] == [folder, relay.url], stores
    assert all(f["level"] == "ok" and "\n" not in f["message"] for f in stores), stores
    clocks = [f["message"] for f in rep["findings"] if f["check"] == "clock"]
    assert any(relay.url + "'s" in c for c in clocks), clocks  # the relay's clock is checked

    relay.stop()
    res = run_cli(a.home, "doctor", "--json")
    rep = json.loads(res.stdout)
    assert res.returncode == 1 and not rep["ok"]
    stores = [f for f in rep["findings"] if f["check"] == "store"]
    ok, bad = [f for f in stores if f["level"] == "ok"], [f for f in stores if f["level"] == "problem"]
    assert [named(f, folder, relay.url) for f in ok] == [folder], stores
    assert len(bad) == 1 and relay.url in bad[0]["message"] and "\n" not in bad[0]["message"], stores
    assert "outbox" in bad[0]["fix"], bad  # what it missed waits for it: no `sync --wait` to run
    # the session is still verified, through the folder
    assert [f["level"] for f in rep["findings"] if f["check"] == "verify"] == ["ok"], rep


def test_sync_pushes_the_log_again_to_a_store_of_the_mirror_that_lost_it(make_daemon, tmp_path):
    # `sessiond sync` pushes the whole log again when the store lost any of it; through a mirror it asked
    # whether *any* store held the head and each object, so a store of the mirror that lost everything (its
    # disk replaced, its folder emptied) stayed empty for ever while sync, verify and doctor said all was well
    one, two = tmp_path / "one", tmp_path / "two"
    a = make_daemon([f"file://{one}", f"file://{two}"]).start()
    ca = a.client()
    sid = ca.create_session(name="mirrored")["id"]
    ca.append(sid, "user", "kept twice")
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    rev = ca.status()["sync"][sid]["head_rev"]
    assert head_revision(FileStore(str(two)), a, sid) == rev
    for root, _dirs, files in os.walk(two):  # the second store loses all it held
        for f in files:
            os.remove(os.path.join(root, f))
    assert head_revision(FileStore(str(two)), a, sid) == 0

    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: head_revision(FileStore(str(two)), a, sid) >= rev, timeout=15, what="the log pushed again")
    assert all(s["pending"] == 0 for s in stores_of(a).values())
    # the whole log is there again: a device reading only that store imports the session
    b = make_daemon(f"file://{two}").start()
    b.client().import_code(ca.share(sid)["code"])
    assert contents(b, sid) == ["kept twice"]
