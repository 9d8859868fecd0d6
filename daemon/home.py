"""Where a daemon keeps its things, and the checks that keep them private."""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field

from ..api.locate import (
    MAX_SOCKET_PATH,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
    SOCKET_NAME,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
    HomeError,
    check_socket_folder,
    default_home,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
    lock_path,
    read_lock,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
    resolve_home,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
    runtime_socket_path,
    socket_path,  # noqa: F401 (re-exported from api.locate: importers use daemon.home)
)
from .provider_config import check_providers, top_level_provider_key
from .urlguess import (
    check_host,
    file_url_meant,
    quoted_url,
    scheme_left_out,
    unparsed_hides_secret,
    unparsed_refusal,
    unsupported_scheme,
)


def normalize_store_url(url: str) -> str:
    """A store URL as the daemon records it: a file store (file:///path, or a plain path, relative
    ones taken from the current folder) becomes file:///absolute/path; a network store's URL is kept."""
    from urllib.parse import unquote, urlparse

    left_out = scheme_left_out(url)  # (a relay's address without its scheme: no folder's path)
    if left_out is not None:
        raise HomeError(left_out)
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 (read for its check: a port out of range or not a number)
    except ValueError as exc:
        said = unparsed_refusal(url)  # (None: nothing of it may be a secret, quoted as urlparse says it)
        raise HomeError(
            said or f"store URL {quoted_url(url)} is malformed ({exc}): use SCHEME://HOST[:PORT][/PATH]"
        ) from None
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        shown = "" if "@" in parsed.netloc or unparsed_hides_secret(url) else f" {url!r}"
        raise HomeError(
            f"store URL{shown}: a file store is file:///absolute/path (the part after file:// is taken as a host"
            f" name); {file_url_meant(parsed.netloc, parsed.path)}"
        )
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else url
        if not path:
            raise HomeError(f"store URL {url!r} has no path")
        if parsed.scheme and (parsed.query or parsed.fragment):  # (a folder named so is written %3F, %23)
            part = "?query" if parsed.query else "#fragment"
            raise HomeError(f"store URL {quoted_url(url)}: a file store takes no {part}; give file:///path/to/folder")
        if "\0" in path:
            raise HomeError(
                f"store URL {url!r}: its path holds a NUL character, which no folder's name can; give file:///path/to/folder"
            )
        return "file://" + os.path.abspath(os.path.expanduser(path))
    from ..stores import NETWORK_SCHEMES

    if parsed.scheme in NETWORK_SCHEMES:
        if not parsed.netloc:
            raise HomeError(f"store URL {quoted_url(url)} has no host")
        check_host(parsed.scheme, url)
        return url.rstrip("/")
    raise HomeError(unsupported_scheme(url))


def normalize_store_urls(urls: str | list[str]) -> str:
    """Several store URLs (a mirror; a list, or joined by newlines) as the daemon records them: each
    normalized, duplicates dropped, joined by newlines (sync/mirror.py, SEPARATOR). One URL stays one."""
    items = urls.split("\n") if isinstance(urls, str) else [u for part in urls for u in part.split("\n")]
    out = list(dict.fromkeys(normalize_store_url(u.strip()) for u in items if u.strip()))
    if not out:
        raise HomeError("no store URL given")
    return "\n".join(out)


def _store_checked(path: str, key: str, urls: str) -> str:
    """config.toml's `store` or `stores` (`urls`, joined by newlines), as given (normalized at the start, as --store
    is), once it is seen to normalize: a URL refused is named by the file and its key, as every setting refused is
    (the refusal alone did not say where a URL no --store gave came from)."""
    try:
        normalize_store_urls(urls)
    except HomeError as exc:
        raise HomeError(f"{path}: {key!r}: {exc}") from None
    return urls


