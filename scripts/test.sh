#!/usr/bin/env bash
# Installs what is missing, then runs every test: unit, integration and browser.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh test
started=$(date +%s)

# One release build serves everything: cargo-leptos builds the server (ssr) and the WASM
# (hydrate, wasm-release profile); `cargo test --release --features ssr` then reuses the
# server's compiled dependencies instead of building candle a second time in debug.
cargo leptos build --release
cargo test --release --no-default-features --features ssr
(cd end2end && playwright test)
# The release binary alone in an empty folder (it carries the site and the default model).
echo "single binary: $(du -h target/release/easel | cut -f1) ($(stat -c %s target/release/easel) bytes)"
(cd end2end && playwright test --config single-binary.config.ts)
scripts/bundle-size.sh

echo "all tests passed in $(( $(date +%s) - started ))s"
