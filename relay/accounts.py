"""Accounts on the relay, by the S5 portal's challenge login (s5-dev/S5 lib/service/accounts.dart,
s5-dev/lib5 sign_challenge.dart): `GET /s5/account/register|login?pubKey=` hands out a 32-byte
challenge; the client `POST`s `response = type (1 register, 2 login) | challenge | BLAKE3(authority)`
and its Ed25519 signature by `pubKey` (0xed | key). Then a token, sent back as `Authorization: Bearer`.

On disk (DATA/):
    accounts/<id>.json   one per account: {"pubKey", "label", "created"[, "revoked"]}; id =
                         SHA-256(pubKey)[:16] in hex; label: the invite's (`serve invite --label`)
    tokens/<SHA-256(token) hex>   {"account", "issued", "expires", "n"} ("issued" to a fraction of a
                         second; "n": the account's logins counted, 1 past the highest of its live tokens
                         (or of the counts this process gave it: logins at one moment counted one at a time),
                         what orders them, not their times, which a step of the relay's clock back would
                         make the newest look the oldest; one without "n", an earlier version's, is older
                         than every one with it, and they are ordered by their times): tokens are kept hashed, never in
                         clear, and expire after the relay's --token-ttl (default 30 days); an expired
                         one is refused (401: stores/s5.py logs in again with its key) and its file
                         deleted, at the next login or start if not before; an account keeps its
                         newest MAX_TOKENS_PER_ACCOUNT (8), a login past them deletes the oldest. (A
                         file of an earlier version holds the bare account id: it expires its
                         --token-ttl after its mtime.)
    invites/<SHA-256(code) hex>   an unused invite, {"created", "label"}; registering with the code
                         deletes the file (once)
    logins/<id>          {"at"}: when the account last logged in (or registered); kept when its tokens
                         expire or a revocation deletes them (`serve accounts`' last login)

`sessiond serve revoke ID` (revoke()) marks an account revoked and deletes its tokens: its next request
is refused, and so is its every login or registration (403), until `revoke --undo`. Its objects and heads
stay (the sessions it shared are other devices' too) and still count against its quota.

Registration is closed unless the relay runs with --open-registration, or the register request
carries a valid invite (JSON field `invite`; stores/s5.py sends the userinfo of the store URL,
s5+http://INVITE@HOST:PORT). A key already registered may always log in, invite or not; registering it
again is a login and leaves the invite it carries unspent (registrations are taken one at a time, so two
of one key that cross spend one invite between them).

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
import threading
import time
from collections import OrderedDict

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ..storage.clock import wall
from ..storage.fsutil import atomic_write, ensure_durable_dir, fsync_dir
from ..stores.errors import RELAY_INVITE, RELAY_REVOKED
from .wire import field

REGISTER = 1
LOGIN = 2
CHALLENGE_TTL = 300.0
MAX_CHALLENGES = 10_000
TOKEN_TTL = 30 * 86400  # a login token's life unless --token-ttl
# The live tokens an account keeps: a login past them deletes its oldest (a device holds one; a key
# logging in again and again must not pile up files no quota counts)
MAX_TOKENS_PER_ACCOUNT = 8
LOGINS = "logins"  # DATA/logins/<account>: when it last logged in
REVOKED = RELAY_REVOKED  # the daemon's store tells it by these words (stores/errors.AccountRevoked)


class LoginRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def account_id(pub: bytes) -> str:
    return _sha(pub)[:32]


def new_invite(data_dir: str, label: str | None = None) -> str:
    """Make a one-time invite code and keep its hash in DATA/invites; return the code. `label` names the
    device it is for: the account it registers shows it (`serve accounts`) and `serve revoke` takes it."""
    folder = os.path.join(data_dir, "invites")
    ensure_durable_dir(data_dir)
    ensure_durable_dir(folder)
    code = secrets.token_urlsafe(18)  # letters, digits, - and _: fits in a URL's userinfo as is
    doc = {"created": int(wall()), "label": label}
    atomic_write(os.path.join(folder, _sha(code)), json.dumps(doc).encode(), 0o600)
    return code


def read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def token_doc(path: str, ttl: float) -> dict | None:
    """A token file's {"account", "expires"}; None if there is none (or it is unreadable)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("account"), str) and isinstance(doc.get("expires"), int | float):
        return doc
    try:  # an earlier version's file: the bare account id, written at the login
        acct = raw.decode().strip()
    except UnicodeDecodeError:
        return None
    return {"account": acct, "issued": int(mtime), "expires": mtime + ttl} if acct else None