def _home_text(path: str, then: str) -> str:
    """A text file the home keeps, read; one that is not UTF-8 (a torn or stray write) refused naming it, with
    what to do once it is deleted (`then`). FileNotFoundError goes to the caller."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HomeError(f"{path} is damaged (not UTF-8 text): delete it, then {then}") from None


def check_private_dir(path: str, what: str) -> None:
    """Refuse a folder that another user owns or that group/others can enter."""
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise HomeError(
            f"{what} {path} is owned by uid {st.st_uid}, not you (uid {os.getuid()}); "
            f"refusing to use it. Choose a folder of your own with --home."
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise HomeError(
            f"{what} {path} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to keep sessions there. Fix it with: chmod 700 {path}"
        )


def check_key_files(keys: str) -> None:
    """Refuse a key folder holding a key file (the device key, a session's key, write secret, earlier keys, a
    rekey record) that group or others may read or write: widened by hand, a copy made under another umask,
    a backup restored without its modes. The daemon writes every one 0600; it changes none here."""
    from ..sync.keys import key_files

    wide = []
    for path in key_files(keys):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            wide.append((path, stat.S_IMODE(st.st_mode)))
    if wide:
        path, mode = wide[0]
        more = f" (and {len(wide) - 1} other key file{'s' if len(wide) > 2 else ''})" if len(wide) > 1 else ""
        raise HomeError(
            f"key file {path} is open to group or others (mode {mode:04o}){more}; refusing to use keys others may"
            f" read. Fix it with: chmod -R go= {keys}"
        )


def make_private_dir(path: str, what: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise HomeError(f"{what} {path} exists and is not a folder; choose another path (--home DIR)")
    if not os.path.isdir(path):
        from ..storage.fsutil import ensure_durable_dir

        try:
            ensure_durable_dir(path)  # its entry in its parent fsynced: the keys and database in it are durable
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; be exact
        except OSError as exc:  # a file where a parent should be, a name too long, a folder not ours to write
            why = f"{exc.filename} is not a folder" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
            raise HomeError(
                f"cannot make the {what} {path}: {why}; choose a folder you can write (--home DIR)"
            ) from None
    check_private_dir(path, what)


def make_socket_folder(path: str) -> None:
    """The folder of a socket outside the home, and its parent, made 0700 where missing (os.mkdir: an
    existing name, a symbolic link too, is never followed) and checked (api.locate.check_socket_folder):
    this user's, no symbolic link, no other user can write there."""
    check_socket_folder(path)  # what exists already, before anything is made in it
    folder = os.path.dirname(path)
    for where in (os.path.dirname(folder), folder):
        try:
            os.mkdir(where, 0o700)
        except FileExistsError:
            continue
        os.chmod(where, 0o700)  # mkdir's mode is masked by the umask; be exact
    check_socket_folder(path)


LIMIT_KEYS = ("max_active_sessions", "max_active_sessions_per_user", "max_chats_per_session", "max_messages_per_chat")
# every key config.toml takes at its top level (above its first [table])
TOP_KEYS = (
    "store",
    "stores",
    "sync_interval",
    "push_delay",
    "poll_interval",
    "cleanup_interval",
    "connection_idle_timeout",
    "store_timeout",
    "event_keepalive",
    "event_backlog",
    "delete_expired",
    "token_estimator",
    "default_provider",
    "providers",
    "openai_listen",
    "max_requests_per_second",
    "pinning_service",
    *LIMIT_KEYS,
)


