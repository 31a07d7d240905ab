#!/usr/bin/env python3
"""Fails when the modules of src/ import each other in a cycle.

Each file under src/ is a module. An edge A -> B is any path in A's code
(not in comments or unit tests) that names B: `crate::b::...`, `super::...`, a child
module named in a `use`, or a name that lib.rs re-exports from B
(`crate::Message` -> message.rs). lib.rs itself (the public face, which
declares and re-exports everything) is not a source of edges. Prints every
cycle (strongly connected component of more than one file) and exits 1, or
prints the layers bottom-up and exits 0.

    python3 scripts/check_layers.py [SRC_DIR]
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
SRC = os.path.normpath(SRC)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return tuple(x for x in rel if x != "lib")


files = {}
for root, _, names in os.walk(SRC):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(root, name)
            files[module_of(path)] = path


def code_of(path):
    text = open(path, encoding="utf-8").read()
    # A file's unit tests (`#[cfg(test)] mod tests`, at the end by habit)
    # may use anything; they are not part of the layering.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [tree]
    prefix, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            out.extend(prefix + p for p in expand_use(part))
    return out


# Names lib.rs re-exports: `pub use message::{Message, close_code}`.
reexports = {}
lib_code = code_of(files[()])
for tree in re.findall(r"pub use ([^;]+);", lib_code):
    for path in expand_use(tree):
        segs = [s.strip() for s in path.split("::")]
        name = segs[-1].split(" as ")[-1].strip()
        mod = tuple(segs[:-1])
        while mod and mod not in files:
            mod = mod[:-1]
        if mod:
            reexports[name] = mod


def resolve(segs):
    """The longest module prefix of an absolute path, or a re-export."""
    segs = tuple(segs)
    for n in range(len(segs), 0, -1):
        if segs[:n] in files:
            return segs[:n]
    if segs and segs[0] in reexports:
        return reexports[segs[0]]
    return None


edges = {m: set() for m in files}
for mod, path in files.items():
    if mod == ():
        continue
    code = code_of(path)
    # The module a relative `super::` / child path starts from.
    is_dir_mod = path.endswith("mod.rs")
    here = mod if is_dir_mod else mod
    parent = mod[:-1]
    paths = []
    for tree in re.findall(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use(tree))
    paths.extend(re.findall(r"\b((?:crate|super)(?:::\w+)+)", code))
    for p in paths:
        segs = [s.split(" as ")[0].strip() for s in p.split("::")]
        if not segs or not segs[0]:
            continue
        if segs[0] == "crate":
            target = resolve(segs[1:])
        elif segs[0] == "super":
            base = list(parent)
            segs = segs[1:]
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
            target = resolve(base + segs) or (tuple(base) if tuple(base) in files else None)
        elif segs[0] == "self":
            target = resolve(list(here) + segs[1:])
        elif (here + (segs[0],)) in files:
            target = resolve(list(here) + segs)
        else:
            continue
        if target is not None and target != mod and target != ():
            edges[mod].add(target)

# Tarjan's strongly connected components.
index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            scc.append(w)
            if w == v:
                break
        sccs.append(scc)


for v in edges:
    if v not in index:
        visit(v)


def name(m):
    return os.path.relpath(files[m], SRC)


cycles = [scc for scc in sccs if len(scc) > 1]
if cycles:
    for scc in cycles:
        members = set(scc)
        print("import cycle among:", ", ".join(sorted(name(m) for m in scc)))
        for m in sorted(scc):
            inner = sorted(name(t) for t in edges[m] if t in members)
            print(f"  {name(m)} -> {', '.join(inner)}")
    sys.exit(1)

# Tarjan emits components in reverse topological order: dependencies first.
print(f"no import cycle among {len(files) - 1} modules of src/ (lowest first):")
print("  " + " ".join(name(scc[0]) for scc in sccs if scc[0] != ()))
