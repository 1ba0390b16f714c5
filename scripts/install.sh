# Installs what easel needs and is missing; sourced by serve.sh and test.sh.
# Usage: source scripts/install.sh [build|test]   ("test" adds Chromium for the browser tests)
# Idempotent: each step checks first, so a second run installs nothing. Nothing is downloaded
# from anywhere but the package registries (crates.io, npm, Debian).

easel_install() {
    local want=${1:-build}
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        say "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi

    # 0.3.11 needs rustc 1.96; 0.3.10 builds with 1.95.
    if [ "$(cargo leptos --version 2>/dev/null)" != "cargo-leptos 0.3.10" ]; then
        say "installing cargo-leptos 0.3.10 (takes ~12 minutes once)"
        cargo install --locked cargo-leptos@0.3.10
    fi

    # cargo-leptos would try to download wasm-bindgen: install exactly the version in Cargo.lock.
    local wbv
    wbv=$(grep -A1 '^name = "wasm-bindgen"$' "$root/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')
    if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wbv" ]; then
        say "installing wasm-bindgen-cli $wbv"
        cargo install --force wasm-bindgen-cli@"$wbv"
    fi

    if ! command -v npm >/dev/null; then
        say "installing Node.js and npm from Debian"
        $sudo apt-get update && $sudo apt-get install -y nodejs npm
    fi

    # npm gives a current wasm-opt (binaryen; Debian's is too old) and Playwright, never a browser.
    if [ ! -f "$root/end2end/node_modules/.package-lock.json" ] ||
        [ "$root/end2end/package-lock.json" -nt "$root/end2end/node_modules/.package-lock.json" ]; then
        say "installing Node packages in end2end/"
        (cd "$root/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    fi
    export PATH="$root/end2end/node_modules/.bin:$PATH"

    if [ "$want" = test ] && [ ! -x /usr/bin/chromium ]; then
        say "installing Chromium from Debian for the browser tests"
        $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
    fi
}

easel_install "$@"
