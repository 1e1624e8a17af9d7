#!/usr/bin/env python3
"""Checks openapi.yaml: the routes the server has, and JSON errors everywhere.

Run from anywhere: python3 tests/openapi_check.py [path/to/openapi.yaml]
Needs PyYAML (pip install pyyaml). Exits non-zero with a list of problems.
"""

import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPEC = os.path.join(HERE, "..", "openapi.yaml")
ERROR_REF = "#/components/schemas/Error"

EXPECTED = {
    "/v1/data": {"get"},
    "/v1/data/{key}": {"get", "head", "put", "delete"},
    "/v1/txn": {"post"},
    "/v1/watch": {"get"},
    "/v1/node": {"get"},
    "/v1/cluster": {"get"},
    "/v1/cluster/{id}": {"put", "delete"},
    "/v1/snapshot": {"get", "post"},
    "/v1/liveness_check": {"get"},
    "/v1/readiness_check": {"get"},
    "/metrics": {"get"},
    "/v1/metrics": {"get"},
    "/openapi.yaml": {"get"},
}
HTTP_METHODS = {"get", "head", "put", "post", "delete", "patch", "options", "trace"}


def resolve(spec, ref):
    """Follows a local JSON pointer such as #/components/responses/X."""
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported: {ref}")
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def reaches_error(spec, schema, seen=None):
    """Whether a schema is, or is built from (allOf/anyOf/oneOf/properties), the Error schema."""
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None:
            if ref == ERROR_REF:
                return True
            if ref in seen:
                return False
            seen.add(ref)
            return reaches_error(spec, resolve(spec, ref), seen)
        return any(reaches_error(spec, v, seen) for v in schema.values())
    if isinstance(schema, list):
        return any(reaches_error(spec, v, seen) for v in schema)
    return False


def check(spec):
    problems = []
    if not str(spec.get("openapi", "")).startswith("3.0"):
        problems.append(f"openapi version is {spec.get('openapi')!r}, expected 3.0.x")
    paths = spec.get("paths") or {}
    for path, methods in EXPECTED.items():
        item = paths.get(path)
        if item is None:
            problems.append(f"missing path {path}")
            continue
        for method in sorted(methods):
            if method not in item:
                problems.append(f"missing {method.upper()} {path}")
    schemas = (spec.get("components") or {}).get("schemas") or {}
    if "Error" not in schemas:
        problems.append("missing components.schemas.Error")
        return problems
    for path, item in paths.items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = op.get("responses") or {}
            if not responses:
                problems.append(f"{method.upper()} {path}: no responses")
            for status, response in responses.items():
                status = str(status)
                if status != "default" and not (status.isdigit() and int(status) >= 400):
                    continue
                where = f"{method.upper()} {path} {status}"
                if "$ref" in response:
                    response = resolve(spec, response["$ref"])
                content = response.get("content") or {}
                if not content:
                    problems.append(f"{where}: no body schema (expected the Error schema)")
                for media_type, media in content.items():
                    if not reaches_error(spec, media.get("schema")):
                        problems.append(f"{where} {media_type}: does not reference {ERROR_REF}")
    return problems


def main(argv):
    path = argv[1] if len(argv) > 1 else DEFAULT_SPEC
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    problems = check(spec)
    for problem in problems:
        print(f"openapi_check: {problem}", file=sys.stderr)
    if problems:
        return 1
    count = sum(len(m) for m in EXPECTED.values())
    print(f"openapi_check: ok ({count} operations, errors reference {ERROR_REF})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
