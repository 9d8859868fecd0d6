#!/usr/bin/env bash
# Run more.sh or model.sh through a relay of version RV (new|old). Usage: MIXED_OLD=... bench/mixed/relay.sh RV more|model
RV=$1; HERE=$(cd "$(dirname "$0")" && pwd); NEWDIR=${MIXED_NEW:-$(cd "$HERE/../.." && pwd)}; PY=$NEWDIR/.venv/bin/python
OLDROOT=${MIXED_OLD:?}; PYOLD=$OLDROOT/.venv/bin/python; T=${MIXED_TMP:-/tmp/mixed}
D=$T-relaydata-x$RV-$2; rm -rf $D
if [ $RV = new ]; then (cd $NEWDIR; exec env -u PYTHONPATH $PY -m sessiond.cli.main serve --listen 127.0.0.1:0 --data $D --open-registration --json) >$T-x$RV-$2.out 2>$T-x$RV-$2.err &
else (cd $OLDROOT/sessiond; PYTHONPATH=$OLDROOT exec $PYOLD -m sessiond.cli.main serve --listen 127.0.0.1:0 --data $D --open-registration --json) >$T-x$RV-$2.out 2>$T-x$RV-$2.err & fi
RP=$!; trap 'kill $RP' EXIT
for i in $(seq 100); do [ -s $T-x$RV-$2.out ] && break; sleep 0.1; done
export MIXED_STORE=$($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d.get("url") or d.get("store") or d)' $T-x$RV-$2.out)
echo "relay $RV at $MIXED_STORE" >&2
TAG=r$RV $HERE/$2.sh
