#!/usr/bin/env bash
# The sharing scenarios (read-only and --write shares both ways, rekeys and drops made on either side, a device away
# through rekeys, fresh imports, an old home upgraded in place mid-share, verify, doctor) through one folder store,
# then a relay of either version, or a mirror of two folder stores. Usage:
# MIXED_OLD=... bench/mixed/sharing.sh [folder|relay|oldrelay|both|mirror]
MAINPID=$$
MODE=${1:-both}
source "$(dirname "$0")/lib.sh"

scenarios() {  # $1: label; STORE set
  local P=$T-$1
  rm -rf $P-*; local O=$P-old N=$P-new T=$P-third T2=$P-third2 U=$P-up F F2
  start old $O; start new $N; start old $T; start new $T2

  note "[1] old shares to new, read-only"
  local a; a=$(mk $O "a"); add $O $a "o1"; imp $N "$(share $O $a)"; add $O $a "o2"
  converge $a $O $N
  if c $N add $a --role user "x" >/dev/null 2>&1; then bad "new wrote to a read-only share"; else ok "new refused on read-only"; fi

  note "[2] new shares to old, read-only"
  local b; b=$(mk $N "b"); add $N $b "n1"; imp $O "$(share $N $b)"; add $N $b "n2"
  converge $b $O $N
  if c $O add $b --role user "x" >/dev/null 2>&1; then bad "old wrote to a read-only share"; else ok "old refused on read-only"; fi

  note "[3] old shares --write to new; both write"
  local w; w=$(mk $O "w"); add $O $w "o1"; imp $N "$(share $O $w --write)"
  for i in 1 2 3; do add $O $w "o-w$i" & p1=$!; add $N $w "n-w$i" & p2=$!; wait $p1 $p2; done
  converge $w $O $N

  note "[4] new shares --write to old and to a third (old) device; all write"
  local x; x=$(mk $N "x"); add $N $x "n1"; local code; code=$(share $N $x --write)
  imp $O "$code"; imp $T "$code"
  for i in 1 2 3; do add $O $x "o-x$i" & p1=$!; add $N $x "n-x$i" & p2=$!; add $T $x "t-x$i" & p3=$!; wait $p1 $p2 $p3; done
  converge $x $O $N $T

  note "[5] new rekeys (plain); old devices follow"
  c $N rekey $x >/dev/null || bad "new rekey $x"
  add $N $x "n-after-rekey1"; add $O $x "o-after-rekey1"; add $T $x "t-after-rekey1"
  converge $x $O $N $T

  note "[6] new rekeys --drop the third (old) device, which wrote: the notice carries f"
  local tid; tid=$(devid $T)
  c $N rekey $x --drop $tid >/dev/null || bad "new rekey --drop"
  add $N $x "n-after-drop"; add $O $x "o-after-drop"
  converge $x $O $N
  c $T sync --wait >/dev/null 2>&1; c $T sync --wait >/dev/null 2>&1
  st=$(c $T show $x 2>&1); printf '%s' "$st" | grep -qi revoked && ok "third says revoked" || bad "third not revoked: $(printf '%s' "$st" | head -20)"
  if c $T add $x --role user "t-after-drop" >/dev/null 2>&1; then note "  (the dropped device took an append)"; else ok "the dropped (revoked) device refuses an append"; fi
  c $T sync --wait >/dev/null 2>&1
  c $N log $x --short | grep -q "t-after-drop" && bad "dropped device's write reached new" || ok "dropped device's write stays out"
  if [ -n "${STORE_DIR:-}" ]; then  # (a folder store: the old slot read with the dropped device's old keys)
    (cd $NEWDIR && $PY $HERE/slot.py $STORE_DIR $T $x) | grep -q "^notice fields.* f 1 " && ok "the new device's notice names 1 frozen log (\"f\")" || bad "the notice has no f"
  fi
  c $O log $x --short | grep -q "t-x3" && ok "old keeps the dropped writer's earlier messages" || bad "old lost t-x3"

  note "[7] old rekeys; new follows"
  c $O rekey $w >/dev/null || bad "old rekey $w"
  add $O $w "o-after-oldrekey"; add $N $w "n-after-oldrekey"
  converge $w $O $N

  note "[7b] old rekeys --drop the new device? no: old rekeys --drop a third old device on a new-made session"
  local y; y=$(mk $N "y"); code=$(share $N $y --write); imp $O "$code"; imp $T "$code"
  add $T $y "t-y1"; add $O $y "o-y1"; add $N $y "n-y1"; converge $y $O $N $T
  c $O rekey $y --drop "$(devid $T)" >/dev/null || bad "old rekey --drop"
  add $O $y "o-y-after"; add $N $y "n-y-after"; converge $y $O $N
  c $N log $y --short | grep -q "t-y1" && ok "new keeps t-y1 after old's drop" || bad "new lost t-y1"

  note "[7c] old rekeys --drop a third device of the new version, which wrote, on an old-made session"
  local q; q=$(mk $O "q"); code=$(share $O $q --write); imp $N "$code"; imp $T2 "$code"
  add $T2 $q "t2-q1"; add $N $q "n-q1"; add $O $q "o-q1"; converge $q $O $N $T2
  c $O rekey $q --drop "$(devid $T2)" >/dev/null || bad "old rekey --drop (new third)"
  add $O $q "o-q-after"; add $N $q "n-q-after"; converge $q $O $N
  c $T2 sync --wait >/dev/null 2>&1; c $T2 sync --wait >/dev/null 2>&1
  st=$(c $T2 show $q 2>&1); printf '%s' "$st" | grep -qi revoked && ok "new third says revoked" || bad "new third not revoked: $(printf '%s' "$st" | head -20)"
  if c $T2 add $q --role user "t2-after-drop" >/dev/null 2>&1; then note "  (the dropped new device took an append)"; else ok "the dropped (revoked) new device refuses an append"; fi
  c $T2 sync --wait >/dev/null 2>&1
  c $O log $q --short | grep -q "t2-after-drop" && bad "dropped new device's write reached old" || ok "dropped new device's write stays out"
  c $N log $q --short | grep -q "t2-q1" && ok "new keeps t2-q1 after old's drop" || bad "new lost t2-q1"
  c $O log $q --short | grep -q "t2-q1" && ok "old keeps t2-q1 after its drop" || bad "old lost t2-q1"
  c $N rekey $q >/dev/null || bad "new rekey (q) after old's drop"; add $O $q "o-q-after-newrekey"; converge $q $O $N

  note "[8] new device away through several rekeys by the old"
  stop $N
  for i in 1 2 3 4; do add $O $w "o-away$i"; c $O rekey $w >/dev/null || bad "old rekey $i"; done
  add $O $w "o-away-last"
  start new $N
  has $w $N "o-away-last"
  add $N $w "n-back"; converge $w $O $N

  note "[8b] new device away while the old drops a writer that wrote, then rekeys twice; then fresh imports of both versions"
  local v; v=$(mk $O "v"); code=$(share $O $v --write); imp $N "$code"; imp $T "$code"
  add $T $v "t-v1"; add $N $v "n-v1"; add $O $v "o-v1"; converge $v $O $N $T
  stop $N
  c $O rekey $v --drop "$(devid $T)" >/dev/null || bad "old rekey --drop (v)"
  add $O $v "o-v2"; c $O rekey $v >/dev/null || bad "old rekey (v) 2"; add $O $v "o-v3"; c $O rekey $v >/dev/null || bad "old rekey (v) 3"
  start new $N
  has $v $N "o-v3"; add $N $v "n-v-back"; converge $v $O $N
  c $N log $v --short | grep -q "t-v1" && ok "new caught up keeps t-v1" || bad "new caught up lost t-v1"
  F=$P-fresh; start new $F; imp $F "$(share $O $v)"; converge $v $O $N $F
  c $F log $v --short | grep -q "t-v1" && ok "a fresh new import holds t-v1 (frozen log the old rekey froze)" || bad "fresh new import lacks t-v1"
  F2=$P-fresh2; start old $F2; imp $F2 "$(share $N $x)"; converge $x $O $N $F2
  c $F2 log $x --short | grep -q "t-x3" && ok "a fresh old import holds t-x3 (frozen log the new rekey froze)" || bad "fresh old import lacks t-x3"

  note "[9] an old home upgraded in place to the new code mid-share"
  start old $U; local z; z=$(mk $U "z"); add $U $z "u1"; imp $N "$(share $U $z --write)"; imp $O "$(share $N $z --write)"
  add $N $z "n-z1"; add $O $z "o-z1"; converge $z $U $N $O
  c $U rekey $z >/dev/null || bad "old (to be upgraded) rekey z"; add $N $z "n-after-u-rekey"; converge $z $U $N $O
  local z2; z2=$(mk $U "z2"); code=$(share $U $z2 --write); imp $N "$code"; imp $T "$code"
  add $T $z2 "t-z2"; add $N $z2 "n-z2"; add $U $z2 "u-z2"; converge $z2 $U $N $T
  c $U rekey $z2 --drop "$(devid $T)" >/dev/null || bad "old (to be upgraded) rekey --drop z2"
  add $U $z2 "u-z2-after-drop"; converge $z2 $U $N
  local r; r=$(mk $N "r"); imp $U "$(share $N $r)"; add $N $r "n-r1"; converge $r $N $U
  add $U $z "u-before-upgrade"; stop $U
  add $N $z "n-while-down"
  start new $U
  has $z $U "n-while-down"
  add $U $z "u-after-upgrade"; converge $z $U $N $O
  has $z2 $U "u-z2-after-drop"; add $N $z2 "n-z2-after-upgrade"; has $z2 $U "n-z2-after-upgrade"
  c $U log $z2 --short | grep -q "t-z2" && ok "upgraded keeps the dropped writer's t-z2" || bad "upgraded lost t-z2"
  c $U rekey $z2 >/dev/null || bad "upgraded rekey z2"; add $N $z2 "n-z2-after-upgraded-rekey"; converge $z2 $U $N
  add $N $r "n-r-after-upgrade"; converge $r $N $U
  if c $U add $r --role user "x" >/dev/null 2>&1; then bad "upgraded wrote to a read-only share"; else ok "upgraded refuses on read-only r"; fi
  c $U rekey $z >/dev/null || bad "upgraded rekey"; add $O $z "o-after-upgraded-rekey"; converge $z $U $N $O
  ver=$(c $U status --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d.get("version"), d.get("schema"))')
  note "  upgraded home now: $ver"
  stop $U
  if out=$(old start --home $U --store "$STORE" 2>&1); then bad "$OLDV started on the upgraded home"; old stop --home $U; else ok "$OLDV refuses the upgraded home: $(printf '%s' "$out" | head -1 | cut -c1-150)"; fi
  start new $U

  note "[10] verify and doctor on every home"
  verify $O $N $U $F $F2
  out=$(c $T2 verify 2>&1) && bad "verify on the dropped new device passed" || { [ "$(printf '%s\n' "$out" | grep -c '^FAILED')" = "$(printf '%s\n' "$out" | grep -c 'revoked')" ] && ok "verify $T2: only its revoked session fails, as revoked" || bad "verify $T2: $out"; }
  out=$(c $T verify 2>&1) && bad "verify on the dropped device passed" || { [ "$(printf '%s\n' "$out" | grep -c '^FAILED')" = "$(printf '%s\n' "$out" | grep -c 'revoked: the session was rekeyed without this device')" ] && ok "verify $T: only its two revoked sessions fail, as revoked" || bad "verify $T: $out"; }
  doctor $O $N $U $F $F2
  for h in $O $N $T $T2 $U $F $F2; do stop $h; done
}

