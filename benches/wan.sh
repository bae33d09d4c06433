#!/usr/bin/env bash
# WAN benchmark: prism-sync and restic side by side on remote repositories behind a slow link.
#
#   benches/wan.sh [--rtt-ms 40] [--mbit 200] [--backends rest,s3] [--work DIR] [--out DIR]
#                  [--mixed-size 200M] [--small-files 10000] [--edits 40] [--idle-s 30]
#                  [--parts backup,sync] [--skip-restic] [--label TEXT]
#
# Starts everything itself, on 127.0.0.1:
#   rest: `prism-sync serve --log-requests` and `rclone serve restic -vv` (restic's REST server),
#         each behind its own `wan-proxy`;
#   s3:   one moto server behind one `wan-proxy`; restic uses its `s3:` backend, prism-sync
#         `s3://` (AWS_ENDPOINT_URL), each in its own bucket.
# Then, per backend and data set (a mixed research tree and a tree of small files, both from
# `gen-dataset`): first backup, no-change backup, restore on a "second machine" (empty cache and
# home). For the small-files tree also a sync set: the laptop's first publish, a workspace's
# `join` + first `sync`, one edited file with CLI steps, and then both daemons running: edit
# latency in both directions (p50/p90/p99/max), a 1,000-file burst, and an idle minute's polling.
# Every step's requests are counted from the servers' own logs (moto's access log, rclone's -vv
# lines, serve's --log-requests), so "requests per operation" is what the server saw.
#
# Not part of `cargo test` (minutes, and timing-sensitive); tests/wan_smoke.rs runs the new code
# paths in a few seconds. Results of recorded runs are in benches/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
KIT="${PRISM_BENCH_KIT:-$REPO_ROOT/../shared/bench}"
[ -x "$KIT/wan-proxy" ] || KIT=/work/shared/bench
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
BIN="${PRISM_SYNC_BIN:-$TARGET_DIR/release/prism-sync}"
MOTO="${PRISM_TEST_MOTO_SERVER:-$(command -v moto_server || echo "$HOME/.cache/prism-sync/moto-venv/bin/moto_server")}"

RTT=40
MBIT=200
BACKENDS=rest,s3
WORK="${TMPDIR:-/tmp}/prism-wan-bench"
OUT=""
MIXED_SIZE=200M
SMALL_FILES=10000
EDITS=40
IDLE_S=30
PARTS=backup,sync
SKIP_RESTIC=0
LABEL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rtt-ms) RTT="$2"; shift 2 ;;
        --mbit) MBIT="$2"; shift 2 ;;
        --backends) BACKENDS="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --mixed-size) MIXED_SIZE="$2"; shift 2 ;;
        --small-files) SMALL_FILES="$2"; shift 2 ;;
        --edits) EDITS="$2"; shift 2 ;;
        --idle-s) IDLE_S="$2"; shift 2 ;;
        --parts) PARTS="$2"; shift 2 ;;
        --skip-restic) SKIP_RESTIC=1; shift ;;
        --label) LABEL="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
OUT="${OUT:-$WORK/results-$(date +%Y%m%d-%H%M%S)${LABEL:+-$LABEL}}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing: $1 ($2)" >&2; exit 1; }; }
need python3 "apt-get install python3"
[ -x "$BIN" ] || { echo "no prism-sync binary at $BIN: cargo build --release, or set PRISM_SYNC_BIN" >&2; exit 1; }
if [ "$SKIP_RESTIC" = 0 ]; then
    need restic "apt-get install restic"
    need rclone "apt-get install rclone (restic's REST server: rclone serve restic)"
fi
case ",$BACKENDS," in *,s3,*) [ -x "$MOTO" ] || { echo "no moto_server at $MOTO: set PRISM_TEST_MOTO_SERVER (see .ci/run)" >&2; exit 1; } ;; esac

