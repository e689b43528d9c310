"""The package follows the data: a stage imports only the stages below it, and no two modules import
each other, directly or through others (imports inside functions count: they hide a circle, they do
not break it).

Run ``python tests/test_layering.py`` to print the import graph between stages and the module circles.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medlora"
# io < transforms < models < train < evaluate < tracking < bundle (the contract and its read side)
# < review (the report a clinician reads) < experiment (one run: its start, resume, single, one-class,
# pretraining, validation, the export stage) < sweep (points, workbench, child runs, executors, claims, summary);
# modules at the package root (config, errors, device, registry, provenance, summary) serve every stage
ORDER = ["io", "transforms", "models", "train", "evaluate", "tracking", "bundle", "review", "experiment", "sweep"]
ALLOWED = {
    # the training loop selects epochs by a metric: the metric functions are the one piece of evaluation it uses
    ("train", "evaluate.metrics"),
}
TOP = {"cli", "cli_bundle"}  # the command line shell may import anything


def stage_of(module: str) -> str | None:
    """The stage of a dotted module path under ``medlora`` (``None`` for root-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ORDER else None


def imports_of(path: Path) -> set[str]:
    """Every ``medlora.*`` module ``path`` imports, at module level or inside functions."""
    module = "medlora." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("medlora")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("medlora"):  # ``from medlora.x import y`` may import the module x.y
                deep = target.count(".") >= 2
                found |= {target if deep else f"{target}.{a.name}" for a in node.names}
    return found


def module_name(path: Path) -> str:
    """The dotted module of a file under ``PACKAGE`` (a package's ``__init__`` is the package itself)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> dict[str, set[str]]:
    """Module → the modules it imports (a name imported from a module counts as that module; a
    module's own parent packages are left out)."""
    paths = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    out: dict[str, set[str]] = {}
    for module, path in paths.items():
        out[module] = set()
        for target in imports_of(path):
            while target and target not in paths:  # ``medlora.errors.ConfigError`` → ``medlora.errors``
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                out[module].add(target)
    return out


def module_circles(edges: dict[str, set[str]] | None = None) -> list[list[str]]:
    """Sets of modules that import each other (strongly connected, two or more), each sorted."""
    edges = module_graph() if edges is None else edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while not members or members[-1] != v:
                members.append(stack.pop())
            if len(members) > 1:
                circles.append(sorted(members))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(circles)


def graph() -> dict[tuple[str, str], set[str]]:
    """(importing stage, imported stage) → the importing files."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = stage_of("medlora." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)) or path.stem
        for target in imports_of(path):
            dst = stage_of(target)
            if dst and dst != src:
                edges[(src, dst)].add(str(path.relative_to(PACKAGE.parent)))
    return edges


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "medlora." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        src = stage_of(module)
        if src is None:
            if path.parent == PACKAGE and path.stem not in TOP:  # root modules import no stage
                out += [f"{path.relative_to(PACKAGE.parent)} (root) imports {t}" for t in imports_of(path) if stage_of(t)]
            continue
        for target in imports_of(path):
            dst = stage_of(target)
            if dst is None or dst == src or ORDER.index(dst) < ORDER.index(src):
                continue
            sub = ".".join(target.split(".")[1:3])
            if (src, dst) in ALLOWED or (src, sub) in ALLOWED:
                continue
            out.append(f"{path.relative_to(PACKAGE.parent)} ({src}) imports {target} ({dst}, a higher stage)")
    return out


def test_stages_import_only_lower_stages():
    assert violations() == []


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The check itself works: a lower stage importing a higher one, even inside a function, is caught."""
    pkg = tmp_path / "medlora"
    (pkg / "io").mkdir(parents=True)
    (pkg / "io" / "bad.py").write_text("def f():\n    from ..tracking import mlflow_run\n")
    (pkg / "train").mkdir()
    (pkg / "train" / "ok.py").write_text("from ..evaluate.metrics import auroc\nfrom ..models import lora\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert violations() == ["medlora/io/bad.py (io) imports medlora.tracking.mlflow_run (tracking, a higher stage)"]


def test_no_module_imports_itself_through_others():
    assert [" <-> ".join(c) for c in module_circles()] == []


def test_checker_sees_a_circle(tmp_path, monkeypatch):
    """A circle hidden by an import inside a function is found; a one-way chain is not a circle."""
    pkg = tmp_path / "medlora"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "backbone.py").write_text("from .hub import load\nfrom ..errors import WeightsError\n")
    (pkg / "models" / "hub.py").write_text("def load():\n    from .backbone import sha256_file\n")
    (pkg / "errors.py").write_text("class WeightsError(Exception):\n    pass\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert module_graph()["medlora.models.backbone"] == {"medlora.models.hub", "medlora.errors"}
    assert module_circles() == [["medlora.models.backbone", "medlora.models.hub"]]


if __name__ == "__main__":
    for (src, dst), files in sorted(graph().items(), key=lambda e: (ORDER.index(e[0][0]) if e[0][0] in ORDER else 99,
                                                                     ORDER.index(e[0][1]))):
        print(f"{src:>11} -> {dst:<11} {len(files)} file(s)")
    bad = violations()
    print("\n".join(["", "violations:", *bad]) if bad else "\nno violations")
    modules = module_graph()
    circles = module_circles(modules)
    print(f"\n{len(modules)} modules, {sum(map(len, modules.values()))} imports between them, "
          f"{len(circles)} module circles")
    for circle in circles:
        print("  circle:", " <-> ".join(circle))
