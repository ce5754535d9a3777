"""The kit's safety promises in one place (README: "What the kit guarantees").

1. No dataset or model file runs code when loaded.
2. No result is lost or mislabelled when results.csv is cut (kill, full disk, sync conflict).
3. A target a method cannot reach fails its row, not the sweep.
4. A cached baseline is reused only for the same data split.
5. Every bad config is refused up front: exit 2, one line naming the field, within seconds.
6. Damaged dataset files are named.
7. Damaged checkpoints and pruned-model files are named.
"""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import main_prune
from datafiles import write_fashion_mnist, write_idx
from helpers import result_rows, tiny_config, tiny_raw
from pruning_lib.methods.channel import load_pruned, save_pruned
from pruning_lib.data import DatasetError, DatasetMissingError, load_dataset
from pruning_lib.experiment import run
from pruning_lib.files import DamagedFileError
from pruning_lib.models import build_model
from pruning_lib.results import ResultsFileError, read_rows
from pruning_lib.train import TrainRecipe, train_baseline

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- 1. files that would run code
class _Payload:
    """Unpickling this runs `touch <marker>`: what a crafted dataset file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_cifar100(root: Path, marker: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(pickle.dumps({"data": _Payload(marker), "fine_labels": [0]}))
    (folder / "test").write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]}))


@pytest.mark.parametrize("verify", [True, False])
def test_a_crafted_cifar_pickle_does_not_run(tmp_path, verify):
    marker = tmp_path / "pwned"
    _crafted_cifar100(tmp_path, marker)
    with pytest.raises(DatasetError, match="md5 differs" if verify else r"refused global \w+\.system"):
        load_dataset("cifar100", root=tmp_path, verify_checksums=verify)
    assert not marker.exists()


def test_a_crafted_cifar_pickle_does_not_run_through_the_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _crafted_cifar100(tmp_path / "data", marker)
    cfg = _write_config(tmp_path, dataset="cifar100", data_root=str(tmp_path / "data"))
    assert main_prune.main(["--config_path", str(cfg)]) == 2
    assert "md5 differs" in capsys.readouterr().err and not marker.exists()


def test_a_model_file_with_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"format": 1, "state_dict": _Payload(marker)}, path)
    with pytest.raises(DamagedFileError, match=str(path)):
        load_pruned(path)
    assert not marker.exists()


# ---------------------------------------------------------------- 2. damaged results.csv
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run at 0 / 50 / 70 % (the rows every damaged run must end with)."""
    base = tmp_path_factory.mktemp("ref")
    df = run(tiny_config(base, max_steps_per_epoch=3, ratios=[0.0, 0.5, 0.7]), progress=False)
    return base, result_rows(df, sort=True)


def _cut(csv: Path, keep_of_last_line, newline: bool) -> None:
    lines = csv.read_text().split("\n")[:-1]
    csv.write_text("\n".join(lines[:-1] + [keep_of_last_line(lines[-1])]) + ("\n" if newline else ""))


@pytest.mark.parametrize("cut,newline", [
    (lambda line: ",".join(line.split(",")[:3]), False),  # cut after the seed field
    (lambda line: ",".join(line.split(",")[:3]), True),  # ... and a newline written after it
    (lambda line: line[: line.index(",", line.index(",") + 1) + 3], False),  # cut inside a field
    (lambda line: line.replace(",0.5,", ",zero point five,"), True),  # a field that does not parse
    (lambda line: line[:-2], False),  # cut near the end
], ids=["after-seed", "after-seed-newline", "inside-field", "unparsable", "near-end"])
def test_a_cut_last_line_is_recomputed_and_nothing_is_glued(reference, tmp_path, cut, newline):
    ref_dir, expected = reference
    cfg = tiny_config(tmp_path, max_steps_per_epoch=3, ratios=[0.0, 0.5], checkpoint_dir=str(ref_dir / "ckpt"))
    run(cfg, progress=False)
    _cut(cfg.run_dir / "results.csv", cut, newline)
    with pytest.warns(UserWarning, match="line 3 is damaged"):
        # a new ratio added at the same time (the rerun must not glue its row onto the cut line)
        df = run(tiny_config(tmp_path, max_steps_per_epoch=3, ratios=[0.0, 0.5, 0.7],
                             checkpoint_dir=str(ref_dir / "ckpt")), progress=False)
    assert result_rows(df, sort=True) == expected
    text = (cfg.run_dir / "results.csv").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 4
    assert set(pd.read_csv(cfg.run_dir / "results.csv")["method"]) == {"magnitude_global"}


