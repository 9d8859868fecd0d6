"""Checkpoints of a session, as the engine makes and checks them: signing a proof of everything this
device has now (recorded in its log), and checking a proof against the local conversation. The proof
format itself is checkpoint.py; this keeps the per-session conversation hash carried on between
checkpoints, so that one hashes only the messages since the last.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..storage.clock import wall
from ..storage.errors import read_only, revoked
from ..storage.ids import ID_RE
from ..storage.testhooks import pause_in_thread
from ..stores import StoreError
from .bounded import LRU, KeyedLocks
from .checkpoint import (
    Chain,
    MalformedProof,
    OtherHistory,
    ProofError,
    UnknownSigner,
    check_proof,
    covered,
    extend,
    proof_of,
    sealed,
    setting_digest,
)
from .context import SyncContext
from .errors import ImportError_
from .fetch import BEHIND
from .members import Members
from .membersobject import member_name

CHAINS_KEPT = 1024
# Messages hashed into a checkpoint's chain per turn of the event loop (~3 us each): a checkpoint comes
# right after the append that passed the session's token mark, and one step of ~100 messages plus the
# signature (~0.6 ms) held up the next append that came meanwhile (1 in 100 of a single client's: its p99).
HASH_STEP = 32


class Proofs:
    """Makes and checks checkpoints; caches the conversation chain of each session (in memory)."""

    def __init__(self, ctx: SyncContext, members: Members):
        self.ctx = ctx
        self.members = members  # (the members slot read when a proof's signer is not known here)
        # per session: (its identity, Chain) of the last checkpoint, for the CHAINS_KEPT most recently
        # checkpointed sessions; one that fell out hashes its whole conversation once at the next
        self._chains: LRU[str, tuple] = LRU(CHAINS_KEPT)
        # per session: (its identity, which operations made its setting, their setting_digest) of the last
        # checkpoint: a session's setting (its prompts: a file's of megabytes) is hashed again only when
        # it changed, and off the event loop
        self._settings: LRU[str, tuple] = LRU(CHAINS_KEPT)
        # one checkpoint of a session made at a time: two at once (an app's request beside an automatic one
        # or `end`'s final one) would each read the same latest checkpoint and next number before either is
        # written, and log two checkpoints of one number, or two of one conversation
        self._making = KeyedLocks()

    def forget(self, sid: str) -> None:
        self._chains.pop(sid, None)
        self._settings.pop(sid, None)

    async def _setting_hash(self, sid: str, ident: Any, ops: list[tuple], frontier: dict[str, int]) -> bytes:
        """setting_digest(ops, frontier), kept per session while the operations it covers stay the same."""
        key = (ident, covered(ops, frontier))
        kept = self._settings.get(sid)
        if kept is not None and kept[0] == key:
            return kept[1]
        digest = await asyncio.to_thread(setting_digest, ops, frontier)
        self._settings[sid] = (key, digest)
        return digest

    async def _known_pks(self, sid: str) -> set[bytes]:
        """This device's head key, the writers it follows, and those whose checkpoints it holds (a writer a
        rekey dropped is followed no more, but what it signed while it was one is still its)."""
        peers = {bytes(p["head_pk"]) for p in await self.ctx.db.peers(sid)}
        return {self.ctx.keys.head_pk(sid)} | peers | await self.ctx.db.checkpoint_signers(sid)

    async def make_checkpoint(self, sid: str) -> dict:
        """Sign a checkpoint of everything this device knows of `sid` now, and record it in the log (one of a
        session at a time: a second asked for meanwhile follows the first, and is it if nothing came between)."""
        async with self._making(sid):
            return (await self._make_checkpoint(sid, None))[0]

    async def checkpoint_marks(self, sid: str) -> list[dict]:
        """The automatic checkpoints of `sid` due and not made (storage/missedmarks.py): one per append that
        took its tokens past a mark since this device's latest checkpoint, each over the conversation as it
        stood right after that append, in order; the chain carried on from one to the next. Found and made
        under the session's one making lock: a checkpoint asked for meanwhile (an app's, `end`'s) follows
        them, and one made before them covers the appends it found, whose marks are then not due."""
        async with self._making(sid):
            made = []
            for _, frontiers in await self.ctx.db.missed_checkpoints(sid):
                for upto in frontiers:
                    made.append((await self._make_checkpoint(sid, upto))[0])
            return made

    async def checkpoint_asked(self, sid: str) -> dict:
        """make_checkpoint of `sid` now, as a request for one answers it: the proof, and `made`, whether this
        request made it (false: nothing changed since this device's latest, which stands and is the answer)."""
        async with self._making(sid):
            proof, made = await self._make_checkpoint(sid, None)
        return {**proof, "made": made}

    async def _make_checkpoint(self, sid: str, upto: dict[str, int] | None = None) -> tuple[dict, bool]:
        db = self.ctx.db
        access = await db.session_access(sid)  # (the row alone: a system prompt may be megabytes)
        if access == "revoked":
            raise revoked(sid, "make a checkpoint of it")
        if access == "read":
            raise read_only(sid, "make a checkpoint of it, which its writers make")
        chain, ident, ops = await self._conversation_chain(sid, upto)
        # nothing new since this device's latest checkpoint (`end` right after one, a second request): a
        # new one would prove the same conversation again (its setting too); that one stands, nothing is written
        setting_hash = await self._setting_hash(sid, ident, ops, chain.frontier)
        latest = await db.latest_own_checkpoint(sid)
        if (
            latest is not None
            and latest.get("v") == 2
            and latest["hash"] == sealed(setting_hash, chain.hash).hex()
            and (latest["messages"], latest["tokens"]) == (chain.messages, chain.tokens)
            and latest["pk"] == self.ctx.keys.head_pk(sid).hex()
        ):
            return latest, False
        await asyncio.sleep(0)  # appends that came meanwhile go first: the signature is another step
        proof = proof_of(
            sid,
            db.device_id,
            await db.next_checkpoint_number(sid),
            chain,
            round(wall(), 3),
            self.ctx.keys.head_key(sid),
            setting_hash,
        )
        # and its write a third: together they were one step of 300-700 us in the daemon, which the client's
        # next append, arriving meanwhile, waited behind (bench/results/profile-tail.md)
        await asyncio.sleep(0)
        return await db.add_checkpoint(sid, proof), True

    async def _conversation_chain(self, sid: str, upto: dict[str, int] | None = None) -> tuple[Chain, Any, list[tuple]]:
        """The chain of the messages of everything this device has of `sid` (version 2's), or as far as the
        frontier `upto` (a mark's checkpoint, made after the appends that came since: checkpoint_marks), carried
        on from the last one computed (kept in memory per session) over the new messages only, when they all
        sort after it and the frontier covers it; from the start otherwise (after a restart, or when a message
        from another device arrived late in the global order), off the event loop. And the session's identity
        and the operations that make its setting, read with them."""
        db = self.ctx.db
        ident, cached = self._chains.get(sid) or (None, None)
        fresh_ident, frontier, rows, ops = await db.conversation_chain(sid, cached.frontier if cached else None, upto)
        chain = None
        if (
            cached is not None
            and ident == fresh_ident
            and all(frontier.get(d, 0) >= s for d, s in cached.frontier.items())
        ):
            chain = await extend_in_steps(cached, frontier, rows)
        if chain is None:
            if cached is not None:
                fresh_ident, frontier, rows, ops = await db.conversation_chain(sid, None, upto)
            chain = (
                await asyncio.to_thread(extend, None, frontier, rows)
                if len(rows) > 256
                else await extend_in_steps(None, frontier, rows)
            )
            assert chain is not None  # from the start (None), extend always answers a chain
        self._chains[sid] = (fresh_ident, chain)
        return chain, fresh_ident, ops

    async def verify_proof(self, sid: str, proof: dict) -> dict:
        if proof.get("session") not in (None, sid):
            raise _of_another(proof.get("session"), sid)
        try:
            db = self.ctx.db
            messages, pks, ops = await db.conversation(sid), await self._known_pks(sid), await db.setting_ops(sid)
            # off the event loop, as a checkpoint's making: the whole conversation is hashed (100,000 messages,
            # or a version 2 proof's megabytes of prompts), and every other client waited meanwhile
            await asyncio.to_thread(_check, proof, messages, pks, ops)
        except MalformedProof as exc:  # not a proof that can be checked: the request's error, as another session's
            raise ImportError_("checkpoint", str(exc)) from None
        except UnknownSigner as exc:
            return {"ok": False, "session": sid, "problem": await self._not_read_yet(sid, exc.pk) or str(exc)}
        except OtherHistory as exc:
            return {"ok": False, "session": sid, "problem": await self._not_here_yet(sid, proof) or str(exc)}
        except ProofError as exc:
            return {"ok": False, "session": sid, "problem": str(exc)}
        return {
            "ok": True,
            "session": sid,
            "number": proof["number"],
            "device": proof["device"],
            "messages": proof["messages"],
            "tokens": proof["tokens"],
            "v": proof.get("v", 1),
        }

    async def _not_read_yet(self, sid: str, pk: bytes) -> str | None:
        """What to say of a proof signed by `pk`, a key `sid` does not know here, when it is the key of a
        writer this device has not read yet (it joined after this device last read the members slot: its
        log, and its key with it, come with the next pull): None when the store's slot does not list it
        either (a key that never wrote the session), or for a session not shared."""
        ctx = self.ctx
        remote, key = await ctx.db.remote(sid), ctx.keys.session_key(sid)
        if remote is None or key is None:
            return None
        try:
            store = await ctx.store_for(sid)
            _, members, _, frozen = await self.members.read_slot(
                store, sid, key, bytes(remote["announce_pk"]), cached=True
            )
        except (ImportError_, StoreError, TimeoutError, OSError) as exc:
            return (
                f"proof is signed by a key this session does not know here; its writers as the store lists them "
                f"could not be read ({exc}): if the signer joined the session lately, this device has not read "
                f"it yet: run `sessiond sync {sid}`, then verify again"
            )
        device = next((member_name(m) for m in members if bytes(m["head_pk"]) == pk), None)
        device = device or next((f["d"] for f in frozen if bytes(f["k"]) == pk), None)
        if device is None:
            return None
        return (
            f"proof is signed by device {device}, a writer of this session that this device has not read yet "
            f"(it joined after this device's last pull): run `sessiond sync {sid}` (or wait for the next "
            f"pull), then verify again"
        )

    async def _not_here_yet(self, sid: str, proof: dict) -> str | None:
        """What to say of a proof whose conversation differs from this device's, when the proof covers
        writes of a device past those that have arrived here (a pull, or an import's writers away through
        a rekey, still to come): they are missing here, not changed. None when all it covers is here."""
        have = await self.ctx.db.devices(sid)
        short = sorted(
            (str(d), have.get(str(d), 0), int(upto))
            for d, upto in proof["frontier"].items()
            if have.get(str(d), 0) < int(upto)
        )
        if not short:
            return None
        waiting = set((await self.ctx.db.peers_in_error(BEHIND, [sid])).get(sid, []))
        said = "; ".join(
            f"device {d}: up to write {upto} in the proof, {here} here"
            + (f" (device {d} {BEHIND})" if d in waiting else "")
            for d, here, upto in short
        )
        return (
            f"checkpoint {proof['number']} of device {proof['device']} covers writes that have not arrived here "
            f"yet ({said}): run `sessiond sync {sid}` (or wait for the session's import and pulls to finish), "
            f"then verify again"
        )


def _check(proof: dict, messages: list[tuple], pks: set[bytes], ops: list[tuple]) -> None:
    """check_proof, in a worker thread (the tests hold it at `verify.hash`)."""
    pause_in_thread("verify.hash")
    check_proof(proof, messages, pks, ops)


async def extend_in_steps(chain: Chain | None, frontier: dict[str, int], rows: list[tuple]) -> Chain | None:
    """checkpoint.extend, HASH_STEP messages per turn of the event loop (the same chain as one call)."""
    start = 0
    while len(rows) - start > HASH_STEP:
        chain = extend(chain, frontier, rows[start : start + HASH_STEP])
        if chain is None:  # a message sorts before the chain's last: from the start, as extend says
            return None
        start += HASH_STEP
        await asyncio.sleep(0)
    return extend(chain, frontier, rows[start:])


def _of_another(named: Any, sid: str) -> ImportError_:
    """A proof given to session `sid` that names another: refused, with the way to verify it where it belongs
    (when what it names is a session id at all)."""
    if not isinstance(named, str) or not ID_RE.match(named):
        return ImportError_("checkpoint", f"the proof is for session {named!r:.140}, not {sid}")
    err = ImportError_(
        "checkpoint",
        f"the proof is for session {named}, not {sid}: verify it against its own session"
        f" (`sessiond verify-proof {named} FILE`)",
    )
    err.api = [f'POST /v1/sessions/{named}/verify-proof {{"proof": CHECKPOINT}}']
    return err
