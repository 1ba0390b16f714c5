#!/usr/bin/env bash
# Installs what is missing, builds the release app and serves it on http://127.0.0.1:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh build
cargo leptos build --release
exec target/release/easel "$@"
