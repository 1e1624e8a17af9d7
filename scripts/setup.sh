#!/usr/bin/env bash
# Installs what building and testing Cete needs, and only what is missing:
#   - libclang-dev (apt): librocksdb-sys runs bindgen, which loads libclang
#   - jq, curl, openssl (apt), if missing: the original README's commands use them
#   - PyYAML and openapi-spec-validator (pip): tests/openapi_check.py
#   - rustfmt and clippy (rustup), if the toolchain lacks them: `make test` runs both
# Safe to run again: every step first checks whether it is already done.
# What only the test phases after the build need (the API tools, chromium, helm, podman)
# is scripts/setup-tools.sh's, which `make test` runs in the background while cargo builds.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH: install the Rust toolchain (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH: install Python 3 (3.11 is what CI uses)"

# --- libclang-dev -----------------------------------------------------------
if dpkg -s libclang-dev >/dev/null 2>&1; then
    say "libclang-dev: already installed"
else
    command -v apt-get >/dev/null 2>&1 ||
        die "libclang-dev is missing and apt-get is not available: install libclang (for bindgen) by hand"
    [ "$(id -u)" -eq 0 ] ||
        die "libclang-dev is missing and installing it needs root: run 'apt-get install -y libclang-dev' as root, then re-run"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know the package yet
    # (fresh machines often ship with empty lists).
    if ! apt-cache show libclang-dev >/dev/null 2>&1; then
        say "libclang-dev: not in the package lists, running apt-get update"
        apt-get update -qq
    fi
    say "libclang-dev: installing with apt-get"
    apt-get install -y -qq libclang-dev >/dev/null
    dpkg -s libclang-dev >/dev/null 2>&1 || die "libclang-dev: apt-get install did not install it"
    say "libclang-dev: installed"
fi

# --- jq, curl, openssl ------------------------------------------------------
# The original README's commands, which a test runs as printed, pipe into jq and use curl
# and openssl.
tools=()
for tool in jq curl openssl; do
    command -v "$tool" >/dev/null 2>&1 || tools+=("$tool")
done
if [ "${#tools[@]}" -eq 0 ]; then
    say "jq, curl, openssl: already installed"
else
    command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] ||
        die "${tools[*]} missing: install them (as root: apt-get install -y ${tools[*]}), then re-run"
    export DEBIAN_FRONTEND=noninteractive
    apt-cache show "${tools[@]}" >/dev/null 2>&1 || apt-get update -qq
    say "${tools[*]}: installing with apt-get"
    apt-get install -y -qq "${tools[@]}" >/dev/null
fi

# --- Python modules ---------------------------------------------------------
if python3 -c 'import yaml, openapi_spec_validator' >/dev/null 2>&1; then
    say "pyyaml, openapi-spec-validator: already installed"
else
    say "pyyaml, openapi-spec-validator: installing with pip"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    pip_log=$(mktemp)
    if ! python3 -m pip install --quiet pyyaml openapi-spec-validator 2>"$pip_log"; then
        if grep -q externally-managed-environment "$pip_log"; then
            # A distribution's own Python (PEP 668, e.g. Debian's python3): these two
            # pure-Python packages are only needed by the checks, so install them anyway.
            say "pyyaml, openapi-spec-validator: python3 is externally managed, retrying with --break-system-packages"
            python3 -m pip install --quiet --break-system-packages pyyaml openapi-spec-validator 2>"$pip_log" ||
                { cat "$pip_log" >&2; rm -f "$pip_log"; die "pip install failed"; }
        else
            cat "$pip_log" >&2; rm -f "$pip_log"
            die "pip install failed (as a non-root user, try: python3 -m pip install --user pyyaml openapi-spec-validator)"
        fi
    fi
    rm -f "$pip_log"
    python3 -c 'import yaml, openapi_spec_validator' ||
        die "pyyaml/openapi-spec-validator still cannot be imported after pip install"
    say "pyyaml, openapi-spec-validator: installed"
fi

# --- rustfmt and clippy -----------------------------------------------------
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ "${#missing[@]}" -eq 0 ]; then
    say "rustfmt, clippy: already installed"
else
    command -v rustup >/dev/null 2>&1 ||
        die "${missing[*]} missing and rustup not found: install them with your toolchain"
    say "${missing[*]}: installing with rustup"
    rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
fi

say "done"
