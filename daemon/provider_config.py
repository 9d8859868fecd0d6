"""A model provider as config.toml names it (issue 16): an OpenAI-compatible chat-completions endpoint, with
where its API key is read from and its timeouts (its `[providers.NAME]` table checked when the home's config is
read: check_providers, never the key itself in the file); and the errors talking to one raises.

Every failure is a `ProviderError` with its own code and HTTP status, so each caller can answer in its
own format (provider_failures.py names them). API keys are read from their file or environment variable
when a request needs them, and are never stored, logged, or put in an error message."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ..api.locate import HomeError
from ..storage.errors import SessiondError
from ..storage.redact import hide_everywhere, is_api_key, scrub_text, url_secrets


class NoProvider(SessiondError):
    """No provider of this device's config.toml can answer: none is configured, or the one named (by the
    request, or by the session's settings, which sync from devices configured otherwise) is not here. The
    request is valid; this device is not set up for it."""

    code = "no_provider"
    status = 409


class ProviderError(SessiondError):
    code = "provider_error"
    status = 502


def provider_error(code: str, status: int, message: str, **details) -> ProviderError:
    err = ProviderError(message, **details)
    err.code, err.status = code, status
    return err


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_file: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0  # seconds for a whole JSON answer, or between two chunks of a stream
    connect_timeout: float = 10.0
    top_k: bool = False  # whether the provider takes top_k (OpenAI's own API does not)

    def api_key(self) -> str | None:
        """The key, read now (never kept for the requests: a changed file is read at the next): from
        api_key_file, or api_key_env, or none (a local server). Each key read is hidden by its value from
        every error and log line of the daemon (storage/redact.py's hide_everywhere)."""
        key = self._read_key()
        hide_everywhere(key)
        return key

    def hide_secrets(self) -> None:
        """Hide this provider's secrets from the daemon's errors and logs from its start on, before any
        request reads its key: the key (if it reads now) and any credentials in base_url."""
        hide_everywhere(*url_secrets(self.base_url))
        try:
            self.api_key()
        except ProviderError:  # unreadable now: the request that needs it says so
            pass

    def _read_key(self) -> str | None:
        if self.api_key_file:
            try:
                with open(os.path.expanduser(self.api_key_file), encoding="utf-8") as f:
                    key = f.read().strip()
            except OSError as exc:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: cannot read its api_key_file "
                    f"{self.api_key_file} ({exc.strerror}); fix the path in config.toml",
                ) from None
            except UnicodeDecodeError:  # (never quoted: it holds the key)
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: its api_key_file {self.api_key_file} is not UTF-8 text; write the"
                    f" key there as text (or fix the path in config.toml)",
                ) from None
            if not key:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: its api_key_file {self.api_key_file} is empty",
                )
            return key
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: the environment variable "
                    f"{self.api_key_env} (its api_key_env) is not set in the daemon's environment",
                )
            return key
        return None

    def headers(self) -> dict:
        key = self.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def scrub(self, text: str) -> str:
        """Text the provider (or its HTTP library) wrote, safe to show and log: a provider may echo the
        key it refused ("Incorrect API key provided: sk-abc..."), whole or in part; that key, any piece
        of it, and anything shaped like a bearer token or an API key are replaced by ***."""
        try:
            key = self.api_key()
        except ProviderError:  # unreadable now: the patterns still apply
            key = None
        return scrub_text(text, [key], tokens=True)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # an environment variable's name, as a shell takes it
PROVIDER_KEYS = ("base_url", "api_key_file", "api_key_env", "timeout", "connect_timeout", "top_k")
_KEY_WRITTEN = ("api_key", "apikey", "key", "token", "api_token")  # the key itself, written where its file goes


def key_written(name: str) -> str:
    """The refusal of `name` (one of _KEY_WRITTEN), the key itself written in config.toml: where it goes instead
    (the key not quoted: config.toml is no place for it, nor is an error)."""
    return (
        f"{name} is no setting: the key itself is never written in config.toml; put it in a file of its own"
        ' (chmod 600) named by api_key_file = "/path/to/key", or in the daemon\'s environment named by'
        f' api_key_env = "VARIABLE", and delete the {name} line'
    )


