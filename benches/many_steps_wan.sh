#!/usr/bin/env bash
# Many CLI sync steps (a fresh process each, as a user or cron runs them) against a repository
# served by `prism-sync serve` behind `wan-proxy` (a slow link on loopback); at checkpoints 10,
# 100, 1000 (up to --steps) times a no-change `sync`, `history NAME notes.txt` (medians of 3)
# and `restore NAME --at T --path notes.txt` (median of 3), and counts the served repository's
# objects and the requests `serve --log-requests` saw for one `history` and one `restore --at`;
# `history NAME d0/f0.txt` (a file never edited: one version at any age); then, with the daemon
# keeping the set (`prism-sync start`, a full rescan every second), the daemon's own duration of a
# no-change step (`last_step_ms` in `status --json`, median of 3 steps) and `history`/`restore
# --at` as fresh processes while it runs.
#
#   benches/many_steps_wan.sh [--steps 1000] [--files 2000] [--maintain-every 100]
#                             [--rtt-ms 40] [--mbit 200] [--work DIR]
#
# PRISM_SYNC_BIN: the binary (default $CARGO_TARGET_DIR/release/prism-sync). Results of recorded
# runs are in benches/README.md §12. Not part of `cargo test` (tens of minutes).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
KIT="${PRISM_BENCH_KIT:-$REPO_ROOT/../shared/bench}"
[ -x "$KIT/wan-proxy" ] || KIT=/work/shared/bench
BIN="${PRISM_SYNC_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/prism-sync}"
STEPS=1000; FILES=2000; EVERY=100; RTT=40; MBIT=200
WORK="${TMPDIR:-/tmp}/prism-many-steps-wan"
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --files) FILES="$2"; shift 2 ;;
        --maintain-every) EVERY="$2"; shift 2 ;;
        --rtt-ms) RTT="$2"; shift 2 ;;
        --mbit) MBIT="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rm -rf "$WORK"; mkdir -p "$WORK/served" "$WORK/folder"
export PRISM_HOME="$WORK/home" PRISM_SYNC_INSECURE_TEST_KDF=1
unset PRISM_SYNC_PASSWORD PRISM_SYNC_REPO
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"
export PRISM_SYNC_REST_TOKEN="$(cat "$WORK/token")"
SP=$(free_port); PP=$(free_port)
"$BIN" serve --listen "127.0.0.1:$SP" --repo "$WORK/served" --token-file "$WORK/token" --log-requests 2> "$WORK/serve.log" &
SERVE=$!
"$KIT/wan-proxy" --listen "127.0.0.1:$PP" --to "127.0.0.1:$SP" --rtt-ms "$RTT" --mbit "$MBIT" 2> "$WORK/proxy.log" &
PROXY=$!
trap '"$BIN" stop w > /dev/null 2>&1; kill $SERVE $PROXY 2>/dev/null || true' EXIT
sleep 1
python3 - "$WORK/folder" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 40}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"file {i}\n" * 20)
PY
echo v0 > "$WORK/folder/notes.txt"
"$BIN" init "$WORK/folder" --repo "rest:http://127.0.0.1:$PP/" --name w > /dev/null
"$BIN" sync w > /dev/null
ms() { python3 -c 'import sys; print(round(float(sys.argv[1])*1000))' "$1"; }
timed() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); python3 -c 'import sys; print(float(sys.argv[2])-float(sys.argv[1]))' "$t0" "$t1"; }
med3() { local a b c; a=$(timed "$@"); b=$(timed "$@"); c=$(timed "$@"); printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -g | sed -n 2p; }
reqs() { awk 'NF >= 5 && $3 != "CONNECT"' "$WORK/serve.log" | wc -l; }
requests() { local before; before=$(reqs); "$@" > /dev/null; echo $(( $(reqs) - before )); }
# The daemon's duration of 3 no-change steps (median), from `status --json`.
daemon_step() {
    python3 - "$BIN" <<'PY'
import json, subprocess, sys, time
seen, v, deadline = None, [], time.time() + 180
while len(v) < 3 and time.time() < deadline:
    time.sleep(0.3)
    o = subprocess.run([sys.argv[1], "--json", "status", "w"], capture_output=True, text=True)
    try:
        live = json.loads(o.stdout)["daemon"]["live"]
    except Exception:
        continue
    if not live or live.get("last_step_ms") is None or live.get("steps", 0) < 2:
        continue
    if seen is not None and live["steps"] != seen:
        v.append(live["last_step_ms"])
    seen = live["steps"]
v.sort()
print(v[1] if len(v) == 3 else "n/a")
PY
}
echo "| steps | no-change sync | history | history d0/f0.txt | restore --at | history requests | restore requests | daemon step | daemon: history | restore --at | packs | index files | snapshots | repository |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
AT5=""; n=0; started=$(date +%s)
for cp in 10 100 1000 10000; do
    [ "$cp" -le "$STEPS" ] || break
    while [ "$n" -lt "$cp" ]; do
        n=$((n + 1))
        echo "v$n" > "$WORK/folder/notes.txt"
        "$BIN" sync w > /dev/null
        if [ "$n" -eq 5 ]; then sleep 1.1; AT5=$(date '+%Y-%m-%d %H:%M:%S'); sleep 1.1; fi
        if [ "$EVERY" -gt 0 ] && [ $((n % EVERY)) -eq 0 ]; then "$BIN" maintain w > /dev/null; fi
    done
    s=$(med3 "$BIN" sync w)
    h=$(med3 "$BIN" history w notes.txt)
    hf=$(med3 "$BIN" history w d0/f0.txt)
    r=$(med3 bash -c "rm -rf '$WORK/rt' && '$BIN' restore w --at '$AT5' --path notes.txt --target '$WORK/rt'")
    hq=$(requests "$BIN" history w notes.txt)
    rm -rf "$WORK/rt"; rq=$(requests "$BIN" restore w --at "$AT5" --path notes.txt --target "$WORK/rt")
    PRISM_SYNC_FULL_RESCAN_S=1 "$BIN" start w > /dev/null
    ds=$(daemon_step)
    dh=$(med3 "$BIN" history w notes.txt)
    dr=$(med3 bash -c "rm -rf '$WORK/rt' && '$BIN' restore w --at '$AT5' --path notes.txt --target '$WORK/rt'")
    "$BIN" stop w > /dev/null
    while "$BIN" --json status w 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["daemon"]["running"] else 1)'; do sleep 0.2; done
    packs=$(find "$WORK/served/data" -type f | wc -l)
    idx=$(find "$WORK/served/index" -type f | wc -l)
    snaps=$(find "$WORK/served/snapshots" -type f | wc -l)
    size=$(du -sm "$WORK/served" | cut -f1)
    echo "| $cp | $(ms "$s") ms | $(ms "$h") ms | $(ms "$hf") ms | $(ms "$r") ms | $hq | $rq | $ds ms | $(ms "$dh") ms | $(ms "$dr") ms | $packs | $idx | $snaps | $size MiB |"
done
echo "$n steps, $FILES files, maintain every $EVERY steps, in $(( $(date +%s) - started )) s" >&2
