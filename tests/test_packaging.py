"""Packaging facts: environment.yml matches pyproject.toml; notebooks are committed without outputs, and the git
filter that `make lab` installs keeps them so."""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # conda's name for a PyPI package where they differ


def _requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    out = {}
    for r in reqs:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", r).groups()
        out[CONDA_NAMES.get(name.lower(), name.lower())] = spec
    return out


def _environment() -> dict[str, str]:
    out = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"\s+- ([A-Za-z][A-Za-z0-9_.-]*)([<>=!].*)?$", line)
        if m and m.group(1) not in ("pip", "python"):
            out[m.group(1).lower()] = m.group(2) or ""
    return out


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    assert _environment() == _requirements()


def test_environment_yml_pins_python_and_installs_the_kit():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"- python=3\.\d+", text) and "- -e ." in text


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def test_the_outputs_filter_keeps_lecture_outputs_out_of_git(tmp_path):
    """`make outputs-filter` (run by `make lab`): for a notebook saved with outputs, as JupyterLab's autosave does,
    `git diff` shows nothing, and committing it (`commit -a`, or `add` then `commit`) stores no outputs; after
    `git add` the status is clean (before, git lists it from its size alone: nbstripout's known limit)."""
    for name in ("Makefile", ".gitattributes"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    nb_path = tmp_path / "notebooks" / "00.ipynb"
    shutil.copy(ROOT / "notebooks" / "00_setup_and_baseline.ipynb", nb_path)
    _git(tmp_path, "init", "-q")
    subprocess.run(["make", "-s", "outputs-filter", f"VENV={sys.prefix}"], cwd=tmp_path, check=True, capture_output=True)
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "course")
    nb = nbformat.read(nb_path, as_version=4)  # saved the way JupyterLab saves it (nbformat)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="trained\n")]
    code.execution_count = 1
    nbformat.write(nb, nb_path)
    assert _git(tmp_path, "diff") == ""
    _git(tmp_path, "add", "notebooks")
    assert _git(tmp_path, "status", "--porcelain") == ""
    _git(tmp_path, "commit", "-q", "-a", "--allow-empty", "-m", "after the lecture")
    stored = json.loads(_git(tmp_path, "show", "HEAD:notebooks/00.ipynb"))
    assert all(not c.get("outputs") for c in stored["cells"] if c["cell_type"] == "code")
