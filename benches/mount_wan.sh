#!/usr/bin/env bash
# Reading through `prism-sync mount` from a remote repository over a slow link, side by side with
# `restic mount` on the same data: both repositories sit behind a REST server on loopback
# (`prism-sync serve`, `rclone serve restic`) reached through wan-proxy (RTT and bandwidth per
# connection). Timed: a cold sequential read of a big file (`cat`), a cold tree walk with stat of
# every entry (`find -ls`), and 64 random 64 KiB reads of the big file (a fresh mount each, so
# nothing is cached). As root (FUSE).
#
#   benches/mount_wan.sh [--rtt-ms 40] [--mbit 200] [--size-mib 256] [--files 2000]
#
# Needs: a release build (PRISM_BIN, default target/release/prism-sync), restic, rclone, fuse3,
# python3, and wan-proxy (WAN_PROXY, default ../shared/bench/wan-proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

RTT=40 MBIT=200 SIZE_MIB=256 FILES=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --rtt-ms) RTT=$2; shift 2 ;;
        --mbit) MBIT=$2; shift 2 ;;
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --files) FILES=$2; shift 2 ;;
        *) echo "unknown option $1"; exit 1 ;;
    esac
done
BIN=$(realpath "${PRISM_BIN:-${CARGO_TARGET_DIR:-target}/release/prism-sync}")
WAN=$(realpath "${WAN_PROXY:-../shared/bench/wan-proxy}")
T=$(mktemp -d /tmp/mount-wan.XXXXXX)
PIDS=()
cleanup() {
    for m in "$T/pm" "$T/rm"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "== data: one ${SIZE_MIB} MiB file and ${FILES} small files"
mkdir -p "$T/src/small"
python3 - "$T/src" "$SIZE_MIB" "$FILES" <<'EOF'
import os, random, sys
root, size, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(1)
with open(os.path.join(root, "big.bin"), "wb") as f:
    for _ in range(size):
        f.write(r.randbytes(1 << 20))
for i in range(files):
    d = os.path.join(root, "small", f"d{i % 40:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(r.randbytes(r.randint(200, 6000)))
EOF

export PRISM_HOME="$T/home" RESTIC_PASSWORD=bench
"$BIN" repo init --repo "$T/prepo" -q
"$BIN" backup --repo "$T/prepo" "$T/src" -q >/dev/null
restic init -r "$T/rrepo" -q
(cd "$T/src" && restic backup -r "$T/rrepo" -q . >/dev/null)

echo "== servers behind wan-proxy (rtt ${RTT} ms, ${MBIT} Mbit/s per connection)"
P1=$(port); P2=$(port); P3=$(port); P4=$(port)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$T/token"
"$BIN" serve --repo "$T/prepo" --listen "127.0.0.1:$P1" --token-file "$T/token" -q >/dev/null & PIDS+=($!)
rclone serve restic --addr "127.0.0.1:$P3" "$T/rrepo" -q & PIDS+=($!)
# (wan-proxy prints a traceback whenever a client hangs up; that is noise)
"$WAN" --listen "127.0.0.1:$P2" --to "127.0.0.1:$P1" --rtt-ms "$RTT" --mbit "$MBIT" 2>/dev/null & PIDS+=($!)
"$WAN" --listen "127.0.0.1:$P4" --to "127.0.0.1:$P3" --rtt-ms "$RTT" --mbit "$MBIT" 2>/dev/null & PIDS+=($!)
wait_port "$P2"; wait_port "$P4"
export PRISM_SYNC_REST_TOKEN=$(cat "$T/token")
mkdir -p "$T/pm" "$T/rm"

mount_prism() {
    "$BIN" mount --repo "rest:http://127.0.0.1:$P2/" "$T/pm" -q >/dev/null 2>"$T/pm.log" & PIDS+=($!)
    for _ in $(seq 1 600); do [ -d "$T/pm/latest" ] && return 0; sleep 0.1; done
    cat "$T/pm.log"; exit 1
}
mount_restic() {
    restic -r "rest:http://127.0.0.1:$P4/" mount "$T/rm" -q >/dev/null 2>"$T/rm.log" & PIDS+=($!)
    for _ in $(seq 1 600); do [ -d "$T/rm/snapshots/latest" ] && return 0; sleep 0.1; done
    cat "$T/rm.log"; exit 1
}
unmount_both() {
    for m in "$T/pm" "$T/rm"; do
        if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
    sleep 0.5
}
random_reads() { # FILE
    python3 - "$1" <<'EOF'
import os, random, sys
f = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(f).st_size
r = random.Random(7)
for _ in range(64):
    os.pread(f, 65536, r.randrange(0, size - 65536))
EOF
}

declare -A R
for tool in prism restic; do
    if [ $tool = prism ]; then mount_prism; D="$T/pm/latest"; else mount_restic; D="$T/rm/snapshots/latest"; fi
    t0=$(now); cmp "$D/big.bin" "$T/src/big.bin"; t1=$(now); R[$tool.cat]=$(secs "$t0" "$t1")
    unmount_both
    if [ $tool = prism ]; then mount_prism; D="$T/pm/latest"; else mount_restic; D="$T/rm/snapshots/latest"; fi
    t0=$(now); find "$D/small" -ls >/dev/null; t1=$(now); R[$tool.find]=$(secs "$t0" "$t1")
    unmount_both
    if [ $tool = prism ]; then mount_prism; D="$T/pm/latest"; else mount_restic; D="$T/rm/snapshots/latest"; fi
    t0=$(now); random_reads "$D/big.bin"; t1=$(now); R[$tool.random]=$(secs "$t0" "$t1")
    unmount_both
done

echo
echo "| rtt ${RTT} ms, ${MBIT} Mbit/s | prism-sync mount | restic mount |"
echo "|---|---:|---:|"
echo "| read ${SIZE_MIB} MiB file (cmp, cold) | ${R[prism.cat]} s | ${R[restic.cat]} s |"
echo "| find -ls over ${FILES} files (cold) | ${R[prism.find]} s | ${R[restic.find]} s |"
echo "| 64 random 64 KiB reads (cold) | ${R[prism.random]} s | ${R[restic.random]} s |"
