"""An example for each command's `--help` (`sessiond new --help` ends with `example:` and a line or two to
copy): a newcomer reads a command's use from its help before the README. ID stands for a session's id (`sessiond
ls` lists them), CHAT for a chat's id or name. Each example is parsed by tests/test_readme_lists.py, so one
naming an option that is gone, or missing a required one, fails there."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "daemon": ("sessiond daemon --home /tmp/try --store file:///tmp/shared-store",),
    "start": ("sessiond start --store file:///tmp/shared-store", "sessiond start --store-file ~/relay-store"),
    "stop": ("sessiond stop", "sessiond stop --timeout 1m"),
    "status": ("sessiond status --sessions",),
    "new": ('id=$(sessiond new --name "trip plans" --system "You are terse." --model llama3.2)',),
    "set": ("sessiond set ID --temperature 0.2 --tag travel", "sessiond set ID --unset max-tokens"),
    "ls": ("sessiond ls --status active --limit 20",),
    "show": ("sessiond show ID",),
    "rm": ("sessiond rm ID",),
    "pause": ("sessiond pause ID",),
    "resume": ("sessiond resume ID",),
    "end": ("sessiond end ID --json > proofs.json",),
    "chat": ("sessiond chat new ID --name research --switch", "sessiond chat ls ID"),
    "chat new": ("sessiond chat new ID --name research --model llama3.2 --switch",),
    "chat set": ('sessiond chat set ID research --system "Cite your sources."',),
    "chat ls": ("sessiond chat ls ID",),
    "chat switch": ("sessiond chat switch ID main",),
    "add": (
        'sessiond add ID --role user "What is BLAKE3?"',
        "echo 'A fast hash.' | sessiond add ID --role assistant -",
    ),
    "ask": ('sessiond ask ID "What is BLAKE3?"', "sessiond ask ID --model echo-1 --again"),
    "models": ("sessiond models --provider local",),
    "log": ("sessiond log ID --short", "sessiond log ID --all --last 20"),
    "search": ('sessiond search "blake3 AND hash" --limit 5',),
    "quota": ("sessiond quota ID",),
    "context": ("sessiond context ID --chat main",),
    "compact": ("sessiond compact ID --target-tokens 2000",),
    "uncompact": ("sessiond uncompact ID",),
    "clone": ('sessiond clone ID --name "trip plans, again"',),
    "fork": ("sessiond fork ID --at MESSAGE_ID --name what-if",),
    "checkpoint": ("sessiond checkpoint ID",),
    "checkpoints": ("sessiond checkpoints ID --json",),
    "verify-proof": ("sessiond verify-proof ID proofs.json",),
    "stats": ("sessiond stats ID", "sessiond stats --user alice"),
    "cleanup": ("sessiond cleanup --older-than 30d --dry-run",),
    "export": ("sessiond export ID --format markdown -o trip.md",),
    "import-file": ("sessiond import-file conversations.json --format chatgpt",),
    "sync": ("sessiond sync --wait --timeout 2m",),
    "verify": ("sessiond verify ID",),
    "share": ("code=$(sessiond share ID --write --expires 1d)",),
    "import": ('echo "$code" | sessiond import', "sessiond import --code-file code.txt --store-file ~/relay-store"),
    "rekey": ("sessiond rekey ID --drop DEVICE",),
    "shares": ("sessiond shares ID",),
    "devices": ("sessiond devices ID",),
    "unshare": ("sessiond unshare ID --device DEVICE",),
    "gc": ("sessiond gc --dry-run",),
    "doctor": ("sessiond doctor --no-verify",),
    "key": ("sessiond key export > device-key-words.txt",),
    "key export": ("sessiond key export > device-key-words.txt",),
    "key import": ("sessiond key import < device-key-words.txt",),
    "serve": ("sessiond serve --listen 0.0.0.0:5050 --data /srv/sessiond-relay --quota 2G",),
    "serve invite": ("sessiond serve invite --data /srv/sessiond-relay --label alice-laptop",),
    "serve accounts": ("sessiond serve accounts --data /srv/sessiond-relay",),
    "serve revoke": ("sessiond serve revoke alice-laptop --data /srv/sessiond-relay",),
    "service": ("sessiond service install", "sessiond service status"),
    "service install": ("sessiond service install --store file:///mnt/nas/sessiond",),
    "service uninstall": ("sessiond service uninstall",),
    "service status": ("sessiond service status",),
}


def epilog(command: str) -> str | None:
    """What `sessiond COMMAND --help` ends with: its examples, one a line, ready to copy; None for a command
    with none here."""
    lines = EXAMPLES.get(command)
    if not lines:
        return None
    return "example" + ("s" if len(lines) > 1 else "") + ":\n" + "\n".join("  " + line for line in lines)
