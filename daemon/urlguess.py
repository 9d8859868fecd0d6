"""The store URL a mistyped one most likely meant, for the refusal of it (daemon/home.py normalize_store_url):
a file URL a slash short (`file://tmp/shared`: `tmp` read as a host), and a relay's or a portal's address given as
a browser takes it (`http://HOST:5050`) or with the network alone (`s5://HOST`). Every URL it names is shown with
its credentials hidden (storage/redact.py); one whose host holds a secret mistyped (`host_hides_secret`), and a
file URL with a user part, quoted nowhere, its shape named instead (`check_host`: the refusal of such a host)."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlparse

from ..api.locate import HomeError
from ..storage.ids import NOT_QUOTED, share_code_given
from ..storage.redact import shown_url

KUBO_RPC_PORT = 5001  # Kubo's RPC port: an http:// URL to it is a Kubo node's, not a relay's

SCHEMES_SAID = (
    "file:///path/to/folder, s5+http://HOST:PORT (your relay, `sessiond serve`), s5+https://PORTAL,"
    " ipfs+http://HOST:PORT (a Kubo node) or ipfs+https://GATEWAY"
)


def host_hides_secret(url: str) -> bool:
    """Whether `url`'s host holds a '%' or a space (a bracketed IPv6 literal's zone, `[fe80::1%25eth0]`, excepted):
    no host name does, and it is an invite or a password mistyped (its '@' written %40, or a space for it), which
    leaves no userinfo, so that the whole of it is taken, and would be shown, as the host."""
    authority = re.split(r"[/?#]", url.split("://", 1)[-1], maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    return (not host.startswith("[") and "%" in host) or any(c.isspace() for c in host)


# a scheme, its ':' and however many '/' were typed after it (`s5:`, `s5:/`, `s5://`, `s5:///`)
_SCHEME_AND_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/*")


def host_place(url: str) -> str:
    """What stands where `url`'s host goes: after its scheme, its ':' and however many '/' were typed (one short or
    too many as well as two), up to its path, query or fragment; the whole of what has no scheme."""
    m = _SCHEME_AND_SLASHES.match(url)
    return re.split(r"[/?#]", url[m.end() :] if m else url, maxsplit=1)[0]


def unparsed_hides_secret(url: str) -> bool:
    """Whether where `url`'s host goes (host_place: with one '/' short or too many, as with two) may hold a secret
    that is no user part, so that neither the URL nor urlparse's reason (which quotes the part after a ':' or the
    brackets' content) may be quoted: with no user part ('@'), a second ':' or a port that is no number
    (`INVITE:HOST:PORT`, `INVITE:HOST`, an invite's or a password's '@' typed as ':'), or brackets round what is no
    IP address (`[INVITE]`); a user part in brackets (`[INVITE@HOST]`, quoted by urlparse's reason); a '%' or a
    space where the host goes (host_hides_secret). A user part before a host is hidden where a URL is shown."""
    import ipaddress

    authority = host_place(url)
    if host_hides_secret("x://" + authority):
        return True
    user, at, host = authority.rpartition("@")
    if at:
        return "[" in user
    if host.startswith("["):
        inside, closed, host = host[1:].partition("]")
        try:
            ipaddress.ip_address(inside.split("%", 1)[0])
        except ValueError:
            return True
        if not closed:
            return False
    return host.count(":") > 1 or not re.fullmatch(r"[^:]*(:\d*)?", host)


def quoted_url(url: str) -> str:
    """`url` as a refusal may quote it: in quotes, its credentials hidden (shown_url; a file URL's user part and query
    as any other's, which shown_url keeps for a folder's path); in place of one where a secret may be taken for its
    host (unparsed_hides_secret), its scheme alone and the reason it is not quoted."""
    if unparsed_hides_secret(url):
        m = _SCHEME_AND_SLASHES.match(url)
        scheme = url[: url.index(":")] if m else "SCHEME"
        # (the user part's place named without a scheme before it, which scrub_text would take for a URL's)
        return f"{scheme}:... (not quoted here: where its host goes may hold an invite or a password, its '@' mistyped)"
    return repr(_shown(url))


def _shown(url: str) -> str:
    """shown_url(url), a file URL's user part and query hidden as any other URL's (shown_url keeps a folder's path as
    it is, which a file URL refused here is not: `file://INVITE@HOST:PORT`, `file:///x?token=...`)."""
    if url[:5].lower() == "file:" and url[5:6] == "/":
        return url[:5] + shown_url("x:" + url[5:])[2:]
    return shown_url(url)


def unparsed_refusal(url: str) -> str | None:
    """The refusal of a network URL that does not parse whose host may hold a secret (unparsed_hides_secret), quoting
    only its scheme; None for one whose refusal may quote it (its user part hidden) and urlparse's reason."""
    if not unparsed_hides_secret(url):
        return None
    scheme = url.partition("://")[0]
    scheme = scheme if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme) else "SCHEME"
    # (the user part's place named without a scheme before it, which scrub_text would take for a URL's)
    return (
        f"store URL {scheme}://... is malformed: its host and port are not HOST[:PORT] (not quoted here: it may hold"
        f" an invite or a password, its '@' typed as ':' or left out); give {scheme}://HOST[:PORT], an invite or a"
        " password put before its host as the URL's user part (INVITE@HOST[:PORT], USER:PASSWORD@HOST[:PORT])"
    )


