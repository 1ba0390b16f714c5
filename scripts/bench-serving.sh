#!/usr/bin/env bash
# Serving bench on loopback, one run, one process (SQLite, the default model): wrk -t2 -c100 on
#   GET /healthz (the trivial route: this server's own limit on this machine), GET / (the SSR
#   page) for a first visit and for a returning visitor with a history, GET /api/status/{id} of
#   a finished job and of a waiting one,
# each printed with its ratio to /healthz (issue 13's goals: status >= 0.8x, page >= 0.3x).
# The routes take turns, round after round, and each figure is the median of its rounds, so
# that the machine's ups and downs touch every route alike.
# Installs wrk from Debian when missing. Builds nothing: run after `cargo leptos build --release`.
# Concurrent event streams and bytes per stream: `cargo run --release --example sse_bench`.
#
#   bash scripts/bench-serving.sh [SECONDS] [ROUNDS]    default: 5 rounds of 2 s of wrk per route
#   EASEL_BIN=/path/to/easel bash scripts/bench-serving.sh    another build (a before/after pair)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}
rounds=${2:-5}
bin=${EASEL_BIN:-target/release/easel}
[ -x "$bin" ] || { echo "build first: cargo leptos build --release" >&2; exit 1; }
source scripts/bench-lib.sh
need wrk:wrk

addr=$(start easel EASEL_DATA_DIR="$work/data" LEPTOS_SITE_ADDR=127.0.0.1:0 EASEL_READS_PER_SECOND=10000000 \
    EASEL_READ_BURST=10000000 EASEL_SUBMITS_PER_MINUTE=100000 EASEL_MAX_ACTIVE_PER_CLIENT=100 \
    EASEL_MAX_ACTIVE_PER_VISITOR=100 EASEL_MAX_QUEUED=100 --)
wait_ready "$addr"

# A returning visitor: its cookie, and a job in its history.
finished=$(curl -sf -c "$work/cookies" "http://$addr/api/generate" -H 'content-type: application/json' \
    -d '{"prompt":"a finished job","steps":2,"width":64,"height":64}' | sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p')
visitor=$(awk '$6 == "easel_visitor" {print $7}' "$work/cookies")
[ -n "$visitor" ] || { echo "no visitor cookie came back" >&2; exit 1; }
while ! curl -sf "http://$addr/api/status/$finished" | grep -q '"completed"'; do sleep 0.05; done
# A line of long jobs: the last one waits for the whole bench.
for i in $(seq 12); do waiting=$(submit "$addr" "{\"prompt\":\"a long job $i\",\"steps\":50,\"width\":256,\"height\":256}"); done
curl -sf "http://$addr/api/status/$waiting" | grep -q '"queued"' || { echo "the last job is not waiting" >&2; exit 1; }

measure() { # NAME PATH [WRK ARGS…]
    wrk -t2 -c100 -d"${secs}s" --latency "${@:3}" "http://$addr$2" |
        awk -v n="$1" '/Requests\/sec/ {r=$2} /50%/ {m=$2} /99%/ {p=$2} /Non-2xx/ {e=$5} END {printf "%s %.0f %s %s %s\n", n, r, m, p, e+0}' >>"$work/results"
}
for _ in $(seq "$rounds"); do
    measure healthz /healthz
    measure page /
    measure page-returning / -H "Cookie: easel_visitor=$visitor"
    measure status-finished "/api/status/$finished"
    measure status-waiting "/api/status/$waiting"
done

python3 - "$work/results" <<'PY'
import sys
from statistics import median
rounds = {}
for name, rps, p50, p99, errors in (line.split() for line in open(sys.argv[1])):
    rounds.setdefault(name, []).append((float(rps), p50, p99, int(errors)))
def mid(name):  # the median round, by req/s
    runs = sorted(rounds[name])
    return runs[len(runs) // 2]
base = mid("healthz")[0]
print(f"{'GET (median of ' + str(len(rounds['healthz'])) + ' rounds)':<28} {'req/s':>9} {'x /healthz':>10} {'p50':>9} {'p99':>9}  non-2xx")
labels = {"healthz": "/healthz", "page": "/ (first visit)", "page-returning": "/ (returning visitor)", "status-finished": "/api/status (finished job)", "status-waiting": "/api/status (waiting job)"}
for name, label in labels.items():
    rps, p50, p99, _ = mid(name)
    errors = sum(r[3] for r in rounds[name])
    print(f"{label:<28} {rps:>9.0f} {rps / base:>9.2f}x {p50:>9} {p99:>9}  {errors}")
PY
