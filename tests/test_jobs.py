"""`pruning-kit run --jobs N` (pruning_lib.jobs): the same rows, to the last digit, whichever number of workers ran
them; a run folder refuses rows of another thread count; a rerun resumes without work; a failing worker is named."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import result_rows, tiny_raw
from pruning_lib import jobs
from pruning_lib.cli import main
from pruning_lib.config import ConfigError, validate
from pruning_lib.experiment import pending
from pruning_lib.results import read_rows, write_rows


def write_config(tmp_path, **over):
    raw = tiny_raw(tmp_path, max_steps_per_epoch=3, methods=["magnitude_global", "l1"], seeds=[0, 1], **over)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    return path, raw


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pruning_lib.cli", "run", *map(str, args), "--quiet"],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def one_and_three(tmp_path_factory):
    """The tiny sweep (2 seeds x 2 methods x 2 targets) in one process and in three workers, one thread each."""
    out = {}
    for n in (1, 3):
        path, raw = write_config(tmp_path_factory.mktemp(f"jobs{n}"))
        done = cli(path, "--jobs", n, "--threads", 1)
        assert done.returncode == 0, done.stderr[-2000:]
        out[n] = (path, raw)
    return out


def test_rows_do_not_depend_on_the_number_of_workers(one_and_three):
    frames = {n: pd.read_csv(f"{raw['output_dir']}/tiny/results.csv") for n, (_, raw) in one_and_three.items()}
    assert len(frames[1]) == 8 and (frames[1]["status"] == "ok").all()
    assert result_rows(frames[1].astype(str), sort=True) == result_rows(frames[3].astype(str), sort=True)
    for n, (_, raw) in one_and_three.items():  # each trained its own baselines, keyed by the thread count
        assert sorted(p.name[-6:] for p in Path(raw["checkpoint_dir"]).iterdir()) == ["_t1.pt", "_t1.pt"]


def test_a_rerun_resumes_with_nothing_left_to_do(one_and_three):
    path, raw = one_and_three[3]
    before = pd.read_csv(f"{raw['output_dir']}/tiny/results.csv")
    done = cli(path, "--jobs", 2, "--threads", 1)
    assert done.returncode == 0, done.stderr[-2000:]
    after = pd.read_csv(f"{raw['output_dir']}/tiny/results.csv")
    pd.testing.assert_frame_equal(before, after)


def test_a_folder_refuses_rows_of_another_thread_count(one_and_three):
    path, raw = one_and_three[1]
    done = cli(path, "--threads", 2)
    assert done.returncode == 2
    assert "threads" in done.stderr and "--threads 1" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_pending_skips_rows_of_every_shard_file(tmp_path, one_and_three):
    _, raw = write_config(tmp_path)
    cfg = validate(raw)
    rows, todo = pending(cfg, (0, 2))
    assert rows == [] and len(todo) == 4 and {k[0] for k in todo} == {0}
    finished = [r for r in read_rows(Path(one_and_three[1][1]["output_dir"]) / "tiny" / "results.csv")
                if (r["seed"], r["method"], r["target_ratio"]) == (0, "l1", 0.5)]
    write_rows(cfg.run_dir / "results.shard-1-of-3.csv", finished)  # a row finished by a run with another N
    _, todo = pending(cfg, (0, 2))
    assert (0, "l1", 0.5) not in todo and len(todo) == 3


def test_a_failing_worker_is_named_with_its_log(tmp_path, monkeypatch):
    path, raw = write_config(tmp_path)
    monkeypatch.setattr(jobs, "worker_command",
                        lambda *a: [sys.executable, "-c", "import sys; print('boom'); sys.exit(5)"])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(jobs.WorkerFailed, match=r"worker \d exited with code 5 \(boom\); log: .*worker-\d\.log"):
            jobs.run_jobs(validate(raw), str(path), 2, threads=1, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs: '0' is not an integer >= 1"),
    (["--jobs", "2", "--shard", "0/2"], "--jobs splits the sweep itself"),
    (["--threads", "x"], "--threads: 'x' is not an integer >= 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    path, _ = write_config(tmp_path)
    assert main(["run", str(path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_the_folder_records_the_threads(one_and_three):
    _, raw = one_and_three[3]
    saved = json.loads(open(f"{raw['output_dir']}/tiny/config.json").read())
    assert saved["threads"] == 1 and saved["world_size"] == 1
