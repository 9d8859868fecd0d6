"""The clients' Idempotency-Keys: a new one is a random version-4 UUID as uuid.uuid4() gives, and a given one is
checked by the API's rule (api/idempotency.py: 1 to 255 printable ASCII characters)."""

from __future__ import annotations

import uuid

import pytest

from sessiond.api.idempotency import good_key
from sessiond.client.calls import key_for, new_idempotency_key
from sessiond.client.errors import ApiError


def test_a_new_key_is_a_random_version_4_uuid():
    keys = {new_idempotency_key() for _ in range(2000)}
    assert len(keys) == 2000
    for k in keys:
        u = uuid.UUID(k)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, k)
    assert key_for(None) != key_for(None)


def test_an_empty_key_given_is_refused_not_replaced():
    """`idempotency_key=""` was taken for no key, and each call made a new one: an app whose key came out empty
    (a variable never set) retried believing the retry safe, and had its append stored twice. The daemon
    refuses an empty Idempotency-Key (422); so does the client, before sending, as it refuses any key the
    daemon would (README, "Retrying an append safely")."""
    with pytest.raises(ApiError) as e:
        key_for("")
    assert e.value.status == 422 and "1 to 255" in str(e.value)


def test_a_key_is_printable_ascii_of_1_to_255_characters():
    for i in range(0x3000):
        assert good_key(f"k{chr(i)}") == (" " <= chr(i) <= "~"), hex(i)
    assert good_key("a" * 255) and not good_key("a" * 256) and not good_key("") and not good_key(7)
    assert key_for("my key ~1") == "my key ~1"
    with pytest.raises(ApiError) as e:
        key_for("k\u00e9")
    assert e.value.status == 422 and "printable ASCII" in str(e.value)


def test_an_append_given_an_empty_key_stores_nothing(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "twice?", idempotency_key="")
    assert e.value.status == 422
    assert c.messages(sid)["messages"] == []
