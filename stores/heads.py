"""What every network store checks on a head it reads: the entry verifies, it is for the key asked,
and its revision never goes below one this process has already seen from that store (a server that
rolls a head back is lying, and its answer is refused)."""

from __future__ import annotations

from .errors import HeadRolledBack, LyingServer
from .registry import RegistryEntry, RegistryError


class SeenRevisions:
    def __init__(self, where: str):
        self.where = where
        self._seen: dict[bytes, int] = {}

    def check(self, pk: bytes, entry: RegistryEntry) -> RegistryEntry:
        if entry.pk != pk:
            raise LyingServer(f"{self.where} answered a head signed by another key than the one asked for")
        try:
            entry.verify()
        except RegistryError:
            raise LyingServer(
                f"{self.where} answered a head whose signature does not verify (forged or damaged); it is ignored"
            ) from None
        seen = self._seen.get(pk)
        if seen is not None and entry.revision < seen:
            raise HeadRolledBack(
                f"{self.where} answered revision {entry.revision} of a head already seen "
                f"at revision {seen}: a rollback, refused",
                served=entry.revision,
                seen=seen,
            )
        self._seen[pk] = entry.revision
        return entry

    def saw(self, entry: RegistryEntry) -> None:
        """We wrote `entry` ourselves."""
        if entry.revision > self._seen.get(entry.pk, -1):
            self._seen[entry.pk] = entry.revision
