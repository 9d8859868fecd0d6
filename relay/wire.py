"""The wire encodings of the S5 portal API: base64url without padding for keys, entries and
challenges. `BadRequest` is a 400 naming the field that is wrong."""

from __future__ import annotations

import base64
import binascii


class BadRequest(Exception):
    pass


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def unb64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise BadRequest(f"{what} must be a base64url string without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64url") from None


def field(doc: dict, name: str) -> bytes:
    if name not in doc:
        raise BadRequest(f"missing field {name!r}")
    return unb64url(doc[name], name)
