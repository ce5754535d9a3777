"""The house rules of pruning_lib's layout: imports point down (methods never import a plot or a widget),
the library imports without matplotlib / ipywidgets, and no module grows past 400 lines."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "pruning_lib"
MODULES = sorted(LIB.rglob("*.py"))
UI = ("viz", "widgets")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    package = path.relative_to(LIB.parent).parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


RUNNER = ("experiment.py",)  # on top: it draws the run's plots (viz.results, imported inside a function)


@pytest.mark.parametrize("path", [p for p in MODULES if p.relative_to(LIB).parts[0] not in UI + RUNNER],
                         ids=lambda p: str(p.relative_to(LIB)))
def test_library_code_never_imports_a_plot_or_a_widget(path):
    bad = {m for m in _imports(path) if m.split(".")[0] in ("matplotlib", "ipywidgets", "seaborn")
           or any(m.startswith(f"pruning_lib.{ui}") for ui in UI)}
    assert not bad


@pytest.mark.parametrize("path", sorted((LIB / "viz").glob("*.py")), ids=lambda p: p.name)
def test_plots_never_import_widgets(path):
    assert not {m for m in _imports(path) if m.startswith("ipywidgets") or m.startswith("pruning_lib.widgets")}


@pytest.mark.parametrize("path", sorted((LIB / "methods").rglob("*.py")) + sorted((LIB / "curvature").glob("*.py")),
                         ids=lambda p: str(p.relative_to(LIB)))
def test_methods_and_curvature_do_not_import_the_runner(path):
    runner = ("pruning_lib.experiment", "pruning_lib.config", "pruning_lib.results", "pruning_lib.registry",
              "pruning_lib.notebook")
    assert not {m for m in _imports(path) if m.startswith(runner)}


FLOOR = ("data", "models", "metrics", "modes", "files", "checks", "distributed", "pruner", "train")


@pytest.mark.parametrize("path", [LIB / f"{m}.py" for m in FLOOR] + sorted((LIB / "curvature").glob("*.py")),
                         ids=lambda p: str(p.relative_to(LIB)))
def test_the_floor_and_curvature_never_import_a_method(path):
    """Arrows point down: the floor modules and curvature/ import neither methods/ nor the registry."""
    assert not {m for m in _imports(path) if m.startswith(("pruning_lib.methods", "pruning_lib.registry"))}


def test_importing_the_library_and_its_registry_loads_no_plotting_or_widgets():
    code = ("import sys, pruning_lib, pruning_lib.registry, pruning_lib.experiment; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'seaborn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400
