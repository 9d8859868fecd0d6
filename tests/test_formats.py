"""Wire formats, checked byte for byte against the vectors in docs/FORMATS.md."""

from __future__ import annotations

import json
import os
import re

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from sessiond.storage.model import LogRun, Op
from sessiond.stores.cid import BlobId, CIDError, digest, parse_ipfs_cid
from sessiond.stores.registry import RegistryEntry, RegistryError
from sessiond.sync import dagcbor, membersobject
from sessiond.sync.crypto import (
    CHUNK_SIZE,
    CTX_HEAD_SIGNING,
    DecryptError,
    EncryptedCID,
    decrypt,
    derive,
    manifest_key,
    object_key,
    open_sealed,
    seal,
)
from sessiond.sync.frozen import is_frozen
from sessiond.sync.keys import KeyError_, KeyStore, mnemonic_to_seed
from sessiond.sync.manifest import CLAIMS_KEPT, encode_manifest, parse_manifest
from sessiond.sync.membersobject import MEMBERS_VERSION, members_object, parse_carried, parse_members, unknown_of
from sessiond.sync.pages import Entry, LogError, parse_page
from sessiond.sync.push import LogWriter
from sessiond.sync.rekeycarried import carried_entry, carried_message, carried_past, merge_carried
from sessiond.sync.rekeyproof import notice_hash

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "FORMATS.md")


def vectors() -> dict:
    text = open(DOC, encoding="utf-8").read()
    block = re.search(r"<!-- vectors:begin -->\s*```json\n(.*?)```\s*<!-- vectors:end -->", text, re.S)
    return json.loads(block.group(1))


V = vectors()


def test_blob_id_vector_from_the_s5_spec():
    v = V["blob_id"]
    b = BlobId.of(v["input_utf8"].encode())
    assert str(b) == v["base32"] == "blobb53pfycyq6lwes6ogtnjpmhsc75nucnizzye34dyu2cmnz7s7n6mnbu"
    assert b.to_base58() == v["base58btc"] and b.to_base64url() == v["base64url"] and b.to_base16() == v["base16"]
    assert b.to_legacy_bytes().hex() == v["legacy_raw_hex"]
    for form in ("base32", "base58btc", "base64url", "base16"):
        assert BlobId.parse(v[form]) == b
    assert BlobId.from_bytes(bytes.fromhex(v["legacy_raw_hex"])) == b


def test_ipfs_cid_vector_from_kubo():
    v = V["ipfs_cid"]
    b = BlobId.of(v["input_utf8"].encode())
    assert b.ipfs_cid() == v["cid"] == "bafkr4icj3sdq34o6p7lapfgoxtset5om3lsxll72uz5cjnrkzmb6aoo3si"
    assert parse_ipfs_cid(v["cid"]) == b.hash


def test_blob_id_size_encoding():
    assert BlobId.of(b"").to_bytes()[35:] == b""
    assert BlobId(b"\x00" * 32, 256).to_bytes()[35:] == b"\x00\x01"
    assert BlobId.from_bytes(BlobId(b"\x01" * 32, 2**40).to_bytes()).size == 2**40


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty"),
        ("xabc", "unknown multibase"),
        ("b!!!", "base32"),
        ("z0OIl", "base58"),
        ("f123", "base16"),
        ("b" + "a" * 10, "magic"),
    ],
)
def test_blob_id_rejects(text, why):
    with pytest.raises(CIDError, match=why):
        BlobId.parse(text)


def test_blob_id_rejects_bad_bytes():
    good = BlobId.of(b"x").to_bytes()
    for bad, why in (
        (good[:20], "truncated"),
        (b"\x5b\x82\x1f" + good[3:], "hash function"),
        (good + b"\x00", "trailing zero"),
        (good[:35] + b"\x01" * 9, "longer than 8"),
    ):
        with pytest.raises(CIDError, match=why):
            BlobId.from_bytes(bad)


def test_registry_entry_vector():
    v = V["registry_entry"]
    sk = SigningKey(bytes.fromhex(v["ed25519_seed_hex"]))
    e = RegistryEntry.create(sk, v["revision"], bytes.fromhex(v["data_hex"]))
    assert e.to_bytes().hex() == v["entry_hex"]
    assert RegistryEntry.from_bytes(bytes.fromhex(v["entry_hex"])) == e
    raw = bytearray(e.to_bytes())
    raw[40] ^= 1  # the revision: the signature no longer matches
    with pytest.raises(RegistryError, match="signature"):
        RegistryEntry.from_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="at most 48"):
        RegistryEntry.create(sk, 1, b"x" * 49)
    for bad in (b"", b"\x08" + bytes(e.to_bytes())[1:], e.to_bytes()[:-1]):
        with pytest.raises(RegistryError):
            RegistryEntry.from_bytes(bad)