def top_level_provider_key(name: str) -> str | None:
    """The refusal of a provider's setting (or its key itself) written at the top of config.toml, outside any
    [providers.NAME] table: a newcomer's first try, told only that it is an unknown setting. None for another."""
    table = '[providers.NAME] table (e.g. [providers.openai] with base_url = "https://api.openai.com/v1")'
    if name.lower().replace("-", "_") in _KEY_WRITTEN:
        return f"{key_written(name)}; both go in a {table}"
    if name in PROVIDER_KEYS:
        return f"{name} belongs in a {table}: write it below that table's header line"
    return None


def check_providers(path: str, value, top_keys: tuple[str, ...]) -> dict:
    """The [providers.NAME] tables of config.toml at `path`, each checked; the key itself is never read here
    (only when needed). `top_keys`: the file's top-level settings, named when one was written below a table."""
    if not isinstance(value, dict):
        raise HomeError(f"{path}: 'providers' must be tables: [providers.NAME] with base_url = \"http://...\"")
    out = {}
    for name, p in value.items():
        where = f"{path}: [providers.{name}]"
        if not isinstance(p, dict):
            raise HomeError(f'{where} must be a table with base_url = "http://host:port/v1"')
        extra = sorted(set(p) - set(PROVIDER_KEYS))
        top = [k for k in extra if k in top_keys]
        if top:  # appended at the end of the file, after this table: TOML puts it in the table
            raise HomeError(
                f"{where}: {', '.join(top)} is a top-level setting, but in TOML a key below a [table] "
                f"header belongs to that table; move it above the first [ line of the file"
            )
        if inline := [k for k in extra if k.lower().replace("-", "_") in _KEY_WRITTEN]:
            raise HomeError(f"{where}: {key_written(inline[0])}")
        if extra:
            raise HomeError(f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(PROVIDER_KEYS)}")
        url = p.get("base_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 10:
            raise HomeError(
                f"{where}: base_url must be an http:// or https:// URL such as "
                f'"http://127.0.0.1:11434/v1" (the part before /chat/completions)'
            )
        if "api_key_file" in p and "api_key_env" in p:
            raise HomeError(f"{where}: give api_key_file or api_key_env, not both")
        for k in ("api_key_file", "api_key_env"):
            if k in p and (not isinstance(p[k], str) or not p[k]):
                raise HomeError(f"{where}: {k} must be a non-empty string")
        if "api_key_file" in p and is_api_key(p["api_key_file"]):
            # not quoted back, as api_key_env's: taken as a file name, every error naming it showed the key
            raise HomeError(
                f"{where}: api_key_file must be the path of a file holding the key (such as api_key_file = "
                f'"openai-key", a file beside config.toml, chmod 600), not the key itself: write the key in that file'
            )
        if "api_key_env" in p and not _ENV_NAME.fullmatch(p["api_key_env"]):
            # not quoted back: what is there is most likely the key itself, which no message may show
            raise HomeError(
                f"{where}: api_key_env must be the name of an environment variable (letters, digits and _, "
                f'such as api_key_env = "OPENAI_API_KEY"), not the key itself: the key goes in that variable, '
                f"or in a file named by api_key_file"
            )
        for k in ("timeout", "connect_timeout"):
            if k in p and (isinstance(p[k], bool) or not isinstance(p[k], (int, float)) or not 0 < p[k] < math.inf):
                raise HomeError(f"{where}: {k} must be a positive number of seconds")
        if "top_k" in p and not isinstance(p["top_k"], bool):
            raise HomeError(f"{where}: top_k must be true (the provider accepts top_k) or false")
        out[name] = {
            "base_url": url.rstrip("/"),
            # a relative path is the home's (beside config.toml), not the daemon's working directory
            "api_key_file": (
                os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(p["api_key_file"]))
                if "api_key_file" in p
                else None
            ),
            "api_key_env": p.get("api_key_env"),
            "timeout": float(p.get("timeout", 120)),
            "connect_timeout": float(p.get("connect_timeout", 10)),
            "top_k": p.get("top_k", False),
        }
    return out
