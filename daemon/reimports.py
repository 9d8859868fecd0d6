"""An export imported again: the conversations of another app's export (ChatGPT, Claude, Open WebUI, llm)
that an earlier import made sessions of. Each such session names its source and the source's conversation
id in its metadata (daemon/importers.py, chatgptfile.parse_chatgpt); its messages, in the chat the import wrote
them to, are compared with the export's conversation, message by message (by the source's message id when
both have one, else by role and text):

* the export's conversation is all here already (the session holds it, perhaps continued here since):
  skipped, `up_to_date`;
* the session's messages are the start of the export's (the conversation continued in the app since):
  the export's new messages are appended to that session (`appended`);
* else (the two part before the export's tail: continued here and in the app, or edited in the app): the
  session here is left as it is, and the export's conversation is made a session of its own (`diverged`),
  which a later import of the same conversation compares with too.

A ChatGPT conversation has other branches (an answer regenerated, a question edited), each of which its
first import made a fork of the conversation's session, marked `branch` in its metadata. Its history (the
branch at current_node) is compared with those forks as well (the app may have gone on in an old branch),
and each other branch with the sessions of the family the history matched (the session made of the
conversation and its branches' forks) the same way: up to date, appended to, or, matching none, new since:
made a fork of the conversation's session from the last message the two share, as the first import does.
A history that matches none of them while the line imported before is still one of the export's other
branches (the app shows an answer it regenerated, a question edited) is such a branch new since too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..storage.errors import Conflict, SessiondError
from ..storage.model import now
from ..storage.tokens import counted_text
from .testhooks import pause_for_tests

# The metadata field each source keeps its conversation's id in.
ID_FIELDS = {"chatgpt": "conversation", "claude": "conversation", "llm": "conversation", "openwebui": "chat"}

# The stored messages are read in pages of this many (only as many as the export's conversation has, and one).
PAGE = 10_000


def source_of(spec: dict) -> tuple[str, str, str] | None:
    """(source, metadata field, conversation id) of a session an import would make; None when it names no
    conversation (an OpenAI or session file, a conversation without an id): made every time."""
    meta = spec.get("metadata") or {}
    source = meta.get("source")
    field = ID_FIELDS.get(source) if isinstance(source, str) else None
    value = meta.get(field) if field else None
    return (source, field, value) if isinstance(source, str) and field and isinstance(value, str) and value else None


def _ident(m: dict) -> tuple | None:
    """The source's own id of a message (llm: its response's, which a prompt and its answer share), if it
    kept one."""
    meta = m.get("metadata") or {}
    ident = meta.get("id") if meta.get("id") is not None else meta.get("response")
    return (meta.get("source"), ident) if isinstance(meta.get("source"), str) and isinstance(ident, str) else None


def _calls(m: dict) -> list[tuple]:
    """The tools a message calls, by name and arguments (ids may be made at import: not compared)."""
    return [(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or ()]


def same(here: dict, there: dict) -> bool:
    """Whether a stored message is the export's: the same role and tool calls, and the same source id when
    both have one, else the same text. (A turn an older import took without its tool use keeps its id in
    a newer export, as the first of several messages: the calls tell them apart.)"""
    if here["role"] != there["role"] or _calls(here) != _calls(there):
        return False
    a, b = _ident(here), _ident(there)
    return a == b if a is not None and b is not None else here["content"] == there["content"]


async def _stored(db: Any, sid: str, want: int) -> tuple[str, list[dict]]:
    """The chat an import wrote the session's messages to, and its first `want` messages: the chat of the
    session's first message (in the messages' own order, Lamport's), else its first chat. Not the first chat by
    creation time: that is its maker's clock, and a chat another device made in the session by a clock behind
    this one's came first, and took the export's messages again."""
    first = await db.list_messages(sid, all_chats=True, limit=1)
    chat = first[0]["chat"] if first else (await db.list_chats(sid))[0]["id"]
    out: list[dict] = []
    after = None
    while len(out) < want:
        page = await db.list_messages(sid, chat=chat, limit=min(PAGE, want - len(out)), after=after)
        out += page
        if not page or len(out) >= want:
            break
        after = page[-1]["id"]
    return chat, out


def _versus(chat: str, here: list[dict], messages: list[dict]) -> tuple[str, str, int]:
    """("up_to_date" | "prefix" | "diverged", the chat, how many of the export's messages are here), of a
    session's stored messages `here` (at least as many as the export's, and one, if it has them)."""
    n = min(len(here), len(messages))
    if not all(same(here[i], messages[i]) for i in range(n)):
        return "diverged", chat, 0
    return ("up_to_date" if len(here) >= len(messages) else "prefix"), chat, len(here)


async def _compare(db: Any, sid: str, messages: list[dict]) -> tuple[str, str, int]:
    """("up_to_date" | "prefix" | "diverged", the chat, how many of the export's messages are here)."""
    chat, here = await _stored(db, sid, len(messages) + 1)
    return _versus(chat, here, messages)


def _is_branch(fork: dict, key: tuple[str, str, str]) -> bool:
    """Whether a fork of a conversation's session is one an import made of another of its branches: the
    conversation's in its metadata, and marked `branch` (or, made before the mark, named `TITLE (branch)`);
    not a fork the user made (which copies the metadata, but neither mark nor name)."""
    meta = fork["metadata"]
    ours = key[0] == "chatgpt" and meta.get("source") == key[0] and meta.get(key[1]) == key[2]
    return ours and (meta.get("branch") is True or (fork["name"] or "").endswith(" (branch)"))


Match = tuple[str, str, str, int]  # (how: "up_to_date" | "prefix", session, chat, how many it holds)


class _Lines:
    """A conversation's lines (ChatGPT's history and other branches) compared with the sessions here made of
    it, each session's messages read once."""

    def __init__(self, db: Any, want: int):
        self.db, self.want = db, want
        self.read: dict[str, tuple[str, list[dict]]] = {}

    async def stored(self, sid: str) -> tuple[str, list[dict]]:
        if sid not in self.read:
            self.read[sid] = await _stored(self.db, sid, self.want)
        return self.read[sid]

    async def match(self, sids: list[str], messages: list[dict], taken: set[str]) -> Match | None:
        """(how, session, chat, n) of the session holding the line (`up_to_date`: the first), else of the one
        it continues that holds the most of it (`prefix`: the first of those, not `taken` by another tail);
        None when it parts from each."""
        seen = [(*_versus(*await self.stored(sid), messages), sid) for sid in sids]
        held = [(how, sid, chat, n) for how, chat, n, sid in seen if how == "up_to_date"]
        starts = [(-n, i) for i, (how, _, n, sid) in enumerate(seen) if how == "prefix" and sid not in taken]
        if held:
            return held[0]
        if not starts:
            return None
        how, chat, n, sid = seen[min(starts)[1]]
        return how, sid, chat, n


async def sort_out(db: Any, plan: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """`plan` (a file's sessions to make) sorted by what is here: (those to make: each a conversation new here,
    one that diverged (its item then holds `diverged_from`, the oldest session here made of it), or a branch
    (ChatGPT's) new here of a conversation that is (its item holds `branch_of`, its report, and `shared`, how
    many of its messages it copies from the session it forks); the tails to append: {"report", "session",
    "chat", "messages", "export": all its messages}; those skipped as up to date: {"source", "conversation",
    "name", "session", "reason"}). A ChatGPT conversation's history is compared with the sessions made of it
    and the forks made of their branches; its other branches with the session it matched, that session's
    family (the one made of the conversation, and the forks of its branches): each report of a branch
    names it, `branch`: its last message's node id."""
    keys = [source_of(item["spec"]) for item in plan]
    here = await db.imported_from({k[0]: k[1] for k in keys if k is not None})
    # (only ChatGPT's conversations have branches, which its imports made forks of)
    gpt = [sid for (source, _), sids in here.items() if source == "chatgpt" for sid in sids]
    forks = await db.forks_of(gpt, ["chatgpt"])
    make: list[dict] = []
    tails: list[dict] = []
    skipped: list[dict] = []
    for item, key in zip(plan, keys, strict=True):
        sids = here.get((key[0], key[2]), []) if key is not None else []
        if key is None or not sids:
            make.append(item)
            continue
        family = {sid: [sid, *(f["id"] for f in forks.get(sid, ()) if _is_branch(f, key))] for sid in sids}
        lines = _Lines(db, max(len(x["messages"]) for x in [item, *item["forks"]]) + 1)
        report = {"source": key[0], "conversation": key[2], "name": item["spec"].get("name")}
        found = await lines.match([s for sid in sids for s in family[sid]], item["messages"], set())
        taken: set[str] = set()  # the sessions a tail of this conversation goes to (one each)
        if found is not None:
            _place(found, item["messages"], report, taken, skipped, tails)
            root = next(sid for sid in sids if found[1] in family[sid])
        elif (root := await _still_a_branch(lines, sids, item["forks"])) is not None:
            # the app shows a branch new since (an answer regenerated, a question edited), the history imported
            # before one of its other branches now: made a fork, as a branch new since is
            rep = {**report, "branch": item["messages"][-1]["node"]}
            make.append(await _new_branch(lines, item, item["messages"], root, rep))
        else:
            make.append({**item, "diverged_from": sids[0]})
            continue
        for fork in item["forks"]:
            rep = {**report, "branch": fork["messages"][-1]["node"]}
            if (match := await lines.match(family[root], fork["messages"], taken)) is not None:
                _place(match, fork["messages"], rep, taken, skipped, tails)
            else:
                make.append(await _new_branch(lines, item, fork["messages"], root, rep))
    return make, tails, skipped


async def _still_a_branch(lines: _Lines, sids: list[str], forks: list[dict]) -> str | None:
    """The session made of a conversation whose line the export still has as one of its other branches (held
    by the session, or continuing it), when the history matched none here: the app moved to a new branch."""
    for sid in sids:
        for fork in forks:
            if await lines.match([sid], fork["messages"], set()) is not None:
                return sid
    return None


def _place(found: Match, export: list[dict], report: dict, taken: set[str], skipped: list, tails: list) -> None:
    """A line of the export that a session here holds (skipped) or continues (its tail to append)."""
    how, sid, chat, n = found
    if how == "up_to_date":
        skipped.append({**report, "session": sid, "reason": "up_to_date"})
    else:
        taken.add(sid)
        tails.append({"report": report, "session": sid, "chat": chat, "messages": export[n:], "export": export})


async def _new_branch(lines: _Lines, item: dict, messages: list[dict], root: str, report: dict) -> dict:
    """A branch of a conversation here that is new in the file, to make: a fork of the session `root` made of
    the conversation, from the last message the two share (as an import makes each other branch)."""
    _, here = await lines.stored(root)
    shared = next((i for i, (a, b) in enumerate(zip(here, messages, strict=False)) if not same(a, b)), None)
    shared = min(len(here), len(messages)) if shared is None else shared
    spec = {
        "name": f"{item['spec'].get('name') or 'conversation'} (branch)",
        "metadata": {**(item["spec"].get("metadata") or {}), "branch": True},
        "provenance": {"kind": "fork", "session": root, "message": here[shared - 1]["id"] if shared else None},
    }
    return {
        "spec": spec,
        "messages": messages,
        "forks": [],
        "branch_of": {
            **{k: x for k, x in report.items() if k != "branch"},
            "session": root,
            "node": report["branch"],
            "messages": len(messages),
        },
        "shared": shared,
    }


def diverged(item: dict, new: str) -> dict:
    """The report of a conversation made a session of its own (`new`) as it parts from the one here."""
    key = source_of(item["spec"])
    assert key is not None  # (only a conversation with an id is compared)
    name, old = item["spec"].get("name"), item["diverged_from"]
    return {"source": key[0], "conversation": key[2], "name": name, "session": old, "new_session": new}


def prepared(messages: list[dict], estimate: Callable[[str], int]) -> tuple[list[dict], list[float]]:
    """A file's messages as an append takes them (their tokens counted), and each one's time (formats.py's
    import appends them so too)."""
    clean, times = [], []
    t = now()
    for m in messages:
        c = {k: v for k, v in m.items() if k not in ("node", "created_at")}
        if c.get("tokens") is None:
            c["tokens"] = estimate(counted_text(c))
        clean.append(c)
        times.append(m.get("created_at") or t)  # a session file's message: its own time; else the import's
    return clean, times


async def append_tails(
    db: Any,
    tails: list[dict],
    estimate: Callable[[str], int],
    step: Callable[[int], None],
    skipped: list[dict],
) -> list[dict]:
    """Append each tail to its session, each in a transaction of its own (as an app's appends are: checked
    as they are, the session's status, limits and quota); one refused is added to `skipped` with the
    refusal, and the others go on. `estimate`: a text's tokens, for the messages that do not say. Returns
    those appended: {"source", "conversation", "name", "session", "messages"}.

    Each is compared with its session again first: the import made the file's other sessions since it
    compared them, and the session may have been continued here meanwhile; its tail then would follow what
    was said here. One that no longer holds the start of the export's conversation is left as it is; so is
    one written to between that comparison and the append (the append's transaction checks the chat holds
    as many messages as were compared)."""
    appended = []
    for t in tails:
        messages = t["export"]
        how, chat, n = await _compare(db, t["session"], messages)
        if how == "up_to_date" or (how == "prefix" and chat == t["chat"]):
            t = {**t, "messages": messages[n:]}
        else:
            skipped.append({**t["report"], "session": t["session"], "reason": "refused", "error": changed(t)})
            continue
        if not t["messages"]:  # (what the import would append was appended meanwhile: nothing new)
            skipped.append({**t["report"], "session": t["session"], "reason": "up_to_date"})
            continue
        clean, times = prepared(t["messages"], estimate)
        await pause_for_tests("import-file.tail")
        try:  # (`held`: only if the chat still holds what was compared, checked in the append's transaction)
            await db.append_messages(t["session"], clean, t["chat"], times=times, held=n)
        except SessiondError as exc:  # this session refuses them: named, the other conversations go on
            said = changed(t) if isinstance(exc, Conflict) and "held" in exc.details else exc.message
            skipped.append({**t["report"], "session": t["session"], "reason": "refused", "error": said})
            continue
        step(len(clean))
        appended.append({**t["report"], "session": t["session"], "messages": len(clean)})
    return appended


def changed(t: dict) -> str:
    """The refusal of a tail whose session changed here while the import made the file's other sessions."""
    return (
        f"session {t['session']} changed here while the file was imported, so the app's new messages would no"
        " longer follow what it holds; it is left as it is: import the file again to make the app's"
        " conversation a session of its own"
    )
