#!/usr/bin/env bash
# Installs the API tools `make api-check` runs, pinned, into their own virtual environment
# (so their dependencies, e.g. hypothesis and jsonschema, cannot clash with the packages
# other checks install into the system python):
#   - schemathesis (PyPI): fuzzes the live server against openapi.yaml
#   - openapi-python-client (PyPI): generates the Python client the client test uses
# Their dependencies are pinned too (tests/api/constraints.txt), so that a seeded
# schemathesis run generates the same cases everywhere.
# The venv is $CETE_TOOLS_VENV (default ~/.cache/cete-tools/venv). Safe to run again:
# nothing is done when the venv already holds exactly the pinned set.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1

say() { printf 'setup-api-tools: %s\n' "$*"; }
die() { printf 'setup-api-tools: error: %s\n' "$*" >&2; exit 1; }

venv=${CETE_TOOLS_VENV:-${HOME:-/root}/.cache/cete-tools/venv}
py="$venv/bin/python"
constraints="$(cd "$(dirname "$0")/.." && pwd)/tests/api/constraints.txt"
[ -f "$constraints" ] || die "$constraints is missing"
# Written after a successful install: the venv holds the set this file pins.
stamp="$venv/.cete-constraints.sha256"
want=$(sha256sum "$constraints" | cut -d' ' -f1)

installed() {
    [ -x "$py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
        "$py" -c 'import sys; from importlib.metadata import version as v; sys.exit((v("schemathesis"), v("openapi-python-client")) != tuple(sys.argv[1:]))' \
            "$SCHEMATHESIS_VERSION" "$OPENAPI_PYTHON_CLIENT_VERSION" >/dev/null 2>&1
}

if installed; then
    say "schemathesis $SCHEMATHESIS_VERSION, openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION: already installed in $venv"
    exit 0
fi

if [ ! -x "$py" ]; then
    say "creating the virtual environment $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" 2>/dev/null || {
        # Debian's python3 ships venv without ensurepip until python3-venv is installed.
        command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] ||
            die "python3 -m venv failed: install python3-venv, then re-run"
        say "python3 -m venv failed: installing python3-venv with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-cache show python3-venv >/dev/null 2>&1 || apt-get update -qq
        apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    }
fi

say "installing schemathesis==$SCHEMATHESIS_VERSION openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION (dependencies from tests/api/constraints.txt) into $venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install --quiet --constraint "$constraints" \
    "schemathesis==$SCHEMATHESIS_VERSION" \
    "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" ||
    die "pip install into $venv failed"
echo "$want" >"$stamp"
installed || die "the pinned versions are still not importable from $venv"
say "installed"
