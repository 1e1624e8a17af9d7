#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/browser/) needs, and only what is missing:
#   - chromium and chromium-driver (apt, Debian's builds; both from one source package, so
#     their versions always match)
#   - selenium (pip, pinned below); it is told SE_OFFLINE=true by the test, so it never
#     tries to download a driver
# Safe to run again: every step first checks whether it is already done. Called by setup-tools.sh.
set -euo pipefail

# 4.52.0 needs a certifi newer than PyPI served when this was pinned.
SELENIUM_VERSION=4.51.0

say() { printf 'setup-browser: %s\n' "$*"; }
die() { printf 'setup-browser: error: %s\n' "$*" >&2; exit 1; }

# --- chromium, chromium-driver ---------------------------------------------
missing=()
for pkg in chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "chromium, chromium-driver: already installed"
else
    command -v apt-get >/dev/null 2>&1 ||
        die "${missing[*]} missing and apt-get is not available: install them by hand"
    [ "$(id -u)" -eq 0 ] ||
        die "${missing[*]} missing and installing needs root: run 'apt-get install -y --no-install-recommends ${missing[*]}' as root, then re-run"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        say "${missing[*]}: not in the package lists, running apt-get update"
        apt-get update -qq
    fi
    say "${missing[*]}: installing with apt-get"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for pkg in "${missing[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || die "$pkg: apt-get install did not install it"
    done
    say "${missing[*]}: installed"
fi
browser=$(dpkg-query -W -f '${Version}' chromium)
driver=$(dpkg-query -W -f '${Version}' chromium-driver)
[ "$browser" = "$driver" ] ||
    die "chromium $browser and chromium-driver $driver differ: run 'apt-get install --only-upgrade chromium chromium-driver'"

# --- selenium ---------------------------------------------------------------
if [ "$(python3 -c 'import selenium; print(selenium.__version__)' 2>/dev/null)" = "$SELENIUM_VERSION" ]; then
    say "selenium $SELENIUM_VERSION: already installed"
else
    say "selenium $SELENIUM_VERSION: installing with pip"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    pip_log=$(mktemp)
    if ! python3 -m pip install --quiet "selenium==$SELENIUM_VERSION" 2>"$pip_log"; then
        if grep -q externally-managed-environment "$pip_log"; then
            # Debian's own python3 (PEP 668), as in setup.sh: the test's only
            # Python dependency, installed anyway.
            python3 -m pip install --quiet --break-system-packages "selenium==$SELENIUM_VERSION" 2>"$pip_log" ||
                { cat "$pip_log" >&2; rm -f "$pip_log"; die "pip install failed"; }
        else
            cat "$pip_log" >&2; rm -f "$pip_log"
            die "pip install selenium==$SELENIUM_VERSION failed"
        fi
    fi
    rm -f "$pip_log"
    [ "$(python3 -c 'import selenium; print(selenium.__version__)')" = "$SELENIUM_VERSION" ] ||
        die "selenium $SELENIUM_VERSION still cannot be imported after pip install"
    say "selenium $SELENIUM_VERSION: installed"
fi
say "done (chromium $browser)"
