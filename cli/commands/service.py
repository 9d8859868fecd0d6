"""`sessiond service install|uninstall|status`: run a home's daemon as a service of the user's session.

Linux: a systemd user unit pair, socket-activated. `<name>.socket` listens on the home's socket path
(where the CLI and apps look for it; 0600 in a 0700 folder) and starts `<name>.service` (the daemon,
which takes that socket: daemon/activation.py) at the first connection. macOS: a launchd agent that
runs the daemon at login and again if it fails; the daemon binds its socket itself there.

One home, one name: `sessiond` for the default home, `sessiond-<8 hex of the home's hash>` for any
other, so that several homes can each have their service. The units name no store: the service's
daemon syncs with the home's (<home>/store-url), so that `start --change-store` moves the service too;
`install --store URL` makes URL the home's store, as a first start would, and refuses a move (that is
`start --change-store`'s: it pushes the sessions to the new store). Nothing secret goes into a unit file
or onto the daemon's command line: a store URL carrying credentials is refused (the home keeps it).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

from ...daemon.home import Home, HomeError, lock_path, read_lock, resolve_home
from ...daemon.homelock import lock_held
from ..units import (
    EXIT_ERROR,
    EXIT_USAGE,
    ServiceError,
    Spec,
    argv_stores,
    exec_argv,
    launchd_plist,
    make_spec,
    plist_argv,
    safe_path,
    systemd_units,
)


def register(commands) -> None:
    help = "run the daemon as a service that starts itself (systemd user unit with socket activation; launchd agent)"
    p = commands.add(
        "service",
        lambda args: _fail(args, "usage", "give an action: service install|uninstall|status", EXIT_USAGE),
        help,
    )
    actions = commands.actions(p, "service_command")
    for name, fn, text in (
        ("install", cmd_install, "write the unit files (the home and --store carried into them) and enable them"),
        ("uninstall", cmd_uninstall, "stop and disable the service and remove its files"),
        ("status", cmd_status, "whether the service is installed, enabled and active"),
    ):
        q = actions.add(name, _guarded(fn), text)
        q.add_argument("--manager", choices=["auto", "systemd", "launchd"], default="auto", help=argparse.SUPPRESS)
        if name == "install":
            q.add_argument(
                "--store",
                help="store URL this home syncs with, recorded in the home as a first start does (default: "
                "the one the home remembers, else config.toml's, else file://<home>/store); a home that "
                "syncs with another moves with `sessiond start --store URL --change-store`",
            )


def _guarded(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ServiceError as exc:
            return _fail(args, "service", str(exc), exc.code)
        except HomeError as exc:
            return _fail(args, "bad_home", str(exc), EXIT_ERROR)

    return run


def _fail(args, code: str, message: str, exit_code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"sessiond: {message}", file=sys.stderr)
    return exit_code


def _emit(args, data: dict, human: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else human)


def systemd_dir() -> str:
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "systemd", "user")


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    """Run a service manager's command; None if it is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    except subprocess.TimeoutExpired:
        raise ServiceError(f"`{' '.join(argv)}` did not answer within 60 s") from None


def _why(res: subprocess.CompletedProcess) -> str:
    text = (res.stderr or res.stdout or "").strip().splitlines()
    return text[-1] if text else f"exit code {res.returncode}"


def _systemctl_user(*args: str) -> subprocess.CompletedProcess | None:
    return _run(["systemctl", "--user", *args])


def launchd_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "Library", "LaunchAgents")


def _gui() -> str:
    return f"gui/{os.getuid()}"


# ------------------------------------------------------------------------------------------ commands
def _manager(args) -> str:
    if args.manager != "auto":
        return args.manager
    return "launchd" if sys.platform == "darwin" else "systemd"


def _files(manager: str, spec: Spec) -> dict[str, bytes]:
    if manager == "launchd":
        return {os.path.join(launchd_dir(), spec.label + ".plist"): launchd_plist(spec)}
    folder = systemd_dir()
    return {os.path.join(folder, name): text.encode() for name, text in systemd_units(spec).items()}


