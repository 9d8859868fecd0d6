#!/usr/bin/env bash
# Through the daemons' OpenAI endpoints (the official SDK, tests/servers/openai_server.py as the provider): an image
# part, n>1 answers and one an app went on from (its context_tokens too), quota counts on every device; an old home
# with forks and quota used upgraded in place (its recount against a fresh pull). Usage: MIXED_OLD=... [TAG=x] model.sh
MAINPID=$$
MODE=${TAG:-both}
source "$(dirname "$0")/lib.sh"

APP=$HERE/app.py
cleanup() { [ "$BASHPID" = "$MAINPID" ] || return 0; for h in "${!VER[@]}"; do stop $h; done; for p in ${PROV_PID:-} ${XAI_PID:-}; do kill $p 2>/dev/null; done; }
trap cleanup EXIT
freeport() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { for i in $(seq 100); do $PY -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0; sleep 0.1; done; bad "nothing listens on $1"; }
PORT=$(freeport); XPORT=$(freeport); XR=300   # XR: the reasoning tokens of each answer of provider "xai"
(cd $NEWDIR/tests && exec $PY servers/openai_server.py $PORT) >$T-prov.out 2>&1 & PROV_PID=$!
(cd $NEWDIR/tests && exec $PY $HERE/xai.py $XPORT $XR) >$T-xprov.out 2>&1 & XAI_PID=$!
listening $PORT; listening $XPORT
note "  provider on $PORT (pid $PROV_PID), xAI-shaped provider on $XPORT (pid $XAI_PID)"
cfg() { mkdir -p -m 700 $1; printf 'default_provider = "loop"\nopenai_listen = "127.0.0.1:0"\n[providers.loop]\nbase_url = "http://127.0.0.1:%s/v1"\n[providers.xai]\nbase_url = "http://127.0.0.1:%s/v1"\n' $PORT $XPORT > $1/config.toml; }
ask() {  # ask HOME SID MESSAGES_JSON [N] -> the first answer's text
  local st; st=$(c $1 status --json) || { bad "status $1"; return 1; }
  $PY $APP "$st" "$2" "$3" "${@:4}" 2>>$T-model${TAG:-}.err || { bad "ask on $1 (${VER[$1]}): $(tail -3 $T-model${TAG:-}.err)"; return 1; }
}
msgs() { c $1 log $2 --json | $PY -c '
import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d
for x in m: print(json.dumps({k: x.get(k) for k in ("role","content","part_notes","usage","tokens")}, sort_keys=True))'; }
used() { c $1 show $2 --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d.get("tokens_used"))'; }
nmsgs() { c $1 log $2 --short | wc -l; }
IMG='{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}'

[ -z "${MIXED_STORE:-}" ] && rm -rf $T-mstore2; rm -rf $T-x${TAG:-}-*; mkdir -p $T-mstore2; STORE=${MIXED_STORE:-file://$T-mstore2}
O=$T-x${TAG:-}-old N=$T-x${TAG:-}-new U=$T-x${TAG:-}-up
for h in $O $N $U; do cfg $h; done
start old $O; start new $N; start old $U

note "[P1] an image part through $NEWV's endpoint: part_notes pulled by $OLDV, forked and re-shared there, pulled back"
s=$(mk $N "img"); c $N set $s --model echo-1 >/dev/null
H1='[{"role": "user", "content": [{"type": "text", "text": "what is this"}, '"$IMG"']}]'
a1=$(ask $N $s "$H1"); note "  answer: $a1"
msgs $N $s | head -3 >&2
msgs $N $s | grep -q '"part_notes": \[1\]' && ok "$NEWV recorded part_notes [1]" || bad "no part_notes on $NEWV"
imp $O "$(share $N $s --write)"; converge $s $N $O
msgs $O $s | grep -q '"part_notes": \[1\]' && ok "$OLDV holds the pulled part_notes" || bad "$OLDV lacks part_notes: $(msgs $O $s | head -2)"
H2=$($PY -c 'import json,sys; h=json.loads(sys.argv[1]); h+= [{"role":"assistant","content":sys.argv[2]},{"role":"user","content":"and now?"}]; print(json.dumps(h))' "$H1" "$a1")
a2=$(ask $O $s "$H2"); n=$(nmsgs $O $s); [ "$n" = 4 ] && ok "$OLDV's endpoint matched the resent history with the image (4 messages)" || bad "$OLDV: $n messages after a resent history"
converge $s $N $O
# the history resent to $NEWV without its image (text parts alone)
H3=$($PY -c 'import json,sys; h=json.loads(sys.argv[1]); h[0]["content"]=[p for p in h[0]["content"] if p["type"]=="text"]; h+=[{"role":"assistant","content":sys.argv[2]},{"role":"user","content":"more?"}]; print(json.dumps(h))' "$H2" "$a2")
a3=$(ask $N $s "$H3"); n=$(nmsgs $N $s); [ "$n" = 6 ] && ok "$NEWV matched the history resent without its image (6 messages)" || bad "$NEWV: $n messages after a history without its image"
converge $s $N $O
mid=$(c $O log $s --json | $PY -c 'import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; print(m[-1]["id"])')
f=$(c $O fork $s --at "$mid" 2>$T-model${TAG:-}.err | tail -1) && ok "$OLDV forks the session holding part_notes" || bad "$OLDV fork: $(cat $T-model${TAG:-}.err)"
msgs $O $f | grep -q '"part_notes": \[1\]' && note "  ($OLDV's fork keeps part_notes)" || note "  ($OLDV's fork drops part_notes, as its append keeps only the extra fields it knows)"
imp $N "$(share $O $f --write)"; converge $f $O $N
[ "$(msgs $N $f | head -1)" = "$(msgs $O $f | head -1)" ] && ok "$NEWV holds the fork's image message as $OLDV wrote it" || bad "$NEWV's copy of the fork differs: $(msgs $N $f | head -1)"
H4=$($PY -c 'import json,sys; h=json.loads(sys.argv[1]); h+=[{"role":"assistant","content":sys.argv[2]},{"role":"user","content":"fork q"}]; print(json.dumps(h))' "$H3" "$a3")
ask $N $f "$H4" >/dev/null; n=$(nmsgs $N $f); [ "$n" = 8 ] && ok "$NEWV matched the fork's resent history without its image (8 messages)" || bad "$NEWV fork: $n messages"
H4i=$($PY -c 'import json,sys; h=json.loads(sys.argv[1]); h[0]=json.loads(sys.argv[2])[0]; print(json.dumps(h))' "$H4" "$H1")
ask $O $f "$H4i" >/dev/null || true; converge $f $O $N; n=$(nmsgs $O $f); [ "$n" = 9 ] && ok "$OLDV matched the fork's history with its image (9 messages: all 7 matched, its answer)" || bad "$OLDV fork: $n messages"
c $O add $s --role user "o-after-fork" >/dev/null; converge $s $N $O
msgs $N $s | grep -q '"part_notes": \[1\]' && ok "$NEWV's own image message keeps part_notes after $OLDV's appends" || bad "lost"
c $O clone $s >$T-clone${TAG:-}.out 2>&1 && ok "$OLDV clones it" || bad "$OLDV clone: $(cat $T-clone${TAG:-}.out)"
cl=$(tail -1 $T-clone${TAG:-}.out); imp $N "$(share $O $cl)"; converge $cl $O $N
note "  (a clone copies settings, not messages: $(nmsgs $N $cl) lines)"

rm -f $T-exp${TAG:-}.json; c $N export $s --format json -o $T-exp${TAG:-}.json >/dev/null 2>&1 || bad "$NEWV export json"
grep -q part_notes $T-exp${TAG:-}.json && ok "$NEWV's json export holds part_notes" || note "  ($NEWV's json export has no part_notes)"
$PY -c 'import json,sys; p=sys.argv[1]; d=json.load(open(p)); del d["session"]["id"]; json.dump(d, open(p,"w"))' $T-exp${TAG:-}.json
e=$(c $O import-file $T-exp${TAG:-}.json --format json 2>&1) && ok "$OLDV imports $NEWV's json export ($(printf '%s' "$e" | head -1 | cut -c1-40))" || bad "$OLDV import-file of $NEWV's export: $e"
note "[P2] an image through $OLDV's endpoint (no part_notes), pulled by $NEWV, resent there without the image"
t=$(mk $O "img-old"); c $O set $t --model echo-1 >/dev/null
G1='[{"role": "user", "content": [{"type": "text", "text": "old look"}, '"$IMG"']}]'
b1=$(ask $O $t "$G1")
imp $N "$(share $O $t --write)"; converge $t $O $N
G2=$($PY -c 'import json,sys; h=json.loads(sys.argv[1]); h[0]["content"]=[p for p in h[0]["content"] if p["type"]=="text"]; h+=[{"role":"assistant","content":sys.argv[2]},{"role":"user","content":"again"}]; print(json.dumps(h))' "$G1" "$b1")
ask $N $t "$G2" >/dev/null; n=$(nmsgs $N $t); [ "$n" = 4 ] && ok "$NEWV matched $OLDV's image message resent without the image (4 messages)" || bad "$NEWV: $n messages ($(c $N log $t --short | tr '\n' '|'))"
converge $t $O $N

note "[P3] n>1 answers on either side: tokens_used and quota levels the same everywhere"
q=$(c $N new --name "n3" --model echo-1 --token-quota 400)
imp $O "$(share $N $q --write)"; imp $U "$(share $N $q --write)"
ask $N $q '[{"role":"user","content":"one two three"}]' 3 >/dev/null
converge $q $N $O $U
ask $O $q '[{"role":"user","content":"one two three"},{"role":"assistant","content":"echo: one two three"},{"role":"user","content":"four five"}]' 3 >/dev/null
converge $q $N $O $U
un=$(used $N $q); uo=$(used $O $q); uu=$(used $U $q); note "  tokens_used: new $un, old $uo, old(to upgrade) $uu"
[ "$un" = "$uo" ] && [ "$uo" = "$uu" ] && ok "tokens_used $un the same on $NEWV and both $OLDV devices" || bad "tokens_used differ: $un $uo $uu"
msgs $N $q | tail -1 >&2
sn=$(c $N show $q 2>&1 | grep -i "quota" | head -2 | tr '\n' '|'); so=$(c $O show $q 2>&1 | grep -i "quota" | head -2 | tr '\n' '|'); note "  new: $sn"; note "  old: $so"
[ "$sn" = "$so" ] && ok "show's quota lines the same" || note "  (show's quota lines differ in wording?)"
qn=$(c $N quota $q 2>&1); qo=$(c $O quota $q 2>&1); qu=$(c $U quota $q 2>&1); note "  quota on $NEWV: $(printf '%s' "$qn" | tr '\n' '|')"
[ "$qn" = "$qo" ] && [ "$qo" = "$qu" ] && ok "\`quota\` the same on $NEWV and both $OLDV devices" || bad "quota differs: new $qn | old $qo | up $qu"
r=$(c $U new --name "u-n" --model echo-1 --token-quota 500)
ask $U $r '[{"role":"user","content":"alpha beta gamma delta"}]' 4 >/dev/null
imp $N "$(share $U $r --write)"; converge $r $U $N
ask $N $r '[{"role":"user","content":"alpha beta gamma delta"},{"role":"assistant","content":"echo: alpha beta gamma delta"},{"role":"user","content":"eps"}]' 2 >/dev/null
converge $r $U $N
[ "$(used $U $r)" = "$(used $N $r)" ] && ok "tokens_used of U's own n>1 session $(used $N $r) the same" || bad "r differs: $(used $U $r) $(used $N $r)"
ss=$(c $N stats 2>&1 | head -5 | tr '\n' '|'); note "  new stats: $ss"

note "[P3b] $NEWV: an n>1 answer continued from choice 1 (recorded with tokens 0), pulled by $OLDV: the same quota use"
k=$(c $N new --name "n-went-on" --model echo-1 --token-quota 400)
imp $O "$(share $N $k --write)"; imp $U "$(share $N $k --write)"
ch1=$(PICK=1 ask $N $k '[{"role":"user","content":"two ways"}]' 2); note "  choice 1: $ch1"
ask $N $k "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"two ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"and so?"}]))' "$ch1")" >/dev/null
converge $k $N $O $U
msgs $N $k >&2
msgs $N $k | sed -n 3p | grep -q '"tokens": 0' && ok "$NEWV recorded the chosen answer (3rd message) with tokens 0" || bad "$NEWV's 3rd message: $(msgs $N $k | sed -n 3p)"
[ "$(msgs $N $k)" = "$(msgs $O $k)" ] && [ "$(msgs $N $k)" = "$(msgs $U $k)" ] && ok "$OLDV devices hold the same rows (tokens 0 kept)" || bad "rows differ: old $(msgs $O $k | sed -n 3p)"
un=$(used $N $k); uo=$(used $O $k); uu=$(used $U $k); note "  tokens_used: new $un, old $uo, old(to upgrade) $uu"
[ "$un" = "$uo" ] && [ "$uo" = "$uu" ] && ok "tokens_used $un the same on $NEWV and both $OLDV devices" || bad "tokens_used differ: $un $uo $uu"
qn=$(c $N quota $k 2>&1); qo=$(c $O quota $k 2>&1); qu=$(c $U quota $k 2>&1); note "  quota on $NEWV: $(printf '%s' "$qn" | tr '\n' '|')"
[ "$qn" = "$qo" ] && [ "$qo" = "$qu" ] && ok "\`quota\` the same on $NEWV and both $OLDV devices" || bad "quota differs: new $qn | old $qo | up $qu"
ask $O $k "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"two ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"and so?"},{"role":"assistant","content":"echo: and so?"},{"role":"user","content":"old goes on"}]))' "$ch1")" >/dev/null
converge $k $N $O $U
[ "$(used $N $k)" = "$(used $O $k)" ] && ok "after $OLDV went on: tokens_used $(used $N $k) the same" || bad "after $OLDV went on: $(used $N $k) vs $(used $O $k)"
for pair in "$N $O" "$O $N"; do  # the session as a file: export on one side, import-file on the other
  set -- $pair; rm -f $T-expk$TAG.json; c $1 export $k --format json -o $T-expk$TAG.json >/dev/null 2>&1 || bad "export k on ${VER[$1]}"
  $PY -c 'import json,sys; p=sys.argv[1]; d=json.load(open(p)); del d["session"]["id"]; json.dump(d, open(p,"w"))' $T-expk$TAG.json
  kf=$(c $2 import-file $T-expk$TAG.json --format json 2>&1 | tail -1)
  [ "$(used $2 "$kf")" = "$(used $1 $k)" ] && ok "import-file on ${VER[$2]} of ${VER[$1]}'s export of k: tokens_used $(used $2 "$kf") the same" || bad "import-file on ${VER[$2]}: $(used $2 "$kf") ($kf) vs $(used $1 $k)"
