#!/usr/bin/env python3
"""Checks that imports in server/src point one way: down the layers below.

Each module of the server crate has a layer; a module may name (by `use`, or by
a `crate::`/`super::` path anywhere in its code) only modules of lower layers,
or its own. That rules out cycles as well as upward imports. The crates below
the server (cete-types, cete-store) cannot name it at all: cargo does not
allow a dependency cycle between crates, so the compiler checks those.

Run by `make test`; prints every offending line and exits 1 if there is one.
docs/architecture.md explains the layers.
"""
import pathlib
import re
import sys

# Lower layers first. A module is named by its path in the crate; the longest
# listed prefix of a path decides its layer.
LAYERS = [
    # Leaves: generated code, the error type, fault injection, logging, address
    # helpers, TLS, and the HTTP accept loop (it serves any warp service).
    ["proto", "errors", "faults", "logging", "net", "tls", "http_server"],
    # Raft: the network to peers, the gRPC Raft service, the proposer, read batching.
    ["raft"],
    # The peer control plane's wire format and its client (the node calls peers).
    ["peer", "peer::client"],
    ["node"],
    # What runs beside the node and reads it.
    ["expiry", "metrics"],
    # What answers requests by calling the node.
    ["api", "peer::service"],
    # Settings, and the wiring that starts everything.
    ["config"],
    ["listen"],
    ["startup"],
]

# What lib.rs re-exports, and from where.
ROOT_REEXPORTS = {"Config": ["config"], "start_node": ["startup"], "run": ["startup"],
                  "NodeHandle": ["startup"]}

RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}

SRC = pathlib.Path(__file__).resolve().parent.parent / "server" / "src"


def module_of(file: pathlib.Path) -> list[str]:
    parts = list(file.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def owner(path: list[str]) -> str | None:
    """The listed module a path falls in: its longest listed prefix."""
    for n in range(len(path), 0, -1):
        name = "::".join(path[:n])
        if name in RANK:
            return name
    return None


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    # String literals can hold `crate::` (error messages, docs); drop them.
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def tests_removed(text: str) -> str:
    """The code outside `#[cfg(test)] mod tests { ... }`: tests may reach anywhere."""
    match = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    if not match:
        return text
    depth, i = 1, match.end()
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[: match.start()] + tests_removed(text[i:])


def expand_use_groups(text: str) -> list[list[str]]:
    """Every `crate::`/`super::`/`self::` path, with `use` groups expanded."""
    paths = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)::\{", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[m.end() : i - 1]
        prefix = [m.group(1)] + [p for p in m.group(2).split("::") if p]
        # Only the first segment of each item matters for the layer check.
        for item in re.split(r",(?![^{]*\})", inner):
            first = re.match(r"\s*(\w+)", item)
            if first:
                paths.append(prefix + [first.group(1)])
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        paths.append([m.group(1)] + [p for p in m.group(2).split("::") if p])
    return paths


def resolve(path: list[str], here: list[str]) -> list[str] | None:
    if path[0] == "crate":
        return path[1:]
    if path[0] == "self":
        return here + path[1:]
    # `super` is the parent of the module the file is (for a mod.rs too).
    base = list(here)
    rest = list(path)
    while rest and rest[0] == "super":
        if not base:
            return None
        base.pop()
        rest.pop(0)
    return base + rest


def main() -> int:
    problems = []
    unlisted = set()
    for file in sorted(SRC.rglob("*.rs")):
        here = module_of(file)
        if here in (["lib"], ["main"]):
            continue
        mine = owner(here)
        if mine is None:
            unlisted.add("::".join(here))
            continue
        code = tests_removed(strip_comments(file.read_text()))
        for path in expand_use_groups(code):
            target = resolve(path, here)
            if not target:
                continue
            # The crate root only re-exports.
            target = ROOT_REEXPORTS.get(target[0], [target[0]]) + target[1:]
            theirs = owner(target)
            if theirs is None:
                unlisted.add(target[0])
                continue
            # A module may use itself and the modules it is inside of.
            if mine == theirs or mine.startswith(theirs + "::"):
                continue
            if RANK[theirs] >= RANK[mine]:
                rel = file.relative_to(SRC.parent.parent)
                problems.append(
                    f"{rel}: {mine} (layer {RANK[mine]}) uses {'::'.join(target)} "
                    f"({theirs}, layer {RANK[theirs]})"
                )
    for name in sorted(unlisted):
        problems.append(f"server/src: module {name} has no layer in scripts/check-imports.py")
    for p in sorted(set(problems)):
        print(f"check-imports: {p}", file=sys.stderr)
    if problems:
        print(
            "check-imports: imports must point down the layers (docs/architecture.md)",
            file=sys.stderr,
        )
        return 1
    print(f"check-imports: {sum(1 for _ in SRC.rglob('*.rs'))} files, imports point one way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