mkdir -p "$WORK" "$OUT/logs"
RESULTS="$OUT/results.tsv"
printf 'backend\tdataset\ttool\tstep\tseconds\trequests\tnote\n' >"$RESULTS"

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for h in "$WORK"/home-*; do
        [ -d "$h" ] && PRISM_HOME="$h" "$BIN" stop wan >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1 ($2)" >&2; exit 1
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }

# A wan-proxy from a new port to $1; sets PROXY_PORT (not in a subshell: its pid must be kept).
proxy() {
    local to="$1"
    PROXY_PORT="$(free_port)"
    "$KIT/wan-proxy" --listen "127.0.0.1:$PROXY_PORT" --to "127.0.0.1:$to" --rtt-ms "$RTT" \
        --mbit "$MBIT" >"$OUT/logs/proxy-$PROXY_PORT.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PROXY_PORT" wan-proxy
}

# Requests a server has logged so far (its log file, and its kind).
count_requests() {
    local log="$1" kind="$2"
    sleep 0.3 # the servers log after answering
    case "$kind" in
        serve) grep -cE ' (GET|POST|HEAD|DELETE|PUT) /' "$log" || true ;;
        rclone) grep -cE ': (GET|POST|HEAD|DELETE|PUT) /' "$log" || true ;;
        # werkzeug colours some status lines: match the request line anywhere
        moto) grep -cE '(GET|POST|HEAD|DELETE|PUT) /[^ ]* HTTP/1\.[01]' "$log" || true ;;
    esac
}

# record BACKEND DATASET TOOL STEP SECONDS REQUESTS NOTE
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
    printf '  %-5s %-6s %-10s %-22s %8s s %7s requests  %s\n' "$@"
}

# timed BACKEND DATASET TOOL STEP LOG KIND -- command...
timed() {
    local backend="$1" ds="$2" tool="$3" step="$4" log="$5" kind="$6"
    shift 7
    local before after t0 t1 rc=0
    before="$(count_requests "$log" "$kind")"
    t0="$(now)"
    "$@" >"$OUT/logs/$backend-$ds-$tool-$step.out" 2>&1 || rc=$?
    t1="$(now)"
    after="$(count_requests "$log" "$kind")"
    local note=""
    [ "$rc" = 0 ] || note="FAILED rc=$rc (logs/$backend-$ds-$tool-$step.out)"
    record "$backend" "$ds" "$tool" "$step" "$(secs "$t0" "$t1")" "$((after - before))" "$note"
}

verify() { # verify SRC RESTORED -> "ok" or "DIFF"
    if diff -r --no-dereference "$1" "$2" >/dev/null 2>&1; then echo ok; else echo DIFF; fi
}

# ---- data -------------------------------------------------------------------------------------

DS_MIXED="$WORK/ds-mixed-$MIXED_SIZE"
DS_SMALL="$WORK/ds-small-$SMALL_FILES"
[ -d "$DS_MIXED" ] || "$KIT/gen-dataset" "$DS_MIXED" --size "$MIXED_SIZE" --seed 1 >/dev/null
[ -d "$DS_SMALL" ] || "$KIT/gen-dataset" "$DS_SMALL" --files "$SMALL_FILES" --seed 1 >/dev/null
{
    echo "date: $(date -u +%FT%TZ)"
    echo "link: rtt ${RTT} ms, ${MBIT} Mbit/s per connection and direction (wan-proxy)"
    echo "prism-sync: $("$BIN" --version) ($(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    [ "$SKIP_RESTIC" = 1 ] || echo "restic: $(restic version | head -1); rclone: $(rclone version | head -1)"
    echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "mixed: $("$KIT/gen-dataset" stats "$DS_MIXED" | sed -n 1p)"
    echo "small: $("$KIT/gen-dataset" stats "$DS_SMALL" | sed -n 1p)"
} | tee "$OUT/env.txt"

export RESTIC_PASSWORD=wan-bench-password PRISM_SYNC_PASSWORD=wan-bench-password
export PRISM_SYNC_REST_TOKEN=wan-bench-token-0123456789
echo "$PRISM_SYNC_REST_TOKEN" >"$WORK/token"
unset PRISM_SYNC_REPO || true

