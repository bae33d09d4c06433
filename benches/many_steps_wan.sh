#!/usr/bin/env bash
# Many CLI sync steps (a fresh process each, as a user or cron runs them) against a repository
# served by `prism-sync serve` behind `wan-proxy` (a slow link on loopback); at checkpoints 10,
# 100, 1000 (up to --steps) times a no-change `sync`, `history NAME notes.txt`, `history NAME
# d0/f0.txt` (a file never edited: one version at any age) and `restore NAME --at T --path
# notes.txt` (each the median of 3 fresh processes after one warm-up run, as a user's metadata
# cache would be warm), and counts the served repository's objects and the requests `serve
# --log-requests` saw for one `history` and one `restore --at`; then, with the daemon keeping
# the set (`prism-sync start`, a full rescan every second), the daemon's own duration of a
# no-change step (`last_step_ms` in `status --json`, median of 3 steps) and `history`/`restore
# --at` as fresh processes while it runs.
#
#   benches/many_steps_wan.sh [--steps 1000] [--files 2000] [--maintain-every 100]
#                             [--rtt-ms 40] [--mbit 200] [--work DIR]
#   benches/many_steps_wan.sh --existing DIR [--existing DIR2 ...] [--rounds 1]
#                             [--rtt-ms 40] [--mbit 200]
#
# --existing DIR: no step is made; DIR is a run of `benches/many_steps.rs` (its PRISM_BENCH_WORK:
# home/, folder/, repo/, at_step5, steps) and is changed in place, so give it a copy. Each DIR's
# repo/ gets its own `serve` and proxy, its set's config (home/sync/NAME.yml) is pointed at the
# link and at DIR/folder, and one `prism-sync maintain NAME` runs through the link first (timed;
# retention and prune are then not due while measuring). Then --rounds rounds, each measuring
# one row per DIR in turn (interleaved, so the sizes see the same load).
#
# PRISM_SYNC_BIN: the binary (default $CARGO_TARGET_DIR/release/prism-sync). Results of recorded
# runs are in benches/README.md §12. Not part of `cargo test` (tens of minutes).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
KIT="${PRISM_BENCH_KIT:-$REPO_ROOT/../shared/bench}"
[ -x "$KIT/wan-proxy" ] || KIT=/work/shared/bench
BIN="${PRISM_SYNC_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/prism-sync}"
STEPS=1000; FILES=2000; EVERY=100; RTT=40; MBIT=200; ROUNDS=1
WORK="${TMPDIR:-/tmp}/prism-many-steps-wan"; EXISTING=()
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --files) FILES="$2"; shift 2 ;;
        --maintain-every) EVERY="$2"; shift 2 ;;
        --rtt-ms) RTT="$2"; shift 2 ;;
        --mbit) MBIT="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --existing) EXISTING+=("$2"); shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export PRISM_SYNC_INSECURE_TEST_KDF=1