done
s2=$(c $N new --name "n-went-on-streamed" --model echo-1 --token-quota 400); imp $O "$(share $N $s2 --write)"
ch1=$(PICK=1 STREAM=1 ask $N $s2 '[{"role":"user","content":"two ways"}]' 2); note "  streamed choice 1: $ch1"
ask $N $s2 "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"two ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"and so?"}]))' "$ch1")" >/dev/null
converge $s2 $N $O
msgs $O $s2 | sed -n 3p | grep -q '"tokens": 0' && [ "$(used $N $s2)" = "$(used $O $s2)" ] && ok "streamed: the chosen answer tokens 0 on $OLDV too, tokens_used $(used $O $s2) the same" || bad "streamed: $(msgs $O $s2 | sed -n 3p) $(used $N $s2) vs $(used $O $s2)"

note "[P3c] context_tokens (since 0.40.0): an n>1 answer continued from choice 2, made on either side, pulled by the other"
# an old release from 0.40.0 on records context_tokens and counts them in the context too (the contexts 0 apart);
# before, it records none and counts the answer as 0 in the context (the contexts the answer's context_tokens apart)
OLDCTX=0; [ "$(printf '%s\n' 0.40.0 "$OLDV" | sort -V | head -1)" = 0.40.0 ] && OLDCTX=1
ctx() { c $1 context $2 --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["active_tokens"])'; }
row3() { c $1 log $2 --json | $PY -c '
import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; x=m[2]
print(x.get("role"), x.get("tokens"), x.get("context_tokens"))'; }
went_on() {  # went_on HOME SID: asks n=3, goes on from choice 2 -> that choice's text
  local ch; ch=$(PICK=2 ask $1 $2 '[{"role":"user","content":"three ways"}]' 3) || return 1
  ask $1 $2 "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"three ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"so?"}]))' "$ch")" >/dev/null
  printf '%s\n' "$ch"
}
c3=$(c $N new --name "n3-went-on-new" --model echo-1 --token-quota 400)
imp $O "$(share $N $c3 --write)"; imp $U "$(share $N $c3 --write)"
ch=$(went_on $N $c3); note "  choice 2 on $NEWV: $ch"
converge $c3 $N $O $U
set -- $(row3 $N $c3); xt=${3:-}
[ "$1 $2" = "assistant 0" ] && [ -n "$xt" ] && [ "$xt" != None ] && [ "$xt" -gt 0 ] && ok "$NEWV recorded choice 2 (3rd message) with tokens 0, context_tokens $xt" || bad "$NEWV's 3rd message: $*"
un=$(used $N $c3); uo=$(used $O $c3); uu=$(used $U $c3)
[ "$un" = "$uo" ] && [ "$uo" = "$uu" ] && ok "tokens_used $un the same on $NEWV and both $OLDV devices (the quota charged the same)" || bad "tokens_used differ: $un $uo $uu"
qn=$(c $N quota $c3 2>&1); qo=$(c $O quota $c3 2>&1)
[ "$qn" = "$qo" ] && ok "\`quota\` the same on both" || bad "quota differs: new $qn | old $qo"
xn=$(ctx $N $c3); xo=$(ctx $O $c3); note "  context: $NEWV $xn, $OLDV $xo, context_tokens $xt"
gap=$((OLDCTX ? 0 : xt))
[ -n "$xt" ] && [ "$xn" = $((xo + gap)) ] && ok "$OLDV's context counts the answer as $((xt - gap)) ($xo = $xn - $gap: its documented behaviour)" || bad "context: new $xn, old $xo, context_tokens $xt"
ask $O $c3 "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"three ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"so?"},{"role":"assistant","content":"echo: so?"},{"role":"user","content":"old goes on"}]))' "$ch")" >/dev/null
converge $c3 $N $O
[ "$(row3 $N $c3)" = "assistant 0 $xt" ] && [ "$(used $N $c3)" = "$(used $O $c3)" ] && ok "after $OLDV went on: the row kept, tokens_used $(used $N $c3) the same" || bad "after $OLDV went on: $(row3 $N $c3), $(used $N $c3) vs $(used $O $c3)"
[ "$(ctx $N $c3)" = $(($(ctx $O $c3) + gap)) ] && ok "after $OLDV went on: contexts still $gap apart" || bad "after $OLDV went on: context new $(ctx $N $c3) old $(ctx $O $c3)"
d3=$(c $O new --name "n3-went-on-old" --model echo-1 --token-quota 400)
imp $N "$(share $O $d3 --write)"
ch=$(went_on $O $d3); note "  choice 2 on $OLDV: $ch"
converge $d3 $O $N
set -- $(row3 $N $d3)
[ "$*" = "$(row3 $O $d3)" ] && [ "$1 $2" = "assistant 0" ] && { [ $OLDCTX = 1 ] && [ "$3" -gt 0 ] 2>/dev/null || [ "$OLDCTX $3" = "0 None" ]; } && ok "$NEWV holds $OLDV's choice 2 as it wrote it: tokens 0, context_tokens $3" || bad "$NEWV's copy of $OLDV's 3rd message: $*"
[ "$(used $N $d3)" = "$(used $O $d3)" ] && ok "tokens_used $(used $N $d3) the same" || bad "tokens_used: new $(used $N $d3) old $(used $O $d3)"
xn=$(ctx $N $d3); xo=$(ctx $O $d3)
[ "$xn" = "$xo" ] && ok "$NEWV's context counts $OLDV's answer as $OLDV does: $xn on both" || bad "context of $OLDV's session: new $xn old $xo"
ask $N $d3 "$($PY -c 'import json,sys; print(json.dumps([{"role":"user","content":"three ways"},{"role":"assistant","content":sys.argv[1]},{"role":"user","content":"so?"},{"role":"assistant","content":"echo: so?"},{"role":"user","content":"new goes on"}]))' "$ch")" >/dev/null
converge $d3 $O $N; n=$(nmsgs $N $d3)
[ "$n" = 7 ] && [ "$(used $N $d3)" = "$(used $O $d3)" ] && [ "$(ctx $N $d3)" = "$(ctx $O $d3)" ] && ok "$NEWV went on from it (7 messages): tokens_used and context the same" || bad "$NEWV went on: $n messages, used $(used $N $d3)/$(used $O $d3), context $(ctx $N $d3)/$(ctx $O $d3)"

