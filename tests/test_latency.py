"""pruning_lib.latency: the table interpolates exactly what it measured, predicts the unpruned network's measured
time by construction, is cached by its key, and a latency target prunes until the predicted time is reached,
choosing channels by saliency per millisecond (so it differs from a parameter target). Checks of the search time
layers with a deterministic stand-in (FLOPs), so that no result depends on the machine's load."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import pruning_lib
from pruning_lib import latency as lat
from pruning_lib.models import build_model


FAST = 0.002  # seconds per timed point: enough for the checks of real measuring, which compare no timings


def flops_ms(module: nn.Module, x: torch.Tensor, threads: int) -> float:
    """A deterministic stand-in for time_ms: 1 ms per MFLOP plus 0.01 ms per call (a measured table is noisy,
    and the checks of the search must not depend on the machine's load)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / 1e6 + 0.01


@pytest.fixture(autouse=True)
def deterministic_timing(monkeypatch, tmp_path):
    monkeypatch.setattr(lat, "time_ms", flops_ms)
    monkeypatch.setattr(lat, "DATA_DIR", tmp_path)  # the default cache of a method's table


@pytest.fixture(scope="module")
def net_and_table(tmp_path_factory):
    """resnet8 on 8x8 inputs and its table, really measured (module scope: before the stand-in timer is set)."""
    torch.manual_seed(0)
    model = build_model("resnet8", 1, 1, 10, 8).eval()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lat, "MIN_RUN_TIME", FAST)
        table = lat.measure_table(model, (1, 8, 8), batch_size=16, threads=1, cache_dir=tmp_path_factory.mktemp("lat"))
    return model, table


def test_grid_widths_cover_the_fractions_and_the_full_width():
    assert lat.grid_widths(64) == [7, 16, 32, 48, 64]
    assert lat.grid_widths(6, multiple=2) == [2, 4, 6]


def test_interpolation_is_exact_at_grid_points_and_bilinear_between():
    spec = lat.LayerSpec("Conv2d", 8, 8, [4, 4], 16, False, [3, 3], [1, 1], [1, 1], [1, 1], 1)
    f = lambda i, o: 0.5 + 2 * i + 3 * o + 0.25 * i * o  # noqa: E731 - bilinear: interpolation must be exact
    ins, outs = [2, 4, 8], [1, 4, 8]
    table = lat.LatencyTable({"c": spec}, {"c": (ins, outs)}, {"c": [[f(i, o) for o in outs] for i in ins]},
                             0.0, 0.0, {})
    for i, o in [(2, 1), (4, 8), (3, 2.5), (7, 6), (8, 8)]:
        assert math.isclose(table.layer_ms("c", i, o), f(i, o), rel_tol=1e-12)
    assert table.layer_ms("c", 1, 0) == f(2, 1)  # clamped to the grid


def test_the_table_predicts_the_unpruned_network_and_is_cached(net_and_table, tmp_path, monkeypatch):
    model, table = net_and_table
    assert set(table.specs) == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert table.predict(table.widths_of(model)) == pytest.approx(max(table.dense_ms, table.predict()), rel=1e-9)
    assert all(t > 0 for rows in table.ms.values() for row in rows for t in row)
    cache = tmp_path / "c"
    first = lat.measure_table(model, (1, 8, 8), batch_size=16, threads=1, cache_dir=cache)
    monkeypatch.setattr(lat, "time_ms", lambda *a: pytest.fail("a cached table was measured again"))
    again = lat.measure_table(model, (1, 8, 8), batch_size=16, threads=1, cache_dir=cache)
    assert again.ms == first.ms and again.rest_ms == first.rest_ms
    assert len(list(cache.glob("latency-*.json"))) == 1


