"""IPNS records as sessiond heads (docs/FORMATS.md, "IPNS heads"), written from the IPNS spec
(ipfs/specs src/ipns/ipns-record.md): names, the IpnsEntry protobuf, V2 signatures, verification.

A head (an S5 registry entry, stores/registry.py) becomes an IPNS record signed by the same Ed25519
key: name = the key's peer id as a CIDv1 `libp2p-key` in base36 (`k51…`), Value `/ipfs/<CID of the
manifest object>`, Sequence = revision, a validity (EOL, RFC 3339) and a TTL; the V1 fields and a V1
signature are written too, for older readers. The record's DAG-CBOR data also carries the registry
entry's own data and signature under `_s5` (the spec lets implementations add `_`-prefixed fields),
so a reader rebuilds the exact registry entry and checks both signatures.

Reading checks everything the spec lists (size, signature V2 over "ipns-signature:" | data, the key
against the name, V1 copies equal to the signed data, validity not past) and then the registry entry.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass

import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..storage.clock import wall_utc
from .cid import CIDV1_RAW_BLAKE3, CIDError, _b32encode, b58decode, multibase_decode
from .registry import RegistryEntry

MAX_RECORD = 10 * 1024
SIG_PREFIX = b"ipns-signature:"
DEFAULT_TTL_NS = 60 * 10**9  # readers may cache a head for a minute
DEFAULT_LIFETIME = dt.timedelta(days=365)  # a head stays valid for a year after it was last published
LIFETIME_ENV = "SESSIOND_IPNS_LIFETIME"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_ED25519_PROTO = b"\x08\x01\x12\x20"  # PublicKey{Type: Ed25519, Data: 32 bytes}
_LIBP2P_KEY_CID = b"\x01\x72"  # CIDv1, libp2p-key
_IDENTITY_36 = b"\x00\x24"  # identity multihash, 36 bytes


def lifetime() -> dt.timedelta:
    """How long a record this device signs stays valid: DEFAULT_LIFETIME, or SESSIOND_IPNS_LIFETIME
    seconds (for tests: a record that ends within seconds, so its republishing can be seen)."""
    seconds = env_seconds(LIFETIME_ENV)
    return DEFAULT_LIFETIME if seconds is None else dt.timedelta(seconds=seconds)


def env_seconds(name: str) -> float | None:
    """The positive number of seconds the environment variable `name` holds; None if it is unset or
    empty; ValueError naming it if it holds anything else."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e9:
        raise ValueError(f"{name} must be a positive number of seconds (got {text!r})")
    return seconds


class IpnsError(ValueError):
    """An IPNS record or name that is malformed, badly signed, expired, or not for this key."""


# -- names ------------------------------------------------------------------------------------------


