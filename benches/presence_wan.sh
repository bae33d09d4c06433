#!/usr/bin/env bash
# What presence (the daemon's heartbeat that makes an endpoint "connected" in `status`) costs
# over a remote repository behind the 40 ms link: `status` without and with a presence object,
# the requests an idle daemon sends to `presence/` in 125 s (default 60 s interval), and a clean
# `stop`. Requests are counted from `prism-sync serve --log-requests`.
#
#   benches/presence_wan.sh [PRISM_SYNC_BINARY]     (default: target/debug/prism-sync)
#
# Needs /work/shared/bench/wan-proxy (or WAN_PROXY=path), bc. Takes about 2.5 minutes.
set -euo pipefail
B=${1:-target/debug/prism-sync}
B=$(realpath "$B")
WAN_PROXY=${WAN_PROXY:-/work/shared/bench/wan-proxy}
D=$(mktemp -d)
echo "bench-token-0123456789abcdef" > "$D/tok"
PA=${PORT_A:-47811}; PB=${PORT_B:-47812}
"$B" serve --listen 127.0.0.1:$PA --repo "$D/served" --token-file "$D/tok" --log-requests \
    2>"$D/serve.log" >/dev/null &
SP=$!
"$WAN_PROXY" --listen 127.0.0.1:$PB --to 127.0.0.1:$PA --rtt-ms 40 --mbit 200 >/dev/null 2>&1 &
WP=$!
trap 'PRISM_HOME="$D/h" "$B" stop s >/dev/null 2>&1 || true; kill $SP $WP 2>/dev/null || true' EXIT
sleep 1
export PRISM_HOME="$D/h" HOME="$D/h" PRISM_SYNC_REST_TOKEN=bench-token-0123456789abcdef NO_COLOR=1
mkdir -p "$D/f" "$D/h"
for i in $(seq 1 50); do echo "file $i" > "$D/f/f$i.txt"; done
"$B" init "$D/f" --repo "rest:http://127.0.0.1:$PB/" --name s >/dev/null
"$B" sync s >/dev/null
n() { grep -v CONNECT "$D/serve.log" | wc -l; }
p() { grep -v CONNECT "$D/serve.log" | grep -c "presence/" || true; }
st() {
    local a b t0 t1
    a=$(n); b=$(p); t0=$(date +%s.%N)
    "$B" --json status s >/dev/null
    t1=$(date +%s.%N); sleep 0.2
    echo "status: $(echo "$t1 - $t0" | bc) s, $(( $(n) - a )) requests ($(( $(p) - b )) presence)"
}
echo "--- no daemon ever ran (no presence objects)"; st; st; st
"$B" start s >/dev/null 2>&1
sleep 3
echo "--- daemon running"; st; st; st
a=$(p); sleep 125
echo "--- idle daemon, 125 s: $(( $(p) - a )) presence requests:"
grep -v CONNECT "$D/serve.log" | grep "presence/" | tail -n $(( $(p) - a )) | awk '{print $3, $4}' \
    | sed 's/[0-9a-f]\{16\}-[0-9a-f]\{16\}-[0-9a-f]\{16\}/<name>/' | sort | uniq -c
a=$(p); "$B" stop s >/dev/null 2>&1; sleep 1
echo "--- stop: $(( $(p) - a )) presence requests"