def sweep_tokens(
    data_dir: str,
    ttl: float = TOKEN_TTL,
    now: float | None = None,
    keep: int = MAX_TOKENS_PER_ACCOUNT,
    logins: dict[str, int] | None = None,
) -> int:
    """Delete the token files that expired (or hold nothing usable), and an account's oldest past its
    newest `keep` (by their logins' order, "n"); how many went. `logins`: filled with each account's highest
    "n" among the tokens it keeps."""
    folder = os.path.join(data_dir, "tokens")
    now = wall() if now is None else now
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    doomed: list[str] = []
    live: dict[str, list[tuple[int, float, float, int, str]]] = {}
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        doc = token_doc(path, ttl)
        if doc is None or doc["expires"] <= now:
            doomed.append(path)
        else:
            issued = doc.get("issued")
            issued = issued if isinstance(issued, int | float) else 0
            try:  # an earlier version's "issued" is in whole seconds: its file's mtime tells such apart
                written = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
            n = doc.get("n")
            n = n if isinstance(n, int) and not isinstance(n, bool) else 0
            live.setdefault(doc["account"], []).append((n, doc["expires"], issued, written, path))
    for acct, held in live.items():
        held.sort(reverse=True)  # newest first: the latest login, then (tokens without "n") the latest expiry, issued
        doomed += [path for *_, path in held[keep:]]
        if logins is not None and held[:keep]:
            logins[acct] = held[0][0]
    gone = 0
    for path in doomed:
        try:
            os.unlink(path)
            gone += 1
        except FileNotFoundError:
            pass
    return gone


