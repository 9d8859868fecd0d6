#!/bin/bash
# Makes tests/data/frozen-COMMIT (tests/test_old_homes.py): a session's members slot rewritten by the real
# code of COMMIT, a sessiond from before frozen logs (2026-12-02: 23bc028), which keeps only what it knows
# of the slot. Devices B and C run this checkout's code: C joins and writes "from C", B drops C by a rekey
# (C's log is then a frozen log of the slot), makes a write code and stops; device A on COMMIT imports
# that code and writes, rewriting the slot without the frozen log. Kept: B's home, the store, the code.
#
#   PYTHON=/path/to/python NEW=.venv/bin/python bash tests/data/make_frozen_slot.sh 23bc028 tests/data/frozen-23bc028
#
# PYTHON as in make_old_home.sh (COMMIT's dependencies, no sessiond installed); NEW: a python with this
# checkout installed. Run from the repository.
set -eu
COMMIT=$1; mkdir -p "$2"; OUT=$(cd "$2" && pwd)
PYTHON=${PYTHON:?set PYTHON}; NEW=$(cd "$(dirname "${NEW:?set NEW}")" && pwd)/$(basename "$NEW")
WORK=$(mktemp -d /tmp/frozen-slot.XXXXXX)
git archive --prefix=sessiond/ "$COMMIT" | tar -x -C "$WORK"
ST=$WORK/store
old() { (cd "$WORK" && PYTHONPATH="$WORK" "$PYTHON" -c 'import sys; from sessiond.cli.main import main; sys.argv[0] = "sessiond"; sys.exit(main())' "$@"); }
new() { "$NEW" -m sessiond.cli.main "$@"; }
new start --home "$WORK/b" --store "file://$ST" >/dev/null
new start --home "$WORK/c" --store "file://$ST" >/dev/null
new new --home "$WORK/b" --id s1 >/dev/null
new add --home "$WORK/b" s1 --role user "from B" >/dev/null
new share --home "$WORK/b" s1 --write > "$WORK/code1" 2>/dev/null
new sync --home "$WORK/b" --wait s1 >/dev/null
new import --home "$WORK/c" --code-file "$WORK/code1" >/dev/null 2>&1
new add --home "$WORK/c" s1 --role user "from C" >/dev/null
new sync --home "$WORK/c" --wait s1 >/dev/null
new sync --home "$WORK/b" --wait s1 >/dev/null
C=$(new status --home "$WORK/c" --json | "$NEW" -c 'import json, sys; print(json.load(sys.stdin)["device_id"])')
new stop --home "$WORK/c" >/dev/null
new rekey --home "$WORK/b" s1 --drop "$C" >/dev/null
new share --home "$WORK/b" s1 --write > "$OUT/write.code" 2>/dev/null
new sync --home "$WORK/b" --wait s1 >/dev/null
new stop --home "$WORK/b" >/dev/null
old start --home "$WORK/a" --store "file://$ST" >/dev/null
old import --home "$WORK/a" --code-file "$OUT/write.code" >/dev/null 2>&1
old add --home "$WORK/a" s1 --role user "from A" >/dev/null
old sync --home "$WORK/a" >/dev/null
old stop --home "$WORK/a" >/dev/null
rm -rf "$OUT/home" "$OUT/store"; mkdir -p "$OUT/home"
cp -a "$WORK/b/sessions.db" "$WORK/b/keys" "$WORK/b/store-url" "$OUT/home/"
cp -a "$ST" "$OUT/store"
echo "$COMMIT $(git log -1 --format='%ad %s' --date=iso "$COMMIT" | cut -c1-100)" > "$OUT/COMMIT"
rm -rf "$WORK"
