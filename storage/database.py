"""The device's session database: SQLite (WAL, foreign keys) through the stdlib's sqlite3. `Database` is the one
object the rest of sessiond holds; it is composed of small parts, one per concern (sessions.py, statuschanges.py,
expiry.py, chats.py, messages.py, context.py, checkpoints.py, stats.py, syncstate.py, pushedmark.py, logrun.py,
search.py), over the connections and transactions of connections.py; the calls of the sync engine are its base
class's, syncdb.py. Operations into tables: apply.py.

Every change is an *operation* written by one device with a per-(session, device) sequence number and a per-session
Lamport clock. Messages are operations stored in the `messages` table; every other change (session created, settings
changed, chat created, ...) is a row in `ops`. The materialised tables (`sessions`, `chats`, `messages`) are what
the API reads. Operations from other devices are applied with the same code, and the result does not depend on the
order they arrive in (see apply.py). A device's own operations with seq above its pushed mark are the durable push
queue: they are written in the same transaction as the change they describe.

THE READ RULE. Which connection a read goes to is decided by what it must see, never by who is asking:

1. A read of committed state goes through `c.committed.fetchone/fetchall`. It never sees a transaction
   half done, and never waits for a writer: it runs on the writer when nothing is open on it (its page
   cache outlives its commits), else on the read-only connection.
2. A read inside a write transaction goes through the transaction you hold:
       async with c.transaction() as tx:
           row = await tx.fetchone(...)      # sees this transaction's own writes
           await tx.execute(...)
   Helpers that may run either way take the reads object (`q`: c.committed or tx) as a parameter.
3. A read that must see the latest write, including a transaction under way right now (the sync engine's
   bookkeeping: push state, peers, remotes, last seq) uses `c.latest(...)`: on the writer, under the write
   lock, between transactions. Never from inside a transaction (the lock is not re-entrant).
4. Long reads (a push's runs, a checkpoint's chain) run on the bulk-read thread (`c.bulk(fn, ...)`, a
   stdlib connection of its own), or on a RunReader in the caller's worker thread.
No read runs on the writer outside a transaction other than (3), and (1) between transactions. Every read
fetches all its rows at once: its statement is finished before it returns, so no read snapshot is ever left
open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from .chats import Chats
from .checkpoints import Checkpoints
from .closing import Closing
from .connections import Connections, Row
from .context import Context
from .copies import Copies
from .expiry import Expiries, expired_for_writes, refuse_expired, refuse_inactive
from .keptrecords import KeptRecords
from .lifecycle import Released, ShareLog
from .logrun import LogReads
from .messages import Also, Messages
from .model import now
from .openaichoices import OpenaiChoices
from .openaimade import OpenaiMade
from .outbox import Outbox
from .pushedmark import PushedMark
from .schema import schema_version
from .search import Search
from .sessions import Made, Sessions
from .stats import Stats
from .statuschanges import StatusChanges
from .syncdb import SyncDatabase
from .syncstate import SyncState


class Database(SyncDatabase):
    """The session database, used only from the daemon's event loop. What the sync engine calls: SyncDatabase."""

    def __init__(self, c: Connections):
        self.c = c
        self.sessions = Sessions(c)
        # the sessions being deleted, ended or revoked, which a question to their model waits for (closing.py)
        self.closing = Closing(lambda: c.group.batch)  # (a close cancelled: its mark kept until its batch ends)
        self.status_changes = StatusChanges(c, self.sessions, self.closing)  # pause, resume, end; revoked
        self.expiries = Expiries(c)  # the sessions that expire, for the clean-up
        self.chats = Chats(c)
        self.messages = Messages(c)
        self.budgets = Context(c, self.chats)
        self.checkpointer = Checkpoints(c)
        self.statistics = Stats(c, self.sessions, self.chats)
        self.syncstate = SyncState(c)
        self.log = LogReads(c)
        self.share_log = ShareLog(c)  # the codes this device issued (lifecycle.py)
        self.released = Released(c)  # objects its logs let go, for gc (lifecycle.py)
        self.pushed_mark = PushedMark(c, self.syncstate, self.released)  # a push's step, with gc's notes
        self.outbox = Outbox(c)  # the mirror stores' outboxes (sync/mirror.py)
        self.kept_records = KeptRecords(c)  # IPNS records put again before a DHT forgets them (sync/reput.py)
        self.searcher = Search(c)
        self.copies = Copies(c, self.sessions, self.chats, self.messages, self.budgets)  # clone and fork
        self.openai_choices = OpenaiChoices(c)  # the other answers of an OpenAI request for several (n)
        self.openai_made = OpenaiMade(c)  # the sessions OpenAI requests made, their ids not given yet

    @classmethod
    async def open(cls, path: str, *, upto: int | None = None) -> Database:
        return cls(await Connections.open(path, upto=upto))

    async def close(self) -> None:
        await self.c.close()

    # ------------------------------------------------------------------ what the rest of sessiond reads
    @property
    def device_id(self) -> str:
        return self.c.device_id

    @property
    def path(self) -> str:
        return self.c.path

    @property
    def listeners(self) -> list[Callable[[dict], Any]]:
        """Callables told each event (a dict) after its commit."""
        return self.c.listeners

    @property
    def limits(self) -> dict[str, int]:
        """max_active_sessions(_per_user), max_chats_per_session, max_messages_per_chat."""
        return self.c.limits

    @limits.setter
    def limits(self, value: dict[str, int]) -> None:
        self.c.limits = value

    @property
    def estimate(self) -> Callable[[str], int]:
        """Text -> tokens (config.toml's token_estimator): the system prompt's tokens, which a context budget counts."""
        return self.c.estimate

    @estimate.setter
    def estimate(self, fn: Callable[[str], int]) -> None:
        self.c.estimate = fn

    @property
    def conn(self):
        """The writer, behind awaitable calls (tests that build old schemas write through it)."""
        return self.c.writer

    @property
    def reader(self):
        """The read-only connection, behind awaitable calls."""
        return self.c.reader

    async def read_all(self, sql: str, args: tuple = ()) -> list[Row]:
        """Any read of committed state (rule 1)."""
        return await self.c.committed.fetchall(sql, args)

    async def read_one(self, sql: str, args: tuple = ()) -> Row | None:
        return await self.c.committed.fetchone(sql, args)

    _all = read_all  # the names tests on other branches still call
    _one = read_one

    async def schema_version(self) -> int:
        return await schema_version(self.c.reader)

    async def repair_unpushable(self) -> list[str]:
        return await self.syncstate.repair_unpushable()

    async def signed_sessions(self) -> int:
        """Sessions with a head this device signed, pushed to a store (they depend on its device key)."""
        return await self.syncstate.signed_sessions()

    # ------------------------------------------------------------------ sessions
    async def create_session(
        self, spec: dict, *, file_import: bool = False, active: bool = True, also: Made | None = None
    ) -> dict:
        return await self.sessions.create(spec, file_import=file_import, active=active, also=also)

    async def end_file_import(self, sids: list[str], finish: dict[str, dict] | None = None) -> None:
        """The import from a file that made `sids` is done: all of them stay (`finish`: the status and
        compaction cutoffs their files give them)."""
        await self.sessions.end_file_import(sids, finish)

    async def unfinished_file_imports(self) -> list[str]:
        """The sessions of imports from a file that a crash cut short (to be deleted, as the import failed)."""
        return await self.sessions.unfinished_file_imports()

    async def get_session(self, sid: str, *, counts: bool = False) -> dict:
        return await self.sessions.get(sid, counts=counts)

    async def has_session(self, sid: str) -> bool:
        return await self.sessions.exists(sid)

    async def session_access(self, sid: str) -> str:
        return await self.sessions.access(sid)

    async def case_twin(self, sid: str) -> str | None:
        """A session whose id differs from `sid` only in case (see sessions.case_twin), if any."""
        return await self.sessions.case_twin(sid)

    async def held_twin(self, sid: str) -> tuple[str, bool] | None:
        """case_twin's session, and whether it is being imported (ids.held_twin), if any."""
        return await self.sessions.held_twin(sid)

    async def imported_from(self, fields: dict[str, str]) -> dict[tuple[str, str], list[str]]:
        """The sessions imports from files made of other apps' conversations (Sessions.imported_from)."""
        return await self.sessions.imported_from(fields)

    async def forks_of(self, sids: list[str], sources: list[str]) -> dict[str, list[dict]]:
        """The shown forks of these sessions, of these sources, by the session each forks (Sessions.forks_of)."""
        return await self.sessions.forks_of(sids, sources)

    async def list_sessions(
        self,
        *,
        user: str | None = None,
        no_user: bool = False,
        status: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> list[dict]:
        return await self.sessions.list(user=user, no_user=no_user, status=status, tag=tag, limit=limit, after=after)

    async def session_ids(self, *, hidden: bool = False) -> list[str]:
        return await self.sessions.ids(hidden=hidden)

    async def update_session(
        self, sid: str, fields: dict | Callable[[dict], dict], *, event: str = "session.updated"
    ) -> dict:
        return await self.sessions.update(sid, fields, event=event)

    async def mark_revoked(self, sid: str, carried: int | None = None, *, on: bytes | None = None) -> bool:
        return await self.status_changes.mark_revoked(sid, carried, on=on)

    async def set_status(self, sid: str, status: str, *, expired_at: float | None = None) -> dict:
        return await self.status_changes.set_status(sid, status, expired_at=expired_at)

    async def refuse_inactive(self, sid: str, status: str) -> NoReturn:
        """Refuse a message to a paused or ended session: as `expired` if its expiry ended it, else a conflict."""
        await refuse_inactive(self.c.committed, sid, status)

    async def delete_session(self, sid: str, **only_if: Any) -> bool:
        """Sessions.delete, with its keywords (idle_before, head_pk, busy)."""
        return await self.sessions.delete(sid, **only_if)

    async def expired(self, t: float, *, ended: bool = False) -> list[dict]:
        return await self.expiries.expired(t, ended=ended)

    async def activity_after(self, t: float) -> int:
        return await self.expiries.activity_after(t)

    async def next_expiry(self, after: float, *, ended: bool = False) -> float | None:
        return await self.expiries.next_expiry(after, ended=ended)

    async def expiry_of(self, sid: str, *, ended: bool = False) -> float | None:
        return await self.expiries.expiry_of(sid, ended=ended)

    @property
    def on_expired(self) -> Callable[[str], Any] | None:
        """Told the id of a session a write found past its expiry (the write is refused): the daemon ends it."""
        return self.c.on_expired

    @on_expired.setter
    def on_expired(self, fn: Callable[[str], Any] | None) -> None:
        self.c.on_expired = fn

    async def check_expiry(self, session: dict) -> None:
        """Refuse a write to `session` (as read) past its expiry or idle timeout, as the storage's own writes do
        (a shared one's idle timeout not: its end waits for a pull, expired_for_writes)."""
        if await expired_for_writes(self.c.committed, session["id"], session, now()):
            await refuse_expired(self.c, self.c.committed, session["id"], session)

    async def older_than(self, t: float) -> list[dict]:
        return await self.sessions.older_than(t)

    async def clone(self, sid: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        return await self.copies.clone(sid, new_id=new_id, name=name)

    async def fork(self, sid: str, at: str, *, new_id: str | None = None, name: str | None = None) -> dict:
        return await self.copies.fork(sid, at, new_id=new_id, name=name)

    # ------------------------------------------------------------------ chats
    async def create_chat(self, sid: str, spec: dict) -> dict:
        return await self.chats.create(sid, spec)

    async def update_chat(self, sid: str, cid: str, change: Callable[[dict], dict]) -> dict:
        return await self.chats.update(sid, cid, change)

    async def get_chat(self, sid: str, cid: str) -> dict:
        return await self.chats.get(sid, cid)

    async def list_chats(self, sid: str) -> list[dict]:
        return await self.chats.list(sid)

    async def resolve_chat(self, sid: str, ref: str) -> str:
        return await self.chats.resolve(sid, ref)

    # ------------------------------------------------------------------ messages
    async def append_messages(
        self,
        sid: str,
        messages: list[dict],
        chat: str | None = None,
        *,
        key: str | None = None,
        answer: bool = False,
        times: list[float] | None = None,
        importing: bool = False,
        held: int | None = None,
        check_results: bool = False,
        asked: bool = False,
        also: Also | None = None,
    ) -> list[dict]:
        return await self.messages.append(
            sid,
            messages,
            chat,
            key=key,
            answer=answer,
            times=times,
            importing=importing,
            held=held,
            check_results=check_results,
            asked=asked,
            also=also,
        )

    async def check_fits(self, sid: str, chat: str, messages: list[dict]) -> None:
        """Refuse, before it is done, what appending `messages` would refuse for the quota or the context budget."""
        await self.messages.check_fits(sid, chat, messages)

    async def check_room(self, sid: str, chat: str, adding: int, what: str = "") -> None:
        """Refuse, before it is done, what would add `adding` messages to the chat past max_messages_per_chat."""
        await self.messages.check_room(sid, chat, adding, what)

    async def chat_history(self, sid: str, chat: str, limit: int = -1, *, last: bool = False) -> list[dict]:
        return await self.messages.history(sid, chat, limit, last=last)

    async def idempotent_result(self, sid: str, key: str) -> list[dict] | None:
        return await self.messages.idempotent_result(sid, key)

    async def get_message(self, sid: str, mid: str) -> dict:
        return await self.messages.get(sid, mid)

    async def list_messages(
        self,
        sid: str,
        *,
        chat: str | None = None,
        limit: int = 100,
        before: str | None = None,
        after: str | None = None,
        all_chats: bool = False,
        last: bool = False,
    ) -> list[dict]:
        return await self.messages.list(
            sid, chat=chat, limit=limit, before=before, after=after, all_chats=all_chats, last=last
        )

    async def conversation(self, sid: str) -> list[tuple]:
        return await self.messages.conversation(sid)

    async def search(
        self,
        q: str,
        *,
        session: str | None = None,
        user: str | None = None,
        no_user: bool = False,
        role: str | None = None,
        limit: int = 20,
    ) -> list[dict]:
        """Full-text search over every message (storage/search.py), best first."""
        return await self.searcher.search(q, session=session, user=user, no_user=no_user, role=role, limit=limit)

    # ------------------------------------------------------------------ context budgets, quotas, checkpoints, stats
    async def compact(
        self, sid: str, chat: str | None = None, *, target_tokens: int | None = None, undo: bool = False
    ) -> dict:
        return await self.budgets.compact(sid, chat, target_tokens=target_tokens, undo=undo)

    async def context(self, sid: str, chat: str | None = None) -> dict:
        return await self.budgets.context(sid, chat)

    async def quota(self, sid: str) -> dict:
        return await self.budgets.quota(sid)

    async def context_messages(self, sid: str, chat: str) -> list[dict]:
        return await self.budgets.messages(sid, chat)

    async def conversation_chain(
        self, sid: str, after: dict[str, int] | None, upto: dict[str, int] | None = None
    ) -> tuple[Any, dict[str, int], list[tuple], list[tuple]]:
        return await self.checkpointer.chain(sid, after, upto)

    async def setting_ops(self, sid: str) -> list[tuple]:
        return await self.checkpointer.setting_ops(sid)

    async def add_checkpoint(self, sid: str, body: dict) -> dict:
        return await self.checkpointer.add(sid, body)

    async def checkpoints(self, sid: str) -> list[dict]:
        return await self.checkpointer.list(sid)

    async def checkpoint_signers(self, sid: str) -> set[bytes]:
        return await self.checkpointer.signers(sid)

    async def latest_own_checkpoint(self, sid: str) -> dict | None:
        return await self.checkpointer.latest_own(sid)

    async def unproven_ends(self) -> list[str]:
        return await self.checkpointer.unproven_ends()

    async def missed_checkpoints(self, sid: str | None = None) -> list[tuple[str, list[dict[str, int]]]]:
        """The automatic checkpoints due and not made (`sid`: of that session only; at start: those a crash
        lost): per session, the frontier of each, one per append that passed a mark (storage/missedmarks.py)."""
        return await self.checkpointer.missed(sid)

    async def next_checkpoint_number(self, sid: str) -> int:
        return await self.checkpointer.next_number(sid)

    async def stats(self, sid: str | None = None, user: str | None = None, no_user: bool = False) -> dict:
        return await self.statistics.stats(sid, user, no_user)

    async def counts(self) -> dict:
        return await self.statistics.counts()