@dataclass
class Config:
    """Settings from <home>/config.toml; command-line options override them."""

    store: str | None = None
    sync_interval: float = 2.0
    push_delay: float = 0.1
    poll_interval: float = 0.25
    cleanup_interval: float = 60.0
    # seconds a connection to the socket may sit idle (no whole request; an append stream, no frame) before
    # the daemon closes it
    connection_idle_timeout: float = 75.0
    # seconds a store call (a request to a network store, a write to a folder store) may take before it counts
    # as failed; a share waits that long for its push
    store_timeout: float = 30.0
    # seconds of no event after which an event stream (GET /v1/events) sends a comment: a proxy keeps it open,
    # and a subscriber that went away is let go at that write at the latest
    event_keepalive: float = 15.0
    # bytes of events an event stream may hold unsent (its app reading too slowly, or not at all) before it
    # is dropped (daemon/events.py)
    event_backlog: int = 1 << 20
    delete_expired: bool = False
    token_estimator: str = "chars4"
    limits: dict = field(default_factory=dict)
    # model providers (issue 16): name -> {"base_url", "api_key_file"?, "api_key_env"?, "timeout"?, "top_k"?}
    providers: dict = field(default_factory=dict)
    default_provider: str | None = None
    openai_listen: tuple[str, int] | None = None  # (host, port) of the OpenAI-compatible TCP listener
    # the cap on a network store's repeated requests (a follower's head reads); None: stores/http.py's default
    max_requests_per_second: float | None = None
    # an IPFS Pinning Service API endpoint that keeps an ipfs+http:// store's objects pinned; its access
    # token is read from <home>/pinning-token (0600)
    pinning_service: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, home: str) -> Config:
        path = os.path.join(home, "config.toml")
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            return cls()
        except tomllib.TOMLDecodeError as exc:
            raise HomeError(f"{path} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # (tomllib decodes the file before it parses it)
            raise HomeError(f"{path} is not UTF-8 text (byte {exc.start}), as TOML must be: save it as UTF-8") from None
        cfg = cls()
        for key, value in data.items():
            if key == "store":
                if not isinstance(value, str):
                    raise HomeError(f"{path}: 'store' must be a URL string such as file:///path")
                if "stores" in data:
                    raise HomeError(f"{path}: give 'store' (one) or 'stores' (a mirror), not both")
                cfg.store = _store_checked(path, key, value)
            elif key == "stores":
                if not isinstance(value, list) or not value or not all(isinstance(u, str) and u for u in value):
                    raise HomeError(
                        f"{path}: 'stores' must be a list of store URLs, such as "
                        f'stores = ["file:///path", "s5+https://PORTAL"] (each store gets every write)'
                    )
                cfg.store = _store_checked(path, key, "\n".join(value))  # normalized with the daemon's --store
            elif key in ("sync_interval", "push_delay", "poll_interval", "cleanup_interval"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise HomeError(f"{path}: {key!r} must be a non-negative number of seconds")
                setattr(cfg, key, float(value))
            elif key in ("connection_idle_timeout", "event_keepalive"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf:
                    raise HomeError(f"{path}: {key!r} must be a number of seconds, at least 1")
                setattr(cfg, key, float(value))
            elif key == "store_timeout":
                # at most 240 s: a share waits that long for its push, and the CLI's client waits 300 s for it
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 240:
                    raise HomeError(f"{path}: 'store_timeout' must be a number of seconds, 1 to 240")
                cfg.store_timeout = float(value)
            elif key == "event_backlog":
                if isinstance(value, bool) or not isinstance(value, int) or not 65536 <= value <= 1 << 26:
                    raise HomeError(f"{path}: 'event_backlog' must be a whole number of bytes, 65536 to 67108864")
                cfg.event_backlog = value
            elif key == "delete_expired":
                if not isinstance(value, bool):
                    raise HomeError(f"{path}: 'delete_expired' must be true or false")
                cfg.delete_expired = value
            elif key == "token_estimator":
                from ..storage import tokens

                try:
                    tokens.get(value)
                except ValueError as exc:
                    raise HomeError(f"{path}: {exc}") from None
                cfg.token_estimator = value
            elif key == "providers":
                cfg.providers = check_providers(path, value, TOP_KEYS)
            elif key == "default_provider":
                if not isinstance(value, str) or not value:
                    raise HomeError(f"{path}: 'default_provider' must be the name of a [providers.NAME] table")
                cfg.default_provider = value
            elif key == "openai_listen":
                cfg.openai_listen = check_listen(path, value)
            elif key == "max_requests_per_second":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise HomeError(
                        f"{path}: 'max_requests_per_second' must be a positive number (requests a second "
                        f"a follower may send to a network store; default 20)"
                    )
                cfg.max_requests_per_second = float(value)
            elif key == "pinning_service":
                cfg.pinning_service = check_pinning_service(path, value)
            elif key in LIMIT_KEYS:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise HomeError(f"{path}: {key!r} must be a whole number of at least 1")
                cfg.limits[key] = value
            elif (said := top_level_provider_key(key)) is not None:  # (a provider's, outside its table)
                raise HomeError(f"{path}: {said}")
            else:  # a mistyped key would otherwise be ignored without a word
                import difflib

                close = difflib.get_close_matches(key, TOP_KEYS, n=1)
                raise HomeError(
                    f"{path}: unknown setting {key!r}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" (known settings: {', '.join(TOP_KEYS)})"
                )
        if cfg.default_provider is not None and cfg.default_provider not in cfg.providers:
            raise HomeError(
                f"{path}: default_provider = {cfg.default_provider!r} names no [providers.NAME] table "
                f"(defined: {', '.join(sorted(cfg.providers)) or 'none'})"
            )
        if cfg.default_provider is None and len(cfg.providers) == 1:
            cfg.default_provider = next(iter(cfg.providers))
        return cfg


def check_pinning_service(path: str, value) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise HomeError(
            f"{path}: pinning_service must be the http(s) URL of an IPFS Pinning Service API endpoint, e.g. "
            f'"https://api.pinata.cloud/psa" (its access token goes in the file pinning-token beside config.toml)'
        )
    return value.rstrip("/")


PINNING_TOKEN = "pinning-token"
TOKEN_DIR = "store-tokens"  # network stores' portal tokens (0600 files in a 0700 folder)
PINNING_DIR = "pinning"  # a pinning service's pin request ids
STORE_STATE_DIRS = (TOKEN_DIR, PINNING_DIR)
_OLD_KEY_TEMP = re.compile(r"openai-api-key\.\d+\.tmp")  # ensure_key's temporary file before atomic_write


def pinning_token_file(home: str) -> str:
    """The pinning service's access token file: refused unless it exists, is yours and is 0600 (a
    bearer token lets anyone who reads it pin and unpin on your account)."""
    path = os.path.join(home, PINNING_TOKEN)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HomeError(
            f"config.toml sets pinning_service, but {path} does not exist: put the service's access "
            f"token there (one line) and chmod 600 {path}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise HomeError(f"{path} (the pinning service's access token) is not a file")
    if st.st_uid != os.getuid():
        raise HomeError(f"{path} (the pinning service's access token) is owned by uid {st.st_uid}, not you")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise HomeError(
            f"{path} (the pinning service's access token) is open to group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. Fix it with: chmod 600 {path}"
        )
    return path


def check_listen(path: str, value) -> tuple[str, int]:
    msg = f'{path}: openai_listen must be "HOST:PORT", e.g. "127.0.0.1:8765"'
    if not isinstance(value, str) or ":" not in value:
        raise HomeError(msg)
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise HomeError(msg)
    return host, int(port)


@dataclass
class Home:
    path: str

    @property
    def socket(self) -> str:
        """Where this process would put the daemon's socket (see `socket_path` for where clients look)."""
        return runtime_socket_path(self.path)

    @property
    def db(self) -> str:
        return os.path.join(self.path, "sessions.db")

    @property
    def lock(self) -> str:
        return lock_path(self.path)

    @property
    def logs(self) -> str:
        return os.path.join(self.path, "logs")

    @property
    def keys(self) -> str:
        return os.path.join(self.path, "keys")

    @property
    def openai_key(self) -> str:
        """The bearer key of the OpenAI-compatible TCP listener (0600, made on its first start)."""
        return os.path.join(self.path, "openai-api-key")

    @property
    def default_store(self) -> str:
        return "file://" + os.path.join(self.path, "store")

    @property
    def store_record(self) -> str:
        return os.path.join(self.path, "store-url")

    def remembered_store(self) -> str | None:
        """The store this home syncs with, recorded at its first start (None before that)."""
        try:
            return (
                _home_text(self.store_record, "start with --store URL, the store this home syncs with").strip() or None
            )
        except FileNotFoundError:
            return None

    def remember_store(self, url: str) -> None:
        from ..storage.fsutil import atomic_write

        atomic_write(self.store_record, (url + "\n").encode(), 0o600)

    @property
    def store_unmade_record(self) -> str:
        """There while some store's first use has not made it yet (a folder store's folder that could not be
        made: stores/file.py): it names those stores, one URL a line; a start makes them (their first use
        still), and no other (daemon/homestore.py)."""
        return os.path.join(self.path, "store-unmade")

    def store_unmade(self) -> list[str] | None:
        """The URLs of the stores whose first use has not made them yet (None: no note). A note written by
        the version before names none: ["whole"] (none of the store's stores made) or ["part"] (some)."""
        try:
            text = _home_text(
                self.store_unmade_record, "start again (a folder store not made yet is then named failing)"
            )
        except FileNotFoundError:
            return None
        return [line.strip() for line in text.splitlines() if line.strip()]

    def note_store_unmade(self, urls: list[str]) -> None:
        """Note the stores whose first use has not made them yet (`urls`), or, with none, that every one is."""
        from ..storage import fsutil

        if urls:
            fsutil.atomic_write(self.store_unmade_record, "".join(u + "\n" for u in urls).encode(), 0o600)
            return
        try:  # (told by each store made: the note may be gone already)
            os.unlink(self.store_unmade_record)
        except FileNotFoundError:
            return
        fsutil.fsync_dir(self.path)  # gone for good: a note back after a power loss makes a gone store again

    def remove_leftover_temp_files(self, before: float) -> list[str]:
        """Removes the temporary files that atomic writes into the home itself (store-url, openai-api-key), its
        store-tokens/ (portal tokens) and pinning/ (pin request ids) left when the daemon was killed between
        a write and its rename, last changed before `before` (the daemon's start); keys/ has its own
        (KeyStore). Also openai-api-key.PID.tmp, the name earlier versions wrote that key under. Returns
        the names, as paths in the home."""
        from ..storage.fsutil import remove_leftover_temp_files

        gone = remove_leftover_temp_files(self.path, before, also=_OLD_KEY_TEMP)
        for sub in STORE_STATE_DIRS:
            gone += [os.path.join(sub, n) for n in remove_leftover_temp_files(os.path.join(self.path, sub), before)]
        return gone

    def prepare(self) -> None:
        make_private_dir(self.path, "home folder")
        make_private_dir(self.logs, "log folder")
        make_private_dir(self.keys, "key folder")
        if os.path.dirname(self.socket) != self.path:
            make_socket_folder(self.socket)