def test_encrypted_object_vectors():
    v = V["encrypted_object"]
    ct, ref = seal(v["plaintext_utf8"].encode(), bytes.fromhex(v["key_hex"]))
    assert ct.hex() == v["ciphertext_hex"] and ref.to_bytes().hex() == v["encrypted_cid_hex"]
    assert EncryptedCID.from_bytes(ref.to_bytes()) == ref
    assert open_sealed(ct, ref) == v["plaintext_utf8"].encode()
    v2 = V["encrypted_object_two_chunks"]
    big = bytes(i % 251 for i in range(300000))
    ct2, ref2 = seal(big, bytes.fromhex(v2["key_hex"]))
    assert len(ct2) == v2["ciphertext_size"] and blake3.blake3(ct2).hexdigest() == v2["ciphertext_blake3_hex"]
    assert ref2.to_bytes().hex() == v2["encrypted_cid_hex"]
    assert open_sealed(ct2, ref2) == big


def test_encrypted_object_damage_is_detected():
    big = os.urandom(600_000)
    ct, ref = seal(big, os.urandom(32))
    step = 256 * 1024 + 16
    for bad in (ct[:-1], ct[: step * 2], ct[:step], ct + b"\x00", ct[step:] + ct[:step]):
        with pytest.raises(DecryptError):
            open_sealed(bad, ref)
        with pytest.raises(DecryptError):  # even with the hash check out of the way
            decrypt(bad, ref.key, ref.plain.size, ref.padding)
    flipped = bytearray(ct)
    flipped[step + 5] ^= 0x80
    with pytest.raises(DecryptError, match="chunk 1"):
        decrypt(bytes(flipped), ref.key, ref.plain.size, ref.padding)
    with pytest.raises(DecryptError):
        open_sealed(ct, EncryptedCID(ref.hash, os.urandom(32), ref.padding, ref.plain))


@pytest.mark.parametrize(
    "size", [0, 1, 255, 256, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7, 4 * CHUNK_SIZE]
)
@pytest.mark.parametrize("pad", [True, False])
def test_chunked_sealing_matches_the_format_written_out_plainly(size, pad):
    """encrypt/decrypt avoid copies (chunks cut straight from the plaintext, padding added to the last
    one only, a one-chunk object passed as it is): the ciphertext must be the format's definition
    written out plainly (pad the whole, then one XChaCha20-Poly1305 call per 256 KiB chunk, nonce =
    the chunk's index), decrypt must open it, and a damaged chunk is named."""
    from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as aead

    from sessiond.sync import crypto

    plain, key = os.urandom(size), os.urandom(32)
    sealed, padding = crypto.encrypt(plain, key, pad)
    assert padding == ((-size) % 256 if pad else 0)
    whole = plain + bytes(padding)
    plainly = b"".join(
        aead(whole[off : off + CHUNK_SIZE], None, i.to_bytes(24, "little"), key)
        for i, off in enumerate(range(0, max(1, len(whole)), CHUNK_SIZE))
    )
    assert sealed == plainly
    assert crypto.decrypt(sealed, key, size, padding) == plain
    assert crypto.decrypt(memoryview(bytearray(sealed)), key, size, padding) == plain
    assert crypto.encrypt(bytearray(plain), key, pad) == (sealed, padding)
    damaged = bytearray(sealed)
    damaged[-1] ^= 1
    with pytest.raises(DecryptError, match=f"chunk {max(1, -(-(size + padding) // CHUNK_SIZE)) - 1}"):
        crypto.decrypt(bytes(damaged), key, size, padding)


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [5], [CHUNK_SIZE], [CHUNK_SIZE - 3, 3], [7, CHUNK_SIZE, 1], [3 * CHUNK_SIZE + 5], [100] * 9000],
)
def test_a_page_sealed_as_its_chunks_is_the_object_sealed_whole(sizes):
    """A long push seals each page from its pieces (chunks_of: CHUNK_SIZE bytes each but the last, cut
    across the encoder's items) and hands the sealed chunks to the store unjoined: joined, they are the
    object seal() makes of the joined plaintext, with the same encrypted CID."""
    from sessiond.stores.cid import digest_parts
    from sessiond.sync import crypto

    parts = [os.urandom(n) for n in sizes]
    parts = [memoryview(p) if i % 2 else p for i, p in enumerate(parts)]  # the encoder's views of the blob
    plain, key = b"".join(parts), os.urandom(32)
    chunks = crypto.chunks_of(parts)
    assert b"".join(chunks) == plain and all(type(c) is bytes for c in chunks)
    assert [len(c) for c in chunks[:-1]] == [CHUNK_SIZE] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= CHUNK_SIZE if plain else chunks == [b""]
    ref_plain = BlobId(digest_parts(chunks), len(plain))
    assert ref_plain == BlobId.of(plain)
    sealed, ref = crypto.seal_chunks(chunks, key, ref_plain)
    whole, whole_ref = seal(plain, key)
    assert b"".join(sealed) == whole and ref == whole_ref
    assert open_sealed(b"".join(sealed), ref) == plain


