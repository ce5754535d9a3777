import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pruning_lib import experiment
from pruning_lib.config import ConfigError, load_config, validate
from pruning_lib.experiment import run
from pruning_lib.results import COLUMNS, read_rows, results_frame
from pruning_lib.registry import METHODS

from helpers import tiny_config, tiny_raw

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("change,field", [
    ({"colour": "red"}, "'colour': unknown key"),
    ({"methods": ["magnitude_global", "lasso"]}, r"'methods\[1\]': unknown 'lasso', allowed: magnitude_global"),
    ({"dataset": "imagenet"}, "'dataset': unknown 'imagenet', allowed: digits"),
    ({"model": "resnet18"}, "'model': unknown 'resnet18', allowed: resnet8"),
    ({"ratios": [0.5, 1.0]}, r"'ratios\[1\]': 1.0 is outside \[0, 1\)"),
    ({"ratios": [-0.1]}, r"'ratios\[0\]': -0.1 is outside"),
    ({"finetune": {"epochs": -1}}, "'finetune.epochs': -1 is not a non-negative integer"),
    ({"baseline": {"epoch": 3}}, "'baseline.epoch': unknown key"),
    ({"seeds": []}, "'seeds'"),
    ({"method_options": {"magnitude_global": {"sparsity": 1}}}, "'method_options.magnitude_global.sparsity'"),
    ({"method_options": {"obs": {"damping": -1}}}, r"'method_options.obs.damping': -1 must be >= 0"),
    ({"method_options": {"obs": {"saliency": "full"}}}, "'method_options.obs.saliency': unknown 'full', allowed: diag, kron"),
    ({"method_options": {"l1": {"layer_cap": 1.0}}}, r"'method_options.l1.layer_cap': 1.0 is outside \[0, 1\)"),
    ({"method_options": {"taylor": {"num_batches": 0}}}, "'method_options.taylor.num_batches': 0 must be >= 1"),
    ({"method_options": {"obd": {"normalize": "yes"}}},
     "'method_options.obd.normalize': unknown 'yes', allowed: mean, sum, none"),
    ({"method_options": {"l1": {"normalize": True}}}, "'method_options.l1.normalize': True"),
    ({"method_options": {"cp": {"cp_iters": 2.5}}}, "'method_options.cp.cp_iters': 2.5 must be an integer"),
    ({"method_options": {"svd": "energy"}}, "'method_options.svd': must be an object"),
    ({"method_options": {"tucker": {"hooi_iters": -1}}}, "'method_options.tucker.hooi_iters': -1 must be >= 0"),
    ({"score_batch_size": 0}, "'score_batch_size'"),
    ({"methods": ["l1@"]}, r"'methods\[0\]': variant label '' must be letters"),
    ({"methods": ["lasso@x"]}, r"'methods\[0\]': unknown 'lasso'"),
    ({"method_options": {"l1@mean": {"group_reduce": "median"}}},
     "'method_options.l1@mean.group_reduce': unknown 'median', allowed: sum, mean, max"),
    ({"method_options": {"l1@x": {"damping": 1.0}}}, "'method_options.l1@x.damping': not an option of l1, allowed: "),
    ({"output_dir": None}, "'output_dir'"),
    ({"baseline": {"optimizer": "adam"}}, "'baseline.optimizer': unknown 'adam', allowed: sgd, adamw"),
])
def test_bad_config_names_the_field(tmp_path, change, field):
    raw = {"exp_name": "x", **change}
    with pytest.raises(ConfigError, match=field):
        validate(raw)


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"exp_name": "x", "ratios": [0.0, 1.5]}))
    p = subprocess.run([sys.executable, "main_prune.py", "--config_path", str(path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "ratios[1]" in p.stderr


def test_a_variant_runs_its_own_options(tmp_path):
    """"l1@mean" is l1 with its own method_options, beside plain l1 on the same baseline."""
    cfg = tiny_config(tmp_path, methods=["l1", "l1@mean"], ratios=[0.5],
               method_options={"l1@mean": {"group_reduce": "mean"}}, measure_latency=False)
    df = run(cfg, progress=False).set_index("method")
    assert set(df.index) == {"l1", "l1@mean"}
    assert (df["status"] == "ok").all()
    assert abs(df.loc["l1@mean", "param_reduction"] - 0.5) <= 0.01


def test_hosvd_option_is_allowed():
    validate({"exp_name": "x", "methods": ["tucker"], "method_options": {"tucker": {"hooi_iters": 0}}})


def test_shipped_configs_are_valid():
    for path in sorted((ROOT / "configs").glob("*.json")):
        load_config(path)


def test_sweep_writes_rows_and_resumes_after_interruption(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    real_evaluate, calls = experiment.evaluate, []

    def evaluate_then_crash(model, loader):
        calls.append(1)
        if len(calls) == 3:  # second row's first evaluation
            raise KeyboardInterrupt
        return real_evaluate(model, loader)

    monkeypatch.setattr(experiment, "evaluate", evaluate_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    first = results_frame(read_rows(cfg.run_dir / "results.csv"))
    assert list(first.columns) == COLUMNS and len(first) == 1
    monkeypatch.setattr(experiment, "evaluate", real_evaluate)
    df = run(cfg, progress=False)
    assert len(df) == 2 and df.iloc[:1].equals(first)  # finished row not redone
    assert abs(df.set_index("target_ratio").loc[0.5, "param_reduction"] - 0.5) < 0.01
    assert (cfg.run_dir / "tables.md").read_text().count("|") > 10
    assert len(json.loads((cfg.run_dir / "results.json").read_text())) == 2


def test_cli_seeds_override_adds_rows_to_the_same_run(tmp_path):
    path = tmp_path / "tiny.json"
    raw = tiny_raw(tmp_path, lr=None, ratios=[0.5], checkpoint_dir=None)
    path.write_text(json.dumps(raw))
    for extra in ([], ["--seeds", "3"]):
        p = subprocess.run([sys.executable, "main_prune.py", "--config_path", str(path), *extra], cwd=ROOT,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-500:]
    assert sorted(pd.read_csv(tmp_path / "runs" / "tiny" / "results.csv")["seed"]) == [0, 3]


def test_resume_refuses_a_different_config(tmp_path):
    run(tiny_config(tmp_path, ratios=[0.0]), progress=False)
    with pytest.raises(ConfigError, match="different config"):
        run(tiny_config(tmp_path, ratios=[0.0], finetune={"epochs": 2}), progress=False)


def test_a_variant_can_join_a_finished_run_but_finished_options_cannot_change(tmp_path):
    run(tiny_config(tmp_path, methods=["l1"], ratios=[0.5]), progress=False)
    joined = tiny_config(tmp_path, methods=["l1", "l1@raw"], ratios=[0.5],
                         method_options={"l1@raw": {"normalize": "none"}})
    assert set(run(joined, progress=False)["method"]) == {"l1", "l1@raw"}
    with pytest.raises(ConfigError, match="method_options of l1@raw"):
        run(tiny_config(tmp_path, methods=["l1", "l1@raw"], ratios=[0.5],
                 method_options={"l1@raw": {"normalize": "sum"}}), progress=False)
    with pytest.raises(ConfigError, match="method_options of l1"):
        run(tiny_config(tmp_path, methods=["l1"], ratios=[0.5], method_options={"l1": {"steps": 2}}), progress=False)


def test_a_schedule_shares_the_fine_tuning_budget(tmp_path, monkeypatch):
    """improved_eigendamage's iterative schedule fine-tunes between its steps through ctx.finetune; the runner's
    final fine-tune gets the rest, so the optimizer steps add up to the one-shot methods' budget."""
    steps = []
    real_sgd_step = torch.optim.SGD.step

    def counting_step(self, *args, **kwargs):
        if steps:  # the baseline trains before the first row
            steps[-1] += 1
        return real_sgd_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    real_row = experiment._row

    def counted_row(*args, **kwargs):
        steps.append(0)
        return real_row(*args, **kwargs)

    monkeypatch.setattr(experiment, "_row", counted_row)
    cfg = tiny_config(tmp_path, methods=["eigendamage", "improved_eigendamage@it"], ratios=[0.5], measure_latency=False,
               method_options={"improved_eigendamage@it": {"steps": 3, "num_examples": 64}})
    df = run(cfg, progress=False)
    assert (df["status"] == "ok").all() and len(steps) == 2
    assert steps[0] == steps[1] > 0  # same number of optimizer steps, split differently
    assert (df["finetune_epochs"] == cfg.finetune_recipe().epochs).all()


def test_same_seed_same_numbers(tmp_path):
    a = run(tiny_config(tmp_path / "a", checkpoint_dir=None), progress=False)
    b = run(tiny_config(tmp_path / "b", checkpoint_dir=None), progress=False)
    cols = ["params", "nonzero_params", "macs", "acc_pruned", "acc_finetuned"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_a_row_does_not_depend_on_the_rows_before_it(tmp_path):
    # data-dependent scores (Taylor) and BatchNorm re-estimation draw batches: each row must see the same ones
    a = run(tiny_config(tmp_path / "a", methods=["taylor"], ratios=[0.0, 0.5]), progress=False)
    b = run(tiny_config(tmp_path / "b", methods=["taylor"], ratios=[0.5]), progress=False)
    cols = ["params", "macs", "acc_pruned", "acc_finetuned"]
    pd.testing.assert_frame_equal(a[a.target_ratio == 0.5][cols].reset_index(drop=True), b[cols])


def test_smoke_runs_the_cifar100_wide_config_without_data(tmp_path):
    cfg = load_config(ROOT / "configs" / "cifar100_resnet32_wide.json")
    cfg.output_dir, cfg.ratios = str(tmp_path), [0.9]
    df = run(cfg, smoke=True, progress=False).set_index("method")
    assert list(df.index) == cfg.methods
    assert ((df["param_reduction"] - 0.9).abs() <= 0.01).all()
    dense = [m for m in cfg.methods if METHODS[m].family == "weight"]  # masks: dense count and FLOPs unchanged
    assert (df.loc[dense, "params"] == 7451044).all() and (df.loc[dense, "gflops"].round(2) == 2.2).all()
    smaller = df.drop(index=dense)
    assert (smaller["params"] < 0.11 * 7451044).all() and (smaller["gflops"] < 2.2).all()
