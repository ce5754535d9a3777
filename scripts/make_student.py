"""Write the student edition of the notebooks: `python scripts/make_student.py [--out student]` (`make student`).

Every code-cell region between nbgrader's markers `### BEGIN SOLUTION` and `### END SOLUTION` becomes
`raise NotImplementedError(...)` at the marker's indentation; a markdown region between
`<!-- BEGIN SOLUTION -->` and `<!-- END SOLUTION -->` becomes "*Your answer here.*". Outputs are cleared;
check cells and everything else stay as they are.

Why not nbgrader itself: it needs its own cell metadata, a course directory and a database to release a
notebook, while we only need its marker convention (kept, so an instructor can move to nbgrader as is).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CODE = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.M | re.S)
TEXT = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)
STUB = 'raise NotImplementedError("exercise: write this part, then run the check cell below")'
ANSWER = "*Your answer here.*"


def student_source(source: str, cell_type: str) -> tuple[str, int]:
    """(the cell's source with every solution region replaced by a stub, the number of regions replaced).
    Raise ValueError on a BEGIN marker without its END."""
    if cell_type == "code":
        new, n = CODE.subn(lambda m: f"{m.group(1)}{STUB}{m.group(2)}", source)
        marker = "### BEGIN SOLUTION"
    else:
        new, n = TEXT.subn(ANSWER, source)
        marker = "<!-- BEGIN SOLUTION -->"
    if marker in new:
        raise ValueError(f"a '{marker}' marker without its END marker in:\n{source[:200]}")
    return new, n


def student_notebook(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """(a copy of `nb` with solutions stubbed and outputs cleared, the number of solution regions)."""
    out = nbformat.from_dict(nb)
    total = 0
    for cell in out.cells:
        cell.source, n = student_source(cell.source, cell.cell_type)
        total += n
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return out, total


def main(argv: list[str] | None = None) -> int:
    """Write <out>/NN_*.ipynb for every notebooks/NN_*.ipynb; print the exercises stubbed per notebook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(ROOT / "notebooks"))
    parser.add_argument("--out", default=str(ROOT / "student"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(args.src).glob("[0-9][0-9]_*.ipynb")):
        nb, n = student_notebook(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        nbformat.write(nb, out / path.name)
        print(f"{path.name}: {n} solution region(s) stubbed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