# ---- servers ------------------------------------------------------------------------------------

start_serve() { # start_serve DIR NAME -> sets SERVE_PORT, SERVE_LOG
    local dir="$1" name="$2" port
    port="$(free_port)"
    SERVE_LOG="$OUT/logs/serve-$name.log"
    PRISM_HOME="$WORK/serve-home" "$BIN" serve --repo "$dir" --listen "127.0.0.1:$port" \
        --token-file "$WORK/token" --log-requests --quiet >/dev/null 2>"$SERVE_LOG" &
    PIDS+=($!)
    wait_port "$port" "prism-sync serve"
    proxy "$port"
    SERVE_PORT="$PROXY_PORT"
}

start_rclone() { # start_rclone DIR NAME -> RCLONE_PORT, RCLONE_LOG
    local dir="$1" name="$2" port
    port="$(free_port)"
    RCLONE_LOG="$OUT/logs/rclone-$name.log"
    rclone serve restic "$dir" --addr "127.0.0.1:$port" -vv >"$RCLONE_LOG" 2>&1 &
    PIDS+=($!)
    wait_port "$port" "rclone serve restic"
    proxy "$port"
    RCLONE_PORT="$PROXY_PORT"
}

MOTO_PORT=""
start_moto() {
    [ -n "$MOTO_PORT" ] && return 0
    local port
    port="$(free_port)"
    MOTO_LOG="$OUT/logs/moto.log"
    "$MOTO" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
    PIDS+=($!)
    wait_port "$port" moto_server
    proxy "$port"
    MOTO_PORT="$PROXY_PORT"
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1
    export AWS_EC2_METADATA_DISABLED=true
}

# ---- backup / restore -----------------------------------------------------------------------------

backup_restore() { # backup_restore BACKEND DSNAME DSPATH
    local b="$1" ds="$2" src="$3" pr rr plog pkind rlog rkind
    local run="$WORK/run-$b-$ds"
    rm -rf "$run"
    mkdir -p "$run"
    cp -a "$src" "$run/src"
    case "$b" in
        rest)
            start_serve "$run/prism-repo" "$ds"
            pr="rest:http://127.0.0.1:$SERVE_PORT/"
            plog="$SERVE_LOG" pkind=serve
            if [ "$SKIP_RESTIC" = 0 ]; then
                start_rclone "$run/restic-repo" "$ds"
                rr="rest:http://127.0.0.1:$RCLONE_PORT/"
                rlog="$RCLONE_LOG" rkind=rclone
            fi
            ;;
        s3)
            start_moto
            export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
            pr="s3://prism-$ds/repo"
            rr="s3:http://127.0.0.1:$MOTO_PORT/restic-$ds"
            plog="$MOTO_LOG" pkind=moto rlog="$MOTO_LOG" rkind=moto
            ;;
    esac
    echo "== $b / $ds"
    if [ "$SKIP_RESTIC" = 0 ]; then
        export XDG_CACHE_HOME="$run/restic-cache-1"
        restic -r "$rr" init >"$OUT/logs/$b-$ds-restic-init.out" 2>&1
        (cd "$run" && timed "$b" "$ds" restic backup1 "$rlog" "$rkind" -- restic -r "$rr" backup src)
        (cd "$run" && timed "$b" "$ds" restic backup2 "$rlog" "$rkind" -- restic -r "$rr" backup src)
        export XDG_CACHE_HOME="$run/restic-cache-2"
        timed "$b" "$ds" restic restore "$rlog" "$rkind" -- restic -r "$rr" restore latest --target "$run/restic-out"
        local rroot="$run/restic-out/src"
        [ -d "$rroot" ] || rroot="$run/restic-out$run/src"
        record "$b" "$ds" restic verify - - "$(verify "$run/src" "$rroot")"
    fi
    export PRISM_HOME="$run/home-1"
    "$BIN" repo init --repo "$pr" >"$OUT/logs/$b-$ds-prism-init.out" 2>&1
    timed "$b" "$ds" prism-sync backup1 "$plog" "$pkind" -- "$BIN" backup --repo "$pr" "$run/src"
    timed "$b" "$ds" prism-sync backup2 "$plog" "$pkind" -- "$BIN" backup --repo "$pr" "$run/src"
    export PRISM_HOME="$run/home-2"
    timed "$b" "$ds" prism-sync restore "$plog" "$pkind" -- "$BIN" restore --repo "$pr" latest --target "$run/prism-out"
    record "$b" "$ds" prism-sync verify - - "$(verify "$run/src" "$run/prism-out")"
    if [ "$pkind" = serve ]; then
        local out_bytes
        out_bytes="$(awk '/ GET \/data\// { sub("out=","",$7); s+=$7 } END { print s+0 }' "$SERVE_LOG")"
        record "$b" "$ds" prism-sync restore-pack-bytes - - "$out_bytes"
    fi
    unset PRISM_HOME XDG_CACHE_HOME
}

