# Sourced by bench/mixed/*.sh: an older sessiond's devices (MIXED_OLD: a folder holding sessiond/, `git archive` of
# its release, its own venv .venv with its dependencies alone, and sessiond-X.Y.Z.dist-info/METADATA naming its
# version) beside this tree's (MIXED_NEW, default this checkout, its .venv), sharing sessions. Scratch files under
# MIXED_TMP (default /tmp/mixed). STORE is the store URL the homes start with (and STORE2, if set, a mirror's second
# store). See bench/mixed/README.md.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NEWDIR=${MIXED_NEW:-$(cd "$HERE/../.." && pwd)}
PY=$NEWDIR/.venv/bin/python
OLDROOT=${MIXED_OLD:?set MIXED_OLD to the old release folder, see bench/mixed/README.md}
PYOLD=$OLDROOT/.venv/bin/python   # the old code's own venv (its dependencies only)
T=${MIXED_TMP:-/tmp/mixed}
FAILS=0; PASSES=0
note() { printf '%s\n' "$*" >&2; }
ok() { PASSES=$((PASSES + 1)); note "  ok   $*"; }
bad() { FAILS=$((FAILS + 1)); note "  FAIL $*"; }

old() { (cd $OLDROOT/sessiond && PYTHONPATH=$OLDROOT $PYOLD -m sessiond.cli.main "$@"); }
new() { (cd $NEWDIR && env -u PYTHONPATH $PY -m sessiond.cli.main "$@"); }
# run VER CMD...: VER is old|new
run() { local v=$1; shift; $v "$@"; }

declare -A VER   # home -> old|new
start() {  # start VER HOME
  local v=$1 h=$2; VER[$h]=$v
  run $v start --home "$h" --store "$STORE" ${STORE2:+--store "$STORE2"} >/dev/null || { bad "start $v $h"; return 1; }
  local got; got=$(run $v --version | head -2 | tr '\n' ' ')
  note "  started $h: $got"
}
stop() { run ${VER[$1]} stop --home "$1" >/dev/null 2>&1; }
c() { local h=$1; shift; run ${VER[$h]} "$@" --home "$h"; }   # c HOME CMD ARGS...

converge() {  # converge ID HOME... : log --short identical on every home within a deadline
  local id=$1; shift; local deadline=$((SECONDS + 60)) first h same
  while :; do
    for h in "$@"; do c $h sync --wait >/dev/null 2>&1; done
    first=$(c $1 log $id --short 2>&1); same=1
    for h in "${@:2}"; do [ "$(c $h log $id --short 2>&1)" == "$first" ] || same=0; done
    [ $same = 1 ] && { ok "converged $id on $* ($(printf '%s\n' "$first" | wc -l) lines)"; return 0; }
    [ $SECONDS -ge $deadline ] && break
    sleep 0.5
  done
  bad "no convergence of $id on $*"
  for h in "$@"; do note "--- $h (${VER[$h]})"; c $h log $id --short 2>&1 | tail -5 >&2; c $h show $id 2>&1 | grep -i "sync\|error\|rekey\|revok" | head -5 >&2; done
  return 1
}
has() {  # has ID HOME TEXT
  local deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    c $2 sync --wait >/dev/null 2>&1
    c $2 log $1 --short 2>/dev/null | grep -qF -- "$3" && { ok "$2 has '$3'"; return 0; }
    sleep 0.5
  done
  bad "$2 lacks '$3'"; c $2 show $1 >&2 2>&1; return 1
}
verify() { local h; for h in "$@"; do
  if out=$(c $h verify 2>&1); then ok "verify $h (${VER[$h]})"; else bad "verify $h (${VER[$h]}): $out"; fi; done; }
doctor() { local h; for h in "$@"; do
  if out=$(c $h doctor 2>&1); then ok "doctor $h (${VER[$h]})"; else bad "doctor $h (${VER[$h]}): $(printf '%s' "$out" | grep -iv '^ *ok' | head -8)"; fi; done; }
mk() { c $1 new --name "$2" --system "sys" --model m; }      # mk HOME NAME -> id
add() { c $1 add $2 --role user "$3" >/dev/null || bad "add on $1: $3"; }
share() { c $1 share "${@:2}"; }
imp() { printf "%s\n" "$2" | c $1 import >/dev/null 2>$T-imp-$MODE.err || { bad "import on $1: $(cat $T-imp-$MODE.err)"; return 1; }; ok "import on $1 (${VER[$1]})"; }
devid() { c $1 status --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["device_id"])'; }
OLDV=$(old --version | sed -n '1s/^sessiond //p'); NEWV=$(new --version | sed -n '1s/^sessiond //p')
