"""The 409 refusals with codes of their own carried no `details.reason` (0.36.0 gave one to `conflict` only), and
some of them are several refusals whose ways on differ, which an app could tell apart only by parsing the message:
`context_overflow` (compacting makes room, or no compaction does), `no_provider` (none configured, several and no
default, or the one named is not here), `expired` (its expires_at or its idle timeout), `members_full` (a rekey
dropping too many, or too few, or a list of too many writers). Each now carries its reason, documented (api/errors.py
REASONS, the README, the OpenAPI document) and typed in the client (`ApiError.reason`); every 409 code the daemon
answers is listed in api/errors.py's CODES_409 and the README's errors, and those whose code alone says what to do
(`revoked`, `not_pushed`, ...) carry the details the README names."""

from __future__ import annotations

import ast
import json
import os
import re
import typing

import pytest

from conftest import started_with_provider, wait_for
from sessiond.api.errors import CODES_409, REASONS, Reason
from sessiond.client import ApiError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("api", "cli", "client", "daemon", "relay", "storage", "stores", "sync")
# the refusals (a class made, or the sync engine's ImportError_ of a kind) answered with a 409 code that has reasons
MADE_AS = {"ContextOverflow": "context_overflow", "NoProvider": "no_provider", "Expired": "expired"}
KINDS = ("members_full",)


def _trees():
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        yield os.path.relpath(path, ROOT), ast.parse(f.read(), path)


def _made() -> list[tuple[str, int, str, ast.Call, dict[str, list]]]:
    found = []
    for path, tree in _trees():
        # (a reason given by a name: the constants the module assigns to it)
        named: dict[str, list] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                said = [v.value for v in ast.walk(node.value) if isinstance(v, ast.Constant)]
                named.setdefault(node.targets[0].id, []).extend(said)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            kind = node.args[0] if node.args else None
            if fn in MADE_AS:
                found.append((path, node.lineno, MADE_AS[fn], node, named))
            elif fn == "ImportError_" and isinstance(kind, ast.Constant) and kind.value in KINDS:
                found.append((path, node.lineno, kind.value, node, named))
    return found


def _codes_409() -> set[str]:
    """Every code the daemon answers with 409: a SessiondError class of status 409 (its own code), and the sync
    engine's kinds daemon/syncrefusals.py maps to 409."""
    codes = set()
    for _path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assigns = {
                    t.id: s.value.value
                    for s in node.body
                    if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
                    for t in s.targets
                    if isinstance(t, ast.Name)
                }
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if assigns.get("status") == 409 or ("code" in assigns and bases & {"Conflict", "NotPushed"}):
                    codes.add(assigns["code"])
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and v.value == 409:
                        codes.add(k.value)
    return codes


def test_every_refusal_of_a_code_with_reasons_names_one():
    places = _made()
    assert len(places) >= 12, places  # (the scan finds them)
    missing = []
    for path, line, code, call, named in places:
        given = [k.value for k in call.keywords if k.arg == "reason"]
        if not given and any(k.arg is None for k in call.keywords):
            continue  # (**details: a refusal passed on, with what it carried)
        if given and isinstance(given[0], ast.Name):
            values = named.get(given[0].id, [])
        else:
            values = [v.value for v in ast.walk(given[0]) if isinstance(v, ast.Constant)] if given else []
        if not values or any(v not in REASONS[code] for v in values):
            missing.append(f"{path}:{line}: {code} reason {values} not in REASONS[{code!r}]")
    assert not missing, missing


def test_every_409_code_is_listed_and_documented(daemon):
    codes = _codes_409()
    assert {"conflict", "revoked", "not_pushed", "held_here", "expired", "no_provider", "members_full"} <= codes
    assert codes == set(CODES_409), (codes - set(CODES_409), set(CODES_409) - codes)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    errors = readme[readme.index("Errors are `{") :][:12000]
    assert all(f"`{c}`" in errors for c in codes), [c for c in codes if f"`{c}`" not in errors]
    every = {r for reasons in REASONS.values() for r in reasons}
    assert all(f"`{r}`" in errors for r in every), [r for r in every if f"`{r}`" not in errors]
    assert set(typing.get_args(Reason)) == every  # (the client's type: every reason, none twice)
    assert sum(len(r) for r in REASONS.values()) == len(every)
    doc = daemon.client().openapi()
    described = doc["paths"]["/v1/sessions"]["post"]["responses"]["409"]["description"]
    assert all(re.search(rf"\b{c}\b", described) for c in codes), described
    assert all(r in described for r in every), described
    schema = doc["components"]["schemas"]["ErrorDetails"]["properties"]["reason"]
    assert set(schema["enum"]) == every, schema


def _refused(call, code: str) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    err = e.value
    assert err.status == 409 and err.code == code, (err.status, err.code, err.message)
    assert err.reason == err.details.get("reason") and err.reason in REASONS[code], err.details
    return err


