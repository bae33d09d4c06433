#!/bin/bash
# N restic backups of a 2,000-file folder, one edit of notes.txt each (the many_steps workload,
# with restic). WORK (default /tmp/restic-many) holds folder/ and repo/; both are made if missing.
set -euo pipefail
WORK=${WORK:-/tmp/restic-many}
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$WORK/repo"
if [ ! -d "$WORK/folder" ]; then
    python3 - "$WORK/folder" <<'PY'
import os, random, sys
random.seed(1)
root = sys.argv[1]
for i in range(2000):
    d = f"{root}/d{i % 20}"
    os.makedirs(d, exist_ok=True)
    open(f"{d}/f{i}.txt", "w").write("x" * random.randint(50, 2000))
PY
fi
[ -f "$WORK/repo/config" ] || restic init -q
for i in $(seq 1 "$1"); do
    echo "v$i" > "$WORK/folder/notes.txt"
    restic backup -q --host bench "$WORK/folder" >/dev/null
done
