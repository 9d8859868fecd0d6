"""GET /v1/stats was typed Any in the OpenAPI document (and the client): an app or a generated client learnt
nothing of its answer. It is documented now as what the route answers, one of two shapes: one session's
statistics (SessionStats, its chats' in per_chat), or those of several sessions (SessionsStats: a user's, the
sessions with no user, or the daemon's, with each user's). Every field of each answer is in its schema, and
each answer validates against the document's schema of the route."""

from __future__ import annotations

import jsonschema_rs


def _props(doc: dict, name: str) -> set[str]:
    return set(doc["components"]["schemas"][name].get("properties", {}))


def _resolved(doc: dict, schema: dict) -> dict:
    """`schema` with the document's components to resolve its $refs against."""
    return {**schema, "components": doc["components"]}


def test_the_stats_answers_are_in_the_openapi_document(daemon):
    c = daemon.client()
    doc = c.openapi()
    sid = c.create_session(user="ann")["id"]
    c.append(sid, "user", "hello")
    c.create_session()
    ok = doc["paths"]["/v1/stats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    refs = {s.get("$ref", "").rsplit("/", 1)[-1] for s in ok.get("anyOf", [ok])}
    assert refs == {"SessionStats", "SessionsStats"}, ok
    one = c.stats(sid)
    assert one["session"] == sid and one["per_chat"], one
    assert not set(one) - _props(doc, "SessionStats"), one
    assert not set(one["per_chat"][0]) - _props(doc, "ChatStats"), one
    answers = [c.stats(), c.stats(user="ann"), c.stats(no_user=True)]
    assert answers[0]["users"] and answers[1]["user"] == "ann" and answers[2]["no_user"] is True, answers
    for many in answers:
        assert not set(many) - _props(doc, "SessionsStats"), many
    assert not set(answers[0]["users"][0]) - _props(doc, "UserStats"), answers[0]
    for answer in (one, *answers):
        jsonschema_rs.validate(_resolved(doc, ok), answer)