# ---- sync set ---------------------------------------------------------------------------------------

sync_set() { # sync_set BACKEND
    local b="$1" url log kind
    local run="$WORK/run-$b-sync"
    rm -rf "$run"
    mkdir -p "$run"
    cp -a "$DS_SMALL" "$run/laptop"
    case "$b" in
        rest)
            start_serve "$run/repo" sync
            url="rest:http://127.0.0.1:$SERVE_PORT/"
            log="$SERVE_LOG" kind=serve
            ;;
        s3)
            start_moto
            export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
            url="s3://prism-sync-set/repo"
            log="$MOTO_LOG" kind=moto
            ;;
    esac
    local HA="$WORK/home-$b-laptop" HB="$WORK/home-$b-workspace"
    rm -rf "$HA" "$HB"
    echo "== $b / sync set (small files)"
    PRISM_HOME="$HA" "$BIN" init "$run/laptop" --name wan --repo "$url" >"$OUT/logs/$b-sync-init.out" 2>&1
    timed "$b" small prism-sync first-publish "$log" "$kind" -- env PRISM_HOME="$HA" "$BIN" sync wan
    timed "$b" small prism-sync join+first-sync "$log" "$kind" -- sh -c \
        "PRISM_HOME='$HB' '$BIN' join wan '$run/workspace' --repo '$url' --endpoint ws && PRISM_HOME='$HB' '$BIN' sync wan"
    record "$b" small prism-sync verify-join - - "$(verify "$run/laptop" "$run/workspace")"
    local f
    f="$(cd "$run/laptop" && find . -type f -name '*.py' | sort | sed -n 1p)"
    echo "# edited $(date +%s%N)" >>"$run/laptop/$f"
    timed "$b" small prism-sync cli-edit-publish "$log" "$kind" -- env PRISM_HOME="$HA" "$BIN" sync wan
    timed "$b" small prism-sync cli-edit-apply "$log" "$kind" -- env PRISM_HOME="$HB" "$BIN" sync wan
    timed "$b" small prism-sync cli-nochange-step "$log" "$kind" -- env PRISM_HOME="$HB" "$BIN" sync wan

    # Both daemons, default timings.
    PRISM_HOME="$HA" "$BIN" start wan >"$OUT/logs/$b-daemon-a.out" 2>&1
    PRISM_HOME="$HB" "$BIN" start wan >"$OUT/logs/$b-daemon-b.out" 2>&1
    sleep 5
    local before after
    before="$(count_requests "$log" "$kind")"
    python3 - "$run/laptop" "$run/workspace" "$EDITS" "$OUT/latency-$b.json" <<'PY'
