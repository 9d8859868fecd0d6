"""What a service manager is given to run a home's daemon (`sessiond service install`,
cli/commands/service.py): the `Spec` made from the home and the store asked for (refused where it
would show a secret), the systemd user units (quoted per systemd.service(5)) and the launchd plist.
The units name the home, never a store: the daemon uses the store the home syncs with (<home>/store-url),
which `start --change-store` moves, so the service follows a move; an older version's did name one, which
`exec_argv`/`plist_argv` and `argv_stores` read back (for `doctor`). Pure: it writes nothing and runs
nothing."""

from __future__ import annotations

import hashlib
import os
import plistlib
import sys
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ..daemon.home import normalize_store_url, runtime_socket_path

EXIT_ERROR = 1
EXIT_USAGE = 2


class ServiceError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------ the spec
@dataclass
class Spec:
    """What a home's service runs, and where: the same data makes the systemd units and the plist."""

    home: str
    name: str  # unit name without suffix (systemd); the launchd label derives from it
    socket: str  # the socket path clients use for this home
    argv: list[str]  # the daemon's command line (no store: the home's)
    env: dict = field(default_factory=dict)
    store: str | None = None  # the store asked for (normalized), which `service install` makes the home's

    @property
    def label(self) -> str:
        return "org.sessiond." + self.name

    @property
    def log(self) -> str:
        return os.path.join(self.home, "logs", "daemon.out")


def unit_name(home: str) -> str:
    import platformdirs

    if home == platformdirs.user_data_dir("sessiond", appauthor=False):
        return "sessiond"
    return "sessiond-" + hashlib.blake2s(home.encode(errors="surrogateescape"), digest_size=4).hexdigest()


def daemon_argv(home: str) -> list[str]:
    """The current interpreter (the venv's, not resolved: resolving would leave the venv) running this
    package, as `sessiond start` does, on the home: with the store it syncs with (none given). -P: the folder it
    runs in (a user unit's: the user's home) not first on its sys.path, where a ~/secrets.py would be imported."""
    return [os.path.abspath(sys.executable), "-P", "-m", "sessiond.cli.main", "daemon", "--home", home]


def make_spec(home: str, store: str | None) -> Spec:
    for what, text in (("home", home), ("store URL", store or "")):
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ServiceError(
                f"the {what} {text!r} has a control character (a newline?); a unit file (or the "
                f"home's store-url) cannot carry it: choose another",
                EXIT_USAGE,
            )
    if store is not None:
        store = normalize_store_url(store)
        parsed = urlparse(store)
        if parsed.username or parsed.password:
            raise ServiceError(
                "the store URL carries credentials (an invite or a token before '@'); given on the "
                'command line they show in `ps`. Let the home keep them: put store = "URL" in '
                f"{os.path.join(home, 'config.toml')} (or start the daemon once with --store-file FILE, FILE "
                "holding the URL), then "
                "run `sessiond service install` without --store",
                EXIT_USAGE,
            )
    path = runtime_socket_path(home)
    env = {}
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.dirname(path) != home and runtime and path.startswith(runtime.rstrip("/") + "/"):
        env["XDG_RUNTIME_DIR"] = runtime  # the daemon computes the same socket path as the unit's
    return Spec(home=home, name=unit_name(home), socket=path, argv=daemon_argv(home), env=env, store=store)


# ------------------------------------------------------------------------------------------ systemd
def _escape_specifiers(text: str) -> str:
    return text.replace("%", "%%")


def exec_quote(arg: str) -> str:
    """One argument of ExecStart= (systemd.service(5) "Command lines"): quoted when it has spaces,
    quotes or backslashes; % (specifiers) and $ (variables) doubled so they are taken literally."""
    arg = _escape_specifiers(arg).replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_argv(unit_text: str) -> list[str] | None:
    """The command line of a service unit's ExecStart= (the last one), as exec_quote wrote it: quotes and
    backslashes undone, doubled % and $ single again; None for a unit with none."""
    import shlex

    lines = [ln for ln in unit_text.splitlines() if ln.startswith("ExecStart=")]
    if not lines:
        return None
    try:
        words = shlex.split(lines[-1].removeprefix("ExecStart="))
    except ValueError:  # (not quoted as this module quotes)
        return None
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def plist_argv(data: bytes) -> list[str] | None:
    """A launchd plist's ProgramArguments; None for a plist without them (or not a plist)."""
    try:
        argv = plistlib.loads(data).get("ProgramArguments")
    except Exception:  # plistlib's errors are several (InvalidFileException, ExpatError, ValueError, ...)
        return None
    return [str(a) for a in argv] if isinstance(argv, list) else None


def safe_path(argv: list[str]) -> bool:
    """Whether a unit's command line (as daemon_argv writes it: PYTHON [OPTIONS] -m MODULE ...) runs python with
    -P (or -I, which implies it): the folder it runs in not first on sys.path. True as well for a command line
    not of that shape (none of sessiond's writing: not judged)."""
    if "-m" not in argv[1:]:
        return True
    flags = [w for w in argv[1 : argv.index("-m", 1)] if w.startswith("-") and not w.startswith("--")]
    return any("P" in w or "I" in w for w in flags)


def argv_stores(argv: list[str]) -> list[str]:
    """The stores a daemon's command line names (`--store URL` or `--store=URL`, repeated for a mirror), as
    `service install` wrote them into a unit before units named none."""
    out = []
    for i, word in enumerate(argv):
        if word == "--store" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif word.startswith("--store="):
            out.append(word.removeprefix("--store="))
    return out


def env_quote(key: str, value: str) -> str:
    return exec_quote(f"{key}={value}").replace("$$", "$")  # Environment= does not expand $


def systemd_units(spec: Spec) -> dict[str, str]:
    home = _escape_specifiers(spec.home)
    socket_unit = f"""\
# Written by `sessiond service install`; remove it with `sessiond service uninstall`.
[Unit]
Description=sessiond socket for {home}

[Socket]
ListenStream={_escape_specifiers(spec.socket)}
SocketMode=0600
DirectoryMode=0700
FileDescriptorName=sessiond
Service={spec.name}.service
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""
    env = "".join(f"Environment={env_quote(k, v)}\n" for k, v in sorted(spec.env.items()))
    service_unit = f"""\
# Written by `sessiond service install`; remove it with `sessiond service uninstall`.
# No store here: the daemon syncs with the home's (store-url, which `sessiond start --change-store` moves).
[Unit]
Description=sessiond daemon for {home}
Requires={spec.name}.socket
After={spec.name}.socket

[Service]
Type=simple
ExecStart={" ".join(exec_quote(a) for a in spec.argv)}
{env}Restart=on-failure
UMask=0077

[Install]
Also={spec.name}.socket
"""
    return {f"{spec.name}.socket": socket_unit, f"{spec.name}.service": service_unit}


# ------------------------------------------------------------------------------------------ launchd
def launchd_plist(spec: Spec) -> bytes:
    data = {
        "Label": spec.label,
        "ProgramArguments": list(spec.argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # again after a failure; `sessiond stop` stays stopped
        "ProcessType": "Background",
        "Umask": 0o077,
        "StandardOutPath": spec.log,
        "StandardErrorPath": spec.log,
    }
    if spec.env:
        data["EnvironmentVariables"] = dict(spec.env)
    return plistlib.dumps(data, fmt=plistlib.FMT_XML, sort_keys=False)
