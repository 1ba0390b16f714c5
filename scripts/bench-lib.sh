# Helpers the bench scripts share (sourced): tools from Debian, process start and clean-up.
# Expects `bin` (the release binary) to be set by the script that sources it.

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"

# need TOOL[:PACKAGE]...: installs what is missing from Debian.
need() {
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null; }
    done
}

work=$(mktemp -d)
pids=()
# `start` runs in a command substitution (a subshell): it leaves its process ids in files here.
cleanup() {
    # SIGKILL: a graceful stop would let a bench job finish painting first.
    for p in "${pids[@]}" $(cat "$work"/*.pid 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `easel ARGS…` with ENV… (as VAR=value words before `--`), waits for its address line.
start() {
    local name=$1 log="$work/$1.log"; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    env "${envs[@]}" RUST_LOG=warn,easel=info "$bin" "$@" >"$log" 2>&1 &
    echo $! >"$work/$name.pid"
    for _ in $(seq 200); do
        addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$log" | head -1)
        [ -n "$addr" ] && { echo "$addr"; return; }
        sleep 0.05
    done
    echo "$name did not start:" >&2; cat "$log" >&2; exit 1
}

wait_ready() { for _ in $(seq 200); do curl -sf "http://$1/readyz" >/dev/null && return; sleep 0.05; done; echo "$1 never ready" >&2; exit 1; }

# submit ADDR JSON: the new job's id.
submit() { curl -sf "http://$1/api/generate" -H 'content-type: application/json' -d "$2" | sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p'; }