def test_padding_is_checked_however_much_an_encrypted_cid_claims():
    """Padding is zeros, whatever an encrypted CID claims: more than one chunk of it too."""
    from sessiond.sync import crypto

    key = os.urandom(32)
    sealed, _ = crypto.encrypt(bytes(2 * CHUNK_SIZE), key, pad=False)
    assert crypto.decrypt(sealed, key, 10, 2 * CHUNK_SIZE - 10) == bytes(10)
    sealed, _ = crypto.encrypt(bytes(CHUNK_SIZE) + b"x" + bytes(CHUNK_SIZE - 1), key, pad=False)
    with pytest.raises(DecryptError, match="padding is not zero"):
        crypto.decrypt(sealed, key, 10, 2 * CHUNK_SIZE - 10)
    sealed, _ = crypto.encrypt(b"abc" + b"x" + bytes(252), key, pad=False)
    with pytest.raises(DecryptError, match="padding is not zero"):
        crypto.decrypt(sealed, key, 3, 253)


def test_key_derivation_vectors():
    v = V["keys"]
    sess = bytes.fromhex(v["session_key_hex"])
    assert object_key(sess, digest(b"x")).hex() == v["object_key_for_utf8_x"]
    assert manifest_key(sess, bytes.fromhex(v["head_pk_hex"]), 7).hex() == v["manifest_key_rev_7"]
    seed = bytes.fromhex(v["device_seed_hex"])
    pk = SigningKey(derive(CTX_HEAD_SIGNING, seed + v["session_id"].encode())).verify_key
    assert "ed" + bytes(pk).hex() == v["head_public_key_hex"]


def test_dag_cbor_vector_and_rules():
    val = {
        "bb": [1.5, -2, 0],
        "a": 1,
        "ccc": dagcbor.Link(bytes.fromhex("01551e20") + b"\x00" * 32),
        "d": {"z": None, "y": True},
        "e": "é",
    }
    enc = dagcbor.encode(val)
    assert enc.hex() == V["dag_cbor"]["hex"]
    assert dagcbor.encode(dagcbor.decode(enc)) == enc
    assert b"\xfb\x3f\xf8" in enc  # 1.5 as a 64-bit float, not cbor2's canonical half float
    for bad in (float("nan"), float("inf"), {1: 2}, object(), 1 << 70):
        with pytest.raises(dagcbor.DagCborError):
            dagcbor.encode(bad)
    for raw, why in (
        (bytes.fromhex("a2616201616101"), "deterministic"),  # keys out of order
        (bytes.fromhex("f93e00"), "deterministic"),  # a half float
        (bytes.fromhex("1800"), "deterministic"),  # a non-shortest integer
        (bytes.fromhex("c11a514b67b0"), "DAG-CBOR"),  # tag 1 (a date)
        (bytes.fromhex("ff"), "CBOR"),
    ):
        with pytest.raises(dagcbor.DagCborError, match=why):
            dagcbor.decode(raw)


def test_rekey_notice_hash_and_manifest_claim_vectors():
    v = V["rekey"]
    pk = bytes.fromhex(v["head_pk_hex"])
    notice = {"a": b"\x02" * 32, "b": [{"k": pk, "x": b"\x04" * 80}], "d": v["device"], "t": 1700000000}
    assert notice_hash(notice).hex() == v["notice_hash_hex"]
    assert notice_hash(dict(reversed(notice.items()))).hex() == v["notice_hash_hex"]  # map order is DAG-CBOR's
    claim = {"a": b"\x02" * 32, "h": b"\x03" * 32, "o": b"\x01" * 32}
    plain = encode_manifest(v["session"], v["device"], 3, pk, 0, 5, [], None, [claim])
    assert plain.hex() == v["manifest_rev_3_lamport_5_no_operations_hex"]
    assert plain == dagcbor.encode(dagcbor.decode(plain))  # strict DAG-CBOR
    man = parse_manifest(plain, sid=v["session"], head_pk=pk, rev=3)
    assert man.claims == [claim] and man.lamport == 5 and man.last_seq == 0
    # without claims, the manifest is the one sessiond wrote before them: no "rk" key at all
    assert b"rk" not in encode_manifest(v["session"], v["device"], 3, pk, 0, 5, [], None)


