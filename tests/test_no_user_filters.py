"""`GET /v1/stats` and `GET /v1/search` refuse an empty `user` (`?user=`), rightly, but had no way to ask
for the sessions with no user (none set, or an empty one an older sessiond stored), which `GET
/v1/sessions?no_user=true` (`sessiond ls --no-user`) has. They take `no_user=true` now (`sessiond stats
--no-user`, `sessiond search --no-user`), refused with `user` as the list refuses it."""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli
from sessiond.client import ApiError
from test_empty_names import old_none_ann


@pytest.fixture
def mixed(make_daemon):
    """test_empty_names' sessions with and without a user, each with a message holding the word "needle"."""
    d, old, none, ann = old_none_ann(make_daemon)
    c = d.client()
    for sid in (old, none, ann):
        c.append(sid, "user", f"a needle in {sid}")
    return d, old, none, ann


def test_stats_and_search_of_the_sessions_with_no_user(mixed):
    d, old, none, ann = mixed
    c = d.client()
    st = c._call("GET", "/v1/stats?no_user=true")
    assert (st["sessions"], st["messages"], st["no_user"]) == (2, 3, True), st  # old holds 2 messages
    assert "users" not in st and "user" not in st
    assert c._call("GET", "/v1/stats?no_user=false")["sessions"] == 3
    assert c._call("GET", f"/v1/stats?no_user=true&session={none}")["session"] == none
    with pytest.raises(ApiError) as e:
        c._call("GET", f"/v1/stats?no_user=true&session={ann}")
    assert e.value.status == 404 and "ann" in e.value.message, e.value
    hits = c._call("GET", "/v1/search?q=needle&no_user=true")["hits"]
    assert sorted(h["session"] for h in hits) == sorted([old, none])
    assert len(c._call("GET", "/v1/search?q=needle&no_user=0")["hits"]) == 3
    for route in ("/v1/stats?user=ann&no_user=true", "/v1/search?q=needle&user=ann&no_user=true"):
        with pytest.raises(ApiError) as e:
            c._call("GET", route)
        assert e.value.status == 422 and "not both" in e.value.message, (route, e.value)
    for route in ("/v1/stats?user=", "/v1/search?q=needle&user="):  # the refusal says what to give instead
        with pytest.raises(ApiError) as e:
            c._call("GET", route)
        assert e.value.status == 422 and "no_user=true" in e.value.message, (route, e.value)

    # the client and the CLI
    assert c.stats(no_user=True)["sessions"] == 2
    assert len(c.search("needle", no_user=True)["hits"]) == 2
    h = d.home
    assert cli_json(h, "stats", "--no-user")["sessions"] == 2
    assert "2 sessions" in run_cli(h, "stats", "--no-user", check=True).stdout
    assert sorted(x["session"] for x in cli_json(h, "search", "needle", "--no-user")["hits"]) == sorted([old, none])
    for args in (("stats", "--user", "ann", "--no-user"), ("search", "needle", "--user", "ann", "--no-user")):
        res = run_cli(h, *args, "--json")
        assert res.returncode == 2 and "not both" in json.loads(res.stdout)["error"]["message"], (args, res.stdout)
