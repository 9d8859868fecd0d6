"""A share code cut short was refused as "share code is truncated" (and one of an impossible length as
"truncated or mistyped (its length is impossible)"): what went wrong, not what to do. Every refusal of a code's
text says the way on, as the checksum's did already: copy the code again, whole."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError
from sessiond.sync.sharecode import ShareCodeError, decode


@pytest.mark.parametrize(
    "text",
    [
        "sessiond1abc",  # a few characters: fewer bytes than a code's checksum
        "sessiond1a",  # a length no base32 text has
        "sessiond1aeakmylblaqn44tdz3fbinmq4gx4upebhykxxbwmmu5xzfaa4wyfqi",  # a start of a code, its checksum wrong
    ],
)
def test_a_code_cut_short_says_to_copy_it_again_whole(text):
    with pytest.raises(ShareCodeError) as exc:
        decode(text)
    assert exc.value.kind == "checksum"
    assert "copy it again, whole" in str(exc.value), exc.value


def test_the_import_route_says_it_too(daemon):
    with pytest.raises(ApiError) as exc:
        daemon.client().import_code("sessiond1garbage")
    assert exc.value.status == 422 and exc.value.code == "checksum"
    assert "copy it again, whole" in exc.value.message, exc.value.message
    assert daemon.client().list_sessions()["sessions"] == []