HIDES_SECRET = (
    "host holds a '%' or a space, which no host name does (not quoted here: it may be an invite or a password"
    " mistyped, its '@' written %40 or left out)"
)


def file_url_meant(netloc: str, path: str) -> str:
    """What `file://NETLOC/PATH` was meant to be: the absolute folder a slash short, or one relative to here, or one
    under the home (`file://~/shared`). Not
    for a NETLOC with a user part (`USER:PASSWORD@HOST`: no folder a slash short, and its password not quoted)."""
    if "@" in netloc or unparsed_hides_secret("file://" + netloc):
        return "a file URL takes no user or password (not quoted here): give file:///path/to/folder"
    if netloc.startswith("~") and (home := os.path.expanduser(netloc + path)) != netloc + path:
        # (`file://~/shared`: the home's folder, as a shell takes ~/shared; was named as /~/shared or CWD/~/shared)
        return f"did you mean file://{home}? (a URL's path takes no ~: the folder under the home, written whole)"
    absolute = "file:///" + (netloc + path).lstrip("/")
    here = "file://" + os.path.abspath(netloc + path)
    return f"did you mean {absolute}? (a folder relative to here: {here})"


# HOST:PORT given alone, a user part before it or not: `127.0.0.1:5050` (as `sessiond serve` says where it listens),
# `INVITE@relay.example:5050`, `[::1]:5050`
_BARE_ADDRESS = re.compile(
    r"(?:([^/@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})/?"
)
_SCHEME_NO_SLASH = re.compile(r"(s5|ipfs|https?|file)(\+[a-z]+)*:", re.I)  # `s5:HOST`, `file:x`: not HOST:PORT
# every store's scheme (stores/config.py NETWORK_SCHEMES) and a browser's, longest first
_SCHEMES = r"(s5\+https?|ipfs(?:\+rpc|\+gateway)?\+https?|https?)"
_COLON_SHORT = re.compile(_SCHEMES + "//", re.I)  # `s5+http//HOST`, `ipfs+rpc+https//HOST`: a ':' short
_SLASHES_SHORT = re.compile(_SCHEMES + ":/?(?!/)", re.I)  # `http:INVITE@HOST:PORT`, `s5+https:/HOST`: no '//'
_SLASHES_OVER = re.compile(_SCHEMES + ":///+(?!/)", re.I)  # `s5+http:///HOST:PORT`: a '/' too many (no host)


# a URL in the quotes or brackets it was copied in (config.toml's `store = "URL"`, a mail's <URL>), or its ':' typed
# without shift (`s5+http;//`): no scheme to the parse, so a folder's path, the invite in it
_WRAPPED = re.compile(r"""(["'<])([A-Za-z][A-Za-z0-9+.\-]*:/.*)(["'>])""", re.S)
_SEMICOLON = re.compile(r"(s5\+https?|ipfs\+https?|https?|file);(//.*)", re.I | re.S)