cleanup() { [ "$BASHPID" = "$MAINPID" ] || return 0; for h in "${!VER[@]}"; do stop $h; done; [ -n "${RELAY_PID:-}" ] && kill $RELAY_PID 2>/dev/null; }
trap cleanup EXIT

if [ $MODE = folder ] || [ $MODE = both ]; then
  note "=== folder store"
  rm -rf $T-store; mkdir -p $T-store; STORE=file://$T-store; STORE_DIR=$T-store
  scenarios folder
  STORE_DIR=
fi
if [ $MODE = mirror ]; then  # every write to both stores, a rekey's notice to each (0.40.0: published once one took it)
  note "=== a mirror of two folder stores"
  rm -rf $T-storeA $T-storeB; mkdir -p $T-storeA $T-storeB
  STORE=file://$T-storeA; STORE2=file://$T-storeB; STORE_DIR=$T-storeB
  scenarios mirror
  STORE2= STORE_DIR=
fi
for R in relay oldrelay; do
  [ $MODE = $R ] || { [ $MODE = both ] && [ $R = relay ]; } || continue
  RV=new; [ $R = oldrelay ] && RV=old
  note "=== relay of $RV ($(run $RV --version | sed -n 1p)), --open-registration"
  D=$T-relaydata-$R; rm -rf $D $T-$R.out
  if [ $RV = new ]; then (cd $NEWDIR; exec env -u PYTHONPATH $PY -m sessiond.cli.main serve --listen 127.0.0.1:0 --data $D --open-registration --json) >$T-$R.out 2>$T-$R.err &
  else (cd $OLDROOT/sessiond; PYTHONPATH=$OLDROOT exec $PYOLD -m sessiond.cli.main serve --listen 127.0.0.1:0 --data $D --open-registration --json) >$T-$R.out 2>$T-$R.err & fi
  RELAY_PID=$!
  for i in $(seq 100); do [ -s $T-$R.out ] && break; sleep 0.1; done
  STORE=$($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d.get("url") or d.get("store") or d)' $T-$R.out)
  note "  relay at $STORE (pid $RELAY_PID)"
  scenarios $R
  kill $RELAY_PID; wait $RELAY_PID; RELAY_PID=
done
note "=== $PASSES ok, $FAILS failed"
[ $FAILS = 0 ]
