"""A log's head manifest (docs/FORMATS.md, "Snapshot layout"): the object a device's signed head points
to, listing level by level the entries that cover its log. Its encoding and the checks a reader makes
of it; sealing it is sync/push.py's (LogWriter.seal_manifest), opening it the engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import dagcbor
from .heads import encode_levels
from .pages import VERSION, Entry, LogError, check_version

T_MANIFEST = "sessiond/manifest"
# a manifest carries at most this many rekey claims (the device's latest rekeys; docs/FORMATS.md §6)
CLAIMS_KEPT = 16


@dataclass
class Manifest:
    sid: str
    device: str
    head_pk: bytes
    rev: int
    last_seq: int
    lamport: int
    levels: list[list[Entry]]
    prev: bytes | None
    # this device's rekey claims, {"a": new announce key, "h": notice hash, "o": old announce key}, oldest first
    claims: list[dict] = field(default_factory=list)

    def entries(self) -> list[Entry]:
        """All top entries in log order (highest level first)."""
        return [e for lv in reversed(self.levels) for e in lv]


def encode_manifest(
    sid: str,
    device: str,
    rev: int,
    head_pk: bytes,
    last_seq: int,
    lamport: int,
    levels: list[list[Entry]],
    prev: bytes | None,
    claims: Sequence[dict] = (),
) -> bytes:
    """The plaintext of a manifest (DAG-CBOR; `prev`, the previous manifest's hash, as a link): the map
    {d, k, l, n, r, s, v[, rk], ty, lam[, prev]} put together in DAG-CBOR key order, the levels from each
    entry's encoding made once (heads.encode_levels). The same bytes as dagcbor.encode of the map
    (tests/test_formats.py), at a push's every commit without encoding its entries again."""
    items = [("d", device), ("k", head_pk), ("l", None), ("n", last_seq), ("r", rev), ("s", sid), ("v", VERSION)]
    if claims:  # (absent when there is none: every manifest before claims reads and re-encodes the same)
        items.append(("rk", list(claims)))
    items += [("ty", T_MANIFEST), ("lam", lamport)]
    if prev is not None:
        items.append(("prev", dagcbor.Link(prev)))
    out = [dagcbor.head(5, len(items))]
    for k, v in items:
        out.append(_KEYS[k])
        out.append(encode_levels(levels) if k == "l" else dagcbor.encode_ordered(dagcbor.canon(v)))
    return b"".join(out)


_KEYS = {k: dagcbor.encode_ordered(k) for k in ("d", "k", "l", "n", "r", "s", "v", "rk", "ty", "lam", "prev")}


def parse_manifest(plain: bytes, *, sid: str, head_pk: bytes, rev: int) -> Manifest:
    """The checked manifest `plain` (strict DAG-CBOR: bytes that do not re-encode to themselves are
    refused). A follower parses one at every pull, and a strict decode re-encodes the whole manifest in
    Python (~1 ms for a few dozen entries), so it is first read without that check and put together
    again by encode_manifest, which writes each entry's encoding at C speed: the same bytes, and it is
    DAG-CBOR as sessiond writes it. Anything else (another encoding, a field this sessiond does not
    write, a damaged manifest) goes the strict way, which decides as it always has."""
    try:
        man = _parse(dagcbor.decode(plain, strict=False), sid=sid, head_pk=head_pk, rev=rev)
        again = encode_manifest(
            sid, man.device, rev, head_pk, man.last_seq, man.lamport, man.levels, man.prev, man.claims
        )
        if again == plain:
            return man
    except Exception:  # whatever it is, the strict way below says what is wrong
        pass
    try:
        m = dagcbor.decode(plain)
    except dagcbor.DagCborError as exc:
        raise LogError(f"head manifest is not valid: {exc}") from None
    return _parse(m, sid=sid, head_pk=head_pk, rev=rev)


def _parse(m: object, *, sid: str, head_pk: bytes, rev: int) -> Manifest:
    if not isinstance(m, dict) or m.get("ty") != T_MANIFEST:
        raise LogError("head object is not a sessiond manifest")
    check_version(m.get("v"), VERSION, "the head manifest")
    if m.get("s") != sid:
        raise LogError(f"manifest belongs to session {m.get('s')!r}, not {sid!r} (swapped objects)")
    if m.get("k") != head_pk:
        raise LogError("manifest names another signing key than the head that points to it")
    if m.get("r") != rev:
        raise LogError(f"manifest says revision {m.get('r')!r} but its head has revision {rev} (replayed)")
    try:
        levels = [[Entry.from_cbor(e) for e in lv] for lv in m["l"]]
        man = Manifest(
            sid,
            str(m["d"]),
            head_pk,
            rev,
            int(m["n"]),
            int(m.get("lam", 0)),
            levels,
            bytes(m["prev"]) if m.get("prev") is not None else None,
            parse_claims(m.get("rk", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LogError(f"malformed manifest: {exc!r}") from None
    except LogError as exc:
        raise LogError(f"malformed manifest: {exc}") from None
    expect = 1
    for e in man.entries():
        if e.first != expect or e.last < e.first:
            raise LogError(f"manifest entries are not contiguous at seq {expect} (reordered or damaged manifest)")
        expect = e.last + 1
    if expect - 1 != man.last_seq:
        raise LogError(f"manifest covers up to seq {expect - 1} but claims {man.last_seq}")
    return man


def parse_claims(rk: object) -> list[dict]:
    """A manifest's rekey claims, checked: a list of at most CLAIMS_KEPT maps of exactly {a, h, o}, each
    32 bytes (docs/FORMATS.md §6)."""
    if not isinstance(rk, list) or len(rk) > CLAIMS_KEPT:
        raise LogError(f"rekey claims are not a list of at most {CLAIMS_KEPT}")
    out = []
    for c in rk:
        if not isinstance(c, dict) or set(c) != {"a", "h", "o"}:
            raise LogError("a rekey claim is not a map of a, h and o")
        if not all(isinstance(c[k], bytes) and len(c[k]) == 32 for k in "aho"):
            raise LogError("a rekey claim's a, h and o are not 32 bytes each")
        out.append({k: bytes(c[k]) for k in "aho"})
    return out
