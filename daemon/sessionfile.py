"""What a session file (`export --format json`, docs/FORMATS.md section 10) holds beyond what POST /v1/sessions
and an append take, so that it imports back as it was: its status, its chats' compaction cutoffs, and its
model's answers' own fields, where it came from (its provenance), its messages' own times and whether it
was proven (checkpoints). daemon/formats.py reads the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.sessions import CHAT_POLICY, POLICY_SHORTCUTS
from ..api.types import FIELD_DEPTH, MAX_TOKENS
from ..storage.errors import Invalid
from ..storage.ids import check_id
from ..storage.model import charge, parse_message_id
from ..storage.pulledextra import ANSWER_COUNTS, ANSWER_TEXTS, CONTEXT_TOKENS, is_count, text_ok
from ..storage.tokens import counted_text
from .validate import json_value

STATUSES = ("active", "paused", "ended")


def newer_policy(holder: dict, where: str, chat: bool = False) -> tuple[dict, dict]:
    """A session's or a `chat`'s object in a file (`holder`) with its policy's keys that its kind does not take
    taken out, and those keys: another device's, as the check of its operations leaves them (daemon/remote_checks.py:
    a newer sessiond's; a chat's naming a session's key), which a pull keeps (storage/pulledpolicy.py) and `export`
    so writes, kept as they are (as JSON the operation carrying them can hold where it does: a chat's three levels
    into its session.create). The rest is checked as POST's."""
    p, known = holder.get("policy"), set(CHAT_POLICY if chat else POLICY_SHORTCUTS)
    if not isinstance(p, dict) or p.keys() <= known:
        return holder, {}
    newer = {k: x for k, x in p.items() if k not in known}
    json_value(newer, f"{where}.policy", FIELD_DEPTH + 2 if chat else FIELD_DEPTH)
    return {**holder, "policy": {k: x for k, x in p.items() if k in known}}, newer


def status(session: dict) -> str:
    """The session's status in its file (`active` when a file written by hand leaves it out)."""
    s = session.get("status") or "active"
    if s not in STATUSES:
        raise Invalid(f"session.status {s!r:.40} is not one of {', '.join(STATUSES)}")
    return s


# a session's provenance: made by `clone` (of session) or `fork` (of session, at message; a ChatGPT branch: at
# none), as storage/copies.py and daemon/formats.py write it
PROVENANCE_KINDS = ("clone", "fork")
# copied_tokens: a fork's copied history's tokens, which the statistics count once (storage/stats.py)
PROVENANCE_KEYS = frozenset({"kind", "session", "message", "copied_tokens"})


def provenance(session: dict) -> dict | None:
    """Where the file's session came from (the session it was cloned or forked from, and at which message),
    which the import keeps as it is: the file's word, as the session's name is, and shown as such."""
    p = session.get("provenance")
    if p is None:
        return None
    where = "session.provenance"
    if not isinstance(p, dict):
        raise Invalid(f"{where} must be an object (kind, session, message, copied_tokens) or null")
    if not p.keys() <= PROVENANCE_KEYS:
        extra = sorted(p.keys() - PROVENANCE_KEYS)
        raise Invalid(
            f"{where} has {', '.join(map(repr, extra))}: it holds only kind, session, message and copied_tokens"
        )
    if p.get("kind") not in PROVENANCE_KINDS:
        raise Invalid(f"{where}.kind {p.get('kind')!r:.40} is not one of {', '.join(PROVENANCE_KINDS)}")
    if not isinstance(p.get("session"), str):
        raise Invalid(f"{where}.session must be the id of the session it was made from")
    check_id(p["session"], f"{where}.session")
    if p.get("message") is not None:
        if p["kind"] != "fork" or not isinstance(p["message"], str):
            raise Invalid(f"{where}.message must be the id of the message a fork was made at (a fork's only)")
        try:
            parse_message_id(p["message"])
        except Invalid as exc:
            raise Invalid(f"{where}.message: {exc}") from None
    copied = p.get("copied_tokens")
    if copied is not None and (
        p["kind"] != "fork" or not isinstance(copied, int) or isinstance(copied, bool) or not 0 <= copied < 2**53
    ):
        raise Invalid(f"{where}.copied_tokens must be the tokens of the history a fork copied (a whole number >= 0)")
    return dict(p)


