"""Statistics: of one session (per chat, with response times), of all sessions or one user's, and the
daemon's counts. A chat's message count is kept by trigger, and the walk of its messages that averages its
response times is kept as far as the last statistics read it (storage/chatstats.py): a row per chat read, and
the messages written since."""

from __future__ import annotations

from .chats import Chats
from .chatstats import chat_walks
from .connections import Connections
from .errors import NotFound
from .model import no_user_sql
from .sessions import Sessions


def _copied(*, same_user: bool, no_user: bool = False) -> str:
    """SQL: the tokens of the history session `s` copied from another session (a fork: its provenance's
    `copied_tokens`) that a total of several sessions already counts, that session being here (and, in a
    user's total, theirs too); otherwise 0. A fork holds its copy, and its own total counts it (its quota
    does), but a total of sessions counts each message's tokens once: where they were spent. A fork made
    before its provenance said how many tokens it copied (or whose source is gone) is counted whole.
    `no_user`: the total of the sessions with no user (the source counted there if it has none either)."""
    same = " AND o.user IS s.user" if same_user else ""
    if no_user:
        same = " AND " + no_user_sql("o")
    n = "json_extract(s.provenance, '$.copied_tokens')"
    return (
        f"(CASE WHEN s.provenance IS NOT NULL AND json_extract(s.provenance, '$.kind')='fork'"
        f" AND typeof({n})='integer' AND EXISTS (SELECT 1 FROM sessions o WHERE"
        f" o.id=json_extract(s.provenance, '$.session') AND o.id<>s.id AND NOT o.importing{same})"
        f" THEN max(0, min({n}, s.tokens_used)) ELSE 0 END)"
    )


class Stats:
    def __init__(self, c: Connections, sessions: Sessions, chats: Chats):
        self.c = c
        self.sessions = sessions
        self.chats = chats

    async def stats(self, sid: str | None = None, user: str | None = None, no_user: bool = False) -> dict:
        """One session's statistics (`sid`; with `user` too, only if it is theirs; with `no_user`, only if it
        has none), one user's, those of the sessions with no user (`no_user`), or all."""
        q = self.c.committed
        if sid is not None:
            s = await self.sessions.get(sid, counts=True)
            if user is not None and s["user"] != user:  # both filters hold, as in a search
                whose = "it has no user" if s["user"] is None else f"it is {s['user']!r}'s"
                raise NotFound(f"session {sid!r} is not one of user {user!r}'s ({whose})")
            if no_user and s["user"]:
                raise NotFound(f"session {sid!r} is not one with no user (it is {s['user']!r}'s)")
            listed = await self.chats.list(sid)
            walks = await chat_walks(self.c, sid, [c["id"] for c in listed])
            chats = []
            for c in listed:
                _, messages, waits, wait_sum, _, firsts, first_ms, answers, answer_ms = walks[c["id"]]
                chats.append(
                    {
                        "chat": c["id"],
                        "name": c["name"],
                        "messages": messages,
                        "avg_response_seconds": round(wait_sum / waits, 3) if waits else None,
                        "answers": answers,
                        "avg_first_token_seconds": round(first_ms / firsts / 1000, 3) if firsts else None,
                        "avg_answer_seconds": round(answer_ms / answers / 1000, 3) if answers else None,
                    }
                )
            return {
                "session": sid,
                "status": s["status"],
                "chats": len(chats),
                "messages": s["message_count"],
                "tokens": s["tokens_used"],
                "created_at": s["created_at"],
                "last_activity": s["last_activity"],
                "per_chat": chats,
            }
        where, args = (
            ("WHERE NOT s.importing AND s.user=?", (user,)) if user is not None else ("WHERE NOT s.importing", ())
        )
        if no_user:
            where += f" AND {no_user_sql('s')}"
        copied = _copied(same_user=user is not None, no_user=no_user)
        row = await q.fetchone(
            f"SELECT count(*), coalesce(sum(s.tokens_used - {copied}), 0), "
            f"coalesce(sum((SELECT sum(k.messages) FROM chat_tokens k WHERE k.session_id=s.id)), 0), "
            f"coalesce(sum(s.status='active'), 0), coalesce(sum(s.status='paused'), 0), "
            f"coalesce(sum(s.status='ended'), 0) FROM sessions s {where}",
            args,
        )
        assert row is not None  # an aggregate answers one row
        out = {
            "sessions": row[0],
            "tokens": row[1],
            "messages": row[2],
            "active": row[3],
            "paused": row[4],
            "ended": row[5],
        }
        if user is not None:
            out["user"] = user
        elif no_user:
            out["no_user"] = True
        else:
            out["users"] = [
                {"user": r[0], "sessions": r[1], "tokens": r[2]}
                for r in await q.fetchall(
                    f"SELECT s.user, count(*), coalesce(sum(s.tokens_used - {_copied(same_user=True)}), 0)"
                    " FROM sessions s WHERE NOT s.importing GROUP BY s.user ORDER BY s.user"
                )
            ]
        return out

    async def counts(self) -> dict:
        q = self.c.committed
        out = {"sessions": 0, "active": 0, "paused": 0, "ended": 0}
        for status, n in await q.fetchall("SELECT status, count(*) FROM sessions WHERE NOT importing GROUP BY status"):
            out[status] = n
            out["sessions"] += n
        # all rows, less those of a session being imported (none, almost always: a range of an index); the messages
        # from the counts kept by trigger, a row per chat (storage/chatstats.py: a count(*) read every message's
        # index entry)
        for key, table, count in (("messages", "chat_tokens", "sum(messages)"), ("chats", "chats", "count(*)")):
            out[key] = (
                await q.fetchall(
                    f"SELECT (SELECT coalesce({count}, 0) FROM {table}) - (SELECT coalesce({count}, 0) FROM {table}"
                    f" WHERE session_id IN (SELECT id FROM sessions WHERE importing))"
                )
            )[0][0]
        return out
