"""Which network store a URL names, and the device-wide settings those stores need.

    s5+https://PORTAL, s5+http://HOST:PORT        an S5 portal (stores/s5.py)
    ipfs+http://HOST:PORT                         a Kubo node's RPC (stores/kubo.py)
    ipfs+https://GATEWAY                          a trustless gateway, read-only (stores/gateway.py)
    ipfs+rpc+https://HOST:PORT                    a Kubo RPC behind TLS
    ipfs+gateway+http://HOST:PORT                 a gateway without TLS (a LAN or loopback one)

The daemon calls `configure()` once at start with what the stores need from the device: the seed
portal account keys derive from, the folder for portal tokens (0600 files), and the file holding a
Kubo RPC's credentials. Stores opened afterwards (the daemon's own, a share code's hint) use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from ..storage.redact import hide_everywhere, shown_url, url_secrets
from .base import DEFAULT_MAX_REQUESTS_PER_SECOND, Store, StoreError
from .file import FileStore

NETWORK_SCHEMES = (
    "s5+http",
    "s5+https",
    "ipfs+http",
    "ipfs+https",
    "ipfs+rpc+http",
    "ipfs+rpc+https",
    "ipfs+gateway+http",
    "ipfs+gateway+https",
)


@dataclass
class Settings:
    account_seed: bytes | None = None
    token_dir: str | None = None
    kubo_auth_file: str | None = None
    timeout: float = 30.0
    # the cap on a network store's polled requests (head reads; stores/http.py); None: no cap
    max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND
    # a pinning service (stores/pinning.py) that every Kubo store's objects are also pinned on
    pinning_service: str | None = None
    pinning_token_file: str | None = None
    pinning_state_dir: str | None = None


_settings = Settings()


def configure(
    *,
    account_seed: bytes | None = None,
    token_dir: str | None = None,
    kubo_auth_file: str | None = None,
    timeout: float | None = None,
    max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND,
    pinning_service: str | None = None,
    pinning_token_file: str | None = None,
    pinning_state_dir: str | None = None,
) -> None:
    global _settings
    if max_requests_per_second is not None and max_requests_per_second <= 0:
        raise StoreError(f"max_requests_per_second must be a positive number (got {max_requests_per_second})")
    if bool(pinning_service) != bool(pinning_token_file):
        raise StoreError("a pinning service needs both its URL and the file holding its access token")
    _settings = Settings(
        account_seed,
        token_dir,
        kubo_auth_file,
        timeout or 30.0,
        max_requests_per_second,
        pinning_service,
        pinning_token_file,
        pinning_state_dir or token_dir,
    )


def open_network_store(url: str) -> Store:
    # its credentials hidden by value from every error and log line of this process, wherever they appear
    hide_everywhere(*url_secrets(url))
    scheme, sep, rest = url.partition("://")
    if not sep or not rest.split("/", 1)[0]:
        raise StoreError(f"store URL {shown_url(url)!r} has no host")
    s = _settings
    if scheme in ("s5+http", "s5+https"):
        from .s5 import S5Store

        return S5Store(
            url,
            account_seed=s.account_seed,
            token_dir=s.token_dir,
            timeout=s.timeout,
            max_requests_per_second=s.max_requests_per_second,
        )
    if scheme in ("ipfs+http", "ipfs+rpc+http", "ipfs+rpc+https"):
        from .kubo import KuboStore

        kubo = KuboStore(
            url, auth_file=s.kubo_auth_file, timeout=s.timeout, max_requests_per_second=s.max_requests_per_second
        )
        if s.pinning_service:
            from .pinning import PinningStore

            assert s.pinning_token_file is not None  # given together with pinning_service (checked on load)
            return PinningStore(
                kubo,
                s.pinning_service,
                token_file=s.pinning_token_file,
                state_dir=s.pinning_state_dir,
                timeout=s.timeout,
            )
        return kubo
    if scheme in ("ipfs+https", "ipfs+gateway+http", "ipfs+gateway+https"):
        from .gateway import GatewayStore

        return GatewayStore(url, timeout=s.timeout, max_requests_per_second=s.max_requests_per_second)
    raise StoreError(f"unsupported store URL scheme {scheme!r}")


def folder_of(url: str) -> str | None:
    """The folder a folder store's URL names (file:///absolute/folder, or a plain path); None for a network
    store's URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        return None
    return unquote(parsed.path) if parsed.scheme else url


def open_store(url: str, *, create: bool = True, missing_ok: bool = False) -> Store:
    """Open a store from its URL. Supported: file:///absolute/folder (or a plain path), and the
    network stores of stores/config.py (s5+https://PORTAL, ipfs+http://HOST:PORT, ...). With
    create=False, a folder store that does not exist yet is an error instead of being made, unless
    `missing_ok` (then it is opened as it is, unreachable until there: FileStore)."""
    parsed = urlparse(url)
    if parsed.scheme.startswith(("s5+", "ipfs+")):
        return open_network_store(url)
    if parsed.scheme in ("", "file"):
        path = folder_of(url) or ""
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"file store URL must be file:///path (got host {parsed.netloc!r})")
        if not path:
            raise StoreError("file store URL has no path")
        try:
            return FileStore(path, create=create, missing_ok=missing_ok)
        except OSError as exc:  # a share not mounted, a path under a file, no permission
            raise StoreError(
                f"cannot use the folder store {exc.filename or path}: {exc.strerror or exc} (is the path "
                f"right, and its disk or share mounted?)"
            ) from None
    raise StoreError(
        f"unsupported store URL scheme {parsed.scheme!r}: use file:///path/to/folder, "
        "s5+https://PORTAL, ipfs+http://HOST:PORT (Kubo) or ipfs+https://GATEWAY"
    )
