#!/usr/bin/env bash
# Checks the Helm chart in helm/cete with the real helm (scripts/setup-helm.sh installs it):
#   1. `helm lint --strict`, with the defaults and with each value set below
#   2. `helm template` with each value set, every rendered manifest validated offline
#      against the Kubernetes 1.31 schemas (`kubernetes-validate --strict`), and the
#      rendering checked for what the value set should change (replicas, TLS, volumes)
#   3. values.schema.json rejects nonsense: lint and template must both fail on each bad value
#   4. what helm does not check: every .Values.x.y a template uses exists in values.yaml
#      (a missing one renders as empty), and Chart.yaml's name is the directory's name
# Exits non-zero at the first failure, saying what failed.
#
# Usage: scripts/check-helm.sh [chart-dir]   (default: helm/cete)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
chart=${1:-helm/cete}
started=$SECONDS

say() { printf 'check-helm: %s\n' "$*"; }
die() { printf 'check-helm: FAILED: %s\n' "$*" >&2; exit 1; }

helm=${CETE_TOOLS_DIR:-$HOME/.cache/cete-tools}/bin/helm
[ -x "$helm" ] || helm=$(command -v helm || true)
[ -n "$helm" ] || die "helm not found: run scripts/setup-helm.sh"
python3 -m kubernetes_validate --version >/dev/null 2>&1 ||
    die "kubernetes-validate not found: run scripts/setup-helm.sh"
say "$("$helm" version --short), kubernetes-validate $(python3 -m kubernetes_validate --version)"

