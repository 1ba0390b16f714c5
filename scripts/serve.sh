#!/usr/bin/env bash
# Installs what is missing, builds the release app and serves it on http://127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh build
cargo leptos build --release
# Once more for the server alone: it carries the site just built (see build.rs).
cargo build --release --no-default-features --features ssr
exec target/release/easel "$@"
