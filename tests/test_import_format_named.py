"""An import-file whose format the daemon cannot tell from the data's shape was refused "name it: --format
openai, json, ...": the CLI's option, which an app on the socket API has not. The refusal names the request's
`format` field too (and the CLI's option), and nothing is imported."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


def test_a_format_not_told_names_the_field_an_app_gives(daemon):
    c = daemon.client()
    with pytest.raises(ApiError) as exc:
        c.import_file({"title": "a note", "text": "not a chat"})
    err = exc.value
    assert err.status == 422 and err.code == "invalid"
    assert '"format"' in err.message and "--format" in err.message, err.message
    assert c.list_sessions()["sessions"] == []