def test_rekey_notice_with_frozen_logs_vector():
    """A notice naming the frozen logs its rekey adds ("f", FORMATS.md §6): its bytes and hash; the claim of the
    notice without them does not confirm it, nor the other way round."""
    v = V["rekey"]
    pk = bytes.fromhex(v["head_pk_hex"])
    notice = {"a": b"\x02" * 32, "b": [{"k": pk, "x": b"\x04" * 80}], "d": v["device"], "t": 1700000000}
    frozen = {"d": "8899aabbccddeeff", "k": b"\xed" + b"\x05" * 32, "r": 7, "h": b"\x06" * 32, "x": b"\x07" * 32}
    assert is_frozen(frozen)
    named = {**notice, "f": [frozen]}
    assert dagcbor.encode(named).hex() == v["notice_with_frozen_hex"]
    assert notice_hash(named).hex() == v["notice_with_frozen_hash_hex"] != v["notice_hash_hex"]
    assert notice_hash(dagcbor.decode(bytes.fromhex(v["notice_with_frozen_hex"]))) == notice_hash(named)


def test_members_object_vector_with_a_member_of_no_known_id():
    v = V["members"]
    members = [{"head_pk": bytes.fromhex(m["head_pk_hex"]), "device_id": m["device"]} for m in v["members"]]
    plain = dagcbor.encode(members_object(v["session"], members))
    assert plain.hex() == v["object_hex"]
    assert parse_members(dagcbor.decode(plain)) == (members, None, [])
    # what an earlier sessiond wrote for the same list ("None" for no id) reads as the same list
    assert parse_members(dagcbor.decode(bytes.fromhex(v["older_object_with_none_hex"]))) == (members, None, [])
    # and a "d" left out, or not text, is no id either; the text "None" is never written
    for d in ({}, {"d": 7}, {"d": ""}):
        obj = {**dagcbor.decode(plain), "m": [{**d, "k": members[0]["head_pk"]}]}
        assert parse_members(obj)[0] == [members[0]]
    older = [{"head_pk": members[0]["head_pk"], "device_id": "None"}]
    assert b"None" not in dagcbor.encode(members_object("demo", older))


def _carried_vector() -> tuple[SigningKey, dict, bytes, dict]:
    """The `carried` vector's signer, notice, dropped head key and slot object."""
    v = V["carried"]
    signer = SigningKey(bytes.fromhex(v["signer_ed25519_seed_hex"]))
    pk = bytes.fromhex(v["signer_head_pk_hex"])
    assert pk == b"\xed" + bytes(signer.verify_key)
    notice = {"a": b"\x02" * 32, "b": [{"k": pk, "x": b"\x04" * 80}], "d": "00112233aabbccdd", "t": 1700000000}
    members = [{"head_pk": bytes.fromhex(m["head_pk_hex"]), "device_id": m["device"]} for m in v["slot_members"]]
    return signer, notice, bytes.fromhex(v["dropped_head_pk_hex"]), {**members_object("demo", members), "rekey": notice}


def test_carried_past_the_notice_vector():
    """A kept writer's entry in the old slot's "c" (FORMATS.md §6, "Carried past the notice"), byte for byte."""
    v = V["carried"]
    signer, notice, dropped, obj = _carried_vector()
    assert notice_hash(notice).hex() == v["notice_hash_hex"]
    assert carried_message(notice, dropped, v["seq"]).hex() == v["signed_hex"]
    entry = carried_entry(signer, notice, dropped, v["seq"])
    assert entry["g"].hex() == v["signature_hex"]
    assert dagcbor.encode(entry).hex() == v["entry_hex"]
    plain = dagcbor.encode({**obj, "c": [entry]})
    assert plain.hex() == v["object_hex"]
    slot = dagcbor.decode(plain)
    assert parse_carried(slot) == [entry]
    assert carried_past(notice, parse_carried(slot), dropped) == v["seq"]
    assert carried_past(notice, parse_carried(slot), entry["p"]) is None  # (an entry for another head key)
    # with the notice's own "s": the furthest of the two
    for s, want in ((3, 7), (9, 9)):
        named = {**notice, "s": [{"k": dropped, "s": s}]}
        assert carried_past(named, [], dropped) == s
        assert carried_past(named, [carried_entry(signer, named, dropped, v["seq"])], dropped) == want
        assert carried_past(named, [entry], dropped) == s  # (signed for the notice without "s": another notice)


def test_a_slot_with_carried_entries_reads_as_before_to_an_older_sessiond(monkeypatch):
    """ "c" is a field added under "v": 1: the members, notice and frozen logs of the slot read as they do
    without it, and a sessiond that does not know it (its known fields without "c") keeps it as unknown."""
    signer, notice, dropped, obj = _carried_vector()
    slot = dagcbor.decode(bytes.fromhex(V["carried"]["object_hex"]))
    assert slot["v"] == MEMBERS_VERSION == 1
    assert parse_members(slot) == parse_members(obj)
    assert unknown_of(slot) == {}
    monkeypatch.setattr(membersobject, "KNOWN_FIELDS", membersobject.KNOWN_FIELDS - {"c"})
    assert unknown_of(slot) == {"c": slot["c"]}


