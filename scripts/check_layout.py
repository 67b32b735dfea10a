"""Layout check of the package: modules over the size limit, imports of ``__version__`` from the package root,
and import cycles (module-level and lazy imports alike), found by walking the source with ``ast``.

    python scripts/check_layout.py            # prints the report, exit 1 when a rule is broken
    python scripts/check_layout.py --max-lines 350 src/isogauss_hf

``tests/test_layout.py`` runs the same check, so CI keeps the layout the README promises.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Optional

PACKAGE = "isogauss_hf"
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", PACKAGE)


def modules(root: str) -> dict[str, str]:
    """Dotted module name -> file path for every ``.py`` file under ``root``."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                found[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def import_graph(mods: dict[str, str]) -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> imported package module, and the modules importing ``__version__`` from the root."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    version_from_root = []
    for m, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
        base = m.split(".") if path.endswith("__init__.py") else m.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith(PACKAGE):
                    continue
                names = [a.name for a in node.names]
                targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
                if target in mods and len(targets) < len(names):  # names taken from the module itself
                    targets.append(target)
                graph[m].update(t for t in targets if t != m)
                if target == PACKAGE and "__version__" in names:
                    version_from_root.append(m)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return graph, version_from_root


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def report(root: str = DEFAULT_ROOT, max_lines: int = 350) -> dict:
    mods = modules(root)
    graph, version_from_root = import_graph(mods)
    sizes = {}
    for m, p in mods.items():
        with open(p, encoding="utf-8") as fh:
            sizes[m] = sum(1 for _ in fh)
    return {"modules": len(mods),
            "over_limit": sorted(((n, m) for m, n in sizes.items() if n > max_lines), reverse=True),
            "version_from_root": sorted(version_from_root),
            "cycles": cycles(graph),
            "largest": sorted(((n, m) for m, n in sizes.items()), reverse=True)[:5]}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default=DEFAULT_ROOT)
    p.add_argument("--max-lines", type=int, default=350)
    args = p.parse_args(argv)
    r = report(args.root, args.max_lines)
    print(f"modules: {r['modules']}")
    print(f"largest: {', '.join(f'{m} {n}' for n, m in r['largest'])}")
    print(f"over {args.max_lines} lines: {r['over_limit'] or 'none'}")
    print(f"__version__ imported from the package root: {r['version_from_root'] or 'none'}")
    print(f"import cycles: {r['cycles'] or 'none'}")
    return 1 if (r["over_limit"] or r["version_from_root"] or r["cycles"]) else 0


if __name__ == "__main__":
    sys.exit(main())
