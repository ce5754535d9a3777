"""Build the course site (`make book`): the notebooks, executed in fast mode, and the docs pages as one static HTML
book (Sphinx + myst-nb + sphinx-book-theme, configured in book/conf.py), offline.

1. Stage a source tree under build/book/src with the checkout's layout, so every relative link of the README and the
   docs pages still resolves: README.md is the home page, with the book's table of contents (TOC below) appended.
2. Execute each notebook with nbclient from notebooks/ (PRUNING_FAST=1, as CI runs them) and replace every widget
   output by what the widget showed at its default values (the outputs its Output captured, and the controls'
   values): a static page cannot run the kernel behind a slider, and the widgets' JavaScript would come from a CDN.
   `--no-execute` stages the notebooks as committed (no outputs): the skeleton tests/test_book.py builds.
3. sphinx-build -W: a broken link, a missing image or a page outside the table of contents fails the build.

    python scripts/build_book.py [--no-execute] [--out build/book]    # then open build/book/html/README.html
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# The left-hand table of contents: the course in notebook order, then the docs pages (without .md).
DOCS_TOC = {
    "Guide": ["docs/install", "data/README", "docs/guide/your-model", "docs/guide/methods", "docs/guide/support_matrix",
              "docs/guide/distributed"],
    "Results": ["docs/results/README", "docs/results/quickstart", "docs/results/ranking", "docs/results/latency",
                "docs/results/ablation", "docs/results/posttrain", "docs/results/transformer", "docs/results/resnet32",
                "docs/results/gpu", "docs/results/benchmarks", "benchmarks/RESULTS", "docs/results/refactor_checks"],
    "Reference": ["docs/reference/methods", "docs/reference/config"],
    "About the kit": ["docs/course", "docs/architecture", "docs/guarantees", "docs/limitations", "CHANGELOG"],
}


def notebooks() -> list[Path]:
    """The course notebooks in their order (the number in front of each name)."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def toctree() -> str:
    """MyST toctree blocks for the home page: one captioned, hidden tree per section."""
    sections = {"Course": [f"notebooks/{p.stem}" for p in notebooks()], **DOCS_TOC}
    blocks = [f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n" + "\n".join(docs) + "\n```"
              for caption, docs in sections.items()]
    return "\n\n" + "\n\n".join(blocks) + "\n"


def static_widget_outputs(output: dict, state: dict) -> list[dict]:
    """The static outputs of one widget output: a line naming the controls' values, then every output the widget's
    Output areas captured (its plot at the default values), in the order of the widget tree."""
    controls, captured = [], []

    def walk(model_id: str) -> None:
        model = state.get(model_id, {})
        fields = model.get("state", {})
        if model.get("model_name") == "OutputModel":
            captured.extend(fields.get("outputs", []))
        if "description" in fields and ("value" in fields or "index" in fields):
            value = fields.get("value", None)
            if value is None and "_options_labels" in fields and fields.get("index") is not None:
                value = fields["_options_labels"][fields["index"]]
            controls.append(f"{fields['description']} = {value}")
        for child in fields.get("children", []):
            walk(child.removeprefix("IPY_MODEL_"))

    walk(output["data"][WIDGET_VIEW]["model_id"])
    note = ("Interactive in JupyterLab; shown here at " + ", ".join(controls) + ".\n") if controls else \
        "Interactive in JupyterLab; shown here at its default values.\n"
    return [nbformat.v4.new_output("stream", name="stdout", text=note), *captured]


def freeze_widgets(nb) -> None:
    """Replace widget outputs by static_widget_outputs and drop the widget state (in place)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        frozen = []
        for output in cell.outputs:
            if WIDGET_VIEW in output.get("data", {}):
                frozen.extend(nbformat.from_dict(o) for o in static_widget_outputs(output, state))
            else:
                frozen.append(output)
        cell.outputs = frozen


def execute(src: Path, timeout: int) -> nbformat.NotebookNode:
    """`src` executed by nbclient in fast mode, from its own folder, with the widget state kept."""
    from nbclient import NotebookClient

    nb = nbformat.read(src, as_version=4)
    os.environ["PRUNING_FAST"] = "1"
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(src.parent)}}).execute()
    freeze_widgets(nb)
    return nb


def stage(src_dir: Path, run_notebooks: bool, timeout: int) -> None:
    """Write the book's source tree under `src_dir` (see the module docstring)."""
    if src_dir.exists():
        shutil.rmtree(src_dir)
    for page in ["README.md", "CHANGELOG.md", "benchmarks/RESULTS.md", "data/README.md"]:
        (src_dir / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / page, src_dir / page)
    shutil.copytree(ROOT / "docs", src_dir / "docs")
    with open(src_dir / "README.md", "a", encoding="utf-8") as home:
        home.write(toctree())
    (src_dir / "notebooks").mkdir()
    for nb_path in notebooks():
        if run_notebooks:
            print(f"executing {nb_path.name} (fast mode)", flush=True)
            nbformat.write(execute(nb_path, timeout), src_dir / "notebooks" / nb_path.name)
        else:
            shutil.copy2(nb_path, src_dir / "notebooks" / nb_path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="build folder (default build/book)")
    parser.add_argument("--no-execute", action="store_true", help="stage the notebooks without running them")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell (default 600)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    stage(out / "src", not args.no_execute, args.timeout)
    html = out / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(ROOT / "book"),
           str(out / "src"), str(html)]
    done = subprocess.run(cmd)
    if done.returncode == 0:
        print(f"book: {html / 'README.html'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
