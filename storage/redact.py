"""Secrets kept out of what is shown: a store URL with its credentials replaced (an invite or
`user:password@` before the host, a token in its query or fragment), and free text (an error message,
a log line, a provider's answer) with the credentials of every URL in it and any secret named replaced.

Every place that shows a store URL to a person or a log (status, the daemon's banner, errors, log
lines) shows `shown_url(url)`; the URL itself, with its credentials, stays in the home (store-url,
config.toml: 0600 and 0700) and in the requests that need them. Standard library only."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import unquote

HIDDEN = "***"
# query parameter names that carry credentials (access_token, api_key, apikey, auth, invite, password,
# secret, sig, token, X-Amz-Signature, ...)
_SENSITIVE_NAME = re.compile(r"token|key|secret|pass|pwd|auth|invite|sig|credential|session|jwt|code|cookie", re.I)
# a value that looks like a credential whatever its name: long, and of a token's characters only
_TOKEN_VALUE = re.compile(r"[A-Za-z0-9_\-.~+/=%]{20,}")
# a URL in running text: a scheme, its userinfo if any (everything up to an '@' before the host: a password
# may hold a quote, which RFC 3986 allows there, or a character it does not), then everything up to a
# space or a quote. The scheme is bounded (the longest real one, ipfs+gateway+https, is 18): a pattern
# that looked from every word start through a run of scheme characters of any length for a '://' took
# quadratic time (10 s for 100 KB of "a.a.a."); a longer scheme is matched from its last 40 characters,
# its credentials hidden all the same. A raw space in a password ends the URL here: a configured secret is
# hidden by its value (hide_everywhere), which no pattern needs to find.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,39}://(?:[^\s/?#@]+@)?[^\s'\"<>`]+")
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9_\-.~+/=*]{4,}", re.I)
# API keys by their usual prefixes (OpenAI sk-/sk-proj-, Anthropic sk-ant-, Groq gsk_, xAI xai-,
# Hugging Face hf_, GitHub ghp_/gho_/github_pat_, GitLab glpat-, Slack xox?-), a masked echo
# ("sk-abc1****wxyz") included
_KEY_LIKE = re.compile(
    r"\b(?:sk|pk|rk|gsk|xai|hf|ghp|gho|ghs|github_pat|glpat|xox[abprs])[-_][A-Za-z0-9_\-.*]{3,}", re.I
)
_WORD = re.compile(r"[A-Za-z0-9_\-]{8,}")


# A share code (sync/sharecode.py: its prefix, then base32, read in either case) in running text: whoever sees one
# reads its session. No word of any other text is so (an id is 128 characters at most, of another alphabet's).
_SHARE_CODE_IN_TEXT = re.compile(r"sessiond1[a-z2-7]{40,}", re.I)
SHARE_CODE_HIDDEN = (
    "<a share code, not quoted here: whoever sees one reads its session; `sessiond import` takes it on standard input>"
)


def hide_share_codes(text: str) -> str:
    """`text` with every share code in it replaced by SHARE_CODE_HIDDEN: for a refusal that quotes what was typed,
    a code typed where a file's name or an argument went."""
    return _SHARE_CODE_IN_TEXT.sub(SHARE_CODE_HIDDEN, text)


def is_api_key(text: str) -> bool:
    """Whether `text` is, whole, an API key by its usual prefix (`_KEY_LIKE`) and length: no path or file
    name (no '/' or '.', at least 20 characters), so that a configured file name that is one can be refused
    without quoting it."""
    return len(text) >= 20 and "/" not in text and "." not in text and _KEY_LIKE.fullmatch(text) is not None


# The secrets this process was configured with or logged in for (a store URL's password or invite, a
# store's token, the home's kubo-auth, a pinning service's token, a provider's API key, the OpenAI
# listener's own key), hidden by their value in every text scrub_text is given, wherever they appear: in a
# URL the pattern cannot read (a password holding a raw space), or alone (a server echoing the password it
# refused). Shorter ones than KNOWN_MIN (scrub_text's own floor for a piece of a secret) are left to the
# patterns: a local server's placeholder key "ollama" hidden from every error would hide the provider named
# so. At most KNOWN_MAX, the newest kept (a store's token renewed, a key file changed). A tuple replaced
# whole under the lock, longest first, so that a thread scrubbing reads one consistent list.
KNOWN_MIN = 8
KNOWN_MAX = 256
_known: tuple[str, ...] = ()
_known_order: list[str] = []
_known_lock = threading.Lock()