def test_a_carried_entry_that_does_not_hold_is_ignored():
    """Signed by a key the notice has no box for (a dropped writer's: it holds the old slot's key too), for
    another notice or seq, or malformed: ignored, and what it would carry counted as held here."""
    signer, notice, dropped, _ = _carried_vector()
    good = carried_entry(signer, notice, dropped, 7)
    other = SigningKey(b"\x09" * 32)
    unboxed = carried_entry(other, notice, dropped, 9)
    elsewhere = carried_entry(signer, {**notice, "t": 1700000001}, dropped, 9)
    bad = [
        unboxed,
        elsewhere,
        {**good, "s": 9},  # the seq changed, the signature not
        {**good, "p": unboxed["p"], "g": unboxed["g"]},
    ]
    for e in bad:
        assert carried_past(notice, parse_carried({"c": [e]}), dropped) is None
        assert carried_past(notice, parse_carried({"c": [e, good]}), dropped) == 7
    malformed = [
        {**good, "x": 1},
        {k: v for k, v in good.items() if k != "g"},
        {**good, "s": True},
        {**good, "s": -1},
        {**good, "s": 1 << 63},
        {**good, "g": good["g"][:63]},
        {**good, "k": dropped[1:]},
        "not an entry",
    ]
    for e in malformed:
        assert parse_carried({"c": [e]}) == []
    assert parse_carried({"c": "not a list"}) == []
    # of two entries of one signer for one head key, the furthest
    assert merge_carried([good], [carried_entry(signer, notice, dropped, 5)]) == [good]
    assert len(merge_carried([good], [unboxed])) == 2


@pytest.mark.parametrize(
    "rk",
    [
        "not a list",
        [{"a": b"\x02" * 32, "h": b"\x03" * 32}],  # o missing
        [{"a": b"\x02" * 32, "h": b"\x03" * 31, "o": b"\x01" * 32}],  # a short hash
        [{"a": b"\x02" * 32, "h": b"\x03" * 32, "o": b"\x01" * 32, "x": 1}],  # a field more
        [{"a": b"\x02" * 32, "h": b"\x03" * 32, "o": b"\x01" * 32}] * (CLAIMS_KEPT + 1),
    ],
)
def test_a_manifest_with_malformed_claims_is_refused(rk):
    pk = bytes.fromhex(V["rekey"]["head_pk_hex"])
    m = {"d": "dev", "k": pk, "l": [], "n": 0, "r": 1, "s": "demo", "v": 1, "rk": rk, "ty": "sessiond/manifest"}
    with pytest.raises(LogError, match="claim"):
        parse_manifest(dagcbor.encode(m), sid="demo", head_pk=pk, rev=1)


def test_page_vector():
    v = V["page"]
    ops = [
        Op(
            "demo",
            v["device"],
            1,
            1,
            "session.create",
            {"name": "Demo", "current_chat": "main", "created_at": 1700000000.0},
            1700000000.0,
        ),
        Op(
            "demo",
            v["device"],
            2,
            2,
            "message.add",
            {"chat": "main", "role": "user", "content": "hi", "tokens": 1},
            1700000000.5,
        ),
    ]
    # the push builds pages from database columns (Database.log_run)
    records = [
        (1, 1, "session.create", json.dumps(ops[0].body), 1700000000.0) + (None,) * 5,
        (2, 2, "message.add", None, 1700000000.5, "main", "user", "hi", 1, None),
    ]
    writer = LogWriter(v["session"], v["device"], bytes(32), None)
    [(page, first, last)] = writer.pages(LogRun.from_records(records))
    assert (page.hex(), first, last) == (v["hex"], 1, 2)
    # the same map written out by hand, column by column, encoded by the general (key-sorting) encoder
    assert page == dagcbor.encode(
        {
            "ty": "sessiond/page",
            "v": 2,
            "s": v["session"],
            "d": v["device"],
            "f": 1,
            "k": ["session.create", "message.add"],
            "l": [1, 2],
            "t": [1700000000000, 1700000000500],
            "c": [None, "main"],
            "r": [None, "user"],
            "x": [None, "hi"],
            "n": [None, 1],
            "b": [ops[0].body, None],
        }
    )
    # and reading it back gives the operations written
    e = Entry(1, 2, len(page), False, seal(page, bytes(32))[1])
    parsed = parse_page(page, e, v["session"], v["device"])
    assert parsed.ops(v["session"], v["device"]) == [
        Op(
            o.session_id,
            o.device_id,
            o.seq,
            o.lamport,
            o.kind,
            {**o.body, "extra": None} if o.kind == "message.add" else o.body,
            o.created_at,
        )
        for o in ops
    ]