import json, os, statistics, sys, time
a, b, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def wait_for(path, content, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            with open(path, "rb") as f:
                if f.read() == content:
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    return False

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

res = {}
for name, src, dst in (("laptop->workspace", a, b), ("workspace->laptop", b, a)):
    lat, lost = [], 0
    for i in range(n):
        rel = f"latency/edit-{i % 5}.txt"
        os.makedirs(os.path.join(src, "latency"), exist_ok=True)
        body = f"{name} edit {i} {time.time_ns()}\n".encode() * 20
        tmp = os.path.join(src, "latency", f".tmp-{i}")
        with open(tmp, "wb") as f:
            f.write(body)
        os.rename(tmp, os.path.join(src, rel))
        t0 = time.monotonic()
        if wait_for(os.path.join(dst, rel), body):
            lat.append(time.monotonic() - t0)
        else:
            lost += 1
        time.sleep(0.3)
    res[name] = {"n": len(lat), "lost": lost, "p50": pct(lat, 50), "p90": pct(lat, 90),
                 "p99": pct(lat, 99), "max": max(lat)} if lat else {"n": 0, "lost": lost}
# A burst of 1,000 new small files on the laptop.
d = os.path.join(a, "burst")
os.makedirs(d)
files = {}
for i in range(1000):
    body = f"burst file {i}\n".encode() * (1 + i % 50)
    with open(os.path.join(d, f"f{i:04}.txt"), "wb") as f:
        f.write(body)
    files[f"f{i:04}.txt"] = len(body)
t0 = time.monotonic()
done = False
while time.monotonic() - t0 < 120:
    try:
        names = os.listdir(os.path.join(b, "burst"))
        if len(names) >= 1000 and all(os.path.getsize(os.path.join(b, "burst", k)) == v for k, v in files.items()):
            done = True
            break
    except OSError:
        pass
    time.sleep(0.02)
res["burst-1000"] = {"seconds": time.monotonic() - t0, "complete": done}
json.dump(res, open(out, "w"), indent=1)
for k, v in res.items():
    print(k, v)
PY
    after="$(count_requests "$log" "$kind")"
    python3 - "$OUT/latency-$b.json" "$b" "$((after - before))" >>"$RESULTS" <<'PY'
import json, sys
r, b, reqs = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
for k in ("laptop->workspace", "workspace->laptop"):
    v = r[k]
    if v.get("n"):
        print(f"{b}\tsmall\tprism-sync\tedit {k} p50/p90/p99/max\t{v['p50']:.3f}/{v['p90']:.3f}/{v['p99']:.3f}/{v['max']:.3f}\t-\tn={v['n']} lost={v['lost']}")
    else:
        print(f"{b}\tsmall\tprism-sync\tedit {k}\t-\t-\tFAILED lost={v['lost']}")
v = r["burst-1000"]
print(f"{b}\tsmall\tprism-sync\tburst-1000\t{v['seconds']:.2f}\t{reqs}\tcomplete={v['complete']} (requests: edits and burst together)")
PY
    tail -3 "$RESULTS" | sed 's/^/  /'
    sleep 5
    before="$(count_requests "$log" "$kind")"
    local t0 t1
    t0="$(now)"
    sleep "$IDLE_S"
    t1="$(now)"
    after="$(count_requests "$log" "$kind")"
    local per_s
    per_s="$(python3 -c "print(f'{($after-$before)/($t1-$t0):.2f}')")"
    record "$b" small prism-sync "idle-2-daemons" "$(secs "$t0" "$t1")" "$((after - before))" "$per_s requests/s for both daemons"
    PRISM_HOME="$HA" "$BIN" stop wan >/dev/null 2>&1 || true
    PRISM_HOME="$HB" "$BIN" stop wan >/dev/null 2>&1 || true
    record "$b" small prism-sync verify-daemons - - "$(verify "$run/laptop" "$run/workspace")"
}

IFS=, read -r -a BS <<<"$BACKENDS"
for b in "${BS[@]}"; do
    case ",$PARTS," in *,backup,*)
        backup_restore "$b" mixed "$DS_MIXED"
        backup_restore "$b" small "$DS_SMALL"
        ;;
    esac
    case ",$PARTS," in *,sync,*) sync_set "$b" ;; esac
done

echo
echo "== results ($RESULTS)"
column -t -s $'\t' "$RESULTS"