def _service_running(manager: str, spec: Spec) -> bool | None:
    """Whether the service manager runs this home's daemon (None: cannot ask it)."""
    if manager == "launchd":
        res = _run(["launchctl", "print", f"{_gui()}/{spec.label}"])
        return None if res is None else (res.returncode == 0 and "state = running" in res.stdout)
    res = _systemctl_user("is-active", f"{spec.name}.service")
    if res is None or res.stdout.strip() not in ("active", "inactive", "activating", "deactivating", "failed"):
        return None
    return res.stdout.strip() in ("active", "activating", "reloading")


def _record_socket(home: str, path: str) -> None:
    """Write the socket path into the home's lock file (where clients look when the home is too long
    for a socket in it), unless a daemon holds the lock (it wrote its own). The daemon the service
    starts writes the same; until then, clients must find the service's socket to start it."""
    fd = os.open(lock_path(home), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        os.ftruncate(fd, 0)
        os.write(fd, os.fsencode(f"\n{path}\n"))
    finally:
        os.close(fd)


def _service_store(home: Home, asked: str | None) -> tuple[str, bool]:
    """The store the service's daemon will sync with, and whether `asked` (install's --store) is to be
    recorded as the home's: a home with no store yet takes it, as at a first start; one that syncs with
    it already keeps it; one that syncs with another is refused (the move is `start --change-store`'s,
    which pushes its sessions there), and so is a store config.toml's setting would contradict."""
    from ...daemon.home import Config, normalize_store_urls
    from ...daemon.storerecord import store_not_recorded
    from ...storage.redact import shown_store
    from ...sync.mirrorurls import same_stores

    remembered = home.remembered_store()
    configured = Config.load(home.path).store
    configured = normalize_store_urls(configured) if configured else None
    if asked is None:
        why = store_not_recorded(home, configured)  # an older sessiond's home: its daemon would be refused
        if why is not None:
            raise ServiceError(
                f"{why}: install with --store URL, the store it was started with (the home remembers it from "
                f"then on; the service's daemon is refused without it)"
            )
        return remembered or configured or home.default_store, False
    q = shlex.quote(home.path)
    if remembered is not None:
        if same_stores(asked, remembered):
            return remembered, False
        raise ServiceError(
            f"this home syncs with the store {shown_store(remembered)} (remembered in {home.store_record}), not"
            f" {shown_store(asked)}: install without --store to keep it. To move the home (its sessions are"
            f" pushed to the new store in full): `sessiond start --home {q} --store URL --change-store`, then"
            f" `sessiond stop --home {q}`, with no service of this home running (`sessiond service uninstall"
            f" --home {q}` first: its socket would start the daemon on the old store); then install"
        )
    if configured is not None and not same_stores(asked, configured):
        raise ServiceError(
            f"{os.path.join(home.path, 'config.toml')} sets the store {shown_store(configured)}, not"
            f" {shown_store(asked)}: install without --store to use it, or change it there"
        )
    return asked, True


def unit_folders(home_path: str) -> list[tuple[str, str]]:
    """The folders holding this home's installed unit files or plist (for doctor's check of who can write there:
    daemon/doctor_folders.py)."""
    spec = make_spec(home_path, None)
    found = {
        os.path.dirname(p) for manager in ("systemd", "launchd") for p in _files(manager, spec) if os.path.exists(p)
    }
    return [(folder, "the service's unit folder") for folder in sorted(found)]


def unit_store(home_path: str) -> dict | None:
    """A doctor finding (daemon/doctor_files.finding) when this home's installed unit or plist names a store
    on the daemon's command line, as `service install` wrote them before units named none: the home's store
    moves (`start --change-store`), the unit's does not, and the service's daemon is then refused at every
    start (a problem); one naming the home's own store is a warning (the next move would leave it behind).
    The fix either way: install again. One naming none that runs python without -P (an install before 0.39.0:
    the folder the daemon runs in first on its sys.path) is a warning too, with the same fix. None: no unit of
    this home, or one as this sessiond writes it."""
    from ...daemon.doctor_files import finding
    from ...daemon.home import normalize_store_urls
    from ...storage.redact import shown_store
    from ...sync.mirrorurls import same_stores

    spec = make_spec(home_path, None)
    for manager in ("systemd", "launchd"):  # (whichever this user has: the files say)
        path = next(p for p in _files(manager, spec) if p.endswith((".service", ".plist")))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        argv = plist_argv(data) if manager == "launchd" else exec_argv(data.decode(errors="replace"))
        named = argv_stores(argv or [])
        fix = f"sessiond service install --home {shlex.quote(home_path)}"
        if not named and argv and not safe_path(argv):
            return finding(
                "service",
                "warn",
                f"the service's {path} runs the daemon without python's -P (written by a sessiond before 0.39.0):"
                " the folder it runs in (a user unit's: your home) comes first on its sys.path, so a module there"
                " named as one the daemon imports (json.py, secrets.py, ...) would run inside the daemon",
                fix,
            )
        if not named:
            continue
        named_store: str | None = None
        home_store: str | None = None
        try:
            named_store = normalize_store_urls(named)
            home_store = _service_store(Home(home_path), None)[0]
        except HomeError:  # (a store URL or a config.toml it cannot read: it says only that the unit names one)
            pass
        if named_store is not None and home_store is not None and not same_stores(named_store, home_store):
            return finding(
                "service",
                "problem",
                f"the service's {path} starts the daemon with --store {shown_store(named_store)}, but this home"
                f" syncs with {shown_store(home_store)}: the service's daemon is refused at every start (a unit"
                f" written by an older sessiond, left behind when the home's store moved)",
                fix,
            )
        return finding(
            "service",
            "warn",
            f"the service's {path} names the store on the daemon's command line (written by an older"
            f" sessiond): a move of the home's store (`sessiond start --change-store`) would leave the service"
            f" behind, its daemon refused at every start",
            fix,
        )
    return None


def cmd_install(args) -> int:
    from ...storage.fsutil import atomic_write, ensure_durable_dir

    manager = _manager(args)
    home = Home(resolve_home(args.home))
    spec = make_spec(home.path, args.store)
    home.prepare()  # the home (and a runtime socket folder) exist, private, before the manager binds there
    if lock_held(home.path) and not _service_running(manager, spec):
        pid = read_lock(home.path)[0]
        raise ServiceError(
            f"a sessiond daemon started by hand runs for {home.path}"
            + (f" (pid {pid})" if pid else "")
            + f"; stop it first (`sessiond stop --home {home.path}`), then install: the service "
            f"takes over its socket"
        )
    store, record = _service_store(home, spec.store)
    if os.path.dirname(spec.socket) != home.path:
        _record_socket(home.path, spec.socket)
    files = _files(manager, spec)
    for path, data in files.items():
        ensure_durable_dir(os.path.dirname(path))  # never writable by others, whatever the umask: what runs as you
        atomic_write(path, data, 0o644)
    if record:  # before the manager may start the daemon: it reads the home's store
        home.remember_store(store)
    from ...storage.redact import shown_store

    out: dict[str, Any] = {
        "installed": True,
        "manager": manager,
        "name": spec.name if manager == "systemd" else spec.label,
        "home": home.path,
        "socket": spec.socket,
        "store": shown_store(store),
        "files": sorted(files),
        "command": spec.argv,
    }
    if manager == "launchd":
        plist = next(iter(files))
        steps = [["launchctl", "bootout", f"{_gui()}/{spec.label}"], ["launchctl", "bootstrap", _gui(), plist]]
    else:
        steps = [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", f"{spec.name}.socket"],
        ]
    done, why = _apply(steps, optional_first=manager == "launchd")
    out["enabled"] = done
    lines = [f"wrote {p}" for p in sorted(files)]
    if done and manager == "systemd":
        lines.append(f"enabled {spec.name}.socket: the daemon starts at the first request on {spec.socket}")
    elif done:
        lines.append(f"loaded {spec.label}: the daemon runs now and at every login")
    else:
        out["todo"] = [shlex.join(s) for s in (steps[1:] if manager == "launchd" else steps)]
        out["reason"] = why
        lines.append(f"not enabled ({why}); to enable it, run:")
        lines += ["  " + c for c in out["todo"]]
    _emit(args, out, "\n".join(lines))
    return 0


def _apply(steps: list[list[str]], optional_first: bool = False) -> tuple[bool, str]:
    """Run a manager's commands in order. (False, why) when the manager is missing or has no user
    session to talk to; a manager that refuses a step is an error."""
    for i, argv in enumerate(steps):
        res = _run(argv)
        if res is None:
            return False, f"{argv[0]} is not installed"
        if res.returncode != 0:
            if i == 0 and optional_first:
                continue  # bootout of an agent that was not loaded
            if i == 0:
                return False, f"no user service manager to talk to: {_why(res)}"
            raise ServiceError(f"`{' '.join(argv)}` failed: {_why(res)}")
    return True, ""


def cmd_uninstall(args) -> int:
    manager = _manager(args)
    home = resolve_home(args.home)
    spec = make_spec(home, None)
    files = list(_files(manager, spec))
    if manager == "launchd":
        res = _run(["launchctl", "bootout", f"{_gui()}/{spec.label}"])
    else:
        res = _systemctl_user("disable", "--now", f"{spec.name}.socket", f"{spec.name}.service")
    stopped = res is not None and res.returncode == 0
    removed = []
    wants = os.path.join(systemd_dir(), "sockets.target.wants", f"{spec.name}.socket")
    for path in files + ([wants] if manager == "systemd" else []):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    if manager == "systemd" and removed:
        _systemctl_user("daemon-reload")
    out: dict[str, Any] = {
        "uninstalled": bool(removed),
        "manager": manager,
        "home": home,
        "removed": removed,
        "stopped": stopped,
    }
    if not removed:
        human = f"no service installed for {home}"
    else:
        human = "\n".join(f"removed {p}" for p in removed)
        if not stopped and res is None:
            human += f"\n({'launchctl' if manager == 'launchd' else 'systemctl'} is not installed: nothing to stop)"
        elif not stopped and res is not None:  # (res is None is the branch above)
            human += f"\n(the service manager did not stop it: {_why(res)})"
    _emit(args, out, human)
    return 0


def cmd_status(args) -> int:
    manager = _manager(args)
    home = resolve_home(args.home)
    spec = make_spec(home, None)
    files = list(_files(manager, spec))
    installed = all(os.path.exists(p) for p in files)
    out: dict[str, Any] = {
        "manager": manager,
        "name": spec.name if manager == "systemd" else spec.label,
        "home": home,
        "files": files,
        "installed": installed,
        "socket": spec.socket,
    }
    if manager == "launchd":
        res = _run(["launchctl", "print", f"{_gui()}/{spec.label}"])
        out["enabled"] = None if res is None else res.returncode == 0
        out["active"] = None if res is None else (res.returncode == 0 and "state = running" in res.stdout)
        out["source"] = "files" if res is None else "launchctl"
    else:
        enabled = _systemctl_user("is-enabled", f"{spec.name}.socket")
        known = enabled is not None and enabled.stdout.strip() in (
            "enabled",
            "disabled",
            "static",
            "linked",
            "masked",
            "not-found",
            "indirect",
            "alias",
        )
        if known and enabled is not None:  # (known implies it)
            out["enabled"] = enabled.stdout.strip() == "enabled"
            act = {
                # systemctl ran just above (is-enabled), so it answers here too
                u: (_systemctl_user("is-active", f"{spec.name}.{u}").stdout.strip() or "unknown")  # type: ignore[union-attr]
                for u in ("socket", "service")
            }
            states = ("active", "inactive", "activating", "deactivating", "failed", "reloading")
            out["active"] = (act["socket"] == "active") if act["socket"] in states else None
            out["units"] = act
            out["source"] = "systemctl"
        else:  # no systemctl or no user manager: what the files say
            out["enabled"] = os.path.exists(os.path.join(systemd_dir(), "sockets.target.wants", f"{spec.name}.socket"))
            out["active"] = None
            out["source"] = "files"
    out["daemon_running"] = lock_held(home)
    out["unit_store"] = unit_store(home)  # a unit that names a store (an older install's), with its fix
    yn = {True: "yes", False: "no", None: "unknown"}
    human = "\n".join(
        [
            f"service:   {out['name']} ({manager})",
            f"home:      {home}",
            f"installed: {yn[installed]}" + (f" ({', '.join(files)})" if installed else ""),
            f"enabled:   {yn[out['enabled']]}",
            f"active:    {yn[out['active']]}"
            + (f" (socket {out['units']['socket']}, daemon {out['units']['service']})" if "units" in out else ""),
            f"daemon:    {'running' if out['daemon_running'] else 'not running'}",
            f"socket:    {spec.socket}",
        ]
    )
    if out["unit_store"] is not None:
        human += f"\n{out['unit_store']['level']}: {out['unit_store']['message']}\nfix: {out['unit_store']['fix']}"
    _emit(args, out, human)
    return 0
