"""The tests' pause hook, `pause_for_tests` (SESSIOND_TEST_PAUSE), for the daemon's modules: it lives in
storage/testhooks.py, as the storage layer (which imports no other package of ours) holds a commit with it."""

from __future__ import annotations

from ..storage.testhooks import pause_for_tests

__all__ = ["pause_for_tests"]