note "[P3d] xAI's usage (reasoning counted beside completion_tokens): $NEWV records it within them (charged), $OLDV as it came (uncharged, its known behaviour); each pulled by the other: one charge on every device, no recount"
urow() {  # urow HOME SID I -> message I's tokens, usage's prompt_tokens and completion_tokens
  c $1 log $2 --json | $PY -c '
import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; x=m[int(sys.argv[1])]; u=x.get("usage") or {}
print(x.get("tokens"), u.get("prompt_tokens"), u.get("completion_tokens"))' $3; }
X1='[{"role":"user","content":"one two three"}]'
X2='[{"role":"user","content":"one two three"},{"role":"assistant","content":"echo: one two three"},{"role":"user","content":"four five six"}]'
X3='[{"role":"user","content":"one two three"},{"role":"assistant","content":"echo: one two three"},{"role":"user","content":"four five six"},{"role":"assistant","content":"echo: four five six"},{"role":"user","content":"seven eight nine"}]'
same_charge() {  # same_charge SID WHAT HOME...: tokens_used, quota and context the same on every HOME
  local sid=$1 what=$2 h u0 q0 x0 same=1; shift 2; u0=$(used $1 $sid); q0=$(c $1 quota $sid 2>&1); x0=$(ctx $1 $sid)
  for h in "${@:2}"; do [ "$(used $h $sid)" = "$u0" ] && [ "$(c $h quota $sid 2>&1)" = "$q0" ] && [ "$(ctx $h $sid)" = "$x0" ] || same=0; done
  [ $same = 1 ] && ok "$what: tokens_used $u0, \`quota\` and context $x0 the same on $(for h in "$@"; do printf '%s ' ${VER[$h]}; done)" || bad "$what: $(for h in "$@"; do printf '%s(%s) used %s ctx %s | ' $h ${VER[$h]} "$(used $h $sid)" "$(ctx $h $sid)"; done)"
}
x1=$(c $N new --name "xai-new" --model echo-1 --provider xai --token-quota 5000)
imp $O "$(share $N $x1 --write)"; imp $U "$(share $N $x1 --write)"
ask $N $x1 "$X1" >/dev/null; STREAM=1 ask $N $x1 "$X2" >/dev/null
converge $x1 $N $O $U
r1=$(urow $N $x1 1); r3=$(urow $N $x1 3); set -- $r1
[ "$1 $3" = "4 $((4 + XR))" ] && [ "$r3" = "$(set -- $r3; echo 4 $2 $((4 + XR)))" ] && ok "$NEWV recorded both answers (plain, streamed) with their own 4 tokens, completion_tokens 4 + $XR reasoning" || bad "$NEWV's xAI answers: $r1 | $r3"
[ "$(msgs $N $x1)" = "$(msgs $O $x1)" ] && [ "$(msgs $N $x1)" = "$(msgs $U $x1)" ] && ok "$OLDV devices hold the same rows (the reasoning within completion_tokens kept)" || bad "rows differ: $(urow $O $x1 1) on $OLDV"
un=$(used $N $x1); [ -n "$un" ] && [ "$un" -ge $((2 * XR)) ] && ok "$NEWV charged the reasoning of both answers: tokens_used $un >= 2 x $XR" || bad "$NEWV's tokens_used $un lacks the reasoning"
same_charge $x1 "recorded on $NEWV" $N $O $U
ask $O $x1 "$X3" >/dev/null; converge $x1 $N $O $U
set -- $(urow $N $x1 5); [ "$1 $3" = "4 4" ] && ok "$OLDV went on: its answer recorded as xAI counted it (completion_tokens 4, the reasoning uncharged), held so on $NEWV" || bad "$OLDV's answer in x1 on $NEWV: $*"
same_charge $x1 "after $OLDV went on" $N $O $U
x2=$(c $O new --name "xai-old" --model echo-1 --provider xai --token-quota 5000)
imp $N "$(share $O $x2 --write)"
ask $O $x2 "$X1" >/dev/null; STREAM=1 ask $O $x2 "$X2" >/dev/null
converge $x2 $O $N
r1=$(urow $N $x2 1); r3=$(urow $N $x2 3)
[ "$(set -- $r1; echo $1 $3) $(set -- $r3; echo $1 $3)" = "4 4 4 4" ] && ok "$NEWV holds $OLDV's answers as recorded: completion_tokens 4, the reasoning not in them" || bad "$NEWV's copy of $OLDV's xAI answers: $r1 | $r3"
uo=$(used $O $x2); [ -n "$uo" ] && [ "$uo" -lt $XR ] && ok "no recount: tokens_used $uo, no reasoning charged" || bad "tokens_used of $OLDV's xAI session: $uo"
same_charge $x2 "recorded on $OLDV" $O $N
ask $N $x2 "$X3" >/dev/null; converge $x2 $O $N
set -- $(urow $O $x2 5); [ "$1 $3" = "4 $((4 + XR))" ] && ok "$NEWV went on: its answer charged (completion_tokens 4 + $XR), held so on $OLDV" || bad "$NEWV's answer in x2 on $OLDV: $*"
same_charge $x2 "after $NEWV went on" $O $N

note "[P4] U ($OLDV): a rekey and a rekey --drop done, images, then upgraded in place to $NEWV (migration 34)"
imp $U "$(share $N $s --write)"; converge $s $N $U
c $U rekey $r >/dev/null || bad "U rekey r"
z=$(mk $U "z"); c $U set $z --model echo-1 >/dev/null; code=$(share $U $z --write); imp $N "$code"; imp $O "$code"
ask $U $z '[{"role":"user","content":[{"type":"text","text":"zz"},'"$IMG"']}]' 2 >/dev/null
c $O add $z --role user "o-z" >/dev/null; converge $z $U $N $O
c $U rekey $z --drop "$(devid $O)" >/dev/null || bad "U rekey --drop O"
c $U add $z --role user "u-after-drop" >/dev/null; converge $z $U $N
c $U compact $z --target-tokens 10 >/dev/null 2>&1 || note "  (compact z refused)"
c $U checkpoint $q >/dev/null 2>&1 || note "  (checkpoint q refused)"
kmid=$(c $U log $k --json | $PY -c 'import json,sys; d=json.load(sys.stdin); m=d["messages"] if isinstance(d,dict) else d; print(m[3]["id"])')
uf=$(c $U fork $k --at "$kmid" 2>$T-model${TAG:-}.err | tail -1); [ -n "$uf" ] && ok "$OLDV (to upgrade) forks the session holding the tokens-0 row: $uf" || bad "U fork k: $(cat $T-model${TAG:-}.err)"
imp $N "$(share $U $uf)"
for h in $U $N; do c $h sync --wait >/dev/null 2>&1; done
declare -A BEFORE
for sid in $(c $U ls --json | $PY -c 'import json,sys; d=json.load(sys.stdin); d=d.get("sessions", d) if isinstance(d,dict) else d; print(" ".join(x["id"] for x in d))'); do BEFORE[$sid]=$(used $U $sid); done
note "  before: $(for k in "${!BEFORE[@]}"; do printf '%s=%s ' $k ${BEFORE[$k]}; done)"
stb=$(c $U stats 2>&1)
stop $U; start new $U
sta=$(c $U stats 2>&1); [ "$stb" = "$sta" ] && ok "stats on U the same before and after the upgrade (migration 34 left $OLDV forks alone)" || bad "stats changed by the upgrade: before $(printf '%s' "$stb" | tr '\n' '|') after $(printf '%s' "$sta" | tr '\n' '|')"
converge $c3 $U $N >/dev/null 2>&1; xu=$(ctx $U $c3); xn=$(ctx $N $c3)
[ "$xu" = "$xn" ] && ok "upgraded U counts the pulled context_tokens in its context (migration 36): $xu as $NEWV's" || bad "upgraded U's context of $c3 $xu, $NEWV's $xn"
ver=$(c $U status --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d.get("version"), d.get("schema"))'); note "  upgraded: $ver"
c $U sync --wait >/dev/null 2>&1
c $U rekey $q >/dev/null || bad "upgraded rekey q"; c $N add $q --role user "n-after-upgraded-rekey" >/dev/null; converge $q $U $N $O
F=$T-x${TAG:-}-fresh; cfg $F; start new $F
for sid in "${!BEFORE[@]}"; do
  imp $F "$(share $U $sid)" || continue
  c $F sync --wait >/dev/null 2>&1
  converge $sid $U $F >/dev/null 2>&1
  a=$(used $U $sid); b=$(used $F $sid)
  [ "$a" = "$b" ] && ok "session $sid: upgraded tokens_used $a (was ${BEFORE[$sid]}) = a fresh $NEWV pull's $b" || bad "session $sid: upgraded $a (was ${BEFORE[$sid]}), fresh pull $b"
done
ask $U $z '[{"role":"user","content":[{"type":"text","text":"zz"}]}]' >/dev/null; n=$(nmsgs $U $z); note "  z after a resent history on the upgraded home: $n messages ($(c $U log $z --short | tr '\n' '|' | cut -c1-300))"
verify $N $U $F; doctor $N $U $F
out=$(c $O verify 2>&1) && bad "verify on O (dropped from z) passed" || { [ "$(printf '%s\n' "$out" | grep -c '^FAILED')" = 1 ] && printf '%s' "$out" | grep -q "$z" && ok "verify O: only z fails, as revoked" || bad "verify O: $out"; }
note "=== $PASSES ok, $FAILS failed"
[ $FAILS = 0 ]
