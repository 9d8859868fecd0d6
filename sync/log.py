"""Compatibility index: the names callers imported from the one-time sync/log.py, which is now split
by responsibility. Remove this module once sync/engine.py and the parts R3b makes of it import from
the new modules (tests/ and bench/ already do):

    sync/pages.py     page, node and parts codec, the cut into pages, Entry, LogError, op_to_cbor
    sync/manifest.py  the head manifest: Manifest, encode_manifest, parse_manifest
    sync/push.py      LogWriter (sealing, storing, folding levels) and the bulk push of long runs
    sync/pull.py      LogReader (fetching and checking; audit for verify)
    sync/workers.py   Workers: the push threads and the GC pause, owned by the daemon

Re-exports only: patching a constant here changes nothing (patch it where it is used).
"""
from __future__ import annotations

from .manifest import T_MANIFEST, Manifest, encode_manifest, parse_manifest
from .pages import MESSAGE, PAGE_MAX, PAGE_VERSION, T_NODE, T_PAGE, T_PARTS, VERSION, Entry, LogError, Page, op_to_cbor
from .pull import LogReader
from .push import FANOUT, STREAM_BYTES, LogWriter, Written

__all__ = ["FANOUT", "MESSAGE", "PAGE_MAX", "PAGE_VERSION", "STREAM_BYTES", "T_MANIFEST", "T_NODE", "T_PAGE",
           "T_PARTS", "VERSION", "Entry", "LogError", "LogReader", "LogWriter", "Manifest", "Page", "Written",
           "encode_manifest", "op_to_cbor", "parse_manifest"]