def test_narrower_layers_are_predicted_faster(net_and_table):
    model = net_and_table[0]
    table = lat.measure_table(model, (1, 8, 8), batch_size=16, threads=1, cache_dir=None)  # the stand-in timer
    widths = table.widths_of(model)
    half = {n: (max(1, i // 2), max(1, o // 2)) if n != "fc" else (i // 2, o) for n, (i, o) in widths.items()}
    assert table.predict(half) < table.predict(widths)


def test_a_latency_target_reaches_its_predicted_time(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    torch.manual_seed(0)
    by_latency, by_params = build_model("resnet8", 1, 1, 10, 8), build_model("resnet8", 1, 1, 10, 8)
    by_params.load_state_dict(by_latency.state_dict())
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    r = pruning_lib.prune(by_latency, "l1", 0.4, loader=loader, target_kind="latency", latency_batch=16)
    info = r.info["latency"]
    assert 1 - info["predicted_ms"] / info["dense_predicted_ms"] == pytest.approx(0.4, abs=0.011)
    assert info["predicted_speedup"] == pytest.approx(info["dense_predicted_ms"] / info["predicted_ms"])
    p = pruning_lib.prune(by_params, "l1", 0.4, loader=loader)
    assert r.info["kept_channels"] != p.info["kept_channels"]
    assert len(list((tmp_path / "latency").glob("latency-*.json"))) == 1  # measured once, cached


def test_bad_options_are_refused_naming_them():
    model = build_model("resnet8", 1, 1, 10, 8)
    with pytest.raises(ValueError, match="target_kind"):
        pruning_lib.prune(model, "l1", 0.5, example_inputs=torch.zeros(1, 1, 8, 8), target_kind="flops")
    with pytest.raises(ValueError, match="latency_batch"):
        pruning_lib.prune(model, "l1", 0.5, example_inputs=torch.zeros(1, 1, 8, 8), target_kind="latency",
                          latency_batch=0)


def test_a_channel_pruned_copy_is_predicted_and_a_low_rank_one_is_not(net_and_table):
    model, table = net_and_table
    x = torch.zeros(1, 1, 8, 8)
    pruned = pruning_lib.prune(copy.deepcopy(model), "l1", 0.5, example_inputs=x).model
    assert table.matches(pruned) and table.predict_model(pruned) == table.predict(table.widths_of(pruned))
    assert table.predict_model(pruned) < table.predict_model(model)
    loader = DataLoader(TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))), batch_size=16)
    low_rank = pruning_lib.prune(copy.deepcopy(model), "svd", 0.5, loader=loader).model
    assert not table.matches(low_rank) and table.predict_model(low_rank) is None


def test_speedups_per_row_come_from_the_seeds_unpruned_row():
    import pandas as pd
    from pruning_lib.results.tables import with_speedups
    df = pd.DataFrame({"method": ["a", "a", "a", "b"], "target_ratio": [0.0, 0.5, 0.5, 0.5], "seed": [0, 0, 1, 0],
                       "status": ["ok"] * 4, "latency_ms_b128": [10.0, 4.0, 5.0, 8.0],
                       "latency_predicted_ms_b128": [12.0, 4.0, 6.0, None]})
    out = with_speedups(df)
    assert out["measured_speedup_b128"].tolist()[:2] == [1.0, 2.5] and math.isnan(out["measured_speedup_b128"][2])
    assert out["speedup_vs_predicted"][1] == pytest.approx(2.5 / 3.0) and out["speedup_vs_predicted"].isna()[3]


def test_a_sweep_with_predict_latency_reports_predicted_and_measured_speedups(tmp_path):
    from helpers import tiny_config
    from pruning_lib.experiment import run
    cfg = tiny_config(tmp_path, methods=["l1", "svd"], ratios=[0.0, 0.5], predict_latency=True)
    df = run(cfg, progress=False).set_index(["method", "target_ratio"])
    assert df.loc[("l1", 0.5), "latency_predicted_ms_b128"] < df.loc[("l1", 0.0), "latency_predicted_ms_b128"]
    assert math.isnan(df.loc[("svd", 0.5), "latency_predicted_ms_b128"])  # its layers were replaced
    text = (cfg.run_dir / "tables.md").read_text()
    assert "measured / predicted speed-up, batch 128" in text and "measured speed-up, batch 128" in text
    assert len(list((tmp_path / "latency").glob("latency-*.json"))) == 1
