#!/bin/bash
# Makes a fixture of tests/test_old_homes.py with the real code of an older commit: a home (its
# sessions.db and keys), the folder store it pushed to, a share code of its shared session, a session
# file (`export --format json`) and what that version's CLI read back (`--json`, in expected/).
#
#   PYTHON=/path/to/python bash tests/data/make_old_home.sh COMMIT tests/data/home-COMMIT
#
# PYTHON: a Python 3.11 with sessiond's dependencies of that commit (its pyproject.toml: aiosqlite then,
# among others) and NOT sessiond itself installed (an editable install of this checkout would be imported
# instead of the old code). Run from the repository. What a version has no command or option for (tool
# calls before 2026-12-05) fails in that version and is left out; the run prints it.
set -u
COMMIT=$1; mkdir -p "$2"; OUT=$(cd "$2" && pwd); PYTHON=${PYTHON:?set PYTHON to a python with the dependencies and no sessiond installed}
WORK=$(mktemp -d /tmp/old-home.XXXXXX)
git archive --prefix=sessiond/ "$COMMIT" | tar -x -C "$WORK"
H=$WORK/home; ST=$WORK/store
sd() { (cd "$WORK" && PYTHONPATH="$WORK" "$PYTHON" -c 'import sys; from sessiond.cli.main import main; sys.argv[0] = "sessiond"; sys.exit(main())' "$@" --home "$H"); }
run() { out=$(sd "$@" 2>&1) || echo "left out (this version refused it): $* -> ${out:0:160}" >&2; echo "$out"; }
run start --store "file://$ST" >/dev/null
run new --id s-main --name "Main session" --system "You are terse." --model m-1 --user alice --tag a --tag b --metadata '{"k":1}' >/dev/null
run set s-main --temperature 0.5 --max-context-tokens 400 --token-quota 10000 --checkpoint-interval 3 >/dev/null
for i in 1 2 3 4 5; do
  run add s-main --role user "question number $i with some words in it to take tokens" >/dev/null
  run add s-main --role assistant --tokens 20 "answer number $i, a longer answer that says more words than the question did" >/dev/null
done
run chat new s-main --id c2 --name second --system "Chat two prompt" >/dev/null
run add s-main --role user --chat c2 "in chat two" >/dev/null
run add s-main --role assistant --chat c2 "reply in chat two" >/dev/null
run chat new s-main --id c3 --name third >/dev/null
run add s-main --role user --chat c3 "in chat three" >/dev/null
run add s-main --role assistant --tool-call-with-id call_x get_weather '{"city":"Paris"}' "" >/dev/null
run add s-main --role tool --tool-call-id call_x --name get_weather '{"temp":12}' >/dev/null
run add s-main --role tool "tool output plain" >/dev/null
run checkpoint s-main >/dev/null
run compact s-main --target-tokens 100 >/dev/null
run checkpoint s-main >/dev/null
run new --id s-shared --name Shared >/dev/null
run add s-shared --role user "shared hello" >/dev/null
run add s-shared --role assistant "shared reply" >/dev/null
mkdir -p "$OUT/expected"
run share s-shared --write > "$OUT/write.code"
run sync >/dev/null
run clone s-main --id s-clone --name Cloned >/dev/null
run new --id s-paused --name Paused >/dev/null
run add s-paused --role user "before pause" >/dev/null
run pause s-paused >/dev/null
run new --id s-ended --name Ended >/dev/null
run add s-ended --role user "before end" >/dev/null
run end s-ended >/dev/null
run export s-main --format json -o "$OUT/s-main.export.json" >/dev/null
run sync >/dev/null
E=$OUT/expected
sd ls --json > "$E/ls.json"
for s in s-main s-shared s-clone s-paused s-ended; do
  sd show "$s" --json > "$E/$s.show.json"
  sd log "$s" --all --json > "$E/$s.log.json"
  sd quota "$s" --json > "$E/$s.quota.json"
  sd checkpoints "$s" --json > "$E/$s.checkpoints.json"
  sd chat ls "$s" --json > "$E/$s.chats.json"
done
sd stop >/dev/null
mkdir -p "$OUT/home"
cp -a "$H/sessions.db" "$H/keys" "$OUT/home/"
[ -f "$H/store-url" ] && cp -a "$H/store-url" "$OUT/home/"
rm -rf "$OUT/store"; cp -a "$ST" "$OUT/store"
echo "$COMMIT $(git log -1 --format='%ad %s' --date=iso "$COMMIT" | cut -c1-100)" > "$OUT/COMMIT"
rm -rf "$WORK"
