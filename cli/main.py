"""`sessiond`: the command line. Every command takes --home DIR and --json; every error exits non-zero."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from ..client import ApiError, Client, ClientError, DaemonNotRunning
from ..daemon.home import HomeError, holds_lock, read_lock, resolve_home

from . import serve

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------ output
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(m: re.Match) -> str:
    return m.group().encode("unicode_escape").decode("ascii")


def safe(text: Any, keep_lines: bool = False) -> str:
    """Text as a terminal may show it: control characters (which could move the cursor, recolour or
    rewrite the screen) and lone surrogates become escapes like \\x1b. Only for human output;
    --json prints the exact text."""
    text = "" if text is None else str(text)
    return (_CONTROL_BUT_LINES if keep_lines else _CONTROL).sub(_escape, text)


def emit(args, data: Any, human: str | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif human is not None:
        print(safe(human, keep_lines=True))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[safe(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def short(text: str | None, n: int = 60) -> str:
    if text is None:
        return ""
    text = safe(text.replace("\n", " "))
    return text if len(text) <= n else text[: n - 1] + "…"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")


def duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 12h, 7d, 2w)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def client(args) -> Client:
    return Client(args.home)


# ------------------------------------------------------------------------------------------ daemon
def cmd_daemon(args) -> int:
    from ..daemon.home import resolve_home
    from ..daemon.server import run

    return run(resolve_home(args.home), args.store, ready_fd=args.ready_fd, change_store=args.change_store)


def cmd_start(args) -> int:
    from ..daemon.home import Home, HomeError, normalize_store_url, resolve_home

    home = Home(resolve_home(args.home))
    try:
        store = normalize_store_url(args.store) if args.store else None
    except HomeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        info = Client(home.path, timeout=5).status()
        if store is not None and info.get("store") != store:
            raise CliError(f"the daemon already running for this home (pid {info['pid']}) uses store "
                           f"{info.get('store')}, not {store}; stop it first (`sessiond stop`) to change stores")
        emit(args, {"started": False, "pid": info["pid"], "socket": info["socket"]},
             f"sessiond is already running (pid {info['pid']}) on {info['socket']}")
        return 0
    except DaemonNotRunning:
        pass
    home.prepare()
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "sessiond.cli.main", "daemon", "--home", home.path, "--ready-fd", str(write_fd)]
    if store:
        cmd += ["--store", store]
    if args.change_store:
        cmd += ["--change-store"]
    out_path = os.path.join(home.logs, "daemon.out")
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, pass_fds=(write_fd,),
                            start_new_session=True, close_fds=True)
    os.close(fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        line = ready.read(6)  # "ready\n", or EOF if the daemon exited
    if line != b"ready\n":
        proc.wait(timeout=10)
        with open(out_path, "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace").strip().splitlines()
        why = tail[-1] if tail else f"exit code {proc.returncode}"
        raise CliError(f"the daemon did not start: {why}")
    info = Client(home.path, timeout=10).status()
    emit(args, {"started": True, "pid": info["pid"], "socket": info["socket"], "device_id": info["device_id"]},
         f"sessiond started (pid {info['pid']}) on {info['socket']}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    """Poll until process `pid` has exited, up to a deadline."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def cmd_stop(args) -> int:
    # The lock file names the daemon (its pid), whatever answers on the socket: a hung daemon can still
    # be stopped, and the check that the pid holds the lock means no other process is ever signalled.
    home = resolve_home(args.home)
    pid = read_lock(home)[0]
    if pid is None or not holds_lock(pid, home):
        emit(args, {"stopped": False, "running": False}, "no sessiond daemon is running for this home")
        return 0
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, args.timeout) or not holds_lock(pid, home):  # exited, or past its last step
        emit(args, {"stopped": True, "pid": pid, "killed": False}, f"sessiond stopped (pid {pid})")
        return 0
    # Still that daemon (it holds the lock), and hung: end it. Acknowledged writes are committed already.
    os.kill(pid, signal.SIGKILL)
    print(f"sessiond: the daemon (pid {pid}) did not stop within {args.timeout:g} s; killed it (SIGKILL)",
          file=sys.stderr)
    if not _wait_gone(pid, 10):
        raise CliError(f"the daemon (pid {pid}) is still running after SIGKILL")
    emit(args, {"stopped": True, "pid": pid, "killed": True}, f"sessiond stopped (pid {pid}, killed)")
    return 0


