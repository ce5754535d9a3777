"""torch.distributed on CPU (gloo, 2 processes on loopback through torchrun) and sweeps split into shards:
the statistics and the fine-tune of 2 ranks equal one process on all the data; shards plus a merge equal one
run; a killed rank fails the run naming it, and a rerun resumes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import dist_worker
from helpers import rel, result_rows, tiny_config, tiny_raw
from pruning_lib.data import make_loader
from pruning_lib.experiment import merge_shards, run

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]  # free port
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNING_FAST": "1"}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "out.pt"
    p = subprocess.run([*TORCHRUN, str(ROOT / "tests" / "dist_worker.py"), str(out)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return torch.load(out, weights_only=True)


def test_curvature_statistics_of_two_ranks_equal_one_process_on_all_batches(two_ranks):
    """K-FAC (both forms), EKFAC, the diagonal Fisher, Taylor scores and evaluation, summed over 2 ranks with
    half the batches each, equal the single-process values on all batches."""
    assert two_ranks["world"] == 2
    single = dist_worker.statistics(dist_worker.batches(), num_batches=dist_worker.BATCHES)
    assert set(single) == set(two_ranks["stats"]) - {"eval_shard"}
    for key, ref in single.items():
        got = two_ranks["stats"][key]
        err = rel(got, ref, floor=1e-30)
        assert err <= 1e-6, f"{key}: relative error {err:.2e}"
    assert torch.allclose(two_ranks["stats"]["eval_shard"], single["eval"], rtol=1e-9)


def test_a_two_rank_finetune_equals_one_process_on_the_combined_batch(two_ranks):
    loader = make_loader(dist_worker.data(), 2 * dist_worker.BATCH, shuffle=False)
    single = dist_worker.finetuned(loader)
    for key, ref in single.items():
        assert torch.allclose(two_ranks["weights"][key], ref, atol=1e-5, rtol=0), key


# The tiny run of these tests: two methods at three ratios, the default fine-tuning rate, 3 steps an epoch.
RUN = {"lr": None, "max_steps_per_epoch": 3, "methods": ["l1", "magnitude_global"], "ratios": [0.0, 0.5, 0.7]}


def test_two_shards_and_a_merge_give_the_rows_of_one_run(tmp_path):
    whole = run(tiny_config(tmp_path / "one", **RUN), progress=False)
    cfg = tiny_config(tmp_path / "split", **{**RUN, "seeds": [0, 1]})
    shards = [run(cfg, progress=False, shard=(i, 2)) for i in range(2)]
    assert sorted(len(s) for s in shards) == [6, 6]  # disjoint halves of the 12 rows
    merged = merge_shards(cfg.run_dir)
    assert len(merged) == 12 and not merged.duplicated(["method", "target_ratio", "seed"]).any()
    assert result_rows(merged[merged.seed == 0].reset_index(drop=True)) == result_rows(whole)
    assert (cfg.run_dir / "tables.md").is_file()
    assert merge_shards(cfg.run_dir).equals(merged)  # merging again changes nothing


def _children(pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes under the torchrun process `pid` (Linux /proc)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if ppid == pid and rank:
            out[int(rank[0])] = int(proc.name)
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_rank_fails_the_run_naming_it_and_a_rerun_resumes(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_raw(tmp_path, **{**RUN, "methods": ["l1", "taylor", "random", "magnitude_global"],
                                                    "ratios": [0.0, 0.5, 0.7, 0.8]})))
    csv = tmp_path / "runs" / "tiny" / "results.csv"
    cmd = [*TORCHRUN, "main_prune.py", "--config_path", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (csv.is_file() and len(csv.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    assert csv.is_file(), "no row was written"
    os.kill(_children(proc.pid)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "rank      : 1" in err or "rank: 1" in err, err[-2000:]
    written = pd.read_csv(csv)
    assert 2 <= len(written) < 16
    shutil.copy(csv, tmp_path / "before.csv")
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    after = pd.read_csv(csv)
    assert len(after) == 16 and after.head(len(written)).equals(written)  # rows already written are kept


def test_sync_batchnorm_conversion_is_undone_sharing_the_tensors():
    """train(sync_batchnorm=True) converts in place for DDP and converts back; the BatchNorms keep their tensors."""
    from torch import nn

    from pruning_lib.models import build_model
    from pruning_lib.train import revert_sync_batchnorm

    model = build_model("resnet8", 1, 1, 10)
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    revert_sync_batchnorm(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms > 0
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before


def test_a_bad_input_found_by_rank_0_stops_every_rank_with_one_line(tmp_path):
    """Rank 0 alone reads results.csv; its error reaches every rank (no rank is left waiting in a collective)."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_raw(tmp_path, **RUN)))
    csv = tmp_path / "runs" / "tiny" / "results.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("method,target_ratio\nl1,0.5\nl1\nl1,0.7\n")
    p = subprocess.run([*TORCHRUN, "main_prune.py", "--config_path", str(config)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert p.stderr.count("error: ") == 1 and "results.csv: line 1 is damaged" in p.stderr, p.stderr[-2000:]


def test_concurrent_atomic_writes_never_collide_or_tear(tmp_path):
    """Parallel shards write the same config.json: every write lands whole, none fails."""
    import threading

    from pruning_lib.files import write_text_atomic

    path, errors = tmp_path / "config.json", []
    texts = [json.dumps({"writer": i, "pad": "x" * 20000}) for i in range(2)]

    def writer(i):
        try:
            for _ in range(200):
                write_text_atomic(path, texts[i])
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if path.is_file():
            seen.add(path.read_text())
    for t in threads:
        t.join()
    assert not errors and seen <= set(texts) and not list(tmp_path.glob(".*.tmp"))
