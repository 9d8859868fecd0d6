"""A rekey over a members slot a store keeps serving older than this device read it, after the rekey's restore.

A and B write a session; C joins by B's code; A reads C's join. A's store then serves the slot as it was before C
came, and goes on serving it so after A writes it again (a lying store, or a cache in front of it, that takes writes
and answers the old copy). The rekey restored the slot once, read it again, found it as stale, and went on over it:
C, no writer in what the store served, was given no key and left out, with nothing said. The rekey is refused now,
as a slot rolled back (`replayed`), naming the store, and rekeys nothing: a rekey over it would leave out the writers
let in since."""

from __future__ import annotations

import os
import re
import shlex

import pytest

from sessiond.cli.parser import ParseError, build_parser
from sessiond.stores import FileStore, StaleHead
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.errors import ImportError_
from sessiond.sync.members import announce_key


class _Stale(FileStore):
    """A folder store that, once `pinned`, answers the heads pinned as they were, whatever is written since.
    `restored`: how many writes of a pinned head are taken and then lost to its host's backup restored again (a
    later write above the pinned revision is taken as the store's head, and served)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.pinned: dict[bytes, RegistryEntry] = {}
        self.restored: int | None = None  # (None: writes honest, checked against what the folder holds)

    async def get_head(self, pk: bytes):
        if pk in self.pinned:
            return self.pinned[pk]
        return await super().get_head(pk)

    async def set_head(self, entry: RegistryEntry) -> None:
        old = self.pinned.get(entry.pk)
        if old is None or self.restored is None:
            return await super().set_head(entry)
        if entry.revision <= old.revision:
            raise StaleHead("stale")
        os.remove(os.path.join(self.root, "heads", entry.pk.hex()))
        await super().set_head(entry)
        if self.restored:
            self.restored -= 1  # (lost again: the backup put back)
            return
        del self.pinned[entry.pk]


@pytest.mark.parametrize("writes", ["refused as stale", "taken after the restore's"])
async def test_a_rekey_over_a_slot_still_served_stale_after_its_restore_is_refused(devices, writes):
    """`refused as stale`: the store refuses writes below what it holds (main: refused as `busy`, "try again",
    again and again, the store never named); `taken after the restore's`: the store restored again after the rekey's
    restore wrote the slot, the rekey's notice then taken at the old revision's next (main: C left out)."""
    store_a = _Stale(devices.store_path)
    a, b = await devices.open(store_a=store_a)
    await a.start()
    sid = await devices.shared("stale always", write=True)
    await b.pull(sid)
    slot = b"\xed" + bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    before_c = await store_a.get_head(slot)
    _dbc, c = await devices._device("c", None, {})
    code = (await b.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await c.import_code(code, None)
    await a.pull(sid)
    seen = (await devices.dba.remote(sid))["members_rev"]
    assert before_c is not None and before_c.revision < seen
    key = a.ctx.keys.session_key(sid)
    store_a.pinned[slot] = before_c  # (served as before C came, whatever A writes)
    store_a.restored = None if writes == "refused as stale" else 1

    with pytest.raises(ImportError_) as err:
        await a.rekey(sid)
    # main: rekeyed, C given no key (kept: B alone)
    assert err.value.kind == "replayed", err.value
    assert "Nothing was rekeyed" in str(err.value) and store_a.url in str(err.value), err.value
    _commands_run(str(err.value))  # main: `sessiond start --change-store URL`, which the CLI refuses
    assert a.ctx.keys.session_key(sid) == key
    assert a.ctx.keys.rekey_pending(sid) is None


def _commands_run(said: str) -> None:
    """Each command a refusal names (in backquotes) is one the CLI takes, URL standing for a store's URL."""
    named = re.findall(r"`(sessiond [^`]+)`", said)
    assert named, said
    for command in (c for n in named for c in n.split(" && ")):
        words = shlex.split(command)[1:]
        words = words[: words.index("<")] if "<" in words else words  # (a redirection: the shell's)
        argv = ["file:///elsewhere" if a == "URL" else a for a in words]
        try:
            build_parser().parse_args(argv)
        except (ParseError, SystemExit):
            raise AssertionError(f"the CLI refuses {command!r}: {said}") from None