def cmd_status(args) -> int:
    info = client(args).status()
    counts = info["counts"]
    sync = info.get("sync", {})
    pending = sum(s["pending"] for s in sync.values())
    errors = {sid: s["last_error"] for sid, s in sync.items() if s.get("last_error") and s["pending"]}
    pull_errors = {sid: s["pull_error"] for sid, s in sync.items() if s.get("pull_error")}
    lines = [f"sessiond {info['version']} (pid {info['pid']}), up {info['uptime']:.0f}s",
             f"socket:   {info['socket']}", f"home:     {info['home']}", f"store:    {info.get('store')}",
             f"device:   {info['device_id']}",
             f"sessions: {counts['sessions']} ({counts['active']} active, {counts['paused']} paused, "
             f"{counts['ended']} ended), {counts['chats']} chats, {counts['messages']} messages",
             (f"sync:     {pending} change(s) waiting to be pushed" if pending else
              "sync:     nothing waiting to be pushed" if pull_errors else "sync:     everything pushed")
             + (f"; {len(pull_errors)} session(s) cannot pull (below)" if pull_errors else "")]
    if args.sessions:
        rows = [[sid, s["state"], s["pending"], s["head_rev"], when(s.get("last_push")),
                 short(s.get("last_error") or (f"pull: {s['pull_error']}" if s.get("pull_error") else None), 50)]
                for sid, s in sync.items()]
        lines.append(table(rows, ["session", "state", "pending", "revision", "last push", "last error"]))
    for sid, err in list(errors.items())[:5]:
        lines.append(f"  {sid}: {err}")
    for sid, err in list(pull_errors.items())[:5]:
        lines.append(f"  {sid}: cannot pull: {err}")
    emit(args, info, "\n".join(lines))
    return 0


# ------------------------------------------------------------------------------------------ sessions
def _settings(args) -> dict | None:
    s = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "max_tokens", "provider")
         if getattr(args, k, None) is not None}
    return s or None


def _policy(args) -> dict:
    out = {}
    for k in ("token_quota", "max_context_tokens", "context_margin", "checkpoint_interval", "idle_timeout"):
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    if getattr(args, "no_auto_compact", False):
        out["auto_compact"] = False
    return out


