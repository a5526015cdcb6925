"""The package-internal import graph of ``voxinv``: cycles, upward imports and in-function imports.

``python experiments/import_graph.py [--all] [--json]`` (stdlib ``ast`` only: nothing is imported).

Layers, bottom → top (a module may import its own layer and those below; read from the tree):

0. ``voxinv`` (the package ``__init__``), ``voxinv.paths``, ``voxinv.rundir``, ``voxinv.audio``,
   ``voxinv.manifests``, ``voxinv.trainer``, ``voxinv.dsp`` (if present), ``voxinv.figures`` (figure
   style, the spectrogram figure), ``voxinv.stopping`` (the early-stop rule): file formats, audio I/O,
   paths, plain helpers — no model, no metric.
1. ``voxinv.voxtral``: the codec, the TTS, code tables; ``voxinv.speaker``: the speaker models (GE2E,
   d-vector) that the speaker losses and graders share (read layer 0).
2. ``voxinv.frozen`` (the frozen decoder wrapper), ``voxinv.eval`` without its report: the metric
   registry (``voxinv.eval.formats``), the metric suite, ``python -m voxinv.eval``.
3. ``voxinv.invert`` and ``voxinv.encoder``: inversion and the learned encoder (an encoder init reads
   the encoder, the encoder's trainer borrows the inversion's checkpoint IO: one layer).
4. ``voxinv.eval.report``: sweep and benchmark reports (read run directories; above what makes them).
5. entry points: ``voxinv.run``, ``voxinv.cli``, ``voxinv.report``, ``voxinv.tiny_sweep``,
   ``voxinv.train_encoder``, ``voxinv.__main__``.

Module-level imports define the graph the interpreter sees at import time: a cycle there is an error
(or an import-order accident), an upward import a layering leak. Imports inside functions are counted
apart (``--all`` adds them to the graph): lazy imports of optional heavy packages are fine; ones of
voxinv modules should not be there to dodge a cycle.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "voxinv"

# (prefix, layer): the longest matching prefix wins
LAYERS: tuple[tuple[str, int], ...] = (
    ("voxinv", 0),
    ("voxinv.paths", 0),
    ("voxinv.rundir", 0),
    ("voxinv.audio", 0),
    ("voxinv.manifests", 0),
    ("voxinv.trainer", 0),
    ("voxinv.dsp", 0),
    ("voxinv.figures", 0),
    ("voxinv.stopping", 0),
    ("voxinv.voxtral", 1),
    ("voxinv.speaker", 1),
    ("voxinv.frozen", 2),
    ("voxinv.eval", 2),
    ("voxinv.invert", 3),
    ("voxinv.encoder", 3),
    ("voxinv.eval.report", 4),
    ("voxinv.run", 5),
    ("voxinv.cli", 5),
    ("voxinv.report", 5),
    ("voxinv.tiny_sweep", 5),
    ("voxinv.train_encoder", 5),
    ("voxinv.__main__", 5),
)
# upward imports kept on purpose: (importer, imported) → why
DELIBERATE: dict[tuple[str, str], str] = {}


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


@dataclass
class Graph:
    modules: list[str]
    top: dict[str, set[str]] = field(default_factory=dict)  # module-level imports
    inner: dict[str, set[str]] = field(default_factory=dict)  # imports inside functions
    inner_count: int = 0  # in-function import statements (any package)
    inner_voxinv: int = 0  # of them, those of voxinv modules


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(mod: str, node: ast.ImportFrom | ast.Import, modules: set[str], is_pkg: bool) -> list[str]:
    """The voxinv modules an import statement loads (``from a import b``: ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for n in names:
        while n and n not in modules:  # ``import voxinv.eval.metrics.x as y`` / attribute: nearest module
            n = n.rpartition(".")[0]
        if n and (n == PKG or n.startswith(PKG + ".")):
            out.append(n)
    return out


def _visit(g: Graph, mod: str, is_pkg: bool, known: set[str], node: ast.AST, in_func: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            if isinstance(child, ast.ImportFrom) and child.module == "__future__":
                continue
            targets = [t for t in _resolve(mod, child, known, is_pkg) if t != mod]
            # importing a.b.c runs a/__init__ and a/b/__init__ first (those not already running)
            targets += [p for t in targets for p in _parents(t) if p != mod and p not in _parents(mod)]
            if in_func:
                g.inner_count += 1
                g.inner_voxinv += bool(targets)
                g.inner[mod].update(targets)
            elif not _type_checking(node):
                g.top[mod].update(targets)
        func = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        _visit(g, mod, is_pkg, known, child, in_func or func)


def build(root: Path = ROOT) -> Graph:
    files = sorted((root / PKG).rglob("*.py"))
    names = {module_name(f, root): f for f in files}
    g = Graph(sorted(names))
    for mod, f in names.items():
        g.top[mod], g.inner[mod] = set(), set()
        _visit(g, mod, f.name == "__init__.py", set(names), ast.parse(f.read_text(), str(f)), False)
    return g


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` blocks import nothing at run time."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _parents(mod: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first."""
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return sorted(out)


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a higher layer than the importer's (package ``__init__`` re-exports of their own
    submodules are not upward: a package is as high as what it re-exports)."""
    return sorted(
        (a, b)
        for a, bs in edges.items()
        for b in bs
        if layer(b) > layer(a) and not b.startswith(a + ".") and (a, b) not in DELIBERATE
    )


def _closure(m: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [m]
    while todo:
        for y in edges.get(todo.pop(), ()):
            if y not in seen:
                seen.add(y)
                todo.append(y)
    return seen


def in_function(g: Graph) -> list[dict]:
    """Each in-function import of a voxinv module (not also imported at module level): whether moving it to
    module level would close a cycle (then it is there to dodge one), whether it would be free (the target is
    loaded anyway by the importer's module-level imports) and whether it is upward."""
    out = []
    for m in g.modules:
        loaded = _closure(m, g.top)
        for t in sorted(g.inner[m] - g.top[m]):
            out.append(
                {
                    "module": m,
                    "imports": t,
                    "dodges_cycle": m in _closure(t, g.top),  # t's module-level imports lead back to m
                    "free": t in loaded,
                    "upward": layer(t) > layer(m),
                }
            )
    return out


def analyse(root: Path = ROOT, include_inner: bool = False) -> dict:
    g = build(root)
    edges = {m: set(g.top[m]) | (g.inner[m] if include_inner else set()) for m in g.modules}
    return {
        "modules": len(g.modules),
        "cycles": cycles(edges),
        "upward": [list(e) for e in upward(edges)],
        "deliberate": [[a, b, why] for (a, b), why in DELIBERATE.items()],
        "in_function_imports": g.inner_count,
        "in_function_voxinv_imports": g.inner_voxinv,
        "in_function": in_function(g),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="count in-function imports as edges too")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lazy", action="store_true", help="list the in-function imports of voxinv modules")
    a = ap.parse_args(argv)
    res = analyse(include_inner=a.all)
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{res['modules']} modules; {'all' if a.all else 'module-level'} imports")
        print(f"cycles: {len(res['cycles'])}")
        for c in res["cycles"]:
            print("  " + " ↔ ".join(c))
        print(f"upward imports: {len(res['upward'])}")
        for x, y in res["upward"]:
            print(f"  {x} (layer {layer(x)}) → {y} (layer {layer(y)})")
        print(
            f"in-function imports: {res['in_function_imports']} ({res['in_function_voxinv_imports']} of voxinv modules)"
        )
        lazy = res["in_function"]
        print(
            f"in-function voxinv imports (distinct pairs): {len(lazy)}; "
            f"dodging a cycle: {sum(x['dodges_cycle'] for x in lazy)}, free to hoist: {sum(x['free'] for x in lazy)}, "
            f"upward: {sum(x['upward'] for x in lazy)}"
        )
        for x in lazy if a.lazy else []:
            tags = [k for k in ("dodges_cycle", "free", "upward") if x[k]]
            print(f"  {x['module']} → {x['imports']}" + (f" ({', '.join(tags)})" if tags else ""))
    return 1 if res["cycles"] or res["upward"] else 0


if __name__ == "__main__":
    sys.exit(main())
