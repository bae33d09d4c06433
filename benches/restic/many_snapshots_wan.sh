#!/bin/bash
# restic through rclone's REST server behind wan-proxy (40 ms RTT, 200 Mbit/s): medians of 3
# of `snapshots`, `find notes.txt` (the history analogue) and one-file `restore` of step 5.
WORK=${WORK:-/tmp/restic-many}
export RESTIC_PASSWORD=bench
rclone serve restic --addr 127.0.0.1:7911 $WORK/repo 2>/dev/null & SP=$!
${KIT:-../shared/bench}/wan-proxy --listen 127.0.0.1:7912 --to 127.0.0.1:7911 --rtt-ms 40 --mbit 200 2>/dev/null & PP=$!
sleep 2
export RESTIC_REPOSITORY=rest:http://127.0.0.1:7912/
SNAP=$(restic snapshots --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[4]['short_id'])")
t() { local best=(); for k in 1 2 3; do s=$(date +%s%N); "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2; e=$(date +%s%N); best+=($(( (e-s)/1000000 ))); done; printf '%s\n' "${best[@]}" | sort -n | sed -n 2p; }
echo "snapshots: $(restic snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
echo "restic snapshots ms: $(t restic snapshots)"
echo "restic find notes.txt ms: $(t restic find notes.txt)"
rr() { rm -rf $WORK/rt; restic restore "$SNAP" --include "$WORK/folder/notes.txt" --target $WORK/rt; }
echo "restic restore one file ms: $(t rr)"
kill $SP $PP
