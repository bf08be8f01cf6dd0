"""Import circles between the project's modules: `python -m tools.import_cycles` (part of `make lint`).

A circle (a imports b, b imports a, lazily or not) means neither module can be read, tested or moved
without the other. Every import counts, including those inside functions: a lazy import hides a circle
from Python's loader, not from a reader.
"""

import argparse
import ast
import sys
from pathlib import Path

from tools import paths
from tools.cli import exit_on
from tools.errors import ToolkitError

PACKAGES = ("tools", "bench", "q1_dropout_augment", "q2_wikiart_finetune", "q3_visualize_break")


class ImportCycle(ToolkitError):
    pass


def module_imports(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """{module: project modules it imports} for every .py file of `packages` under `root`."""
    files = {}
    for package in packages:
        for f in sorted((root / package).rglob("*.py")):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = f
    graph = {}
    for name, f in files.items():
        found = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from tools import paths` imports the module tools.paths; `from tools.cli import exit_on`, tools.cli
                found.update(m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in files)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in files)
        found.discard(name)
        found.discard(name.rpartition(".")[0])  # a module's own package (its __init__) is not a circle
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other round a circle (Tarjan's strongly connected
    components of more than one module), each sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.import_cycles", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=paths.REPO, help="the clone to check (default: this one)")
    a = ap.parse_args(argv)
    with exit_on():
        found = cycles(module_imports(a.root))
        if found:
            raise ImportCycle("modules that import each other: " + "; ".join(", ".join(c) for c in found)
                              + ". Fix: move what both need into a module that imports neither")
    print(f"no import circles among {', '.join(PACKAGES)}", file=sys.stderr)


if __name__ == "__main__":
    main()
