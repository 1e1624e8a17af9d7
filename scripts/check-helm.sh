#!/usr/bin/env bash
# Checks the Helm chart in helm/cete without helm (it is not in the package
# registries CI can reach): the files are present, Chart.yaml and values.yaml
# parse, Chart.yaml has what helm requires, template actions are balanced,
# every `include "x"` names a defined template, and every .Values.x.y that a
# template uses exists in values.yaml. Exits non-zero with a list of problems.
#
# Usage: scripts/check-helm.sh [chart-dir]   (default: helm/cete)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 - "${1:-helm/cete}" <<'PY'
import os
import re
import sys

import yaml

chart = sys.argv[1]
problems = []
REQUIRED = [
    "Chart.yaml",
    "values.yaml",
    "templates/_helpers.tpl",
    "templates/NOTES.txt",
    "templates/statefulset.yaml",
    "templates/service-headless.yaml",
    "templates/service.yaml",
    "templates/pdb.yaml",
]


def load(rel):
    path = os.path.join(chart, rel)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{rel}: {e}")
        return None


missing = [rel for rel in REQUIRED if not os.path.isfile(os.path.join(chart, rel))]
problems += [f"{rel}: missing" for rel in missing]
print(f"check-helm: {chart}: {len(REQUIRED) - len(missing)}/{len(REQUIRED)} required files present")

meta = load("Chart.yaml")
if isinstance(meta, dict):
    for key in ("apiVersion", "name", "version"):
        if not meta.get(key):
            problems.append(f"Chart.yaml: no {key}")
    if meta.get("apiVersion") not in (None, "v2"):
        problems.append(f"Chart.yaml: apiVersion is {meta.get('apiVersion')!r}, expected v2")
    if meta.get("name") and meta["name"] != os.path.basename(os.path.normpath(chart)):
        problems.append(f"Chart.yaml: name {meta['name']!r} differs from the directory name")
    print("check-helm: Chart.yaml parses (apiVersion, name, version)")
elif meta is not None:
    problems.append("Chart.yaml: not a mapping")

values = load("values.yaml")
if values is not None and not isinstance(values, dict):
    problems.append("values.yaml: not a mapping")
    values = None
if values is not None:
    print("check-helm: values.yaml parses")

ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
OPENS = re.compile(r"^(if|range|with|define|block)\b")
defined, included, refs = set(), [], []
tdir = os.path.join(chart, "templates")
templates = sorted(
    os.path.join(root, name)
    for root, _, names in os.walk(tdir)
    for name in names
) if os.path.isdir(tdir) else []
for path in templates:
    rel = os.path.relpath(path, chart)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.count("{{") != text.count("}}"):
        problems.append(f"{rel}: {text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    depth = 0
    for m in ACTION.finditer(text):
        action = m.group(1)
        if action.startswith("/*"):
            continue
        if OPENS.match(action):
            depth += 1
        elif re.match(r"^end\b", action):
            depth -= 1
            if depth < 0:
                problems.append(f"{rel}: 'end' without an opening if/range/with/define")
                depth = 0
        d = re.match(r'^define\s+"([^"]+)"', action)
        if d:
            defined.add(d.group(1))
        included += [(rel, name) for name in re.findall(r'(?:include|template)\s+"([^"]+)"', action)]
        refs += [(rel, r.group(1)[1:]) for r in VALUES_REF.finditer(action)]
    if depth:
        problems.append(f"{rel}: {depth} if/range/with/define block(s) without 'end'")
    if rel.endswith((".yaml", ".yml")) and "\t" in text:
        problems.append(f"{rel}: contains a tab (YAML indentation must be spaces)")
print(f"check-helm: {len(templates)} template file(s) checked for balanced actions, {len(defined)} named template(s) defined")

for rel, name in included:
    if name not in defined:
        problems.append(f"{rel}: include \"{name}\" but no template defines it")
print(f"check-helm: {len(included)} include(s) checked against the defined templates")

if values is not None:
    for rel, dotted in refs:
        node = values
        for part in dotted.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                problems.append(f"{rel}: .Values.{dotted} is not in values.yaml")
                break
    print(f"check-helm: {len(refs)} .Values reference(s) ({len(set(d for _, d in refs))} distinct) checked against values.yaml")

problems = list(dict.fromkeys(problems))
if problems:
    print(f"check-helm: {len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
print("check-helm: ok")
PY
