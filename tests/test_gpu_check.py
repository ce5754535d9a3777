"""scripts/gpu_check.py in its dry mode (CPU, tiny sizes): every step runs and passes, and the section it writes into
a results file names the machine, every step, the full-size run's rows and the curvature table; a rerun replaces
the section instead of adding a second."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_the_dry_run_passes_every_step_and_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark tables\n\n## curvature\n\nkept as it was\n")
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry", "--results", str(results),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith("# Benchmark tables\n\n## curvature\n\nkept as it was\n")
    section = text[text.index(gpu_check.START):]
    assert "CPU dry run" in section and section.rstrip().endswith(gpu_check.END)
    steps = [line for line in section.splitlines() if line.startswith("| ") and " | ok | " in line]
    assert len(steps) == 5, section
    for method in ("l1", "obs", "improved_eigendamage"):
        assert f"| {method} | 90% |" in section and f"| {method} | 0% |" in section
    assert "forward+backward" in section  # the curvature table


def test_a_rerun_replaces_the_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# T\n\nbefore\n")
    for n in (1, 2):
        gpu_check.write_section(results, f"{gpu_check.START}\nrun {n}\n{gpu_check.END}\n")
    assert results.read_text() == f"# T\n\nbefore\n\n{gpu_check.START}\nrun 2\n{gpu_check.END}\n"