def test_page_vector_with_a_tool_call():
    """A message's tool calls travel in its extra map (`e`, the `b` column); a message without them has none,
    so the page vector above is unchanged. The page reads back, and is checked as another device's log."""
    from sessiond.daemon.remote_checks import remote_log
    from sessiond.storage.model import RemoteLog

    v = V["page_with_tool_call"]
    records = [
        (o["s"], o["l"], o["k"], None, o["t"] / 1000, o["b"]["c"], o["b"]["r"], o["b"]["x"], o["b"]["n"])
        + (json.dumps(o["b"]["e"]),)
        for o in v["operations"]
    ]
    writer = LogWriter(v["session"], v["device"], bytes(32), None)
    [(page, first, last)] = writer.pages(LogRun.from_records(records))
    assert (page.hex(), first, last) == (v["hex"], 1, 2)
    e = Entry(1, 2, len(page), False, seal(page, bytes(32))[1])
    parsed = parse_page(page, e, v["session"], v["device"])
    assert [op.body["extra"] for op in parsed.ops(v["session"], v["device"])] == [o["b"]["e"] for o in v["operations"]]
    log = RemoteLog(v["device"], [], [], 0)
    parsed.into(log, v["session"], v["device"])
    remote_log(log)  # taken from another device as an append is
    assert [json.loads(r[9]) for r in log.messages] == [o["b"]["e"] for o in v["operations"]]
    # a call on a message that is not an assistant's is refused, as the API refuses it
    bad = RemoteLog(v["device"], [(*log.messages[1][:5], "user", *log.messages[1][6:9], log.messages[0][9])], [], 0)
    with pytest.raises(Exception, match="tool_calls"):
        remote_log(bad)


def test_mnemonic_round_trip_and_errors(tmp_path):
    ks = KeyStore(str(tmp_path / "keys"))
    words = ks.export_mnemonic()
    assert len(words.split()) == 24
    assert mnemonic_to_seed(words) == open(ks.device_path, "rb").read()
    w = words.split()
    with pytest.raises(KeyError_, match="24 words"):
        mnemonic_to_seed(" ".join(w[:23]))
    with pytest.raises(KeyError_, match="word list"):
        mnemonic_to_seed(" ".join(w[:23] + ["notaword"]))
    # a swap of two words fails the 8-bit checksum, except 1 time in 256 (then it is another valid
    # phrase, of another key): over ten swaps, at least one must be caught
    rejected = 0
    for i in range(1, 11):
        swapped = w[:]
        swapped[0], swapped[i] = swapped[i], swapped[0]
        if swapped == w:
            continue
        try:
            seed = mnemonic_to_seed(" ".join(swapped))
        except KeyError_ as exc:
            assert "checksum" in str(exc)
            rejected += 1
        else:
            assert seed != open(ks.device_path, "rb").read()
    assert rejected


# ---------------------------------------------------------------------------------------- fuzzing decoders
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_blob_id_parser_never_crashes(text):
    try:
        BlobId.parse(text)
    except CIDError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_binary_decoders_never_crash(raw):
    for fn, errors in (
        (BlobId.from_bytes, CIDError),
        (EncryptedCID.from_bytes, CIDError),
        (RegistryEntry.from_bytes, RegistryError),
        (dagcbor.decode, dagcbor.DagCborError),
    ):
        try:
            fn(raw)
        except errors:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63)
        | st.text()
        | st.binary()
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=20,
    )
)
def test_dag_cbor_is_deterministic(value):
    enc = dagcbor.encode(value)
    assert dagcbor.encode(dagcbor.decode(enc)) == enc