class Accounts:
    def __init__(self, data_dir: str, *, open_registration: bool, token_ttl: float = TOKEN_TTL):
        self.open_registration = open_registration
        self.token_ttl = token_ttl
        self.accounts = os.path.join(data_dir, "accounts")
        self.tokens = os.path.join(data_dir, "tokens")
        self.invites = os.path.join(data_dir, "invites")
        self.logins = os.path.join(data_dir, LOGINS)
        for d in (self.accounts, self.tokens, self.invites, self.logins):
            ensure_durable_dir(d)
        sweep_tokens(data_dir, token_ttl)
        self.data_dir = data_dir
        # registrations (each on a worker thread) one at a time: two of one key crossing must not both find
        # no account and each spend an invite
        self._registering = threading.Lock()
        # logins (each on a worker thread) counted one at a time: two of one account at one moment read the same
        # highest "n" of its live tokens; `_counted`, the highest this process gave each account, parts them
        self._counting = threading.Lock()
        self._counted: dict[str, int] = {}
        # (kind, pubKey, challenge) -> when it was handed out, oldest first
        self._challenges: OrderedDict[tuple[int, bytes, bytes], float] = OrderedDict()

    # -- challenges -----------------------------------------------------------------------------

    def challenge(self, kind: int, pub: bytes) -> bytes:
        self._check_key(pub)
        now = time.monotonic()
        while self._challenges:  # forget expired ones, and the oldest past the cap
            _slot, at = next(iter(self._challenges.items()))
            if now - at < CHALLENGE_TTL and len(self._challenges) < MAX_CHALLENGES:
                break
            self._challenges.popitem(last=False)
        c = secrets.token_bytes(32)
        self._challenges[(kind, pub, c)] = now
        return c

    @staticmethod
    def _check_key(pub: bytes) -> None:
        if len(pub) != 33 or pub[0] != 0xED:
            raise LoginRefused(400, "pubKey must be 0xed followed by a 32-byte Ed25519 key, base64url")

    def _verify(self, kind: int, pub: bytes, response: bytes, signature: bytes, authority: str) -> None:
        """Check an answer to a challenge handed out for `pub`. The challenge is spent only by an answer
        that verifies: another client's challenge for the same key, or a garbage answer, leaves it."""
        self._check_key(pub)
        slot = (kind, pub, response[1:33])
        at = self._challenges.get(slot) if len(response) == 65 and response[0] == kind else None
        if at is None or time.monotonic() - at >= CHALLENGE_TTL:
            raise LoginRefused(400, "no challenge is pending for this pubKey (or it expired): GET one first")
        expected = bytes([kind]) + slot[2] + blake3.blake3(authority.encode("utf-8")).digest()
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
        del self._challenges[slot]  # once: a replayed answer finds none

    # -- register / login -----------------------------------------------------------------------

    def _account_path(self, acct: str) -> str:
        return os.path.join(self.accounts, acct + ".json")

    def _revoked(self, acct: str) -> bool:
        doc = read_json(self._account_path(acct))
        return bool(doc and doc.get("revoked"))

    def active(self, acct: str) -> bool:
        """Whether `acct` is an account of this relay, not revoked."""
        doc = read_json(self._account_path(acct))
        return bool(doc) and not (doc or {}).get("revoked")

    def _issue(self, acct: str) -> str:
        if self._revoked(acct):
            raise LoginRefused(403, REVOKED)
        # a login is rare: the expired files go with it, and this account's oldest, to leave room for this one
        logins: dict[str, int] = {}
        sweep_tokens(self.data_dir, self.token_ttl, keep=MAX_TOKENS_PER_ACCOUNT - 1, logins=logins)
        token = secrets.token_urlsafe(32)
        # "issued" to the clock's fraction of a second: it tells apart the tokens of logins within one second,
        # which their files' mtimes do not (a coarse clock on many kernels: logins a few ms apart tie)
        issued = wall()
        path = os.path.join(self.tokens, _sha(token))
        with self._counting:  # (the tokens read above may miss one issued since: the count taken here holds it)
            n = self._counted[acct] = max(logins.get(acct, 0), self._counted.get(acct, 0)) + 1
        doc = {"account": acct, "issued": issued, "expires": int(issued) + self.token_ttl, "n": n}
        atomic_write(path, json.dumps(doc).encode(), 0o600)
        if self._revoked(acct):  # revoked meanwhile: revoke() marks, then deletes tokens; this one too
            os.unlink(path)
            raise LoginRefused(403, REVOKED)
        # the last login, kept past the token's life and a revocation (`serve accounts`)
        atomic_write(os.path.join(self.logins, acct), json.dumps({"at": issued}).encode(), 0o600)
        return token

    def _take_invite(self, code: str | None) -> tuple[bool, str | None]:
        """Spend the invite `code`: (whether it was one, its label)."""
        if not code or not isinstance(code, str):
            return False, None
        path = os.path.join(self.invites, _sha(code))
        doc = read_json(path)
        try:
            os.unlink(path)  # atomic: of two registrations, one wins
        except FileNotFoundError:
            return False, None
        fsync_dir(self.invites)  # durable before the account is: a power loss must not bring the invite back
        label = doc.get("label") if doc else None
        return True, label if isinstance(label, str) else None

    def _register(self, pub: bytes, label: str | None, invite: str | None) -> str:
        """A new account for `pub`, spending its invite; for a key that has one already, a login: the invite
        is left unspent (for another device) and the account as it was."""
        acct = account_id(pub)
        with self._registering:
            self._create(acct, pub, label, invite)
        return self._issue(acct)

    def _create(self, acct: str, pub: bytes, label: str | None, invite: str | None) -> None:
        if not os.path.exists(self._account_path(acct)):
            taken, invited_as = self._take_invite(invite)
            if not self.open_registration and not taken:
                raise LoginRefused(
                    401,
                    f"registration on this relay is closed: ask its owner for an invite {RELAY_INVITE}"
                    # (the invite's place without a scheme before it: a client shows a URL's user part hidden)
                    " and use the store URL s5+http://HOST:PORT with the invite as its user part (INVITE@HOST:PORT)"
                    if not invite
                    else f"this invite is unknown or already used: ask the relay's owner for a new one {RELAY_INVITE}",
                )
            label = invited_as or (label if isinstance(label, str) else None)
            doc = {"pubKey": pub.hex(), "label": label, "created": int(wall())}
            atomic_write(self._account_path(acct), json.dumps(doc).encode(), 0o600)

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
        """The account a token is for; None if it is unknown, expired (its file then goes) or its account
        is revoked (whether or not `serve revoke` got to delete the token's file)."""
        if not token:
            return None
        path = os.path.join(self.tokens, _sha(token))
        doc = token_doc(path, self.token_ttl)
        if doc is None:
            return None
        if doc["expires"] <= wall():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return None
        if self._revoked(doc["account"]):
            return None
        return doc["account"]
