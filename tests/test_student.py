"""Course material: the exercise check (pruning_lib.exercises), the student edition (scripts/make_student.py)
and the frame every notebook keeps (objectives, runtime, exercises, take-aways, questions)."""
import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from pruning_lib.exercises import ExerciseError, check_exercise

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_student)


def _inputs(g):
    return (torch.randn(5, 3, generator=g),)


def test_check_exercise_passes_fails_and_waits(capsys):
    assert check_exercise("abs", lambda x: x.abs(), torch.abs, _inputs)
    assert "[ok] abs" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match=r"^\[x\] abs: trial 0 differs"):
        check_exercise("abs", lambda x: x, torch.abs, _inputs)
    with pytest.raises(ExerciseError, match=r"shape \(2, 3\), expected \(5, 3\)"):
        check_exercise("abs", lambda x: x.abs()[:2], torch.abs, _inputs)

    def stub(x):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match=r"^\[ \] abs: not done yet") as failure:
        check_exercise("abs", stub, torch.abs, _inputs)
    assert failure.value.__suppress_context__  # no "during handling of NotImplementedError" chain


def test_a_failed_check_shows_its_message_alone_in_ipython():
    """IPython renders an exception with `_render_traceback_` as those lines only: the student sees one line."""
    shell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell.instance()
    result = shell.run_cell("from pruning_lib.exercises import ExerciseError, check_exercise\n"
                            "import torch\n"
                            "def stub(x):\n    raise NotImplementedError\n"
                            "check_exercise('e', stub, torch.abs, lambda g: (torch.randn(2, generator=g),))")
    assert isinstance(result.error_in_exec, ExerciseError)
    assert result.error_in_exec._render_traceback_() == ["[ ] e: not done yet (write the exercise cell above, run it, "
                                                         "then run this check again)"]


def test_check_exercise_compares_containers():
    ref = lambda x: {"sum": x.sum(), "parts": [x.max(), 3]}  # noqa: E731
    assert check_exercise("c", ref, ref, _inputs)
    with pytest.raises(ExerciseError):
        check_exercise("c", lambda x: {"sum": x.sum(), "parts": [x.max(), 4]}, ref, _inputs)
    with pytest.raises(ExerciseError):
        check_exercise("c", lambda x: {"sum": x.sum()}, ref, _inputs)


def test_solution_regions_become_stubs_at_their_indentation():
    src = "def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n"
    new, n = make_student.student_source(src, "code")
    assert n == 1 and "x + 1" not in new
    assert new == f"def f(x):\n    \"\"\"doc\"\"\"\n    {make_student.STUB}\n"
    ast.parse(new)
    text, n = make_student.student_source("Q: why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->", "markdown")
    assert n == 1 and "Because" not in text and make_student.ANSWER in text
    with pytest.raises(ValueError, match="without its END"):
        make_student.student_source("### BEGIN SOLUTION\nx = 1\n", "code")


def _code(source: str) -> str:
    """A cell's Python without IPython magics / shell lines."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_student_edition_stubs_every_exercise_and_keeps_the_checks(tmp_path):
    assert make_student.main(["--out", str(tmp_path)]) == 0
    for path in NOTEBOOKS:
        full = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        nbformat.validate(student)
        markers = sum(c.source.count("### BEGIN SOLUTION") for c in full.cells if c.cell_type == "code")
        stubs = sum(c.source.count(make_student.STUB) for c in student.cells)
        assert markers >= 2 and stubs == markers, f"{path.name}: {markers} exercises, {stubs} stubs"
        assert not any("SOLUTION" in c.source for c in student.cells), path.name
        checks = [c.source for c in full.cells if "check_exercise(" in c.source and "SOLUTION" not in c.source]
        assert len(checks) >= 2, f"{path.name}: every exercise needs a check cell"
        assert all(s in [c.source for c in student.cells] for s in checks), path.name
        for c in student.cells:
            if c.cell_type == "code":
                ast.parse(_code(c.source))
                assert not c.outputs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_states_objectives_runtime_takeaways_and_questions(path):
    cells = nbformat.read(path, as_version=4).cells
    head = cells[0].source
    assert "**Objectives.**" in head and "**Runtime.**" in head, f"{path.name}: first cell"
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "**Take-aways**" in text and "**Questions for discussion**" in text, path.name


def _restore_solutions(student_dir: Path) -> int:
    """Put every solution back into the student edition in `student_dir`, cell by cell from notebooks/ (a cell whose
    student form is not what make_student makes of the original fails the test); returns the cells restored."""
    restored = 0
    for path in NOTEBOOKS:
        full = nbformat.read(path, as_version=4)
        student = nbformat.read(student_dir / path.name, as_version=4)
        assert len(full.cells) == len(student.cells), path.name
        for f, s in zip(full.cells, student.cells):
            stubbed, n = make_student.student_source(f.source, f.cell_type)
            assert s.source == stubbed, f"{path.name}: a student cell differs from its stubbed original"
            if n:
                s.source, restored = f.source, restored + 1
        nbformat.write(student, student_dir / path.name)
    return restored


def test_the_student_edition_with_its_solutions_restored_runs_under_nbval(tmp_path):
    """`make student` writes <repo>/student/; run from there (its own working directory), every notebook must find
    the kit's configs, runs and docs exactly as from notebooks/ (fast mode, as CI runs the course)."""
    student_dir = tmp_path / "student"
    assert make_student.main(["--out", str(student_dir)]) == 0
    assert _restore_solutions(student_dir) >= 2 * len(NOTEBOOKS)
    env = {**os.environ, "PRUNING_FAST": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
                          "-p", "no:cacheprovider", "."], cwd=student_dir, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