def _wrapped_or_semicolon(url: str) -> str | None:
    """scheme_left_out's refusal of a URL in quotes or brackets, or with a ';' for its ':' (_WRAPPED, _SEMICOLON)."""
    m = _WRAPPED.fullmatch(url)
    if m and {"<": ">"}.get(m[1], m[1]) == m[3]:
        kind = "brackets" if m[1] == "<" else "quotes"
        return f"store URL given in its {kind} (read as a folder's path){url_meant(m[2], scheme_kept=True)}"
    m = _SEMICOLON.fullmatch(url)
    if m:
        meant = f"{m[1].lower()}:{m[2]}"
        return f"store URL {m[1]};//...: a ';' for the ':' after its scheme (read as a folder's path){url_meant(meant)}"
    return None


def scheme_left_out(url: str) -> str | None:
    """The refusal of a store URL given without its scheme, which would be read as a folder's path here: a relay's
    address alone (HOST:PORT, a user part before it or not) that names no folder here, or a network URL a ':' short
    (`s5+http//HOST:PORT`), or one whose '//' is left out (`http:INVITE@HOST:PORT`, `s5+https:/HOST`: read as one
    with no host, or of a scheme whose host is the scheme typed), or a '/' too many (`s5+http:///HOST:PORT`: read as
    one with no host, whose refusal quoted it whole, a secret typed where its host goes too), in quotes or brackets,
    or a ';' for its ':'; None for any other (and for a folder of that name that is there). Its user part (an
    invite, a password) quoted nowhere."""
    if share_code_given(url):  # (`start --store CODE`: the code where the store goes, made a folder named by it)
        return (
            f"a share code was given as the store URL ({NOT_QUOTED}): leave the store out (or give the store's URL),"
            " then `sessiond import` with the code on standard input"
        )
    said = None if os.path.lexists(url) else _wrapped_or_semicolon(url)
    if said is not None:
        return said
    m = _SLASHES_OVER.match(url)
    if m and url[m.end() :]:
        guess = url_meant(f"{m.group(1).lower()}://{url[m.end() :]}")
        return f"store URL {m.group(1)}:///...: a '/' too many after its scheme (read as one with no host){guess}"
    m = _COLON_SHORT.match(url)
    if m:
        guess = url_meant(f"{m.group(1).lower()}://{url[m.end() :]}")
        return f"store URL {m.group(1)}//...: a ':' short after its scheme (read as a folder's path){guess}"
    m = _SLASHES_SHORT.match(url)
    if m and url[m.end() :] and not os.path.lexists(url):  # (a folder there: taken as ever)
        guess = url_meant(f"{m.group(1).lower()}://{url[m.end() :]}")
        return f"store URL {m.group(1)}:...: the '//' after its scheme is left out{guess}"
    m = _BARE_ADDRESS.fullmatch(url)
    if m is None or _SCHEME_NO_SLASH.match(url) or os.path.lexists(url):  # (a folder there: taken as ever)
        return None
    user, address = ("***@" if m.group(1) else ""), f"{m.group(2)}:{m.group(3)}"
    first, other = ("ipfs+http", "s5+http") if int(m.group(3)) == KUBO_RPC_PORT else ("s5+http", "ipfs+http")
    what = "a relay" if first == "s5+http" else "a Kubo node"
    folder = "./FOLDER" if user else f"./{url}"
    return (
        f"store URL {user}{address} has no scheme (read as a folder's path here); did you mean {first}://{user}{address}?"
        f" ({what}; {other}://{address} for {'a Kubo node' if other == 'ipfs+http' else 'a relay'}; a new folder"
        f" here: {folder})"
    )


def url_meant(meant: str, *, scheme_kept: bool = False) -> str:
    """`; did you mean URL?` for the store URL `meant` (a mistyped one put right): credentials hidden, and in place
    of a host that may be a secret mistyped (unparsed_hides_secret) HOST[:PORT]; a browser's scheme as a store's
    (network_url_meant) unless `scheme_kept`."""
    scheme = meant.partition(":")[0]
    if scheme.lower() in ("http", "https") and not scheme_kept:
        return network_url_meant(meant)
    if unparsed_hides_secret(meant):
        return f"; did you mean {scheme}://HOST[:PORT]? (its host not quoted here: it may hold an invite or a password)"
    return f"; did you mean {_shown(meant)}?"


