"""The other answers of an OpenAI-endpoint request for several (OpenAI's `n`), remembered so that an app going on
from one of them is not charged it again (openai_compat.py).

The session records the first answer, charged what the provider billed for all of them (its `usage`, storage/model.py
`charge`). An app that goes on from another sends that one in its history where the chat holds the first: the history
parts from the chat there, and the answer it chose is appended (openai_history.py), as a message an app appends is,
charged its tokens, which the provider billed already with the request that asked for it. Remembered (by a digest of
its text, the latest such request of each chat, in the database: storage/openaichoices.py, so a restart forgets
nothing), it is recorded with `tokens` 0 instead: what every device's count of the quota reads, so that the session's
use is the same everywhere, and charged once, as billed. Its tokens (the daemon's estimate) are its `context_tokens`,
which the chat's context counts (storage/contextcount.py): it is there as much as any other message."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..storage.messages import Also


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Choices:
    """Per chat, the first answer of its latest request for several (recorded) and the others' digests, kept by the
    daemon's database (`d.db.openai_choices`)."""

    def __init__(self, daemon) -> None:
        self.d = daemon

    def remembering(self, sid: str, chat: str, others: Callable[[], set[bytes]]) -> Callable[[str], Also | None]:
        """What keeps a request's other answers, the digests `others()` gives once it ended (none: a request for one
        answer, nothing kept), given the text of its first as it is recorded: written in the transaction that records
        it (Plan.also), so that a kill after the app was given every answer forgets none of them."""

        def remember(recorded: str) -> Also | None:
            got = others()
            return self.d.db.openai_choices.remembering(sid, chat, digest(recorded), got) if got else None

        return remember

    async def billed(self, sid: str, chat: str, stored: dict, sent: dict) -> Also | None:
        """The app's message `sent`, to be appended where its history parts from the chat's, at the chat's
        `stored`: if `stored` is the first of the chat's latest several answers and `sent` another of them, it
        is given `tokens` 0 (the provider billed it with them), and returned is what forgets it, to be written in
        the transaction that appends it (Database.append_messages `also`): charged nothing once, another going on
        from it charged (a request refused before that, the quota or a budget, records nothing: its retry's
        message is the one billed already)."""
        if (
            sent["role"] != "assistant"
            or stored["role"] != "assistant"
            or sent.get("tool_calls")
            or not isinstance(stored.get("content"), str)
        ):
            return None
        d = digest(sent["content"])
        if await self.d.db.openai_choices.holds(sid, chat, digest(stored["content"]), d):
            # in the chat's context all the same: its tokens there kept apart (storage/contextcount.py)
            sent["context_tokens"], sent["tokens"] = sent["tokens"], 0
            return self.d.db.openai_choices.forgetting(sid, chat, d)
        return None


def others_of(data: dict) -> set[bytes]:
    """The digests of a whole answer's choices past the first (none, a request for one answer): those with text and
    no tool call, which an app sends back as they are."""
    choices = data.get("choices")
    out = set()
    for c in choices[1:] if isinstance(choices, list) else ():
        msg = c.get("message") if isinstance(c, dict) else None
        if isinstance(msg, dict) and isinstance(msg.get("content"), str) and not msg.get("tool_calls"):
            out.add(digest(msg["content"]))
    return out


class Others:
    """A stream's choices past the first, their texts' digests put together from their deltas as the chunks pass
    (`add`): nothing of their text kept."""

    def __init__(self) -> None:
        self._texts: dict[int, Any] = {}  # (hashlib's running sha256, by choice)
        self._calls: set[int] = set()

    def add(self, chunk: dict) -> None:
        choices = chunk.get("choices")
        for c in choices if isinstance(choices, list) else ():
            index = c.get("index") if isinstance(c, dict) else None
            delta = c.get("delta") if isinstance(c, dict) else None
            if type(index) is not int or index == 0 or not isinstance(delta, dict):
                continue
            if delta.get("tool_calls"):
                self._calls.add(index)
            if isinstance(delta.get("content"), str):
                self._texts.setdefault(index, hashlib.sha256()).update(delta["content"].encode())

    def digests(self) -> set[bytes]:
        return {h.digest() for i, h in self._texts.items() if i not in self._calls}
