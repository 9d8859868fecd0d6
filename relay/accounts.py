"""Accounts on the relay, by the S5 portal's challenge login (s5-dev/S5 lib/service/accounts.dart,
s5-dev/lib5 sign_challenge.dart): `GET /s5/account/register|login?pubKey=` hands out a 32-byte
challenge; the client `POST`s `response = type (1 register, 2 login) | challenge | BLAKE3(authority)`
and its Ed25519 signature by `pubKey` (0xed | key). Then a token, sent back as `Authorization: Bearer`.

On disk (DATA/):
    accounts/<id>.json   one per account: its pubKey; id = SHA-256(pubKey)[:16] in hex
    tokens/<SHA-256(token) hex>   the account id: tokens are kept hashed, never in clear
    invites/<SHA-256(code) hex>   an unused invite; registering with the code deletes the file (once)

Registration is closed unless the relay runs with --open-registration, or the register request
carries a valid invite (JSON field `invite`; stores/s5.py sends the userinfo of the store URL,
s5+http://INVITE@HOST:PORT). A key already registered may always log in, invite or not.

The authority signed into the response is the request's Host header (what the client connected to;
a reverse proxy must pass it on). A response signed for another server does not verify here, and
stores/s5.py derives a different account key per authority, so an answer made for one server is
useless on another.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections import OrderedDict

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..storage.fsutil import atomic_write, ensure_private_dir
from .wire import field

REGISTER = 1
LOGIN = 2
CHALLENGE_TTL = 300.0
MAX_CHALLENGES = 10_000


class LoginRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def account_id(pub: bytes) -> str:
    return _sha(pub)[:32]


def new_invite(data_dir: str) -> str:
    """Make a one-time invite code and keep its hash in DATA/invites; return the code."""
    folder = os.path.join(data_dir, "invites")
    ensure_private_dir(data_dir)
    ensure_private_dir(folder)
    code = secrets.token_urlsafe(18)  # letters, digits, - and _: fits in a URL's userinfo as is
    atomic_write(os.path.join(folder, _sha(code)), str(int(time.time())).encode(), 0o600)
    return code


class Accounts:
    def __init__(self, data_dir: str, *, open_registration: bool):
        self.open_registration = open_registration
        self.accounts = os.path.join(data_dir, "accounts")
        self.tokens = os.path.join(data_dir, "tokens")
        self.invites = os.path.join(data_dir, "invites")
        for d in (self.accounts, self.tokens, self.invites):
            ensure_private_dir(d)
        self._challenges: OrderedDict[tuple[int, bytes], tuple[bytes, float]] = OrderedDict()

    # -- challenges -----------------------------------------------------------------------------

    def challenge(self, kind: int, pub: bytes) -> bytes:
        self._check_key(pub)
        now = time.monotonic()
        while self._challenges:  # forget expired ones, and the oldest past the cap
            _key, (_, at) = next(iter(self._challenges.items()))
            if now - at < CHALLENGE_TTL and len(self._challenges) < MAX_CHALLENGES:
                break
            self._challenges.popitem(last=False)
        c = secrets.token_bytes(32)
        self._challenges.pop((kind, pub), None)
        self._challenges[(kind, pub)] = (c, now)
        return c

    @staticmethod
    def _check_key(pub: bytes) -> None:
        if len(pub) != 33 or pub[0] != 0xED:
            raise LoginRefused(400, "pubKey must be 0xed followed by a 32-byte Ed25519 key, base64url")

    def _verify(self, kind: int, pub: bytes, response: bytes, signature: bytes, authority: str) -> None:
        self._check_key(pub)
        got = self._challenges.pop((kind, pub), None)
        if got is None or time.monotonic() - got[1] >= CHALLENGE_TTL:
            raise LoginRefused(400, "no challenge is pending for this pubKey (or it expired): GET one first")
        expected = bytes([kind]) + got[0] + blake3.blake3(authority.encode("utf-8")).digest()
        if response != expected:
            raise LoginRefused(
                400,
                "the response is not type | challenge | BLAKE3(authority) for this relay, which is reached here"
                f" as {authority!r}: signed for another address? A reverse proxy in front of the relay must"
                " pass on the Host header the device connected with",
            )
        try:
            VerifyKey(pub[1:]).verify(response, signature)
        except (BadSignatureError, ValueError):
            raise LoginRefused(400, "the signature over the response does not verify for this pubKey") from None

    # -- register / login -----------------------------------------------------------------------

    def _account_path(self, acct: str) -> str:
        return os.path.join(self.accounts, acct + ".json")

    def _issue(self, acct: str) -> str:
        token = secrets.token_urlsafe(32)
        atomic_write(os.path.join(self.tokens, _sha(token)), acct.encode(), 0o600)
        return token

    def _take_invite(self, code: str | None) -> bool:
        if not code or not isinstance(code, str):
            return False
        try:
            os.unlink(os.path.join(self.invites, _sha(code)))  # atomic: of two registrations, one wins
        except FileNotFoundError:
            return False
        return True

    def _register(self, pub: bytes, label: str | None, invite: str | None) -> str:
        acct = account_id(pub)
        if not os.path.exists(self._account_path(acct)):
            if not self.open_registration and not self._take_invite(invite):
                raise LoginRefused(
                    401,
                    "registration on this relay is closed: ask its owner for an invite "
                    "(sessiond serve invite) and use the store URL s5+http://INVITE@HOST:PORT"
                    if not invite
                    else "this invite is unknown or already used: ask the "
                    "relay's owner for a new one (sessiond serve invite)",
                )
            doc = {"pubKey": pub.hex(), "label": label if isinstance(label, str) else None, "created": int(time.time())}
            atomic_write(self._account_path(acct), json.dumps(doc).encode(), 0o600)
        return self._issue(acct)

    def _login(self, pub: bytes) -> str:
        acct = account_id(pub)
        if not os.path.exists(self._account_path(acct)):
            raise LoginRefused(404, "this public key is not registered on this relay")
        return self._issue(acct)

    async def answer(self, kind: int, doc: dict, authority: str) -> str:
        """Check a signed challenge response; register or log in; return a fresh token."""
        pub = field(doc, "pubKey")
        response = field(doc, "response")
        signature = field(doc, "signature")
        self._verify(kind, pub, response, signature, authority)
        if kind == REGISTER:
            return await asyncio.to_thread(self._register, pub, doc.get("label"), doc.get("invite"))
        return await asyncio.to_thread(self._login, pub)

    def account_of(self, token: str) -> str | None:
        if not token:
            return None
        try:
            with open(os.path.join(self.tokens, _sha(token)), "rb") as f:
                return f.read().decode()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
