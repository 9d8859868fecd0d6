"""Small defects left open by the audits (h-smalls23), each through a real daemon."""

from __future__ import annotations

from conftest import cli_json


def test_the_quota_thresholds_the_answer_names_are_where_its_level_changes(daemon):
    """`GET .../quota` names its thresholds, and the level it gives changes exactly there: the thresholds are
    defined once (storage/context.py), not also as a literal next to them or again in storage/schema.py."""
    from sessiond.storage import context, schema

    assert not hasattr(schema, "WARNING_LEVELS")  # one definition: the schema's copy was unused
    c = daemon.client()
    sid = c.create_session(token_quota=1000)["id"]
    q = c.quota(sid)
    thresholds = q["thresholds"]
    assert thresholds == {name: limit for limit, name in context.WARNING_LEVELS if limit}
    below, used = "safe", 0
    for name, limit in sorted(thresholds.items(), key=lambda kv: kv[1]):
        at = round(limit * 1000)
        c.append(sid, "user", "x", tokens=at - 1 - used)
        assert c.quota(sid)["level"] == below
        c.append(sid, "user", "x", tokens=1)
        assert c.quota(sid)["level"] == name
        below, used = name, at
    assert cli_json(daemon.home, "quota", sid)["thresholds"] == thresholds
