#!/usr/bin/env bash
# Scale-out bench on loopback, one run, the default model:
#   1. jobs per second with 1 and then 2 worker processes (`easel worker`) behind one web process
#      (`easel --no-worker`) on one Redis;
#   2. status-poll throughput (wrk) of one finished job with the Redis store vs the SQLite store.
# Installs redis-server and wrk from Debian when missing. Builds nothing: run after a release
# build (`cargo leptos build --release`).
#
#   bash scripts/bench-redis.sh [JOBS] [SECONDS]      defaults: 48 jobs, 5 s of wrk per store
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-48}
secs=${2:-5}
bin=target/release/easel
[ -x "$bin" ] || { echo "build first: cargo leptos build --release" >&2; exit 1; }
source scripts/bench-lib.sh
need redis-server:redis-server wrk:wrk

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync everysec \
    --save "" --maxmemory-policy noeviction >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
store="redis://127.0.0.1:$redis_port/0"
common=(EASEL_STORE="$store" EASEL_MAX_QUEUED=1000 EASEL_MAX_ACTIVE_PER_CLIENT=1000 EASEL_SUBMITS_PER_MINUTE=100000
    EASEL_READS_PER_SECOND=1000000 EASEL_READ_BURST=1000000 LEPTOS_SITE_ADDR=127.0.0.1:0 EASEL_DATA_DIR="$work/data")
web=$(start web "${common[@]}" -- --no-worker)
wait_ready "$web"

completed() { # jobs completed so far, from Redis's own counts
    redis-cli -p "$redis_port" hget easel:counts completed | tr -d '\r' | sed 's/^$/0/'
}

run_jobs() { # $1 = worker count; submits $jobs jobs at once, times until all have completed
    local before target started ended
    before=$(completed)
    target=$((before + jobs))
    started=$(date +%s.%N)
    for i in $(seq "$jobs"); do
        curl -sf -o /dev/null "http://$web/api/generate" -H 'content-type: application/json' \
            -d "{\"prompt\":\"bench $i\",\"width\":64,\"height\":64,\"steps\":8,\"seed\":$i}" &
    done
    wait_submits
    while [ "$(completed)" -lt "$target" ]; do sleep 0.02; done
    ended=$(date +%s.%N)
    python3 -c "import sys; n,w,t=int(sys.argv[1]),sys.argv[2],float(sys.argv[4])-float(sys.argv[3]); print(f'{w} worker process(es): {n} jobs (64x64, 8 steps) in {t:.2f} s = {n/t:.1f} jobs/s')" "$jobs" "$1" "$started" "$ended"
}
wait_submits() { for p in $(jobs -p); do case " ${pids[*]} " in *" $p "*) ;; *) wait "$p" ;; esac; done; }

w1=$(start worker1 "${common[@]}" EASEL_WORKER_ADDR=127.0.0.1:0 -- worker); wait_ready "$w1"
run_jobs 1 | tee "$work/one"
w2=$(start worker2 "${common[@]}" EASEL_WORKER_ADDR=127.0.0.1:0 -- worker); wait_ready "$w2"
run_jobs 2 | tee "$work/two"

# Status polling of a finished job: the Redis-backed web process, then a one-process SQLite server.
id=$(submit "$web" '{"prompt":"poll","steps":2,"width":64,"height":64}')
while ! curl -sf "http://$web/api/status/$id" | grep -q '"completed"'; do sleep 0.05; done
sqlite=$(start sqlite EASEL_DATA_DIR="$work/sqlite" LEPTOS_SITE_ADDR=127.0.0.1:0 EASEL_READS_PER_SECOND=1000000 EASEL_READ_BURST=1000000 --)
wait_ready "$sqlite"
sid=$(submit "$sqlite" '{"prompt":"poll","steps":2,"width":64,"height":64}')
while ! curl -sf "http://$sqlite/api/status/$sid" | grep -q '"completed"'; do sleep 0.05; done
poll() { wrk -t2 -c100 -d"${secs}s" --latency "http://$1/api/status/$2" | awk -v s="$3" '/Requests\/sec/ {r=$2} /99%/ {p=$2} /50%/ {m=$2} END {printf "status polling, %-6s store: %9.0f req/s  p50 %s  p99 %s\n", s, r, m, p}'; }
poll "$sqlite" "$sid" sqlite | tee "$work/sqlite-poll"
poll "$web" "$id" redis | tee "$work/redis-poll"
python3 - "$work" <<'EOF'
import re, sys
d = sys.argv[1]
rate = lambda f: float(re.search(r"= ([0-9.]+) jobs/s", open(f"{d}/{f}").read()).group(1))
rps = lambda f: float(re.search(r"store:\s+([0-9.]+)", open(f"{d}/{f}").read()).group(1))
print(f"2 workers / 1 worker: {rate('two') / rate('one'):.2f}x jobs/s;  Redis / SQLite status polling: {rps('redis-poll') / rps('sqlite-poll'):.2f}x")
EOF