def unsupported_scheme(url: str) -> str:
    """The refusal of a store URL of a scheme no store has: the URL (quoted_url: credentials hidden, and none quoted
    whose host may be a secret), the one most likely meant, and the schemes."""
    scheme = urlparse(url).scheme
    what = f", and its {HIDES_SECRET}" if host_hides_secret(url) else f" in {quoted_url(url)}"
    return f"unsupported store URL scheme {scheme!r}{what}{network_url_meant(url)}: use {SCHEMES_SAID}"


def network_url_meant(url: str) -> str:
    """The store URL a network address with a scheme no store has most likely meant, as `; did you mean URL?`
    ('' for a scheme that is no such slip): the scheme put right, with two '/' after it however many were typed
    (`s5:/HOST`, `http:///HOST`); HOST[:PORT] in place of a host that may hide a secret (unparsed_hides_secret)."""
    m = _SCHEME_AND_SLASHES.match(url)
    if m is None:
        return ""
    scheme, after = url[: url.index(":")].lower(), url[m.end() :]
    rest = "HOST:PORT" if unparsed_hides_secret(url) else shown_url(f"{scheme}://{after}").split("://", 1)[1]
    if scheme in ("http", "https"):
        try:
            port = urlparse("//" + host_place(url)).port
        except ValueError:  # (not a number, or brackets round no address: no Kubo node's, whatever was meant)
            port = None
        kubo = scheme == "http" and port == KUBO_RPC_PORT
        first, other = ("ipfs+http", "s5+http") if kubo else (f"s5+{scheme}", "ipfs+http")
        return f"; did you mean {first}://{rest}? ({other}://{rest} if it is a {'relay' if kubo else 'Kubo node'})"
    if scheme in ("s5", "ipfs"):
        return f"; did you mean {scheme}+https://{rest}?"
    return ""


def check_host(scheme: str, url: str) -> None:
    """Refuse a network store URL whose host holds a '%' or a space (a bracketed IPv6 literal's zone,
    `[fe80::1%25eth0]`, excepted): no host name does, and it is an invite or a password mistyped (its '@'
    written %40, or a space for it), which leaves no userinfo, so the whole of it would be taken, and shown,
    as the host (host_hides_secret). The refusal quotes nothing of the host, which would be that secret."""
    if host_hides_secret(url):
        # the way on names the user part's place without a scheme before it: every message is shown through
        # scrub_text, which hides a URL's user part, and would show `[INVITE@]HOST` as `***@]HOST`
        who, secret = ("an invite", "INVITE") if scheme.startswith("s5") else ("a user and password", "USER:PASSWORD")
        raise HomeError(
            f"the {scheme}:// store URL's {HIDES_SECRET}; give {scheme}://HOST[:PORT], {who} put before its host as"
            f" the URL's user part ({secret}@HOST[:PORT])"
        )


def relative_folder(url: str) -> str | None:
    """The relative folder's path a store URL names, read as the daemon reads it (home.normalize_store_url): a plain
    path (`shared`, `./shared`) or a `file:` URL's with no '//' (`file:shared`), its '%' escapes read. None for any
    other: absolute, from the home folder (`~`), a URL, one the daemon refuses as a URL with its scheme left out. Made
    absolute from the daemon's own folder, such a path is not the one the CLI's user or an app meant."""
    try:
        parsed = urlparse(url)
    except ValueError:  # (`s5+https://[::1`: no folder, a URL the daemon refuses as one, naming it)
        return None
    if parsed.scheme.lower() == "file" and not url[5:].startswith("/"):
        if parsed.query or parsed.fragment:  # (refused by the daemon as they are)
            return None
        path = unquote(parsed.path)
    elif "://" in url or parsed.scheme or scheme_left_out(url) is not None:
        return None
    else:
        path = url
    if not path or "\0" in path or os.path.isabs(os.path.expanduser(path)):
        return None
    return path
