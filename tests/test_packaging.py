"""Packaging facts: environment.yml matches pyproject.toml; notebooks are committed without outputs."""
import json
import re
import tomllib
from pathlib import Path

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
