#!/usr/bin/env python3
"""Lists the host's imports that run against its declared module order.

`host/src/lib.rs` declares its modules in data-path order; a module may use
only modules declared before it. This script reads that order from the
`pub mod` lines, then every `crate::` path (in `use` items and inline) and
every `super::` path that climbs to the crate root in `host/src`, with each
submodule counted as its top-level module. It prints one line per edge that
points forward (or to itself through the root, which cannot happen), then the
cycles between top-level modules. It prints nothing when there are none and
exits 1 when there are.

Usage: packaging/check-module-order.py [HOST_SRC]   (default: host/src)
"""

import re
import sys
from pathlib import Path


def strip_comments_and_strings(text: str) -> str:
    """Blanks out comments, string and char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
            continue
        raw = re.match(r'r(#*)"', text[i:i + 10])
        if raw and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + raw.group(1)
            j = text.find(end, i + len(raw.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def declared_order(lib_rs: Path) -> list[str]:
    text = strip_comments_and_strings(lib_rs.read_text())
    return re.findall(r"^\s*pub\s+mod\s+(\w+)\s*;", text, re.M)


def module_path(src: Path, file: Path) -> list[str]:
    """The module path of a file: host/src/bpf/cgroup/mod.rs -> [bpf, cgroup]."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def group_heads(text: str, start: int) -> list[str]:
    """First segments of the items in a `{...}` group starting at `start`."""
    depth, j, item, heads = 0, start, "", []
    while j < len(text):
        c = text[j]
        if c == "{":
            depth += 1
            if depth == 1:
                j += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        elif c == "," and depth == 1:
            heads.append(item)
            item = ""
            j += 1
            continue
        if depth == 1:
            item += c
        j += 1
    result = []
    for h in heads:
        m = re.match(r"\s*(\w+)", h)
        if m:
            result.append(m.group(1))
    return result


def referenced_tops(text: str, mod: list[str]) -> list[tuple[int, str]]:
    """(line, top-level module) for every path that reaches the crate root."""
    found = []
    for m in re.finditer(r"(?<![\w:])(crate|(?:super::)+)(?:::)?(\{|\w+)", text):
        line = text.count("\n", 0, m.start()) + 1
        head = m.group(1)
        if head == "crate":
            depth_left = 0
        else:
            climbs = head.count("super")
            # A file's own module is `mod`; `super` from inside it is its parent.
            depth_left = len(mod) - climbs
            if depth_left > 0:
                continue  # stays inside its top-level module
            if depth_left < 0:
                continue  # not a valid path; ignore
        nxt = m.group(2)
        if nxt == "{":
            for top in group_heads(text, m.end() - 1):
                found.append((line, top))
        else:
            found.append((line, nxt))
    return found


def tarjan(nodes, edges):
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc, key=nodes.index))

    for v in nodes:
        if v not in index:
            visit(v)
    return sccs


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "host/src")
    order = declared_order(src / "lib.rs")
    rank = {name: i for i, name in enumerate(order)}
    backward = []  # (file, line, from, to)
    graph: dict[str, set[str]] = {}
    for file in sorted(src.rglob("*.rs")):
        mod = module_path(src, file)
        if mod in (["lib"], ["main"]):
            continue  # the root itself; main.rs is the binary crate
        top = mod[0]
        if top not in rank:
            continue
        text = strip_comments_and_strings(file.read_text())
        seen = set()
        for line, target in referenced_tops(text, mod):
            if target not in rank or target == top:
                continue
            graph.setdefault(top, set()).add(target)
            if rank[target] > rank[top] and (line, target) not in seen:
                seen.add((line, target))
                backward.append((file, line, top, target))
    cycles = tarjan(order, graph)
    if backward:
        print(f"{len(backward)} import(s) against the module order in {src / 'lib.rs'}:")
        for file, line, top, target in backward:
            print(f"  {file}:{line}: {top} (#{rank[top]}) uses {target} (#{rank[target]})")
    if cycles:
        print(f"{len(cycles)} cycle(s) between top-level modules:")
        for scc in cycles:
            print("  " + " <-> ".join(scc))
    return 1 if backward or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
