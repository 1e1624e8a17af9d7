#!/usr/bin/env bash
# Installs what only the test phases after the build need, and only what is missing:
#   - schemathesis and openapi-python-client in their venv (scripts/setup-api-tools.sh)
#   - chromium, chromium-driver and selenium (scripts/setup-browser.sh)
#   - helm and kubernetes-validate (scripts/setup-helm.sh)
#   - podman, hadolint and the base image (scripts/setup-image.sh)
#
#   scripts/setup-tools.sh                 install now, in the foreground
#   scripts/setup-tools.sh start RUN       install in the background (what `make test` does)
#   scripts/setup-tools.sh wait RUN        wait for the installs that `start RUN` began and
#                                          fail, with their output, if they failed; install
#                                          in the foreground if nothing was started for RUN
#
# Why in the background: on a fresh 2-core machine these installs wait mostly on the
# network and the disk, while the cold build (RocksDB) keeps both cores busy for about
# 17 minutes; run one after the other, the installs add their whole length to `make test`.
# RUN names one `make test` run, so that a later run never trusts an earlier run's result.
# They install one after another (never two apt-gets at once); setup.sh's own apt installs
# are done before `start`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state="$here/../.setup-tools"

say() { printf 'setup-tools: %s\n' "$*"; }
die() { printf 'setup-tools: error: %s\n' "$*" >&2; exit 1; }

# Stops at the first that fails (also where the caller has turned `set -e` off).
install_all() {
    "$here/setup-api-tools.sh" &&
        "$here/setup-browser.sh" &&
        "$here/setup-helm.sh" &&
        "$here/setup-image.sh"
}

case "${1:-}" in
"")
    install_all
    ;;
start)
    run=${2:?usage: setup-tools.sh start RUN}
    rm -rf "$state"
    mkdir -p "$state"
    printf '%s\n' "$run" >"$state/run"
    # Detached from make's output: a failing earlier phase must not leave CI waiting
    # on a pipe this job still holds.
    (
        set +e
        start=$SECONDS
        install_all
        rc=$?
        printf 'setup-tools: took %d s\n' $((SECONDS - start))
        printf '%s\n' "$rc" >"$state/status.tmp" && mv "$state/status.tmp" "$state/status"
    ) </dev/null >"$state/log" 2>&1 &
    printf '%s\n' "$!" >"$state/pid"
    say "installing the test tools in the background (log: .setup-tools/log)"
    ;;
wait)
    run=${2:?usage: setup-tools.sh wait RUN}
    if [ "$(cat "$state/run" 2>/dev/null)" != "$run" ]; then
        install_all
        exit 0
    fi
    waited=$SECONDS
    # Bounded: the installs take minutes; an hour means something hangs.
    while [ ! -e "$state/status" ]; do
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null && [ ! -e "$state/status" ]; then
            cat "$state/log" >&2
            die "the background installs stopped without a result (log above)"
        fi
        [ $((SECONDS - waited)) -lt 3600 ] || { cat "$state/log" >&2; die "the background installs took over an hour (log above)"; }
        sleep 1
    done
    cat "$state/log"
    rc=$(cat "$state/status")
    [ "$rc" = 0 ] || die "the background installs failed (exit $rc, log above)"
    say "waited $((SECONDS - waited)) s for them"
    ;;
*)
    die "unknown command '$1' (start RUN | wait RUN | nothing)"
    ;;
esac