def test_share_code_vectors():
    from sessiond.sync.sharecode import ShareCode, ShareCodeError, decode, needs_passphrase

    v = V["share_codes"]
    key, ann, ws = (bytes.fromhex(v[k]) for k in ("session_key_hex", "announce_pk_hex", "write_secret_hex"))
    ro = ShareCode(v["session_id"], key, ann, v["store"])
    assert ro.encode() == v["read_only"]
    rw = ShareCode(v["session_id"], key, ann, v["store"], ws, v["expires_at"])
    assert rw.encode() == v["read_write_expiring"]
    prot = ro.encode(v["passphrase"], _salt=bytes.fromhex(v["salt_hex"]), _nonce=bytes.fromhex(v["nonce_hex"]))
    assert prot == v["read_only_protected"]
    assert decode(v["read_only"]) == ro
    assert decode(v["read_write_expiring"], now=1_800_000_000) == rw
    assert decode(v["read_only_protected"], v["passphrase"]) == ro
    assert needs_passphrase(v["read_only_protected"]) and not needs_passphrase(v["read_only"])
    # grouped and wrapped codes still read
    code = v["read_only"]
    assert decode("\n".join(code[i : i + 40] for i in range(0, len(code), 40)).upper()) == ro
    for bad, kind in (
        (code[:-3], "checksum"),
        (code[:40], "checksum"),
        ("sessiond1", "malformed"),
        ("nope" + code, "malformed"),
        (code[:20] + "1" + code[21:], "malformed"),
    ):
        with pytest.raises(ShareCodeError) as e:
            decode(bad)
        assert e.value.kind == kind, (bad, e.value)
    for i in range(len("sessiond1"), len(code)):  # every single-character typo is caught by the checksum
        ch = "a" if code[i] != "a" else "b"
        with pytest.raises(ShareCodeError):
            decode(code[:i] + ch + code[i + 1 :])
    with pytest.raises(ShareCodeError) as e:
        decode(v["read_write_expiring"], now=2_000_000_000)
    assert e.value.kind == "expired"
    with pytest.raises(ShareCodeError) as e:
        decode(v["read_only_protected"])
    assert e.value.kind == "passphrase_required"
    with pytest.raises(ShareCodeError) as e:
        decode(v["read_only_protected"], "wrong")
    assert e.value.kind == "passphrase"


def test_share_code_locations_vector_and_old_codes():
    """Codes name networks plus hints ("l"); codes made before them ("u": a store URL) still read."""
    from sessiond.sync.sharecode import ShareCode, ShareCodeError, decode

    v = V["share_codes"]
    key, ann = (bytes.fromhex(v[k]) for k in ("session_key_hex", "announce_pk_hex"))
    places = tuple((n, h) for n, h in v["locations"])
    code = ShareCode(v["session_id"], key, ann, locations=places)
    assert code.encode() == v["read_only_with_locations"]
    assert decode(v["read_only_with_locations"]) == code and code.places() == list(places)
    assert decode(v["read_only"]).places() == [("folder", "file:///srv/store")]  # an old code's store URL
    assert ShareCode("s1", key, ann, "s5+http://127.0.0.1:7000").places() == [("s5", "s5+http://127.0.0.1:7000")]
    for bad in ([{"n": "Relay!"}], [{"n": "s5", "h": 7}], [{"n": "s5", "x": 1}], [{"n": "ipfs"}] * 9, "s5"):
        m = {**code._map(), "l": bad}
        crafted = ShareCode("s1", key, ann)
        crafted._map = lambda m=m: m  # type: ignore[method-assign]
        with pytest.raises(ShareCodeError) as e:
            decode(crafted.encode())
        assert e.value.kind == "malformed", bad


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_share_code_decoder_never_crashes(text):
    from sessiond.sync.sharecode import ShareCodeError, decode

    try:
        decode("sessiond1" + text)
    except ShareCodeError:
        pass


def test_share_code_passphrases_are_unicode_normalised():
    """A passphrase is the text a person types: NFC and NFD spellings of it are one passphrase."""
    import unicodedata

    from sessiond.sync.sharecode import ShareCode, decode

    code = ShareCode("s1", bytes(32), bytes(range(32)))
    nfc, nfd = unicodedata.normalize("NFC", "café crème"), unicodedata.normalize("NFD", "café crème")
    assert nfc != nfd
    assert decode(code.encode(nfc), nfd) == code
    assert decode(code.encode(nfd), nfc) == code


def test_share_code_with_an_absurd_expiry_is_malformed():
    from sessiond.sync.sharecode import ShareCode, ShareCodeError, decode

    for x in (-(1 << 62), 1 << 62, -1):
        code = ShareCode("s1", bytes(32), bytes(range(32)))
        m = {**code._map(), "x": x}
        code._map = lambda m=m: m  # a crafted code: its own expiry, checksum valid
        with pytest.raises(ShareCodeError) as e:
            decode(code.encode())
        assert e.value.kind in ("malformed", "expired"), e.value


