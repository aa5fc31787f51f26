#!/usr/bin/env python3
"""Include cycles between modules of a folder tree (issue 11's rule for
emulator/: no cycle longer than two files).

A module is a .c file and the .h of the same name; module A depends on
module B when A's .c or .h includes B.h.  Every strongly connected group of
more than MAX modules is printed and makes the exit status 1.  Usage:
include_cycles.py DIR [MAX]  (MAX defaults to 2)."""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(('.c', '.h')):
                files.setdefault(name[:-2], []).append(os.path.join(dirpath, name))
    return files


def graph(files):
    edges = {m: set() for m in files}
    for m, paths in files.items():
        for path in paths:
            with open(path, encoding='utf-8', errors='replace') as f:
                for inc in INCLUDE.findall(f.read()):
                    dep = os.path.basename(inc)[:-2] if inc.endswith('.h') else None
                    if dep in files and dep != m:
                        edges[m].add(dep)
    return edges


def components(edges):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == node:
                        break
                out.append(sorted(group))
    return out


def main():
    root = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    edges = graph(modules(root))
    bad = [g for g in components(edges) if len(g) > limit]
    for g in bad:
        print(f'{root}: include cycle of {len(g)} modules (more than {limit}): {" ".join(g)}', file=sys.stderr)
        for m in g:
            deps = sorted(d for d in edges[m] if d in g)
            print(f'  {m} -> {" ".join(deps)}', file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
