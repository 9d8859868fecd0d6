"""The database as the sync engine uses it (storage/database.py's `Database` is one): a device's log read for a
push, other devices' operations applied (applyremote.py), and the push and pull bookkeeping: sequence numbers and
clocks, peers, remotes, sync state and notes (syncstate.py), a push's step (pushedmark.py). Each call passes on
to the part that owns it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from .applyremote import ApplyOptions, apply_remote
from .connections import Connections
from .logrun import LogReads, RunReader
from .model import LogRun, Op, RemoteLog
from .pushedmark import PushedMark
from .syncstate import SyncState


class SyncDatabase:
    """The sync engine's calls of `Database`, over the parts it builds (declared here, made there)."""

    c: Connections
    log: LogReads
    syncstate: SyncState
    pushed_mark: PushedMark

    # ------------------------------------------------------------------ the log, for sync
    async def log_ops(self, sid: str, device_id: str, after_seq: int, upto_seq: int | None = None) -> list[Op]:
        return await self.log.log_ops(sid, device_id, after_seq, upto_seq)

    async def log_run(self, sid: str, device_id: str, after_seq: int, upto_seq: int | None = None) -> LogRun:
        return await self.log.log_run(sid, device_id, after_seq, upto_seq)

    def run_reader(self) -> RunReader:
        return self.log.run_reader()

    async def apply_remote(self, sid: str, logs: dict[str, RemoteLog], **options: Unpack[ApplyOptions]) -> int:
        """storage/applyremote.py's apply_remote (its keyword options: ApplyOptions there)."""
        return await apply_remote(self.c, sid, logs, **options)

    # ------------------------------------------------------------------ push and pull bookkeeping
    async def get_lamport(self, sid: str) -> int:
        return await self.syncstate.get_lamport(sid)

    async def last_seq(self, sid: str, device_id: str | None = None) -> int:
        return await self.syncstate.last_seq(sid, device_id)

    async def devices(self, sid: str) -> dict[str, int]:
        return await self.syncstate.devices(sid)

    async def written_after(self, sid: str, seq: int) -> tuple[list[str], int, int]:
        return await self.syncstate.written_after(sid, seq)

    async def held_here(self, sid: str) -> dict | None:
        return await self.syncstate.held_here(sid)

    async def all_held_here(self) -> dict[str, dict]:
        return await self.syncstate.all_held_here()

    async def move_store(self, old_url: str) -> int:
        return await self.syncstate.move_store(old_url)

    async def sync_note(self, key: str) -> str | None:
        """A value the sync engine keeps across restarts (when it last did a periodic job)."""
        return await self.syncstate.note(key)

    async def set_sync_note(self, key: str, value: str) -> None:
        await self.syncstate.set_note(key, value)

    async def adopt_device_id(self, device_id: str) -> None:
        await self.syncstate.adopt_device_id(device_id)

    async def peers(self, sid: str) -> list[dict]:
        return await self.syncstate.peers(sid)

    async def peers_in_error(self, error: str, sids: Sequence[str] | None = None) -> dict[str, list[str]]:
        return await self.syncstate.peers_in_error(error, sids)

    async def device_tallies(self, sid: str) -> dict[str, dict]:
        return await self.syncstate.device_tallies(sid)

    async def keep_peers(self, sid: str, pks: list[bytes]) -> None:
        await self.syncstate.keep_peers(sid, pks)

    async def remote(self, sid: str) -> dict | None:
        return await self.syncstate.remote(sid)

    async def set_remote(self, sid: str, **fields) -> None:
        await self.syncstate.set_remote(sid, **fields)

    async def add_remote(self, sid: str, store_url: str | None, announce_pk: bytes) -> None:
        await self.syncstate.add_remote(sid, store_url, announce_pk)

    async def remote_store_urls(self) -> list[str]:
        return await self.syncstate.remote_store_urls()

    async def has_shared_sessions(self) -> bool:
        return await self.syncstate.has_shared_sessions()

    async def sessions_with_heads(self, pks: list[bytes]) -> list[str]:
        return await self.syncstate.sessions_with_heads(pks)

    async def shared_sessions(self) -> list[str]:
        return await self.syncstate.shared_sessions()

    async def held_revisions(self) -> list[tuple[str, str | None, bytes, int]]:
        return await self.syncstate.held_revisions()

    async def sync_state(self, sid: str) -> dict:
        return await self.syncstate.sync_state(sid)

    async def all_sync_states(self, sids: Sequence[str] | None = None) -> dict[str, dict]:
        return await self.syncstate.all_sync_states(sids)

    async def save_sync_state(self, sid: str, **fields) -> None:
        await self.syncstate.save_sync_state(sid, **fields)

    async def save_pushed(self, sid: str, released: tuple[str, list[bytes]] | None, **fields) -> None:
        """A push's step in one transaction: `named` and its sync state's `fields` (pushedmark.py)."""
        await self.pushed_mark.save(sid, released, **fields)

    async def sessions_needing_push(self) -> list[str]:
        return await self.syncstate.sessions_needing_push()
