"""Compatibility only: the names code used to import from storage/db.py before it was split (issue 14).
Import from their homes instead (database.Database; model.Op, RemoteLog, LogRun, now, ROLES, ...;
schema.MIGRATIONS, SCHEMA_VERSION; logrun.read_run). Kept so that branches written against the old
module merge; to be deleted once none imports it."""
from __future__ import annotations

from .database import Database
from .logrun import RunReader, read_run as _log_run_sync
from .model import ROLES, SETTINGS_KEYS, STATUSES, LogRun, Op, RemoteLog, message_id, now, parse_message_id
from .schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version

__all__ = ["Database", "RunReader", "_log_run_sync", "ROLES", "SETTINGS_KEYS", "STATUSES", "LogRun", "Op",
           "RemoteLog", "message_id", "now", "parse_message_id", "MIGRATIONS", "SCHEMA_VERSION", "migrate",
           "schema_version"]
