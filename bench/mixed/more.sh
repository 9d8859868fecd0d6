#!/usr/bin/env bash
# Passphrase codes, tool calls, checkpoints, compaction, fork and clone, rm and gc made on either side (a folder
# store, or MIXED_STORE: bench/mixed/relay.sh). Usage: MIXED_OLD=... [TAG=x] bench/mixed/more.sh
MAINPID=$$
MODE=${TAG:-both}
source "$(dirname "$0")/lib.sh"

cleanup() { [ "$BASHPID" = "$MAINPID" ] || return 0; for h in "${!VER[@]}"; do stop $h; done; }
trap cleanup EXIT
[ -z "${MIXED_STORE:-}" ] && rm -rf $T-mstore; rm -rf $T-m${TAG:-}-*; mkdir -p $T-mstore; STORE=${MIXED_STORE:-file://$T-mstore}
O=$T-m${TAG:-}-old N=$T-m${TAG:-}-new
start old $O; start new $N
printf 'correct horse battery\n' > $T-pass.txt
note "[A] passphrase codes both ways"
a=$(mk $O "pa"); add $O $a "o1"; code=$(share $O $a --write --passphrase-file $T-pass.txt)
printf '%s\n' "$code" | c $N import --passphrase-file $T-pass.txt >/dev/null 2>$T-m${TAG:-}.err && ok "new imports old's passphrase code" || bad "new import pass: $(cat $T-m${TAG:-}.err)"
b=$(mk $N "pb"); add $N $b "n1"; code=$(share $N $b --write --passphrase-file $T-pass.txt)
printf '%s\n' "$code" | c $O import --passphrase-file $T-pass.txt >/dev/null 2>$T-m${TAG:-}.err && ok "old imports new's passphrase code" || bad "old import pass: $(cat $T-m${TAG:-}.err)"
add $N $a "n-a"; add $O $b "o-b"; converge $a $O $N; converge $b $O $N
note "[B] tool calls across versions"
c $O add $a --role assistant --tool-call-with-id call_1 lookup '{"q": "x"}' "" >/dev/null 2>$T-m${TAG:-}.err || c $O add $a --role assistant --tool-call-with-id call_1 lookup '{"q": "x"}' >/dev/null 2>>$T-m${TAG:-}.err || bad "old tool call: $(cat $T-m${TAG:-}.err)"
has $a $N "lookup" || true
c $N add $a --role tool --tool-call-id call_1 '{"r": 1}' >/dev/null 2>$T-m${TAG:-}.err || bad "new tool result: $(cat $T-m${TAG:-}.err)"
c $N add $b --role assistant --tool-call-with-id call_2 fetch '{"u": "y"}' >/dev/null 2>$T-m${TAG:-}.err || bad "new tool call: $(cat $T-m${TAG:-}.err)"
has $b $O "fetch" || true
c $O add $b --role tool --tool-call-id call_2 '{"r": 2}' >/dev/null 2>$T-m${TAG:-}.err || bad "old tool result: $(cat $T-m${TAG:-}.err)"
converge $a $O $N; converge $b $O $N
for s in $a $b; do
  eo=$(c $O export $s --format openai 2>&1); en=$(c $N export $s --format openai 2>&1)
  [ "$eo" = "$en" ] && ok "export openai of $s the same on both ($(printf '%s' "$eo" | wc -c) bytes)" || { bad "export of $s differs"; diff <(printf '%s\n' "$eo") <(printf '%s\n' "$en") | head -10 >&2; }
done
note "[C] checkpoints made on either side"
c $O checkpoint $a >/dev/null 2>$T-m${TAG:-}.err || bad "old checkpoint: $(cat $T-m${TAG:-}.err)"
c $N checkpoint $b >/dev/null 2>$T-m${TAG:-}.err || bad "new checkpoint: $(cat $T-m${TAG:-}.err)"
for i in 1 2 3; do c $O sync --wait >/dev/null 2>&1; c $N sync --wait >/dev/null 2>&1; done
for s in $a $b; do
  co=$(c $O checkpoints $s 2>&1); cn=$(c $N checkpoints $s 2>&1)
  no=$(printf '%s\n' "$co" | grep -vc '^ *$'); nn=$(printf '%s\n' "$cn" | grep -vc '^ *$')
  [ "$co" = "$cn" ] && ok "checkpoints of $s the same on both ($no lines)" || { bad "checkpoints of $s differ"; note "old: $co"; note "new: $cn"; }
done
note "[D] compaction on either side"
for i in 1 2 3 4 5 6; do add $O $a "filler $i $(head -c 300 /dev/zero | tr '\0' x)"; done
converge $a $O $N
c $O compact $a --target-tokens 50 >/dev/null 2>$T-m${TAG:-}.err || bad "old compact: $(cat $T-m${TAG:-}.err)"
for i in 1 2 3; do c $O sync --wait >/dev/null 2>&1; c $N sync --wait >/dev/null 2>&1; done
xo=$(c $O context $a 2>&1); xn=$(c $N context $a 2>&1)
[ "$xo" = "$xn" ] && ok "context of $a the same on both after old's compact" || { note "  (context differs) old: $(printf '%s' "$xo" | head -4 | tr '\n' '|') new: $(printf '%s' "$xn" | head -4 | tr '\n' '|')"; }
c $N uncompact $a >/dev/null 2>$T-m${TAG:-}.err || bad "new uncompact: $(cat $T-m${TAG:-}.err)"
c $N compact $a --target-tokens 80 >/dev/null 2>$T-m${TAG:-}.err || bad "new compact: $(cat $T-m${TAG:-}.err)"
for i in 1 2 3; do c $O sync --wait >/dev/null 2>&1; c $N sync --wait >/dev/null 2>&1; done
xo=$(c $O context $a 2>&1); xn=$(c $N context $a 2>&1)
[ "$xo" = "$xn" ] && ok "context of $a the same on both after new's compact" || { note "  (context differs) old: $(printf '%s' "$xo" | head -4 | tr '\n' '|') new: $(printf '%s' "$xn" | head -4 | tr '\n' '|')"; }
note "[E] fork and clone of shared sessions on either side"
mid=$(c $N log $a --json 2>/dev/null | $PY -c 'import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; print(m[1]["id"])')
f1=$(c $N fork $a --at "$mid" 2>$T-m${TAG:-}.err) && ok "new forks old-made $a" || bad "new fork: $(cat $T-m${TAG:-}.err)"
mid=$(c $O log $b --json 2>/dev/null | $PY -c 'import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; print(m[1]["id"])')
f2=$(c $O fork $b --at "$mid" 2>$T-m${TAG:-}.err) && ok "old forks new-made $b" || bad "old fork: $(cat $T-m${TAG:-}.err)"
c1=$(c $N clone $a 2>$T-m${TAG:-}.err) && ok "new clones $a" || bad "new clone: $(cat $T-m${TAG:-}.err)"
c2=$(c $O clone $b 2>$T-m${TAG:-}.err) && ok "old clones $b" || bad "old clone: $(cat $T-m${TAG:-}.err)"
f2=$(printf '%s' "$f2" | tail -1); f1=$(printf '%s' "$f1" | tail -1)
imp $N "$(share $O $f2)"; converge $f2 $O $N
imp $O "$(share $N $f1)"; converge $f1 $O $N
note "[F] rm and gc on either side"
c $N rm $f2 --force >/dev/null 2>$T-m${TAG:-}.err && ok "new rm of old's shared fork" || bad "new rm: $(cat $T-m${TAG:-}.err)"
c $O rm $f1 --force >/dev/null 2>$T-m${TAG:-}.err && ok "old rm of new's shared fork" || bad "old rm: $(cat $T-m${TAG:-}.err)"
c $N gc --grace 0s >/dev/null 2>$T-m${TAG:-}.err && ok "new gc" || bad "new gc: $(cat $T-m${TAG:-}.err)"
c $O gc --grace 0s >/dev/null 2>$T-m${TAG:-}.err && ok "old gc" || bad "old gc: $(cat $T-m${TAG:-}.err)"
add $O $f2 "o-f2-after-gc"; add $N $f1 "n-f1-after-gc"; add $O $a "o-a-after-gc"; add $N $b "n-b-after-gc"
converge $a $O $N; converge $b $O $N
F=$T-m${TAG:-}-fresh; start new $F; imp $F "$(share $O $a)"; imp $F "$(share $O $b)"; converge $a $O $F; converge $b $N $F
F2=$T-m${TAG:-}-fresh2; start old $F2; imp $F2 "$(share $N $a)"; imp $F2 "$(share $N $b)"; converge $a $N $F2; converge $b $O $F2
verify $O $N $F $F2; doctor $O $N $F $F2
note "=== $PASSES ok, $FAILS failed"
[ $FAILS = 0 ]
