#!/usr/bin/env bash
# stimserver beside the reference servers of ../shared/bench (competent FastAPI, nginx), in one run.
#
#   scripts/bench/bench_reference.sh                 # 2,000,000 lines, as in the bench README
#   QUICK=1 scripts/bench/bench_reference.sh         # 100,000 lines, short runs
#   WORKERS=2 scripts/bench/bench_reference.sh       # stimserver serve --workers 2 (named stimserver_w2)
#   ALTERNATE=0 scripts/bench/bench_reference.sh     # skip the alternated comparison at the end
#
# run_bench.sh generates the data file; this imports that same file into a stimserver data
# directory (building the index), makes a user key for the run's bearer token, and adds
# `stimserver serve` (auth, access log, request ids and metrics on) as the extra server.
# aiohttp_floor (the least a plain aiohttp app does for this endpoint) runs by default:
# issue 13's targets are ratios to it within one run. Any other knob of run_bench.sh
# (ONLY, DURATION, REPEAT, ...) passes through.
#
# Then (unless ALTERNATE=0) scripts/bench/bench_alternate.py runs stimserver and aiohttp_floor side by
# side with their wrk runs alternated (ROUNDS rounds of ROUND_SECONDS per page and server) and
# prints medians, pairwise ratios and each server's CPU time per request: the harness's cells come
# from separate fresh starts a minute apart, and this VM's own speed drifts by more than 5 % within
# a minute, so the ratios an issue asks about are read more steadily there.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$HERE/../../../shared/bench}
[[ -f $BENCH/run_bench.sh ]] || { echo "no reference bench at $BENCH (set BENCH=...)" >&2; exit 1; }
export STIMBENCH_DIR=${STIMBENCH_DIR:-/tmp/stimbench}
if [[ ${QUICK:-0} == 1 ]]; then LINES=${LINES:-100000}; fi
LINES=${LINES:-2000000}
DATA=$STIMBENCH_DIR/data/stim_$LINES.jsonl
SS_DATA=$STIMBENCH_DIR/stimserver-$LINES
PY=${PYTHON:-python3}

if [[ ! -f $DATA ]]; then   # let the reference harness make its data (and venv) first
  ONLY=none LINES=$LINES REPEAT="" bash "$BENCH/run_bench.sh" >/dev/null
fi
if [[ ! -f $SS_DATA/token ]]; then
  rm -rf "$SS_DATA"
  "$PY" -m stimserver import --quiet --user bench --repo benchrepo --target benchtarget "$DATA" --data "$SS_DATA"
  "$PY" -m stimserver keys create --user bench --data "$SS_DATA" | tail -n 1 >"$SS_DATA/token"
fi
export STIMBENCH_TOKEN=$(cat "$SS_DATA/token")
WORKERS=${WORKERS:-1}
SS_NAME=stimserver
[[ $WORKERS == 1 ]] || SS_NAME=stimserver_w$WORKERS
export EXTRA_SERVER_NAME=$SS_NAME EXTRA_SERVER_PORT=8110
export EXTRA_SERVER_CMD="$PY -m stimserver serve --port 8110 --data $SS_DATA --workers $WORKERS"
export ONLY=${ONLY:-aiohttp_floor,fastapi_indexed,nginx,$SS_NAME}
export REPEAT=${REPEAT-"$SS_NAME:o0_l100 aiohttp_floor:o0_l100 $SS_NAME:o0_l1000 aiohttp_floor:o0_l1000 $SS_NAME:deep_l100"}
LINES=$LINES bash "$BENCH/run_bench.sh"
if [[ ${ALTERNATE:-1} != 0 ]]; then
  echo
  if [[ ${QUICK:-0} == 1 ]]; then DEEP=${DEEP:-50000}; else DEEP=${DEEP:-1000000}; fi  # as run_bench.sh
  "$PY" "$HERE/bench_alternate.py" --data "$SS_DATA" --workers "$WORKERS" --deep "$DEEP" \
    --rounds "${ROUNDS:-6}" --seconds "${ROUND_SECONDS:-4}" \
    --baseline "$STIMBENCH_DIR/venv/bin/python $BENCH/aiohttp_floor.py --port {port} --file $DATA"
fi