def copied_as_charged(p: dict, messages: list[dict], estimate: Callable[[str], int]) -> dict:
    """A fork's provenance `p` from a session file whose `messages` are the fork's (its copy of the source's history
    first, in the session's order), its `copied_tokens` made the quota's count of its copy where it is 0.36.0's of
    it: a copied answer its tokens and its prompt's, not the completion tokens billed past its own (several answers
    asked, one recorded), which the quota counts since 0.37.0 (storage/model.py charge; a home's forks so recounted
    by migration 34). The copy is the first messages up to the one the count is 0.36.0's of; kept as the file says
    it where no such run of them, or several counted otherwise by the quota, is found (a count made since, or not of
    these messages), and where it is the quota's count of a run of them (a count made since: the fork's own messages
    after its copy may bring 0.36.0's count of a longer run to the same number)."""
    copied = p.get("copied_tokens") if p.get("kind") == "fork" else None
    if type(copied) is not int:
        return p
    then = now = 0
    found = set()
    for m in messages:
        if now == copied:
            return p  # the quota's count of the run so far: made since 0.36.0 (or the same either way)
        if then == copied:
            found.add(now)
        tokens = m["tokens"] if m.get("tokens") is not None else estimate(counted_text(m))
        usage = m.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        then += charge({"tokens": tokens, "usage": {"prompt_tokens": prompt}})
        now += charge({**m, "tokens": tokens})
        if then > copied:
            break
    if now == copied:
        return p
    if then == copied:
        found.add(now)
    return {**p, "copied_tokens": found.pop()} if len(found) == 1 else p


def answer(m: dict, where: str) -> dict:
    """A model's answer's own fields in a session file (daemon/answers.py records them): its model and
    provider, its usage (whose prompt tokens the quota counts), response times, whether it was cut short. Checked
    by the rules a pull keeps another device's by (storage/pulledextra.py), which drops what a file is refused for."""
    out: dict[str, Any] = {}
    for k, most in ANSWER_TEXTS.items():
        if m.get(k) is not None:
            if not text_ok(k, m[k]):
                raise Invalid(f"{where}.{k} must be a string of at most {most} characters")
            out[k] = m[k]
    if m.get("interrupted") is not None:
        if not isinstance(m["interrupted"], bool):
            raise Invalid(f"{where}.interrupted must be true or false")
        out["interrupted"] = m["interrupted"]
    for k, fields in ANSWER_COUNTS.items():
        if m.get(k) is None:
            continue
        if not isinstance(m[k], dict) or not m[k].keys() <= set(fields):
            raise Invalid(f"{where}.{k} must be an object of {' and '.join(fields)}")
        for f, n in m[k].items():
            if not is_count(n):
                raise Invalid(f"{where}.{k}.{f} must be a whole number between 0 and {MAX_TOKENS}")
        out[k] = m[k]
    return out


def context_tokens(m: dict, where: str) -> dict:
    """A message's `context_tokens` in a session file (storage/contextcount.py: its tokens in its chat's context
    where they are not its quota's), checked by the rule a pull keeps another device's by (storage/pulledextra.py)."""
    n = m.get(CONTEXT_TOKENS)
    if n is None:
        return {}
    if not is_count(n):
        raise Invalid(
            f"{where}.{CONTEXT_TOKENS} must be the message's tokens in its chat's context, a whole number between 0"
            f" and {MAX_TOKENS}"
        )
    return {CONTEXT_TOKENS: n}


def part_notes(m: dict, where: str) -> dict:
    """A user's message's `part_notes` in a session file (daemon/openai_history.py): the numbers, from 0, of the
    lines of its text that note the parts an OpenAI-endpoint app sent that are not text, each once; a file's
    number that names no line of its text is refused, as the file's other fields are. An empty list is kept: it
    says the message's lines such as `[image]` are its user's own text, not notes."""
    notes = m.get("part_notes")
    if notes is None:
        return {}
    lines = m["content"].count("\n") + 1 if isinstance(m.get("content"), str) else 0
    if (
        not isinstance(notes, list)
        or any(type(n) is not int or not 0 <= n < lines for n in notes)
        or len(set(notes)) != len(notes)
    ):
        raise Invalid(f"{where}.part_notes must be the numbers, from 0 and each once, of lines of its content")
    return {"part_notes": notes}


def proven(data: dict) -> bool:
    """Whether the file's session was proven where it came from (its `checkpoints`). Those proofs are not
    taken: each hashes the source device's message ids and is signed by that device's key, so none verifies
    against the import (its messages are this device's now), and the file's word is no proof. The importing
    device signs one of the whole imported history instead (as its import ends), which verifies here."""
    cps = data.get("checkpoints")
    if cps is not None and not isinstance(cps, list):
        raise Invalid('session file\'s "checkpoints" must be a list (of the proofs `sessiond checkpoints` lists)')
    return bool(cps)


def cuts(chats: list, at: dict[str, int], in_chat: list[str]) -> dict[str, int]:
    """Each compacted chat of a session file: the place in the file's messages of its cutoff (the last
    message compaction set aside, one of that chat's own, as `compact` sets it), which the import gives that
    message's new id. `in_chat`: the chat of each of the file's messages."""
    out = {}
    for i, c in enumerate(chats):
        upto = c.get("compacted_upto")
        if upto is None:
            continue
        if upto not in at:
            raise Invalid(f"chats[{i}].compacted_upto {upto!r:.80} is not the id of one of the file's messages")
        if in_chat[at[upto]] != c["id"]:
            raise Invalid(
                f"chats[{i}].compacted_upto {upto!r:.80} is a message of chat {in_chat[at[upto]]!r:.80}, not of"
                f" chat {c['id']!r:.80}: a chat is compacted up to one of its own messages"
            )
        out[c["id"]] = at[upto]
    return out
