"""Every error code the API can answer is in README's list of them (was: `unknown_device`, `checksum` and a dozen
other codes of the sharing routes were answered but named nowhere). The codes are read from the daemon's code as
it raises them: a SessiondError subclass's `code`, an `err.code = "..."`, and the first argument of the calls
that name one, and an error body written out (a sync refusal's kind is its code: daemon/syncrefusals.py share_error)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ("daemon", "api", "storage", "sync", "stores")  # what answers the API (not the CLI's or the relay's own)
# calls whose first argument, a literal, is the code of the error they make
NAMING = {"ImportError_", "ShareCodeError", "ManifestSealed", "_bad", "bad_slot", "provider_error", "error_body"}
SECOND = {"oai_error"}  # (status, code, ...): the OpenAI-compatible endpoint's
# base classes' codes that no answer carries: every error made of them is given its own code
BASES = {"error", "provider_error"}


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_code(target: ast.AST) -> bool:
    return (isinstance(target, ast.Name) and target.id == "code") or (
        isinstance(target, ast.Attribute) and target.attr == "code"
    )


def _named(node: ast.AST) -> list[ast.AST]:
    """The expressions `node` gives as an error's code."""
    if isinstance(node, ast.ClassDef):
        return [st.value for st in node.body if isinstance(st, ast.Assign) and any(map(_is_code, st.targets))]
    if isinstance(node, ast.Call) and node.args:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in NAMING:
            return [node.args[0]]
        if name in SECOND and len(node.args) > 1:
            return [node.args[1]]
    if isinstance(node, ast.Dict):  # an error body written out: {"code": "...", ...}
        return [v for k, v in zip(node.keys, node.values) if k is not None and _literal(k) == "code"]
    if isinstance(node, ast.Assign):
        out = []
        for t in node.targets:
            pairs = [(t, node.value)]
            if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = list(zip(t.elts, node.value.elts))
            out += [v for tt, v in pairs if isinstance(tt, ast.Attribute) and tt.attr == "code"]
        return out
    return []


def codes_raised() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                for value in _named(node):
                    code = _literal(value)
                    if code is not None:
                        found.setdefault(code, f"{where}:{getattr(value, 'lineno', 0)}")
    return found


def test_every_code_the_api_answers_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    found = codes_raised()
    # the scan sees what it must (else it would pass by finding nothing)
    assert {"not_found", "unknown_device", "checksum", "provider_stream_cut", "bad_json", "internal"} <= set(found)
    missing = {code: where for code, where in found.items() if code not in BASES and f"`{code}`" not in readme}
    assert not missing, f"codes answered, not in README's list (add each: when it comes, what to do): {missing}"
