#!/usr/bin/env bash
# The engine against PyTorch + diffusers on the same weights, in one run: for a model folder in
# the Hugging Face hub's layout, each side loads it, times one UNet call with classifier-free
# guidance (batch 2) and one VAE decode at each size, and reports its peak memory; every figure
# is printed with easel's ratio to PyTorch's (below 1: easel is faster or smaller). The two sides
# take turns, each in a process of its own, with the same thread count.
#
#   bash scripts/bench-engine.sh FOLDER [SIDES...]          default sides: 256 512
#   PYTHON=.tools/parity/bin/python bash scripts/bench-engine.sh FOLDER    with the diffusers side
#
# PYTHON: an interpreter with torch and diffusers (scripts/parity/requirements.txt); without
# one, only easel's figures are printed. FOLDER: e.g. the SD 1.5-architecture random weights of
# ../shared/tools/reference-sd15 (make_weights.py), or any downloaded repository.
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$(cd "${1:?usage: bench-engine.sh FOLDER [SIDES...]}" && pwd)
shift
if [ $# -gt 0 ]; then sides=("$@"); else sides=(256 512); fi
threads=${BENCH_THREADS:-$(nproc)}
export RAYON_NUM_THREADS=$threads BENCH_THREADS=$threads OMP_NUM_THREADS=$threads
cargo build -q --release --features ssr --example component_bench
bin=target/release/examples/component_bench

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
printf '%-6s %-16s %12s %12s %8s\n' side what easel pytorch ratio
for side in "${sides[@]}"; do
    ours=$("$bin" "$(dirname "$folder")" "$(basename "$folder")" "$side" | grep '^RESULT')
    theirs=""
    if [ -n "${PYTHON:-}" ]; then
        theirs=$("$PYTHON" scripts/parity/bench.py "$folder" "$side" | grep '^RESULT')
    fi
    for key in load_ms unet_cfg_ms vae_decode_ms peak_mib; do
        a=$(field "$key" "$ours")
        b=$(field "$key" "$theirs")
        ratio=$([ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", a / b }' || echo -)
        printf '%-6s %-16s %12s %12s %8s\n' "$side" "$key" "$a" "${b:--}" "$ratio"
    done
done