def test_a_damaged_middle_line_is_an_error_naming_it(reference, tmp_path):
    ref_dir, _ = reference
    csv = tmp_path / "results.csv"
    lines = (ref_dir / "runs" / "tiny" / "results.csv").read_text().split("\n")
    lines[2] = lines[2][:20]
    csv.write_text("\n".join(lines))
    with pytest.raises(ResultsFileError, match="line 3 is damaged"):
        read_rows(csv)


def test_results_are_written_atomically_with_a_final_newline(reference):
    ref_dir, _ = reference
    run_dir = ref_dir / "runs" / "tiny"
    assert (run_dir / "results.csv").read_text().endswith("\n")
    assert not list(run_dir.glob(".*.tmp"))


# ---------------------------------------------------------------- 3. unreachable targets
def test_an_unreachable_target_fails_its_row_and_the_sweep_goes_on(tmp_path, capsys):
    path = _write_config(tmp_path, methods=["svd", "magnitude_global"], ratios=[0.99, 0.5])
    assert main_prune.main(["--config_path", str(path)]) == 3
    err = capsys.readouterr().err
    assert "svd 99% seed 0" in err and "cannot" not in err.split("\n")[0]
    df = pd.read_csv(tmp_path / "runs" / "tiny" / "results.csv").set_index(["method", "target_ratio"])
    assert df.loc[("svd", 0.99), "status"] == "failed" and "rank 1" in df.loc[("svd", 0.99), "error"]
    assert 0.5 < df.loc[("svd", 0.99), "param_reduction"] < 0.99  # the closest achievable reduction
    assert len(df) == 4 and (df.xs(0.5, level="target_ratio")["status"] == "ok").all()  # rows after it ran
    tables = (tmp_path / "runs" / "tiny" / "tables.md").read_text()
    assert "n/a" in tables and "rows that failed" in tables


# ---------------------------------------------------------------- 4. the baseline cache and the split
def test_the_baseline_cache_is_keyed_by_the_split(tmp_path):
    recipe = TrainRecipe(epochs=0)
    paths = {train_baseline(load_dataset("digits", val_fraction=v), "resnet8", 1, recipe, 0, torch.device("cpu"),
                            tmp_path, progress=False).path for v in (0.1, 0.3, 0.1)}
    assert len(paths) == 2
    a = load_dataset("digits", split_seed=0).key
    assert a == load_dataset("digits", split_seed=0).key != load_dataset("digits", split_seed=1).key


# ---------------------------------------------------------------- 5. bad configs, refused up front
def _write_config(tmp_path, raw_text: str | None = None, **over) -> Path:
    raw = {**tiny_raw(tmp_path, lr=None, max_steps_per_epoch=2, ratios=[0.5], checkpoint_dir=None), **over}
    path = tmp_path / "config.json"
    path.write_bytes(raw_text if isinstance(raw_text, bytes) else (raw_text or json.dumps(raw)).encode())
    return path


A_FILE = "__a_file__"
BAD = [
    ({"finetune": {"lr": float("nan")}}, "finetune.lr': nan is not a finite number"),
    ({"baseline": {"lr": float("inf")}}, "baseline.lr': inf is not a finite number"),
    ({"method_options": {"obs": {"damping": float("nan")}}}, "method_options.obs.damping': nan is not a finite"),
    ({"finetune": {"max_steps_per_epoch": "a"}}, "finetune.max_steps_per_epoch': 'a' is not null or an integer"),
    ({"finetune": {"momentum": 1.5}}, r"finetune.momentum': 1.5 is outside \[0, 1\)"),
    ({"finetune": {"select_on_val": 1}}, "finetune.select_on_val': 1 must be true or false"),
    ({"seeds": [-1]}, r"seeds\[0\]': -1 is not an integer in \[0, 4294967296\)"),
    ({"seeds": [2**40]}, r"seeds\[0\]': 1099511627776 is not an integer"),
    ({"seeds": [0, 0]}, r"seeds\[1\]': 0 is listed twice"),
    ({"ratios": [0.5, 0.5]}, r"ratios\[1\]': 0.5 is listed twice"),
    ({"ratios": [float("nan")]}, r"ratios\[0\]': nan is not a finite number"),
    ({"methods": ["l1", "l1"]}, r"methods\[1\]': 'l1' is listed twice"),
    ({"model": "vgg19"}, "model': 'vgg19' cannot take digits's 1x8x8 images"),
    ({"exp_name": ".."}, "exp_name': '..': required"),
    ({"exp_name": "a/b"}, "exp_name': 'a/b'"),
    ({"width": True}, "width': True is not an integer"),
    ({"val_fraction": float("nan")}, "val_fraction': nan is outside"),
    ({"device": "tpu"}, "device': unknown 'tpu'"),
    ({"output_dir": A_FILE}, "output_dir': cannot write"),
    ({"output_dir": A_FILE + "/sub"}, "output_dir': cannot write"),
    ({"predict_latency": True, "measure_latency": False}, "predict_latency': true needs measure_latency true"),
]
if not torch.cuda.is_available():
    BAD.append(({"device": "cuda"}, "device': 'cuda' but torch sees no CUDA device"))
    BAD.append(({"sync_batchnorm": True}, "sync_batchnorm': true needs CUDA devices"))


