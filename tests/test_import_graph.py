"""The package import graph (DESIGN.md): no cycles, dependencies one way only, a light dataset reader.

Every ``import`` of our own modules counts, also one inside a function: a lazy import hides a cycle
from Python, not from a reader. The layering:

* ``projectors`` imports no other package of ours;
* ``phantoms`` and ``domain_randomization`` import at most ``projectors``;
* ``training`` imports ``domain_randomization``, the dataset reader ``synthex.dataset`` and the task
  declarations ``synthex.tasks`` (pure declarations, no imports of ours), nothing else of ``synthex``
  and nothing of ``projectors`` or ``phantoms`` directly;
* ``synthex`` sits on top.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("synthex", "projectors", "phantoms", "domain_randomization", "training")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (anywhere in its source)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                d = resolve(n)
                if d and d != mod and not mod.startswith(d + "."):  # a package's own __init__ is not a dependency
                    deps.add(d)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports_and_cycles():
    """The checker itself: a function-local import is an edge, and a two-module loop is a cycle."""
    g = import_graph()
    assert "projectors.io" in g["projectors.volume"]  # Volume.from_file reads through projectors.io
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_dependencies_go_one_way():
    allowed = {"projectors": {"projectors"}, "phantoms": {"phantoms", "projectors"},
               "domain_randomization": {"domain_randomization", "projectors"}}
    bad = []
    for mod, deps in import_graph().items():
        top = mod.split(".")[0]
        for d in deps:
            dtop = d.split(".")[0]
            if top in allowed and dtop not in allowed[top]:
                bad.append(f"{mod} -> {d}")
            # training sees datasets, the task registry and the one label implementation (boxes from masks;
            # numpy only), never the projector, physics or phantoms
            if top == "training" and ((dtop in ("projectors", "phantoms") and d != "projectors.labels") or
                                      (dtop == "synthex" and d not in ("synthex", "synthex.dataset", "synthex.tasks"))):
                bad.append(f"{mod} -> {d}")
    assert bad == []
    # synthex.tasks is a leaf: declarations only
    assert import_graph()["synthex.tasks"] == set()


def test_reading_a_dataset_loads_no_warp_torch_or_projector():
    code = (
        "import sys, synthex.dataset, training.data.synthex_format\n"
        "bad = [m for m in ('warp', 'torch', 'projectors.projector', 'projectors.kernels', 'projectors.physics')"
        " if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_names_stay_objects_after_their_modules_are_imported():
    """``sx.render`` is a function even after ``import synthex.<module>``: importing a submodule sets it as
    an attribute of the package, so no public name may be the name of a synthex submodule (``synthex.render``
    once shadowed ``sx.render`` in any process that had imported it)."""
    import synthex

    submodules = {m.name for m in pkgutil.iter_modules(synthex.__path__)}
    assert not submodules & set(synthex.__all__), "rename the submodule: it shadows the public name"
    code = (
        "import importlib, pkgutil, types, synthex as sx\n"
        "for m in pkgutil.iter_modules(sx.__path__):\n"
        "    if not m.name.startswith('_'): importlib.import_module('synthex.' + m.name)\n"
        "print([n for n in sx.__all__ if isinstance(getattr(sx, n), types.ModuleType)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_no_warp_cuda_warning_on_a_machine_without_a_cuda_driver():
    """Warp's native init prints "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver" to the
    process's stderr on every command of a CPU-only machine; synthex initialises Warp with that silenced
    (only where no driver library loads: with a GPU nothing is hidden)."""
    from projectors.projector import _no_cuda_driver

    if not _no_cuda_driver():
        pytest.skip("a CUDA driver is present: Warp prints no such warning")
    code = "from projectors.projector import resolve_device; print(resolve_device('auto'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "cpu"
    assert "CUDA warning" not in run.stderr, run.stderr