def _json_arg(text: str | None, what: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None


def cmd_new(args) -> int:
    spec = dict(id=args.id, name=args.name, system_prompt=_read_text(args.system) if args.system else None,
                model=args.model, user=args.user, tags=args.tag or None, settings=_settings(args),
                metadata=_json_arg(args.metadata, "--metadata"),
                initial_messages=_json_arg(args.initial, "--initial"),
                expires_in=args.expires_in, policy=_policy(args) or None)
    s = client(args).create_session(**spec)
    emit(args, s, s["id"])
    return 0


def cmd_ls(args) -> int:
    c = client(args)
    rows, after = [], None
    while True:
        page = c.list_sessions(user=args.user, status=args.status, tag=args.tag, limit=min(args.limit - len(rows), 1000),
                               after=after)
        rows += page["sessions"]
        after = page["next"]
        if not after or len(rows) >= args.limit:
            break
    emit(args, {"sessions": rows},
         table([[s["id"], s["name"], s["user"], s["status"], s["model"], ",".join(s["tags"]), when(s["last_activity"])]
                for s in rows], ["id", "name", "user", "status", "model", "tags", "last activity"])
         if rows else "no sessions")
    return 0


def cmd_show(args) -> int:
    s = client(args).get_session(args.id)
    sync = s.get("sync", {})
    lines = [f"id:            {s['id']}", f"name:          {safe(s['name'])}", f"user:          {safe(s['user'])}",
             f"status:        {s['status']}", f"model:         {safe(s['model'])}",
             f"settings:      {json.dumps(s['settings'])}", f"tags:          {safe(', '.join(s['tags']))}",
             f"system prompt: {short(s['system_prompt'], 70)}", f"current chat:  {s['current_chat']}",
             f"chats:         {s['chat_count']}", f"messages:      {s['message_count']} ({s['tokens']} tokens)",
             f"created:       {when(s['created_at'])}", f"last activity: {when(s['last_activity'])}",
             f"expires:       {when(s['expires_at'])}",
             f"sync:          {sync.get('state', '-')}, revision {sync.get('head_rev', 0)}, "
             f"{sync.get('pending', 0)} pending" + (f", last error: {sync['last_error']}" if sync.get("last_error") else "")]
    if s["metadata"]:
        lines.append(f"metadata:      {safe(json.dumps(s['metadata'], ensure_ascii=False))}")
    emit(args, s, "\n".join(lines))
    return 0


def cmd_rm(args) -> int:
    out = client(args).delete_session(args.id)
    emit(args, out, f"deleted {args.id}")
    return 0


def _status_cmd(action: str):
    def run(args) -> int:
        s = getattr(client(args), action)(args.id)
        human = f"{s['id']}: {s['status']}"
        if action == "end":
            snap = s.get("snapshot") or {}
            human += (f"\nfinal tokens: {s['tokens_used']}\ncheckpoints: {len(s['checkpoints'])}"
                      + (f" (last: #{s['checkpoints'][-1]['number']} {s['checkpoints'][-1]['hash'][:16]}…)"
                         if s["checkpoints"] else "")
                      + (f"\nsnapshot: revision {snap['revision']}, manifest {snap['manifest_ipfs_cid']}" if snap
                         else "\nsnapshot: not pushed yet"))
        emit(args, s, human)
        return 0
    return run


# ------------------------------------------------------------------------------------------ management
def cmd_quota(args) -> int:
    q = client(args).quota(args.id)
    human = (f"{q['tokens_used']} of {q['token_quota']} tokens used ({q['remaining']} left): {q['level']}"
             if q["token_quota"] else f"{q['tokens_used']} tokens used; no quota ({q['level']})")
    emit(args, q, human)
    return 0


def _context_line(c: dict) -> str:
    budget = c["policy"].get("max_context_tokens")
    return (f"chat {c['chat']}: {c['active_tokens']} tokens in {c['active_messages']} active messages"
            + (f" (budget {budget})" if budget else "")
            + (f"; {c['compacted_messages']} compacted, up to {c['compacted_upto']}" if c["compacted_upto"] else ""))


def cmd_context(args) -> int:
    c = client(args).context(args.id, args.chat)
    emit(args, c, _context_line(c))
    return 0


def cmd_compact(args) -> int:
    c = client(args).compact(args.id, chat=args.chat, target_tokens=args.target_tokens)
    emit(args, c, _context_line(c))
    return 0


def cmd_uncompact(args) -> int:
    c = client(args).uncompact(args.id, chat=args.chat)
    emit(args, c, _context_line(c))
    return 0


def cmd_clone(args) -> int:
    s = client(args).clone(args.id, new_id=args.new_id, name=args.name)
    emit(args, s, s["id"])
    return 0


def cmd_fork(args) -> int:
    s = client(args).fork(args.id, args.at, new_id=args.new_id, name=args.name)
    emit(args, s, s["id"])
    return 0


def cmd_checkpoint(args) -> int:
    cp = client(args).checkpoint(args.id)
    emit(args, cp, f"checkpoint #{cp['number']}: {cp['messages']} messages, {cp['tokens']} tokens, hash {cp['hash']}")
    return 0


def cmd_checkpoints(args) -> int:
    cps = client(args).checkpoints(args.id)["checkpoints"]
    emit(args, {"checkpoints": cps}, table([[c["number"], c["device"], c["messages"], c["tokens"], c["hash"][:32] + "…",
                                             when(c["created_at"])] for c in cps],
                                           ["#", "device", "messages", "tokens", "hash", "created"])
         if cps else "no checkpoints")
    return 0


def _read_json(path: str):
    """JSON from a file, or from standard input for '-'."""
    text = _read_text("-") if path == "-" else _read_file(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{'standard input' if path == '-' else path} is not JSON: {exc}", EXIT_USAGE) from None
    except RecursionError:
        raise CliError(f"{'standard input' if path == '-' else path} is nested too deeply to be read", EXIT_USAGE) \
            from None


def cmd_verify_proof(args) -> int:
    proof = _read_json(args.proof)
    if isinstance(proof, dict) and "checkpoints" in proof and "number" not in proof:
        proofs = proof["checkpoints"]  # the output of `sessiond end --json` or `checkpoints --json`
        if not isinstance(proofs, list):
            raise CliError(f"{args.proof}: \"checkpoints\" must be a list of checkpoint proofs", EXIT_USAGE)
    else:
        proofs = proof if isinstance(proof, list) else [proof]
    if not proofs:  # nothing checked is not a success
        raise CliError(f"{args.proof} holds no checkpoint proofs: give a proof, a list of them, or the output of "
                       f"`sessiond end --json` / `checkpoints --json`", EXIT_USAGE)
    for i, p in enumerate(proofs):
        if not isinstance(p, dict):
            raise CliError(f"{args.proof}: proof {i} is not a JSON object (a checkpoint proof)", EXIT_USAGE)
    results = [client(args).verify_proof(args.id, p) for p in proofs]
    emit(args, {"ok": all(r["ok"] for r in results), "results": results},
         "\n".join(f"ok      checkpoint #{r['number']} of {r['device']}: {r['messages']} messages, {r['tokens']} tokens"
                   if r["ok"] else f"FAILED  {r['problem']}" for r in results))
    return 0 if all(r["ok"] for r in results) else EXIT_ERROR


def cmd_stats(args) -> int:
    st = client(args).stats(args.id, args.user)
    if args.id:
        lines = [f"session {st['session']} ({st['status']}): {st['chats']} chats, {st['messages']} messages, "
                 f"{st['tokens']} tokens; created {when(st['created_at'])}, last active {when(st['last_activity'])}"]
        lines.append(table([[c["chat"], c["name"], c["messages"], c["avg_response_seconds"]] for c in st["per_chat"]],
                           ["chat", "name", "messages", "avg response s"]))
    else:
        lines = [f"{st['sessions']} sessions ({st['active']} active, {st['paused']} paused, {st['ended']} ended), "
                 f"{st['messages']} messages, {st['tokens']} tokens"]
        if st.get("users"):
            lines.append(table([[u["user"] or "(none)", u["sessions"], u["tokens"]] for u in st["users"]],
                               ["user", "sessions", "tokens"]))
    emit(args, st, "\n".join(lines))
    return 0


def cmd_cleanup(args) -> int:
    res = client(args).cleanup(args.older_than, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {len(res['sessions'])} session(s) idle for longer than {args.older_than_text}"]
    lines += [f"  {s['id']}  {safe(s['name'])}  last active {when(s['last_activity'])}" for s in res["sessions"]]
    emit(args, res, "\n".join(lines))
    return 0


def cmd_export(args) -> int:
    data = client(args).export(args.id, args.format, args.chat)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if args.output:
        from ..storage.fsutil import atomic_write

        atomic_write(args.output, text.encode() + b"\n", 0o600)
        if args.json:
            print(json.dumps({"written": args.output}))
    else:
        print(text)
    return 0


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text", EXIT_USAGE) from None


def cmd_import_file(args) -> int:
    res = client(args).import_file(_read_json(args.path), args.format)
    emit(args, res, "\n".join(s["id"] for s in res["sessions"]))
    return 0


def cmd_set(args) -> int:
    fields: dict[str, Any] = {}
    for key in ("name", "model", "user"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.system is not None:
        fields["system_prompt"] = _read_text(args.system)
    if args.tag is not None:
        fields["tags"] = args.tag
    if _settings(args):  # over the session's current settings: --provider alone keeps its temperature
        fields["settings"] = {**client(args).get_session(args.id)["settings"], **_settings(args)}
    if args.metadata is not None:
        fields["metadata"] = _json_arg(args.metadata, "--metadata")
    if args.expires_in is not None:
        fields["expires_in"] = args.expires_in
    if _policy(args):
        fields["policy"] = _policy(args)
    if not fields:
        raise CliError("nothing to change: give at least one option (see `sessiond set --help`)", EXIT_USAGE)
    s = client(args).update_session(args.id, **fields)
    emit(args, s, f"updated {s['id']}")
    return 0


# ------------------------------------------------------------------------------------------ chats
def cmd_chat_new(args) -> int:
    chat = client(args).create_chat(args.id, id=args.chat_id, name=args.name,
                                    system_prompt=_read_text(args.system) if args.system else None,
                                    model=args.model, settings=_settings(args), switch=args.switch or None,
                                    policy=_policy(args) or None)
    emit(args, chat, chat["id"])
    return 0


def cmd_chat_ls(args) -> int:
    chats = client(args).list_chats(args.id)["chats"]
    emit(args, {"chats": chats}, table([["*" if c["current"] else "", c["id"], c["name"], c["model"],
                                         short(c["system_prompt"], 40), when(c["created_at"])] for c in chats],
                                       ["", "id", "name", "model", "system prompt", "created"]))
    return 0


def cmd_chat_switch(args) -> int:
    s = client(args).switch_chat(args.id, args.chat)
    emit(args, s, f"{s['id']}: current chat is now {s['current_chat']}")
    return 0


# ------------------------------------------------------------------------------------------ messages
def _read_text(text: str) -> str:
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("standard input is not UTF-8 text", EXIT_USAGE) from None
    return text


def cmd_add(args) -> int:
    content = _read_text(args.text)
    m = client(args).append(args.id, args.role, content, chat=args.chat, tokens=args.tokens)
    emit(args, m, m["id"])
    return 0


def cmd_ask(args) -> int:
    content = _read_text(args.text)
    stream = client(args).complete_stream(args.id, content, chat=args.chat, model=args.model, provider=args.provider)
    wrote = False
    try:
        for text in stream:
            if not args.json:
                sys.stdout.write(text)
                sys.stdout.flush()
                wrote = True
    except KeyboardInterrupt:
        stream.close()  # the daemon stops the generation and records what arrived, marked interrupted
        if wrote:
            sys.stdout.write("\n")
        print("sessiond: stopped; what arrived is recorded, marked interrupted", file=sys.stderr)
        return 130
    except ApiError:
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    if args.json:
        emit(args, stream.message)
    elif wrote:
        sys.stdout.write("\n")
    return 0


def cmd_log(args) -> int:
    c = client(args)
    msgs, after = [], None
    while len(msgs) < args.limit:
        page = c.messages(args.id, chat=args.chat, limit=min(args.limit - len(msgs), 10_000), after=after,
                          all_chats=args.all or None)
        msgs += page["messages"]
        after = page["next"]
        if not after:
            break
    if args.json:
        emit(args, {"messages": msgs})
        return 0
    if not msgs:
        print("no messages")
    for m in msgs:
        head = f"[{when(m['created_at'])}] {m['role']}" + (f" ({m['chat']})" if args.all else "")
        print(f"{head} {m['id']}:\n{safe(m['content'], keep_lines=True)}\n" if not args.short
              else f"{m['role']:>9}: {short(m['content'], 100)}")
    return 0


# ------------------------------------------------------------------------------------------ sync
def cmd_sync(args) -> int:
    res = client(args).sync(args.id, wait=args.wait, timeout=args.timeout)
    lines = []
    for sid, st in res["sessions"].items():
        lines.append(f"{sid}: {st['state']}, revision {st['head_rev']}, {st['pending']} pending"
                     + (f", last error: {st['last_error']}" if st.get("last_error") and st["pending"] else "")
                     + (f", cannot pull: {st['pull_error']}" if st.get("pull_error") else ""))
    if args.wait:
        lines.append("all pushed and pulled" if res["complete"] else
                     "not everything could be pushed yet (see errors above)" if not res["pushed"] else
                     "everything is pushed, but not everything could be pulled (see errors above)")
    else:
        lines.append("sync requested")
    emit(args, res, "\n".join(lines))
    return 0 if res["complete"] or not args.wait else EXIT_ERROR


def cmd_verify(args) -> int:
    rep = client(args).verify(args.id)
    lines = []
    for s in rep["sessions"]:
        if s["ok"]:
            lines.append(f"ok      {s['session']}: revision {s['revision']}, {s['objects']} objects, "
                         f"{s['operations']} operations" + (f", {s['unpushed']} not yet pushed" if s["unpushed"] else ""))
        else:
            lines.append(f"FAILED  {s['session']}:")
            lines += [f"          {p}" for p in s["problems"]]
            if s.get("repair"):
                lines.append(f"          (to repair: {s['repair']})")
    if not rep["sessions"]:
        lines.append("no sessions to verify")
    emit(args, rep, "\n".join(lines))
    return 0 if rep["ok"] else EXIT_ERROR


# ------------------------------------------------------------------------------------------ sharing
def _passphrase(path: str | None, confirm_hint: str) -> str | None:
    """Passphrases come from a file (or '-' for standard input), never from the command line."""
    if path is None:
        return None
    data = _read_text("-") if path == "-" else _read_file(path)
    phrase = data.rstrip("\r\n")
    if not phrase:
        raise CliError(f"the passphrase file is empty{confirm_hint}", EXIT_USAGE)
    return phrase


def cmd_share(args) -> int:
    res = client(args).share(args.id, write=args.write, passphrase=_passphrase(args.passphrase_file, ""),
                             expires_in=args.expires)
    lines = [res["code"]]
    if not args.json:
        grant = ("read-write: whoever imports it can read the whole session and add to it"
                 if args.write else "read-only: whoever imports it can read the whole session and follow it")
        notes = [f"# {grant}"]
        if res.get("expires_at"):
            notes.append(f"# expires {when(res['expires_at'])}")
        if res.get("protected"):
            notes.append("# protected by your passphrase: send the passphrase another way")
        else:
            notes.append("# anyone who sees this code can read the session: send it privately")
        print("\n".join(notes), file=sys.stderr)
    if args.qr:
        import io

        import segno

        buf = io.StringIO()
        segno.make(res["code"], error="l").terminal(out=buf, compact=True)
        res["qr"] = buf.getvalue()
        if not args.json:  # standard output carries the code alone, so `share --qr | sessiond import` works
            print(buf.getvalue(), file=sys.stderr)
    emit(args, res, "\n".join(lines))
    return 0


def cmd_rekey(args) -> int:
    res = client(args).rekey(args.id, args.drop or [])
    lines = [f"rekeyed {res['session']}: {len(res['kept'])} other device(s) keep access"
             + (f" ({', '.join(res['kept'])})" if res["kept"] else ""),
             "read-only followers and every earlier share code can read nothing written from now on;",
             "what they already fetched stays with them. Make new codes with `sessiond share`."]
    if res["dropped"]:
        lines.insert(1, f"dropped: {', '.join(res['dropped'])}")
    emit(args, res, "\n".join(lines))
    return 0


def cmd_import(args) -> int:
    # A share code is a secret: it is read from standard input (or a file), never taken from the
    # command line, where every local user could see it in `ps`.
    if args.code not in (None, "-"):
        raise CliError("give the share code on standard input (e.g. `sessiond import < code.txt`, or paste it at "
                       "the prompt), not on the command line, where other users could read it in `ps`", EXIT_USAGE)
    if args.code_file:
        code = _read_file(args.code_file).strip()
    elif sys.stdin.isatty():
        import getpass

        code = getpass.getpass("share code: ").strip()
    else:
        code = _read_text("-").strip()
    res = client(args).import_code(code, _passphrase(args.passphrase_file, ""))
    emit(args, res, res["session"])
    if not args.json:
        print(f"# imported {res['session']} ({res['capability']}"
              + (", already here: brought up to date" if res.get("already") else "") + ")", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ keys
def _keystore(args):
    from ..daemon.home import Home, resolve_home
    from ..sync.keys import KeyStore

    home = Home(resolve_home(args.home))
    home.prepare()
    return home, KeyStore(home.keys)


def cmd_key_export(args) -> int:
    from ..daemon.home import Home, check_private_dir
    from ..sync.keys import KeyStore

    # Export reads the key a home has; it never makes a home (or a key) for a mistyped --home.
    home = Home(resolve_home(args.home))
    if not os.path.isfile(os.path.join(home.keys, "device.key")):
        raise CliError(f"{home.path} has no device key (is --home right? a home gets its key when its daemon "
                       f"first starts)")
    check_private_dir(home.path, "home folder")
    check_private_dir(home.keys, "key folder")
    ks = KeyStore(home.keys)
    words = ks.export_mnemonic()
    emit(args, {"mnemonic": words, "words": len(words.split())},
         "Your device key backup (keep it secret; anyone with it can sign as this device):\n\n" + words)
    return 0


def cmd_key_import(args) -> int:
    from ..sync.keys import KeyError_, mnemonic_to_seed

    home, ks = _keystore(args)
    try:
        Client(home.path, timeout=5).status()
        raise CliError("stop the daemon first (`sessiond stop`): the device key cannot change under a running daemon")
    except DaemonNotRunning:
        pass
    if sys.stdin.isatty():
        import getpass

        phrase = getpass.getpass("backup words (24, space-separated): ")
    else:
        phrase = _read_text("-")
    try:
        mnemonic_to_seed(phrase)
    except KeyError_ as exc:
        raise CliError(f"key import: {exc}") from None
    if os.path.exists(home.db) and not args.force:
        import sqlite3

        with sqlite3.connect(f"file:{home.db}?mode=ro", uri=True) as conn:
            n = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        if n:
            raise CliError(f"this home already has {n} session(s) pushed under its current key; import a key "
                           f"into a fresh home (--home), or pass --force to replace it anyway")
    ks.import_mnemonic(phrase)
    emit(args, {"imported": True}, "device key restored")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _add_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, dest="top_k")
    p.add_argument("--top-p", type=float, dest="top_p")
    p.add_argument("--max-tokens", type=int, dest="max_tokens")


def _add_policy(p: argparse.ArgumentParser, chat: bool = False) -> None:
    p.add_argument("--max-context-tokens", type=int, dest="max_context_tokens",
                   help="context budget; the chat compacts itself past budget x margin")
    p.add_argument("--context-margin", type=float, dest="context_margin", help="safety margin (default 0.8)")
    p.add_argument("--no-auto-compact", action="store_true", dest="no_auto_compact",
                   help="refuse appends past the budget (context_overflow) instead of compacting")
    if not chat:
        p.add_argument("--token-quota", type=int, dest="token_quota", help="tokens this session may use in all")
        p.add_argument("--checkpoint-interval", type=int, dest="checkpoint_interval",
                       help="make a signed checkpoint every N tokens (default 1000)")
        p.add_argument("--idle-timeout", type=duration, dest="idle_timeout", help="end the session after this idle time")


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """Argument errors are raised, not printed and exited on, so that main() can answer them in JSON
    when --json is given (subcommand parsers are of this class too)."""

    def error(self, message: str):
        raise _UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS,
                        help="the daemon's home folder (default: $SESSIOND_HOME or the user data folder)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")

    parser = _Parser(prog="sessiond", description="Private, durable LLM chat sessions on every device.")
    parser.add_argument("--home", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name: str, fn, help: str, **kw) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help, **kw)
        p.set_defaults(fn=fn)
        return p

    p = cmd("daemon", cmd_daemon, "run the daemon in the foreground")
    p.add_argument("--store", help="store URL (default: the one this home used before, else config.toml's, "
                                   "else file://<home>/store)")
    p.add_argument("--change-store", action="store_true", dest="change_store",
                   help="confirm moving this home to another store than the one it used before")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p = cmd("start", cmd_start, "start the daemon in the background; returns once it answers")
    p.add_argument("--store", help="store URL (default: the one this home used before)")
    p.add_argument("--change-store", action="store_true", dest="change_store",
                   help="confirm moving this home to another store than the one it used before")
    p = cmd("stop", cmd_stop, "stop the daemon")
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds to wait for a clean stop before killing the daemon (default 15)")
    p = cmd("status", cmd_status, "socket, pid, version, device id, counts and sync state")
    p.add_argument("--sessions", action="store_true", help="list every session's sync state")

    p = cmd("new", cmd_new, "create a session and print its id")
    p.add_argument("--id", help="your own id for it (default: a generated, time-sortable id)")
    p.add_argument("--name")
    p.add_argument("--system", help="system prompt ('-' reads it from standard input)")
    p.add_argument("--model")
    p.add_argument("--user", help="owner user id")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--metadata", help="metadata as a JSON object")
    p.add_argument("--initial", help="initial messages as a JSON list of {role, content}")
    p.add_argument("--expires-in", type=duration, dest="expires_in", help="expire after this long (e.g. 7d)")
    p.add_argument("--provider", help="the provider that answers it (a [providers.NAME] in config.toml)")
    _add_settings(p)
    _add_policy(p)

    p = cmd("set", cmd_set, "change a session's name, prompt, model, settings, tags or metadata")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--system")
    p.add_argument("--model")
    p.add_argument("--user")
    p.add_argument("--tag", action="append")
    p.add_argument("--metadata")
    p.add_argument("--expires-in", type=duration, dest="expires_in")
    p.add_argument("--provider", help="the provider that answers it (a [providers.NAME] in config.toml)")
    _add_settings(p)
    _add_policy(p)

    p = cmd("ls", cmd_ls, "list sessions")
    p.add_argument("--user")
    p.add_argument("--status", choices=["active", "paused", "ended"])
    p.add_argument("--tag")
    p.add_argument("--limit", type=int, default=1000)
    p = cmd("show", cmd_show, "show one session")
    p.add_argument("id")
    p = cmd("rm", cmd_rm, "delete a session (and its key) from this device")
    p.add_argument("id")
    for action, helptext in (("pause", "pause a session"), ("resume", "resume a paused session"),
                             ("end", "end a session")):
        p = cmd(action, _status_cmd(action), helptext)
        p.add_argument("id")

    p = cmd("chat", None, "chats within a session: new, ls, switch")
    chat_sub = p.add_subparsers(dest="chat_command", metavar="ACTION")
    q = chat_sub.add_parser("new", parents=[common], help="create a chat")
    q.set_defaults(fn=cmd_chat_new)
    q.add_argument("id", help="session id")
    q.add_argument("--id", dest="chat_id", help="the chat's own id")
    q.add_argument("--name")
    q.add_argument("--system")
    q.add_argument("--model")
    q.add_argument("--switch", action="store_true", help="make it the current chat")
    _add_settings(q)
    _add_policy(q, chat=True)
    q = chat_sub.add_parser("ls", parents=[common], help="list chats")
    q.set_defaults(fn=cmd_chat_ls)
    q.add_argument("id", help="session id")
    q = chat_sub.add_parser("switch", parents=[common], help="switch the current chat")
    q.set_defaults(fn=cmd_chat_switch)
    q.add_argument("id", help="session id")
    q.add_argument("chat", help="chat id or name")

    p = cmd("add", cmd_add, "append a message")
    p.add_argument("id")
    p.add_argument("--role", required=True, choices=["system", "user", "assistant", "tool"])
    p.add_argument("--chat", help="chat id (default: the current chat)")
    p.add_argument("--tokens", type=int, help="token count, if the app knows it")
    p.add_argument("text", help="the message; '-' reads it from standard input")
    p = cmd("ask", cmd_ask, "ask the session's model: appends TEXT, prints the answer as it streams, records it")
    p.add_argument("id")
    p.add_argument("--chat", help="chat id or name (default: the current chat)")
    p.add_argument("--model", help="this model instead of the chat's or session's")
    p.add_argument("--provider", help="this provider (config.toml [providers.NAME]) instead of the session's")
    p.add_argument("text", help="the question; '-' reads it from standard input")
    p = cmd("log", cmd_log, "print a session's messages")
    p.add_argument("id")
    p.add_argument("--chat")
    p.add_argument("--all", action="store_true", help="every chat, interleaved in order")
    p.add_argument("--limit", type=int, default=1_000_000)
    p.add_argument("--short", action="store_true", help="one line per message")

    p = cmd("quota", cmd_quota, "tokens used, the quota and its warning level")
    p.add_argument("id")
    p = cmd("context", cmd_context, "a chat's active context: tokens, budget, what is compacted")
    p.add_argument("id")
    p.add_argument("--chat")
    p = cmd("compact", cmd_compact, "drop the oldest messages from a chat's active context (history keeps them)")
    p.add_argument("id")
    p.add_argument("--chat")
    p.add_argument("--target-tokens", type=int, dest="target_tokens", help="keep at most this many tokens active")
    p = cmd("uncompact", cmd_uncompact, "restore every compacted message of a chat to its context")
    p.add_argument("id")
    p.add_argument("--chat")
    p = cmd("clone", cmd_clone, "a new session with the same settings and initial context, no conversation")
    p.add_argument("id")
    p.add_argument("--id", dest="new_id", help="the new session's id")
    p.add_argument("--name")
    p = cmd("fork", cmd_fork, "a new session with the history up to a message")
    p.add_argument("id")
    p.add_argument("--at", required=True, help="message id (see `sessiond log`)")
    p.add_argument("--id", dest="new_id", help="the new session's id")
    p.add_argument("--name")
    p = cmd("checkpoint", cmd_checkpoint, "make a signed checkpoint of the conversation now")
    p.add_argument("id")
    p = cmd("checkpoints", cmd_checkpoints, "list a session's checkpoints")
    p.add_argument("id")
    p = cmd("verify-proof", cmd_verify_proof, "check checkpoint proofs (JSON file, or '-') against a session")
    p.add_argument("id")
    p.add_argument("proof")
    p = cmd("stats", cmd_stats, "statistics of one session, one user, or the whole daemon")
    p.add_argument("id", nargs="?")
    p.add_argument("--user")
    p = cmd("cleanup", cmd_cleanup, "delete sessions idle for longer than a duration (and their keys)")
    p.add_argument("--older-than", required=True, dest="older_than_text", help="e.g. 7d")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p = cmd("export", cmd_export, "write a session as OpenAI chat messages or full JSON")
    p.add_argument("id")
    p.add_argument("--format", choices=["openai", "json"], default="json")
    p.add_argument("--chat", help="(openai) which chat; default: the current one")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p = cmd("import-file", cmd_import_file, "import OpenAI messages, a session JSON, or ChatGPT's conversations.json")
    p.add_argument("path", help="the file ('-' reads standard input)")
    p.add_argument("--format", choices=["openai", "json", "chatgpt"], required=True)

    p = cmd("sync", cmd_sync, "push (and pull) now")
    p.add_argument("id", nargs="?")
    p.add_argument("--wait", action="store_true", help="wait until everything is pushed")
    p.add_argument("--timeout", type=float, default=60.0)
    p = cmd("verify", cmd_verify, "check the store's copy of each session against this device")
    p.add_argument("id", nargs="?")

    p = cmd("share", cmd_share, "print a share code for a session (read-only unless --write)")
    p.add_argument("id")
    p.add_argument("--write", action="store_true", help="let the importer add to the session too")
    p.add_argument("--passphrase-file", dest="passphrase_file",
                   help="protect the code with the passphrase in this file ('-': standard input)")
    p.add_argument("--expires", type=duration, help="the code stops working after this long (e.g. 1h, 7d)")
    p.add_argument("--qr", action="store_true", help="also print it as a QR code")
    p = cmd("import", cmd_import, "import a session from a share code (read from standard input) and keep it in sync")
    p.add_argument("code", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--code-file", dest="code_file", help="read the code from this file (default: standard input)")
    p.add_argument("--passphrase-file", dest="passphrase_file", help="file holding the code's passphrase ('-': stdin)")

    p = cmd("rekey", cmd_rekey, "rotate a shared session's key; old codes read nothing written after it")
    p.add_argument("id")
    p.add_argument("--drop", action="append", metavar="DEVICE", help="a writer device that loses access (repeatable)")

    p = cmd("key", None, "the device key: export or import a backup as words")
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION")
    q = key_sub.add_parser("export", parents=[common], help="print the device key as 24 words")
    q.set_defaults(fn=cmd_key_export)
    q = key_sub.add_parser("import", parents=[common], help="restore the device key from words on standard input")
    q.set_defaults(fn=cmd_key_import)
    q.add_argument("--force", action="store_true")
    serve.register(sub, common)
    return parser


def _not_utf8(argv: list[str]) -> str | None:
    """The first argument that is not UTF-8 text (Python carries such bytes as lone surrogates)."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return f"argument {i} ({ascii(os.fsencode(arg))[1:]}) is not UTF-8 text; give text as UTF-8"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    wants_json = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    early = argparse.Namespace(json=wants_json)
    bad = _not_utf8(argv)
    if bad:
        return _fail(early, "usage", bad, EXIT_USAGE)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        if not wants_json:
            exc.parser.print_usage(sys.stderr)
        where = exc.parser.prog.partition(" ")[2]  # the subcommand, if any
        return _fail(early, "usage", f"{where}: {exc}" if where else str(exc), EXIT_USAGE)
    except SystemExit as exc:
        return int(exc.code or 0)
    if getattr(args, "fn", None) is None:
        if args.json:
            return _fail(args, "usage", "give a command (see `sessiond --help`)", EXIT_USAGE)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "older_than_text", None) is not None:
        try:
            args.older_than = duration(args.older_than_text)
        except argparse.ArgumentTypeError as exc:
            return _fail(args, "usage", str(exc), EXIT_USAGE)
    home = resolve_home(args.home)
    if os.path.lexists(home) and not os.path.isdir(home):
        return _fail(args, "bad_home", f"the home {home} is not a folder; give a folder with --home (or "
                     f"$SESSIOND_HOME)", EXIT_USAGE)
    try:
        return args.fn(args) or 0
    except DaemonNotRunning as exc:
        return _fail(args, "daemon_not_running", str(exc), EXIT_NO_DAEMON)
    except ApiError as exc:
        return _fail(args, exc.code, exc.message, EXIT_ERROR)
    except CliError as exc:
        return _fail(args, "error", str(exc), exc.code)
    except ClientError as exc:
        return _fail(args, "error", str(exc), EXIT_ERROR)
    except HomeError as exc:
        return _fail(args, "bad_home", str(exc), EXIT_ERROR)
    except UnicodeDecodeError:
        return _fail(args, "error", "standard input is not UTF-8 text", EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _fail(args, code: str, message: str, exit_code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"sessiond: {safe(message, keep_lines=True)}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