@pytest.mark.parametrize("over,message", BAD, ids=[m.split("'")[0] or m for _, m in BAD])
def test_a_bad_config_exits_2_with_one_line_before_any_work(tmp_path, capsys, over, message):
    if over.get("output_dir", "").startswith(A_FILE):
        (tmp_path / A_FILE).write_text("not a folder")
        over = {"output_dir": str(tmp_path / over["output_dir"])}
    t0 = time.perf_counter()
    assert main_prune.main(["--config_path", str(_write_config(tmp_path, **over))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert time.perf_counter() - t0 < 30  # refused before any training
    assert not (tmp_path / "runs" / "tiny" / "results.csv").exists()


def test_a_non_utf8_config_is_refused(tmp_path, capsys):
    path = _write_config(tmp_path, raw_text=b'{"exp_name": "caf\xe9"}')
    assert main_prune.main(["--config_path", str(path)]) == 2
    assert "is not UTF-8 text (byte" in capsys.readouterr().err


def test_a_bad_config_gives_no_traceback_in_a_real_process(tmp_path):
    path = _write_config(tmp_path, finetune={"lr": float("nan")})
    p = subprocess.run([sys.executable, "main_prune.py", "--config_path", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "finetune.lr" in p.stderr


# ---------------------------------------------------------------- 6. damaged Fashion-MNIST files
@pytest.mark.parametrize("damage,error,message", [
    (lambda raw: (raw / "t10k-labels-idx1-ubyte").unlink(), DatasetMissingError, "t10k-labels-idx1-ubyte is missing"),
    (lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(b"garbage" * 100), DatasetError,
     "train-images-idx3-ubyte: not an IDX file"),
    (lambda raw: (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:5000]),
     DatasetError, "train-images-idx3-ubyte: 5000 bytes, but its header"),
    (lambda raw: write_idx(raw / "train-labels-idx1-ubyte", np.full(40, 12)), DatasetError,
     "train-labels-idx1-ubyte: label 12 is outside 0..9"),
    (lambda raw: write_idx(raw / "train-labels-idx1-ubyte", np.zeros(39)), DatasetError,
     "train-labels-idx1-ubyte: 39 labels for 40 images"),
])
def test_damaged_fashion_mnist_files_are_named(tmp_path, damage, error, message):
    raw = write_fashion_mnist(tmp_path, n_train=40, n_test=10)
    load_dataset("fashion_mnist", root=tmp_path)  # intact files load
    damage(raw)
    with pytest.raises(error, match=message):
        load_dataset("fashion_mnist", root=tmp_path)


# ---------------------------------------------------------------- 7. damaged checkpoints and model files
def test_a_truncated_baseline_checkpoint_is_named(tmp_path):
    splits, recipe, cpu = load_dataset("digits"), TrainRecipe(epochs=0), torch.device("cpu")
    path = train_baseline(splits, "resnet8", 1, recipe, 0, cpu, tmp_path, progress=False).path
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DamagedFileError, match=f"{path}: cannot be read.*Delete it"):
        train_baseline(splits, "resnet8", 1, recipe, 0, cpu, tmp_path, progress=False)


def test_a_truncated_pruned_model_file_is_named(tmp_path):
    path = tmp_path / "pruned.pt"
    save_pruned(build_model("resnet8", 1, 1, 10), path, arch={"name": "resnet8", "in_channels": 1})
    shutil.copy(path, tmp_path / "whole.pt")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DamagedFileError, match=str(path)):
        load_pruned(path)
    load_pruned(tmp_path / "whole.pt")


def test_the_restricted_unpickler_reads_python2_style_cifar_pickles(tmp_path):
    """The official files are protocol-2 pickles naming numpy 1's numpy.core.multiarray."""
    from pruning_lib.data import read_cifar_pickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    blob = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    entry = read_cifar_pickle(path)
    assert np.array_equal(entry["data"], data) and entry["labels"] == [3, 4]