def _b36encode(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "0" * (len(raw) - len(raw.lstrip(b"\0"))) + "".join(reversed(out))


def _b36decode(text: str) -> bytes:
    n = 0
    for ch in text.lower():
        i = _B36.find(ch)
        if i < 0:
            raise IpnsError(f"not valid base36: unexpected character {ch!r}")
        n = n * 36 + i
    zeros = len(text) - len(text.lstrip("0"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def name_of(public_key: bytes) -> str:
    """The IPNS name of a 32-byte Ed25519 public key: `k51…`."""
    if len(public_key) != 32:
        raise IpnsError("an IPNS name needs a 32-byte Ed25519 public key")
    return "k" + _b36encode(_LIBP2P_KEY_CID + _IDENTITY_36 + _ED25519_PROTO + public_key)


def key_of_name(name: str) -> bytes:
    """The Ed25519 public key inlined in an IPNS name (base36 `k…`, base32 `b…` CIDv1, or a base58
    peer id `12D3Koo…`); IpnsError for any other kind of name."""
    name = name.strip()
    if name.startswith("/ipns/"):
        name = name[6:]
    try:
        if name[:1] == "k":
            raw = _b36decode(name[1:])
        elif name[:1] == "b":
            raw = multibase_decode(name)
        elif name[:1] == "1":
            raw = b58decode(name)
        else:
            raise IpnsError(f"unsupported IPNS name {name[:12]!r}")
    except CIDError as exc:
        raise IpnsError(f"IPNS name: {exc}") from None
    if raw[:2] == _LIBP2P_KEY_CID:
        raw = raw[2:]
    elif name[:1] != "1":
        raise IpnsError("IPNS name is not a CIDv1 with the libp2p-key codec")
    if raw[:2] != _IDENTITY_36 or raw[2:6] != _ED25519_PROTO or len(raw) != 38:
        raise IpnsError("IPNS name does not inline an Ed25519 key (only Ed25519 names are supported)")
    return raw[6:]


def ipfs_path(h: bytes) -> bytes:
    return b"/ipfs/b" + _b32encode(CIDV1_RAW_BLAKE3 + h).encode()


# -- protobuf (IpnsEntry: fields 1-9, varints and length-delimited bytes only) ----------------------

_VARINT_FIELDS = {3: "validityType", 5: "sequence", 6: "ttl"}
_BYTES_FIELDS = {1: "value", 2: "signatureV1", 4: "validity", 7: "pubKey", 8: "signatureV2", 9: "data"}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(raw: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(raw) or shift > 63:
            raise IpnsError("IPNS record: truncated or overlong varint")
        b = raw[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def encode_entry(fields: dict) -> bytes:
    out = bytearray()
    for num in range(1, 10):
        if num in _VARINT_FIELDS and _VARINT_FIELDS[num] in fields:
            out += _varint(num << 3) + _varint(fields[_VARINT_FIELDS[num]])
        elif num in _BYTES_FIELDS and _BYTES_FIELDS[num] in fields:
            v = fields[_BYTES_FIELDS[num]]
            out += _varint(num << 3 | 2) + _varint(len(v)) + v
    return bytes(out)


def decode_entry(raw: bytes) -> dict:
    fields: dict = {}
    i = 0
    while i < len(raw):
        key, i = _read_varint(raw, i)
        num, wire = key >> 3, key & 7
        v: int | bytes
        if wire == 0:
            v, i = _read_varint(raw, i)
        elif wire == 2:
            n, i = _read_varint(raw, i)
            if i + n > len(raw):
                raise IpnsError("IPNS record: a field runs past the end")
            v, i = raw[i : i + n], i + n
        else:
            raise IpnsError(f"IPNS record: unexpected protobuf wire type {wire}")
        name = _VARINT_FIELDS.get(num) if wire == 0 else _BYTES_FIELDS.get(num)
        if name is not None:
            fields[name] = v
        elif num in _VARINT_FIELDS or num in _BYTES_FIELDS:
            raise IpnsError(f"IPNS record: field {num} has the wrong wire type")
    return fields


# -- DAG-CBOR for the signed data (maps sorted by key length, then bytes) ----------------------------


def _dag_cbor(value) -> bytes:
    def order(v):
        if isinstance(v, dict):
            return {k: order(v[k]) for k in sorted(v, key=lambda k: (len(k.encode()), k.encode()))}
        return v

    return cbor2.dumps(order(value))


# -- validity (RFC 3339) ----------------------------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


def format_validity(when: dt.datetime) -> bytes:
    when = when.astimezone(dt.UTC)
    return (when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z").encode()


def parse_validity(raw: bytes) -> dt.datetime:
    m = _RFC3339.match(raw.decode("ascii", "replace"))
    if not m:
        raise IpnsError("IPNS record: validity is not an RFC 3339 date")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    micro = int((frac or "0").ljust(9, "0")[:6])
    offset = (
        dt.UTC
        if tz in "Zz"
        else dt.timezone((1 if tz[0] == "+" else -1) * dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    )
    try:
        return dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro, tzinfo=offset)
    except ValueError:
        raise IpnsError("IPNS record: validity is not a real date") from None


# -- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IpnsRecord:
    public_key: bytes  # 32 bytes, Ed25519
    value: bytes
    sequence: int
    validity: dt.datetime
    ttl: int  # nanoseconds
    data: dict  # the whole signed DAG-CBOR map
    raw: bytes


def create_record(
    key: SigningKey,
    value: bytes,
    sequence: int,
    *,
    eol: dt.datetime | None = None,
    ttl_ns: int = DEFAULT_TTL_NS,
    extra: dict | None = None,
) -> bytes:
    eol = eol or wall_utc() + lifetime()
    validity = format_validity(eol)
    data = {"Value": value, "Validity": validity, "ValidityType": 0, "Sequence": sequence, "TTL": ttl_ns}
    data.update(extra or {})
    cbor = _dag_cbor(data)
    sig2 = key.sign(SIG_PREFIX + cbor).signature
    sig1 = key.sign(value + validity + b"EOL").signature  # V1: value | validity | "EOL", for old readers
    record = encode_entry(
        {
            "value": value,
            "signatureV1": sig1,
            "validityType": 0,
            "validity": validity,
            "sequence": sequence,
            "ttl": ttl_ns,
            "signatureV2": sig2,
            "data": cbor,
        }
    )
    if len(record) > MAX_RECORD:
        raise IpnsError(f"IPNS record of {len(record)} bytes exceeds the 10 KiB limit")
    return record


def verify_record(
    raw: bytes, public_key: bytes, *, now: dt.datetime | None = None, expired_ok: bool = False
) -> IpnsRecord:
    """Check `raw` as the record of the name of `public_key`, as the spec's "Record Verification"
    says, in its order; IpnsError naming the first failure. `expired_ok`: a record past its validity
    passes (only for its own signer, who republishes it: never to resolve a name)."""
    if len(raw) > MAX_RECORD:
        raise IpnsError(f"IPNS record of {len(raw)} bytes exceeds the 10 KiB limit")
    f = decode_entry(raw)
    if not f.get("signatureV2") or not f.get("data"):
        raise IpnsError("IPNS record has no V2 signature or no data (a V1-only record is not accepted)")
    if "pubKey" in f and f["pubKey"] != _ED25519_PROTO + public_key:
        raise IpnsError("IPNS record carries a public key other than its name's")
    try:
        data = cbor2.loads(f["data"])
    except Exception:
        raise IpnsError("IPNS record data is not CBOR") from None
    if not isinstance(data, dict):
        raise IpnsError("IPNS record data is not a map")
    try:
        VerifyKey(public_key).verify(SIG_PREFIX + f["data"], f["signatureV2"])
    except (BadSignatureError, ValueError):
        raise IpnsError("IPNS record signature does not verify (forged, damaged, or another key's)") from None
    want = {"Value": bytes, "Validity": bytes, "ValidityType": int, "Sequence": int, "TTL": int}
    for k, t in want.items():
        if not isinstance(data.get(k), t) or isinstance(data.get(k), bool):
            raise IpnsError(f"IPNS record data has no valid {k}")
    if "signatureV1" in f or "value" in f:
        pairs = (
            ("value", "Value", b""),
            ("validity", "Validity", b""),
            ("validityType", "ValidityType", 0),
            ("sequence", "Sequence", 0),
            ("ttl", "TTL", 0),
        )
        for pb, cb, default in pairs:
            if f.get(pb, default) != data[cb]:
                raise IpnsError(f"IPNS record: the V1 {pb} differs from the signed {cb}")
    if data["ValidityType"] != 0:
        raise IpnsError(f"IPNS record validity type {data['ValidityType']} unsupported (only 0, EOL)")
    eol = parse_validity(data["Validity"])
    if not expired_ok and eol <= (now or wall_utc()):
        raise IpnsError("IPNS record has expired")
    return IpnsRecord(public_key, data["Value"], data["Sequence"], eol, data["TTL"], data, raw)


# -- heads <-> records ------------------------------------------------------------------------------


def record_for_head(entry: RegistryEntry, key: SigningKey, *, eol: dt.datetime | None = None) -> bytes:
    if bytes(key.verify_key) != entry.pk[1:]:
        raise IpnsError("the signing key is not the head's key")
    if len(entry.data) < 33 or entry.data[0] != 0x1E:
        raise IpnsError("head data is not 0x1e followed by a BLAKE3 hash")
    return create_record(
        key,
        ipfs_path(entry.data[1:33]),
        entry.revision,
        eol=eol,
        extra={"_s5": {"d": entry.data, "s": entry.signature}},
    )


def head_from_record(raw: bytes, pk: bytes, *, now: dt.datetime | None = None) -> RegistryEntry:
    """The registry entry an IPNS record carries, for head key `pk` (0xed | key): both signatures,
    the name, and the Value against the entry's hash checked. IpnsError otherwise."""
    return head_and_validity(raw, pk, now=now)[0]


def expired_at(raw: bytes, pk: bytes) -> dt.datetime | None:
    """When the record `raw` of head `pk` ended, if its only fault is that it has ended (None otherwise):
    a reader says "expired, not republished since" of it, not that the store lies."""
    try:
        _entry, eol = head_and_validity(raw, pk, expired_ok=True)
    except IpnsError:
        return None
    return eol if eol <= wall_utc() else None


def rank(raw: bytes, pk: bytes) -> tuple[int, dt.datetime] | None:
    """(sequence, end of life) of the record `raw` of head `pk`, even past its end of life, as the IPNS
    validator's Select compares two (the higher sequence, then the later end); None if it does not verify."""
    try:
        rec = verify_record(raw, pk[1:], expired_ok=True)
    except IpnsError:
        return None
    return rec.sequence, rec.validity


def expired_head(name: str, where: str, eol: dt.datetime) -> str:
    """What a reader says of a head whose record `where` answered past its end of life."""
    return (
        f"{where} answered the IPNS record of /ipns/{name}, which expired at {eol.strftime('%Y-%m-%d %H:%M:%S')} UTC: "
        "the device that signs this head has not published it again since (its daemon has not run within "
        "the record's lifetime); start that device's daemon: it writes its heads again when it starts"
    )


def head_and_validity(
    raw: bytes, pk: bytes, *, now: dt.datetime | None = None, expired_ok: bool = False
) -> tuple[RegistryEntry, dt.datetime]:
    """head_from_record, and the record's end of validity (`expired_ok`: see verify_record)."""
    rec = verify_record(raw, pk[1:], now=now, expired_ok=expired_ok)
    s5 = rec.data.get("_s5")
    if not isinstance(s5, dict) or not isinstance(s5.get("d"), bytes) or not isinstance(s5.get("s"), bytes):
        raise IpnsError("IPNS record carries no sessiond head (no _s5 field)")
    entry = RegistryEntry(pk, rec.sequence, s5["d"], s5["s"])
    if len(entry.data) < 33 or rec.value != ipfs_path(entry.data[1:33]):
        raise IpnsError("IPNS record Value does not name the head's manifest")
    return entry, rec.validity