def test_checkpoint_vector_recomputed_as_the_document_says():
    """§8's conversation hash and proof, from §9's `checkpoint` vector: each item the DAG-CBOR array
    [device, seq, chat id, role, content] of a message the frontier covers, chained with BLAKE3 from 32 zero
    bytes; the proof signed by the device's head key over the DAG-CBOR of its other fields. (The document
    gave no vector: a user checking a proof by hand had nothing to compare with.)"""
    from sessiond.sync.checkpoint import check_proof, make_proof

    v = V["checkpoint"]
    frontier = v["proof"]["frontier"]
    h, items, chain, tokens = b"\x00" * 32, [], [], 0
    for m in v["messages"]:
        if m["seq"] > frontier.get(m["device"], 0):
            continue
        item = dagcbor.encode([m["device"], m["seq"], m["chat"], m["role"], m["content"]])
        h = blake3.blake3(h + item).digest()
        items.append(item.hex())
        chain.append(h.hex())
        tokens += m["tokens"]
    assert items == v["items_hex"] and chain == v["chain_hex"]
    proof = v["proof"]
    assert (h.hex(), len(items), tokens) == (proof["hash"], proof["messages"], proof["tokens"])
    signed = dagcbor.encode({k: proof[k] for k in proof if k != "signature"})
    assert signed.hex() == v["signed_hex"]
    key = SigningKey(derive(CTX_HEAD_SIGNING, bytes.fromhex(v["device_seed_hex"]) + v["session"].encode()))
    assert "ed" + bytes(key.verify_key).hex() == proof["pk"]
    key.verify_key.verify(signed, bytes.fromhex(proof["signature"]))
    # the daemon's own code makes the same proof, and checks it
    rows = [(m["device"], m["seq"], m["chat"], m["role"], m["content"], m["tokens"]) for m in v["messages"]]
    assert make_proof(v["session"], v["device"], 1, rows, frontier, proof["created_at"], key, version=1) == proof
    check_proof(proof, rows, {bytes.fromhex(proof["pk"])})


def test_checkpoint_v2_vector_recomputed_as_the_document_says():
    """§8's version 2 hash and proof, from §9's `checkpoint_v2` vector: the setting (the system prompt, initial
    messages and each chat's prompt as the operations the frontier covers left them, the later update past the
    frontier not) hashed ahead of the chain of [device, seq, chat id, role, content, fields], fields a message's
    name, tool_call_id, tool_calls and call_fields; the proof signed over its other fields, `v` among them.
    (Version 1 left all of these out: a proof did not change with a tool call's arguments or the prompt.)"""
    from sessiond.sync.checkpoint import check_proof, make_proof

    v = V["checkpoint_v2"]
    proof = v["proof"]
    frontier = proof["frontier"]
    setting = {"system_prompt": None, "initial_messages": [], "chats": {}}
    for op in sorted(v["operations"], key=lambda o: (o["lamport"], o["device"], o["seq"])):
        if op["seq"] > frontier.get(op["device"], 0):
            continue
        b = op["body"]
        if op["kind"] == "session.create":
            setting |= {"system_prompt": b.get("system_prompt"), "initial_messages": b.get("initial_messages") or []}
            setting["chats"] |= {c["id"]: c.get("system_prompt") for c in b.get("chats", [])}
        elif op["kind"] == "session.update":
            setting |= {k: b[k] for k in ("system_prompt", "initial_messages") if k in b}
        elif op["kind"] == "chat.create":
            setting["chats"][b["id"]] = b.get("system_prompt")
    assert setting == v["setting"] and setting["system_prompt"] == "be brief"
    assert dagcbor.encode(setting).hex() == v["setting_hex"]
    setting_hash = blake3.blake3(dagcbor.encode(setting)).digest()
    assert setting_hash.hex() == v["setting_hash_hex"]
    fields = ("name", "tool_call_id", "tool_calls", "call_fields")
    h, items, chain, tokens = b"\x00" * 32, [], [], 0
    for m in v["messages"]:
        if m["seq"] > frontier.get(m["device"], 0):
            continue
        item = dagcbor.encode(
            [m["device"], m["seq"], m["chat"], m["role"], m["content"], {k: m[k] for k in fields if k in m}]
        )
        h = blake3.blake3(h + item).digest()
        items.append(item.hex())
        chain.append(h.hex())
        tokens += m["tokens"]
    assert items == v["items_hex"] and chain == v["chain_hex"]
    whole = blake3.blake3(setting_hash + h).digest()
    assert (whole.hex(), len(items), tokens, proof["v"]) == (proof["hash"], proof["messages"], proof["tokens"], 2)
    signed = dagcbor.encode({k: proof[k] for k in proof if k != "signature"})
    assert signed.hex() == v["signed_hex"]
    key = SigningKey(derive(CTX_HEAD_SIGNING, bytes.fromhex(v["device_seed_hex"]) + v["session"].encode()))
    assert "ed" + bytes(key.verify_key).hex() == proof["pk"]
    key.verify_key.verify(signed, bytes.fromhex(proof["signature"]))
    # the daemon's own code makes the same proof, and checks it
    rows = [
        (m["device"], m["seq"], m["chat"], m["role"], m["content"], m["tokens"], {k: m[k] for k in fields if k in m})
        for m in v["messages"]
    ]
    ops = [(o["device"], o["seq"], o["lamport"], o["kind"], o["body"]) for o in v["operations"]]
    assert make_proof(v["session"], v["device"], 2, rows, frontier, proof["created_at"], key, ops=ops) == proof
    check_proof(proof, rows, {bytes.fromhex(proof["pk"])}, ops)
