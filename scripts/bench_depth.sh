#!/usr/bin/env bash
# First page against the deep page on ONE server process, alternated (issue 13's "the deep page
# stays within 5 % of the first"): separate fresh starts, as in bench_reference.sh, swing by
# ±10 % on a shared VM, so this alternates wrk runs of both pages against the same process,
# for stimserver and for aiohttp_floor (the baseline, same run), and prints the medians.
#
#   scripts/bench_depth.sh                  # 8 rounds of 3 s per page and server
#   ROUNDS=4 RUN=5s scripts/bench_depth.sh
#
# Needs the data bench_reference.sh makes first (/tmp/stimbench: the 2,000,000-line file, its
# stimserver import and token, the reference venv).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$HERE/../../shared/bench}
STIMBENCH_DIR=${STIMBENCH_DIR:-/tmp/stimbench}
LINES=${LINES:-2000000}; DEEP=${DEEP:-1000000}; ROUNDS=${ROUNDS:-8}; RUN=${RUN:-3s}
PY=${PYTHON:-python3}
SS_DATA=$STIMBENCH_DIR/stimserver-$LINES
[[ -f $SS_DATA/token && -x $STIMBENCH_DIR/venv/bin/python ]] || { echo "run scripts/bench_reference.sh first" >&2; exit 1; }
page() { echo "http://127.0.0.1:$1/v1/repo/benchrepo/targets/benchtarget/stim/output?offset=$2&limit=100"; }
measure() { # name port token cmd...
  local name=$1 port=$2 tok=$3; shift 3
  "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null -H "Authorization: Bearer $tok" "$(page "$port" 0)" && break; sleep 0.2; done
  wrk -t2 -c32 -d2s -H "Authorization: Bearer $tok" "$(page "$port" "$DEEP")" >/dev/null  # warm both pages
  local first=() deep=()
  for _ in $(seq "$ROUNDS"); do
    first+=("$(wrk -t2 -c32 -d"$RUN" -H "Authorization: Bearer $tok" "$(page "$port" 0)" | awk '/Requests\/sec/ {print $2}')")
    deep+=("$(wrk -t2 -c32 -d"$RUN" -H "Authorization: Bearer $tok" "$(page "$port" "$DEEP")" | awk '/Requests\/sec/ {print $2}')")
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$name|${first[*]}|${deep[*]}"
}
{
  measure stimserver 8110 "$(cat "$SS_DATA/token")" "$PY" -m stimserver serve --port 8110 --data "$SS_DATA"
  measure aiohttp_floor 8106 bench-token "$STIMBENCH_DIR/venv/bin/python" "$BENCH/aiohttp_floor.py" --port 8106 \
    --file "$STIMBENCH_DIR/data/stim_$LINES.jsonl"
} | "$PY" -c '
import statistics, sys
print(f"| server (one process, {sys.argv[1]} rounds alternated) | first page req/s, median | offset {sys.argv[2]} req/s, median | deep / first | pairwise range |")
print("|---|---:|---:|---:|---|")
for row in sys.stdin:
    name, first, deep = row.strip().split("|")
    f, d = [float(x) for x in first.split()], [float(x) for x in deep.split()]
    ratios = [b / a * 100 for a, b in zip(f, d)]
    print(f"| {name} | {statistics.median(f):,.0f} | {statistics.median(d):,.0f} | {statistics.median(d) / statistics.median(f) * 100:.1f} % | {min(ratios):.0f}–{max(ratios):.0f} % |")
' "$ROUNDS" "$DEEP"