# name|helm flags; facts() below asserts what each set changes in the rendering.
value_sets=(
    "defaults|"
    "replicas-5|--set replicas=5"
    "tls|--set tls.secretName=cete-tls --set tls.commonName=cete.example.com"
    "no-persistence|--set persistence.enabled=false"
)
# Each must be refused by the schema: a cluster of none, a negative or zero size, unknown keys,
# a log level the server does not know, a port out of range.
bad_values=(
    "--set replicas=0"
    "--set replicas=-1"
    "--set persistence.size=-1Gi"
    "--set-string persistence.size=0Gi"
    "--set persistence.size=5"
    "--set replica=3"
    "--set persistence.sise=1Gi"
    "--set logLevel=loud"
    "--set ports.http=70000"
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Asserts what a value set must change in the rendered manifests ($1: set name, $2: YAML file).
facts() {
    python3 - "$1" "$2" <<'PY'
import sys

import yaml

name = sys.argv[1]
with open(sys.argv[2], encoding="utf-8") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
want = ["PodDisruptionBudget/cete", "Service/cete", "Service/cete-headless", "StatefulSet/cete"]
problems = [] if kinds == want else [f"rendered {kinds}, expected {want}"]
sts = next(d for d in docs if d["kind"] == "StatefulSet")
pod = sts["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e.get("value") for e in c["env"]}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]


def expect(cond, what):
    if not cond:
        problems.append(what)


# The image's entrypoint does the pod-0-bootstraps logic: the chart must not bypass it.
expect("command" not in c and c.get("args") == ["cete-server"], "container must run the image entrypoint with args [cete-server]")
expect(env.get("CETE_POD0_GRPC_ADDRESS") == "cete-0.cete-headless.default.svc.cluster.local:9000",
       f"CETE_POD0_GRPC_ADDRESS is {env.get('CETE_POD0_GRPC_ADDRESS')!r}")
expect(sts["spec"]["replicas"] == (5 if name == "replicas-5" else 3), f"replicas is {sts['spec']['replicas']}")
tls = name == "tls"
expect(("CETE_CERTIFICATE_FILE" in env) == tls, "CETE_CERTIFICATE_FILE set iff TLS is on")
expect((env.get("CETE_COMMON_NAME") == "cete.example.com") == tls, "CETE_COMMON_NAME set iff given")
expect(("tls" in volumes) == tls, "tls volume present iff TLS is on")
for probe in ("readinessProbe", "livenessProbe"):
    scheme = c[probe]["httpGet"]["scheme"]
    expect(scheme == ("HTTPS" if tls else "HTTP"), f"{probe} scheme is {scheme}")
persistent = name != "no-persistence"
expect(claims == (["data"] if persistent else []), f"volumeClaimTemplates are {claims}")
expect(("data" in volumes and "emptyDir" in volumes["data"]) == (not persistent), "emptyDir data volume iff no persistence")
if problems:
    sys.exit("\n".join(f"  - {p}" for p in problems))
PY
}

# --- 1 and 2: lint, render, validate --------------------------------------------
for entry in "${value_sets[@]}"; do
    name=${entry%%|*}
    read -r -a flags <<<"${entry#*|}"
    "$helm" lint --strict "$chart" "${flags[@]}" >"$tmp/lint.out" 2>&1 ||
        { cat "$tmp/lint.out" >&2; die "helm lint --strict ($name)"; }
    "$helm" template cete "$chart" "${flags[@]}" >"$tmp/$name.yaml" 2>"$tmp/template.err" ||
        { cat "$tmp/template.err" >&2; die "helm template ($name)"; }
    python3 -m kubernetes_validate --strict -k 1.31 - <"$tmp/$name.yaml" >"$tmp/kv.out" 2>&1 ||
        { cat "$tmp/kv.out" >&2; die "kubernetes-validate --strict -k 1.31 ($name)"; }
    facts "$name" "$tmp/$name.yaml" || die "rendering with $name is not what it should be (above)"
    say "$name: lint --strict ok; template ok; $(grep -c '^INFO - passed' "$tmp/kv.out") manifests valid for Kubernetes 1.31; renders as expected"
done

# --- 3: the schema refuses nonsense ---------------------------------------------
for bad in "${bad_values[@]}"; do
    for cmd in lint template; do
        args=(lint --strict "$chart")
        [ "$cmd" = template ] && args=(template cete "$chart")
        read -r -a flags <<<"$bad"
        if "$helm" "${args[@]}" "${flags[@]}" >"$tmp/bad.out" 2>&1; then
            die "helm $cmd accepted $bad (values.schema.json should refuse it)"
        fi
        grep -q "don't meet the specifications of the schema" "$tmp/bad.out" ||
            { cat "$tmp/bad.out" >&2; die "helm $cmd $bad failed, but not because of the schema"; }
    done
    say "$bad: refused by lint and template ($(grep -m1 -- '^- ' "$tmp/bad.out"))"
done

# --- 4: chart and values agree --------------------------------------------------
python3 - "$chart" <<'PY' || die "chart and values.yaml disagree (above)"
import os
import re
import sys

import yaml

chart = sys.argv[1]
problems = []
with open(os.path.join(chart, "Chart.yaml"), encoding="utf-8") as f:
    name = yaml.safe_load(f)["name"]
if name != os.path.basename(os.path.normpath(chart)):
    problems.append(f"Chart.yaml: name {name!r} differs from the directory name")
with open(os.path.join(chart, "values.yaml"), encoding="utf-8") as f:
    values = yaml.safe_load(f)
ref = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
count = 0
for root, _, files in os.walk(os.path.join(chart, "templates")):
    for file in sorted(files):
        path = os.path.join(root, file)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in ref.finditer(text):
            count += 1
            node = values
            for part in m.group(1)[1:].split("."):
                if not (isinstance(node, dict) and part in node):
                    problems.append(f"{os.path.relpath(path, chart)}: .Values{m.group(1)} is not in values.yaml")
                    break
                node = node[part]
if problems:
    sys.exit("\n".join(f"  - {p}" for p in dict.fromkeys(problems)))
print(f"check-helm: {count} .Values references in the templates all exist in values.yaml")
PY

say "ok ($((SECONDS - started)) s)"