unset PRISM_SYNC_PASSWORD PRISM_SYNC_REPO
PRISM_SYNC_REST_TOKEN="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PRISM_SYNC_REST_TOKEN
PIDS=(); HOMES=(); SETS=()
cleanup() {
    local i
    for i in "${!HOMES[@]}"; do PRISM_HOME="${HOMES[$i]}" "$BIN" stop "${SETS[$i]}" > /dev/null 2>&1 || true; done
    [ "${#PIDS[@]}" -eq 0 ] || kill "${PIDS[@]}" 2> /dev/null || true
}
trap cleanup EXIT
# `serve` of directory $1 (its request log in $2/serve.log) behind a proxy; sets PP, the
# proxy's port.
serve_behind_proxy() {
    local sp
    printf '%s' "$PRISM_SYNC_REST_TOKEN" > "$2/token"
    sp=$(free_port); PP=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$sp" --repo "$1" --token-file "$2/token" --log-requests > "$2/serve.out" 2> "$2/serve.log" &
    PIDS+=($!)
    "$KIT/wan-proxy" --listen "127.0.0.1:$PP" --to "127.0.0.1:$sp" --rtt-ms "$RTT" --mbit "$MBIT" 2> "$2/proxy.log" &
    PIDS+=($!)
    sleep 1
}
# The directory measured: WORK (home, folder, serve.log), SERVED (the repository), SET, AT5.
use() { WORK="$1"; SERVED="$2"; SET="$3"; AT5="$4"; export PRISM_HOME="$WORK/home"; }
ms() { python3 -c 'import sys; print(round(float(sys.argv[1])*1000))' "$1"; }
timed() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); python3 -c 'import sys; print(float(sys.argv[2])-float(sys.argv[1]))' "$t0" "$t1"; }
# One warm-up run, then the median of 3.
med3() { local a b c; "$@" > /dev/null; a=$(timed "$@"); b=$(timed "$@"); c=$(timed "$@"); printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -g | sed -n 2p; }
reqs() { awk 'NF >= 5 && $3 != "CONNECT"' "$WORK/serve.log" | wc -l; }
requests() { local before; before=$(reqs); "$@" > /dev/null; echo $(( $(reqs) - before )); }
# The daemon's duration of 3 no-change steps (median), from `status --json`.
daemon_step() {
    python3 - "$BIN" "$SET" <<'PY'
import json, subprocess, sys, time
seen, v, deadline = None, [], time.time() + 180
while len(v) < 3 and time.time() < deadline:
    time.sleep(0.3)
    o = subprocess.run([sys.argv[1], "--json", "status", sys.argv[2]], capture_output=True, text=True)
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
restore_at() { rm -rf "$WORK/rt" && "$BIN" restore "$SET" --at "$AT5" --path notes.txt --target "$WORK/rt"; }
# The table's row for the set in use (label $1). Repository: bytes on disk (one 4 KiB block at
# least per object), in brackets the objects' own bytes.
row() {
    local s h hf r hq rq ds dh dr packs idx snaps size bytes
    s=$(med3 "$BIN" sync "$SET")
    h=$(med3 "$BIN" history "$SET" notes.txt)
    hf=$(med3 "$BIN" history "$SET" d0/f0.txt)
    r=$(med3 restore_at)
    hq=$(requests "$BIN" history "$SET" notes.txt)
    rq=$(requests restore_at)
    PRISM_SYNC_FULL_RESCAN_S=1 "$BIN" start "$SET" > /dev/null
    ds=$(daemon_step)
    dh=$(med3 "$BIN" history "$SET" notes.txt)
    dr=$(med3 restore_at)
    "$BIN" stop "$SET" > /dev/null
    while "$BIN" --json status "$SET" 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["daemon"]["running"] else 1)'; do sleep 0.2; done
    packs=$(find "$SERVED/data" -type f | wc -l)
    idx=$(find "$SERVED/index" -type f | wc -l)
    snaps=$(find "$SERVED/snapshots" -type f | wc -l)
    size=$(du -sm "$SERVED" | cut -f1)
    bytes=$(du -s --apparent-size --block-size=1 "$SERVED" | cut -f1)
    echo "| $1 | $(ms "$s") ms | $(ms "$h") ms | $(ms "$hf") ms | $(ms "$r") ms | $hq | $rq | $ds ms | $(ms "$dh") ms | $(ms "$dr") ms | $packs | $idx | $snaps | $size ($(python3 -c 'import sys; print(round(int(sys.argv[1]) / 2**20, 1))' "$bytes")) MiB |"
    echo "row $1 done $(date -u +%H:%M:%S), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}
header() {
    echo "| steps | no-change sync | history | history d0/f0.txt | restore --at | history requests | restore requests | daemon step | daemon: history | restore --at | packs | index files | snapshots | repository |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

if [ "${#EXISTING[@]}" -gt 0 ]; then
    W=(); S=(); A=()
    for d in "${EXISTING[@]}"; do
        w="$(cd "$d" && pwd)"
        for f in home/sync folder repo at_step5 steps; do
            [ -e "$w/$f" ] || { echo "--existing $d: no $f there (give the PRISM_BENCH_WORK directory of a many_steps run)" >&2; exit 2; }
        done
        cfgs=$(find "$w/home/sync" -maxdepth 1 -name '*.yml' ! -name daemon.yml)
        [ "$(echo "$cfgs" | wc -l)" -eq 1 ] || { echo "--existing $d: expected one sync set in home/sync, found: $cfgs" >&2; exit 2; }
        set_name=$(basename "$cfgs" .yml)
        serve_behind_proxy "$w/repo" "$w"
        # The set's repository through the link, its folder where DIR is now.
        python3 - "$cfgs" "rest:http://127.0.0.1:$PP/" "$w/folder" <<'PY'
import re, sys
path, repo, folder = sys.argv[1:]
text = open(path).read()
text = re.sub(r"(?m)^repo: .*$", "repo: " + repo, text)
text = re.sub(r"(?m)^local_path: .*$", "local_path: " + folder, text)
open(path, "w").write(text)
PY
        W+=("$w"); S+=("$set_name"); A+=("$(cat "$w/at_step5")")
        HOMES+=("$w/home"); SETS+=("$set_name")
    done
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for i in "${!W[@]}"; do
        use "${W[$i]}" "${W[$i]}/repo" "${S[$i]}" "${A[$i]}"
        t=$(timed "$BIN" maintain "$SET")
        echo "maintain of $(cat "$WORK/steps") steps through the link: $(ms "$t") ms, $(reqs) requests" >&2
    done
    header
    for round in $(seq 1 "$ROUNDS"); do
        for i in "${!W[@]}"; do
            use "${W[$i]}" "${W[$i]}/repo" "${S[$i]}" "${A[$i]}"
            row "$(cat "$WORK/steps")"
        done
        echo "round $round done" >&2
    done
    exit 0
fi

rm -rf "$WORK"; mkdir -p "$WORK/served" "$WORK/folder"
use "$WORK" "$WORK/served" w ""
HOMES+=("$WORK/home"); SETS+=(w)
serve_behind_proxy "$SERVED" "$WORK"
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
"$BIN" init "$WORK/folder" --repo "rest:http://127.0.0.1:$PP/" --name "$SET" > /dev/null
"$BIN" sync "$SET" > /dev/null
header
n=0; started=$(date +%s)
for cp in 10 100 1000 10000; do
    [ "$cp" -le "$STEPS" ] || break
    while [ "$n" -lt "$cp" ]; do
        n=$((n + 1))
        echo "v$n" > "$WORK/folder/notes.txt"
        "$BIN" sync "$SET" > /dev/null
        if [ "$n" -eq 5 ]; then sleep 1.1; AT5=$(date '+%Y-%m-%d %H:%M:%S'); sleep 1.1; fi
        if [ "$EVERY" -gt 0 ] && [ $((n % EVERY)) -eq 0 ]; then "$BIN" maintain "$SET" > /dev/null; fi
    done
    row "$cp"
done
echo "$n steps, $FILES files, maintain every $EVERY steps, in $(( $(date +%s) - started )) s" >&2
