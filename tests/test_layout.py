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


FLOOR = ("data", "models", "metrics", "modes", "files", "checks", "distributed", "pruner", "train", "batches")


@pytest.mark.parametrize("path", [LIB / f"{m}.py" for m in FLOOR] + sorted((LIB / "curvature").glob("*.py")),
                         ids=lambda p: str(p.relative_to(LIB)))
def test_the_floor_and_curvature_never_import_a_method(path):
    """Arrows point down: the floor modules and curvature/ import neither methods/ nor the registry."""
    assert not {m for m in _imports(path) if m.startswith(("pruning_lib.methods", "pruning_lib.registry"))}


@pytest.mark.parametrize("path", [LIB / f"{m}.py" for m in FLOOR], ids=lambda p: str(p.relative_to(LIB)))
def test_the_floor_never_imports_curvature(path):
    """curvature/ sits on the floor (it imports batches, distributed, modes), never the other way round."""
    assert not {m for m in _imports(path) if m.startswith("pruning_lib.curvature")}


def test_importing_the_library_and_its_registry_loads_no_plotting_or_widgets():
    code = ("import sys, pruning_lib, pruning_lib.registry, pruning_lib.experiment; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'seaborn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


# ------------------------------------------------------------------------------------------ one definition each

def _trees() -> dict[Path, ast.AST]:
    return {p: ast.parse(p.read_text()) for p in MODULES}


ONE_DEFINITION = {"first_batches": "batches.py", "damp": "curvature/damping.py",
                  "kfac_quadratic_form": "curvature/quadratic.py"}


@pytest.mark.parametrize("name", sorted(ONE_DEFINITION))
def test_the_curvature_plumbing_is_defined_once(name):
    """The batch loop, damping and the K-FAC quadratic form each have exactly one definition."""
    where = [str(p.relative_to(LIB)) for p, tree in _trees().items() for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name]
    assert where == [ONE_DEFINITION[name]]


def _is_break_guard(stmt: ast.stmt) -> bool:
    """`if <name> >= <anything>: break` (or `>`): the hand-written "first n batches / examples" stop."""
    return (isinstance(stmt, ast.If) and len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Break)
            and isinstance(stmt.test, ast.Compare) and isinstance(stmt.test.ops[0], (ast.GtE, ast.Gt))
            and isinstance(stmt.test.left, (ast.Name, ast.Attribute)))


def _is_batch_loop(node: ast.AST) -> bool:
    """`for ... in enumerate(...)` / `for x, y in loader` whose first statement is a break guard."""
    return (isinstance(node, ast.For) and bool(node.body) and _is_break_guard(node.body[0])
            and (isinstance(node.target, ast.Tuple) or isinstance(node.iter, ast.Call)))


def _is_damping(node: ast.AST) -> bool:
    """`x + γ * x.mean()` (eigenvalue damping) or `M + c * torch.eye(n)` (matrix damping)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.BinOp)
            and isinstance(node.right.op, ast.Mult)):
        return False
    factor = node.right.right
    mean_of_left = (isinstance(factor, ast.Call) and isinstance(factor.func, ast.Attribute)
                    and factor.func.attr == "mean" and ast.dump(factor.func.value) == ast.dump(node.left))
    return mean_of_left or ".eye(" in ast.unparse(node.right)


def _is_quadratic_form(node: ast.AST) -> bool:
    """A four-operand full einsum contraction ("a,b,c,d->") or torch.trace(G @ d @ A @ d.T)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
        return False
    first = node.args[0]
    spec = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
    if node.func.attr == "einsum":
        return spec.endswith("->") and spec.count(",") == 3
    return node.func.attr == "trace" and "@" in ast.unparse(first) and ".T" in ast.unparse(first)


def _hand_written(tree: ast.AST) -> list[int]:
    """Lines of hand-written batch loops, damping and K-FAC quadratic forms."""
    return [node.lineno for node in ast.walk(tree)
            if _is_batch_loop(node) or _is_damping(node) or _is_quadratic_form(node)]


# The one definition of each (damping.py writes its kinds; quadratic.py the form and its ½ version).
HAND_WRITTEN_ALLOWED = {"curvature/damping.py": 3, "curvature/quadratic.py": 2}


def test_no_hand_written_batch_loop_damping_or_quadratic_form():
    found = {str(p.relative_to(LIB)): _hand_written(t) for p, t in _trees().items()}
    found = {k: v for k, v in found.items() if v}
    extra = {k: v for k, v in found.items() if len(v) > HAND_WRITTEN_ALLOWED.get(k, 0)}
    assert not extra, f"hand-written batch loop / damping / K-FAC quadratic form (use the shared one): {extra}"


# ------------------------------------------------------------------------------------------ private names

def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_path(mod: str) -> Path | None:
    rel = Path(*mod.split(".")[1:]) if mod.startswith("pruning_lib.") else None
    if rel is None:
        return None
    for p in (LIB / rel.with_suffix(".py"), LIB / rel / "__init__.py"):
        if p.exists():
            return p
    return None


def _private_uses(path: Path) -> list[str]:
    """`from X import _name` and `alias._name` on an imported pruning_lib module, X another module."""
    package = path.relative_to(LIB.parent).parts[:-1]
    tree = ast.parse(path.read_text())
    aliases, out = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pruning_lib.") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if not mod.startswith("pruning_lib"):
                continue
            for a in node.names:
                if _module_path(f"{mod}.{a.name}") is not None:
                    aliases[a.asname or a.name] = f"{mod}.{a.name}"
                elif _private(a.name) and _module_path(mod) != path:
                    out.append(f"from {mod} import {a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and _private(node.attr) and _module_path(aliases[node.value.id]) != path):
            out.append(f"{node.value.id}.{node.attr}")
    return sorted(set(out))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_uses_another_modules_private_names(path):
    assert _private_uses(path) == []