def hide_everywhere(*secrets: str | None) -> None:
    """Hide each of `secrets` (None and short ones skipped) from every text this process scrubs from now on."""
    global _known
    new = [s for s in secrets if s and len(s) >= KNOWN_MIN and s not in _known]
    if not new:
        return
    with _known_lock:
        for secret in new:
            if secret in _known_order:
                _known_order.remove(secret)
            _known_order.append(secret)
        del _known_order[:-KNOWN_MAX]
        _known = tuple(sorted(_known_order, key=len, reverse=True))


def _shown_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and (_SENSITIVE_NAME.search(unquote(name)) or _TOKEN_VALUE.fullmatch(value)):
            part = f"{name}={HIDDEN}"
        elif not eq and _TOKEN_VALUE.fullmatch(name):  # ?SECRET
            part = HIDDEN
        parts.append(part)
    return "&".join(parts)


def shown_url(url: str) -> str:
    """`url` as it may be shown: credentials before the host (`s5+http://INVITE@HOST`,
    `ipfs+http://USER:PASSWORD@HOST`) become `***@`, credential-like query values `***`, a fragment
    `***`. A folder's path or a URL with nothing to hide comes back unchanged. A scheme followed by fewer
    than two slashes (`s5+http:/INVITE@HOST`, a typo a refusal quotes) is read the same way."""
    scheme, sep, rest = _scheme_split(url)
    if not sep or scheme.lower() == "file":
        return url
    rest, hash_, fragment = rest.partition("#")
    split = re.search(r"[/?]", rest)
    authority, tail = (rest[: split.start()], rest[split.start() :]) if split else (rest, "")
    _userinfo, at, host = authority.rpartition("@")
    if at:
        authority = f"{HIDDEN}@{host}"
    path, q, query = tail.partition("?")
    if q:
        query = _shown_query(query)
    return f"{scheme}{sep}{authority}{path}{q}{query}" + (f"#{HIDDEN}" if hash_ and fragment else hash_)


# a scheme and its colon, and its slashes: "s5+http://", or as mistyped "s5+http:/", "s5+http:", "s5+http:///"
# (a third slash, as file:/// is written: the user part after it is an invite or a password all the same)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)(:/*)")


def _scheme_split(url: str) -> tuple[str, str, str]:
    """(scheme, separator, rest) of a URL, the separator '://' or a mistyped ':/' or ':'; ('', '', url) for
    what starts with no scheme (a folder's path)."""
    m = _SCHEME.match(url)
    return (m.group(1), m.group(2), url[m.end() :]) if m else ("", "", url)


def shown_store(identity: str | None) -> str:
    """A store identity (one URL, or a mirror's joined by newlines) as a person reads it: each URL
    shown (`shown_url`), side by side."""
    return " ".join(shown_url(u) for u in (identity or "").split("\n") if u)


def url_secrets(url: str) -> list[str]:
    """The credentials in `url` (its userinfo, its credential-like query values), each as written and
    unquoted: what a message built by a client of that URL must never contain."""
    out: list[str] = []
    _scheme, sep, rest = _scheme_split(url)
    if not sep:
        return out
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, _ = authority.rpartition("@")
    if at and userinfo:
        user, colon, password = userinfo.partition(":")
        out += [userinfo, unquote(userinfo)] + ([password, unquote(password)] if colon and password else [user])
    query = rest.partition("?")[2].partition("#")[0]
    for part in query.split("&") if query else ():
        name, eq, value = part.partition("=")
        if eq and value and (_SENSITIVE_NAME.search(unquote(name)) or _TOKEN_VALUE.fullmatch(value)):
            out += [value, unquote(value)]
    return [s for s in dict.fromkeys(out) if len(s) >= 3]


def _piece_of(secret: str) -> Callable[[re.Match[str]], str]:
    def hide(m: re.Match[str]) -> str:
        return HIDDEN if m.group(0) in secret else m.group(0)

    return hide


def scrub_text(text: str, secrets: Iterable[str | None] = (), *, tokens: bool = False) -> str:
    """`text` with each of `secrets` (and every 8+ character piece of one: a prefix or suffix echoed
    back) replaced, and every URL in it shown (`shown_url`). With tokens=True, also whatever looks like
    a bearer token or an API key (`Bearer ...`, `sk-...`): for text a third party wrote, such as a
    model provider's error. The secrets this process knows (hide_everywhere) are hidden first, by value."""
    for known in _known:
        if known in text:
            text = text.replace(known, HIDDEN)
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, HIDDEN)
        if len(secret) >= 8:
            text = _WORD.sub(_piece_of(secret), text)
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: shown_url(m.group(0)), text)
    if tokens:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
        text = _KEY_LIKE.sub(HIDDEN, text)
    return text