def test_context_overflow_says_whether_compacting_helps(daemon):
    c = daemon.client()
    sid = c.create_session(max_context_tokens=100)["id"]  # 80 for the messages
    assert _refused(lambda: c.append(sid, "user", "x", tokens=90), "context_overflow").reason == "over_budget"
    c.create_chat(sid, id="prompted", system_prompt="s" * 240)  # 60 tokens sent with every question
    err = _refused(lambda: c.append(sid, "user", "x", tokens=30, chat="prompted"), "context_overflow")
    assert err.reason == "beside_fixed", err.message
    c.create_chat(sid, id="manual", auto_compact=False)
    c.append(sid, "user", "x", tokens=60, chat="manual")
    err = _refused(lambda: c.append(sid, "user", "x", tokens=30, chat="manual"), "context_overflow")
    assert err.reason == "compaction_off", err.message  # (compacting the chat makes room)
    c.create_chat(sid, id="systems")
    c.append(sid, "system", "x", tokens=70, chat="systems")  # kept by every compaction
    err = _refused(lambda: c.append(sid, "user", "x", tokens=20, chat="systems"), "context_overflow")
    assert err.reason == "system_kept", err.message


def test_no_provider_says_which_and_the_ways_on(make_daemon, daemon):
    c = daemon.client()
    sid = c.create_session(model="m")["id"]
    err = _refused(lambda: c.complete(sid, "hi"), "no_provider")
    assert err.reason == "none_configured" and err.details["configured"] == [], err.details
    assert err.details["owner"] and "config.toml" in err.details["owner"][0], err.details

    d = started_with_provider(make_daemon, "http://127.0.0.1:9/v1", name="one", start=False)
    with open(os.path.join(d.home, "config.toml"), "a") as f:
        f.write('[providers.two]\nbase_url = "http://127.0.0.1:9/v1"\n')
    c = d.start().client()
    sid = c.create_session(model="m")["id"]
    err = _refused(lambda: c.complete(sid, "hi"), "no_provider")
    assert err.reason == "no_default" and err.details["configured"] == ["one", "two"], err.details
    assert err.details["owner"], err.details
    err = _refused(lambda: c.complete(sid, "hi", provider="three"), "no_provider")
    assert err.reason == "not_configured" and err.details["provider"] == "three", err.details
    # a session's own setting that names a provider not here: the way on, its setting changed, in API terms
    other = c.create_session(model="m", settings={"provider": "elsewhere"})["id"]
    err = _refused(lambda: c.complete(other, "hi"), "no_provider")
    assert err.reason == "not_configured" and err.details["provider"] == "elsewhere", err.details
    assert any(f"PATCH /v1/sessions/{other}" in way for way in err.details["api"]), err.details


@pytest.mark.parametrize(("how", "reason"), [("expires_in", "expires_at"), ("idle_timeout", "idle_timeout")])
def test_expired_says_why(daemon, how, reason):
    c = daemon.client()
    sid = c.create_session(**{how: 1})["id"]
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the clean-up ending the session")
    err = _refused(lambda: c.append(sid, "user", "too late"), "expired")
    assert err.reason == reason and err.details["expired_at"], err.details


@pytest.mark.parametrize(
    ("given", "reason"), [({}, "writers"), ({"kept": 3}, "sealed_keys"), ({"frozen": 3}, "frozen_logs")]
)
def test_members_full_says_which_way_to_drop(given, reason):
    from sessiond.daemon.syncrefusals import share_error
    from sessiond.sync.errors import ImportError_
    from sessiond.sync.membersobject import MEMBERS_MAX_BYTES, seal_members

    with pytest.raises(ImportError_) as e:
        seal_members("s", os.urandom(MEMBERS_MAX_BYTES + 1), bytes(32), 4000, **given)
    err = share_error(e.value)
    assert err.status == 409 and err.code == "members_full", err
    assert err.details["reason"] == reason, err.details
    assert ApiError(409, err.code, err.message, err.details).reason == reason
    # the way on the message names with the CLI (`sessiond devices`, `sessiond rekey --drop`), in API terms too:
    # an app that talks to the API has no CLI (the other 409s whose call mends them carry it so)
    [first, *more] = err.details["api"]
    assert first.startswith('GET /v1/sessions/s/devices, then POST /v1/sessions/s/rekey {"drop": [DEVICE'), first
    # each request's body is JSON once its placeholders are filled in (README: DEVICE, a device's id), as every
    # other way on's: `[DEVICE, ...]` was not, and an app that filled it in as told sent a body refused as not JSON
    for step in (s for way in err.details["api"] for s in way.split(", then ")):
        if "{" in step:
            body = re.sub(r"\b(DEVICE|MESSAGE_ID)\b", '"x"', step[step.index("{") :])
            assert isinstance(json.loads(body), dict), step
    if reason == "frozen_logs":
        assert more == ['POST /v1/sessions/s/fork {"at": MESSAGE_ID}'], more
    elif reason == "sealed_keys":
        assert more == ["POST /v1/sessions/s/unshare"], more
    else:
        assert more == [], more
