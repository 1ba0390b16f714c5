#!/usr/bin/env bash
# Prints the gzipped bytes of what the browser downloads for the page: WASM, JS and CSS.
# Run after `cargo leptos build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=target/site/pkg
total=0
for f in "$pkg"/easel.wasm "$pkg"/easel.js "$pkg"/easel.css; do
    [ -f "$f" ] || { echo "missing $f: run cargo leptos build --release first" >&2; exit 1; }
    raw=$(wc -c <"$f")
    gz=$(gzip -9 -c "$f" | wc -c)
    total=$((total + gz))
    printf '%-28s %9d bytes  %9d gzipped\n' "$(basename "$f")" "$raw" "$gz"
done
printf '%-28s %9s        %9d gzipped\n' "total" "" "$total"
