"""The results helpers behind the tables, plots and notebook 08, against brute-force definitions."""
import itertools

import numpy as np
import pandas as pd
import pytest

from pruning_lib.results import front_table, gaps_beyond_spread, pareto_front, tables, tradeoff


def frame(seed=0, methods=("a", "b", "c", "d"), ratios=(0.0, 0.5, 0.9), seeds=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    slope = {m: rng.uniform(5, 25) for m in methods}  # each method loses accuracy at its own rate
    rows = [{"method": m, "target_ratio": r, "seed": s, "status": "ok", "param_reduction": r + rng.normal(0, 0.003),
             "gflops": (1 - r) * rng.uniform(0.5, 1.5), "acc_finetuned": 90 - slope[m] * r + rng.normal(0, 1)}
            for m in methods for r in ratios for s in seeds]
    rows.append({"method": "a", "target_ratio": 0.99, "seed": 0, "status": "failed"})
    return pd.DataFrame(rows)


def test_tradeoff_is_the_mean_and_std_over_finished_seeds():
    df = frame()
    t = tradeoff(df, "gflops").set_index(["method", "target_ratio"])
    assert ("a", 0.99) not in t.index  # a failed row is no point
    for (m, r), p in t.iterrows():
        sub = df[(df.method == m) & (df.target_ratio == r)]
        assert p.x == pytest.approx(sub.gflops.mean()) and p.y == pytest.approx(sub.acc_finetuned.mean())
        assert p.y_std == pytest.approx(sub.acc_finetuned.std()) and p.seeds == 3


@pytest.mark.parametrize("lower,tol", [(True, 0.0), (False, 0.0), (False, 0.01)])
def test_pareto_front_is_exactly_the_non_dominated_points(lower, tol):
    pts = tradeoff(frame(seed=3), "gflops" if lower else "param_reduction")
    sign = -1 if lower else 1
    better_x = lambda q, p: sign * q.x > sign * p.x + tol  # noqa: E731
    as_good_x = lambda q, p: sign * q.x >= sign * p.x - tol  # noqa: E731
    expected = {(p.method, p.target_ratio) for _, p in pts.iterrows()
                if not any(as_good_x(q, p) and q.y >= p.y and (better_x(q, p) or q.y > p.y) for _, q in pts.iterrows())}
    got = pareto_front(pts, lower_x_is_better=lower, tolerance=tol)
    assert {(p.method, p.target_ratio) for _, p in got.iterrows()} == expected and expected
    assert list(got.x) == sorted(got.x)


def test_gaps_beyond_spread_against_a_loop_over_pairs():
    df = frame(seed=5)
    got = {(g.better, g.worse) for g in gaps_beyond_spread(df, 0.9).itertuples()}
    stats = df[df.target_ratio == 0.9].groupby("method").acc_finetuned.agg(["mean", "std"])
    expected = {(a, b) for a, b in itertools.permutations(stats.index, 2)
                if stats.at[a, "mean"] - stats.at[b, "mean"] > stats.at[a, "std"] + stats.at[b, "std"]}
    assert got == expected and expected


# ---------------------------------------------------------------- the record and results.csv compatibility
from pathlib import Path  # noqa: E402

from pruning_lib.results import (COLUMNS, DESCRIPTIONS, STAGE_COLUMNS, TIMING, Row, failed_row,  # noqa: E402
                                 read_rows, results_frame, write_rows)

ROOT = Path(__file__).resolve().parents[1]
# results.csv's columns since the latency columns were added (the committed docs/results/*.csv), then the
# predicted latency: old files must keep resuming and merging.
WITH_LATENCY = ("method,target_ratio,seed,params,nonzero_params,param_reduction,macs,gflops,acc_pruned,acc_finetuned,"
          "finetune_epochs,seconds,compression,theoretical_speedup,status,error,seconds_prune,seconds_bn,"
          "seconds_finetune,seconds_eval,latency_ms_b1,latency_ms_b128,latency_threads")
FROZEN = WITH_LATENCY + ",latency_predicted_ms_b128"


def test_the_record_generates_the_columns_of_every_written_file(tmp_path):
    assert ",".join(COLUMNS) == FROZEN
    assert (ROOT / "docs" / "results" / "ablation.csv").read_text().split("\n")[0] == WITH_LATENCY
    assert TIMING == ("seconds", "seconds_prune", "seconds_bn", "seconds_finetune", "seconds_eval",
                      "latency_ms_b1", "latency_ms_b128", "latency_predicted_ms_b128")
    assert STAGE_COLUMNS == ("seconds_prune", "seconds_bn", "seconds_finetune", "seconds_eval")
    assert all(DESCRIPTIONS[c].endswith(")") for c in COLUMNS)  # every column states its unit
    write_rows(tmp_path / "r.csv", [Row("l1", 0.5, 0, params=3, status="ok").to_dict(),
                                    failed_row("svd", 0.9, 1, ValueError("no\n way"), 0.8)])
    assert (tmp_path / "r.csv").read_text().split("\n")[0] == FROZEN


def test_the_committed_results_round_trip_unchanged(tmp_path):
    src = ROOT / "docs" / "results" / "ablation.csv"
    rows = read_rows(src)
    assert rows and all(list(r) == COLUMNS for r in rows)
    write_rows(tmp_path / "r.csv", rows)
    assert read_rows(tmp_path / "r.csv") == rows
    assert list(results_frame(rows).columns) == COLUMNS


def test_files_written_before_the_later_columns_still_read(tmp_path):
    old = COLUMNS[:COLUMNS.index("status")]  # the first files: no status, error, stage timings or latencies
    (tmp_path / "r.csv").write_text(",".join(old) + "\n" + "l1,0.5,0,1,1,0.5,2,4e-06,50,60,3,1.5,2,1.5\n")
    (row,) = read_rows(tmp_path / "r.csv")
    assert row == Row("l1", 0.5, 0, params=1, nonzero_params=1, param_reduction=0.5, macs=2, gflops=4e-06,
                      acc_pruned=50.0, acc_finetuned=60.0, finetune_epochs=3, seconds=1.5, compression=2.0,
                      theoretical_speedup=1.5).to_dict()


def test_front_table_merges_the_shared_baseline_and_keeps_every_other_point():
    """Every method's 0 % row is the same baseline: one row naming how many methods share it; each other point
    of the front is its own row, values as in the front (a loop over the front as the oracle)."""
    df = frame(methods=("a", "b", "c"))
    df.loc[df.target_ratio == 0.0, "acc_finetuned"] = 95.0  # the shared baseline, equal for every method
    df.loc[df.target_ratio == 0.0, "gflops"] = 2.0
    front = pareto_front(tradeoff(df, "gflops"), lower_x_is_better=True)
    table = front_table(front, "GFLOPs")
    zero = front[front.target_ratio == 0.0]
    others = front[front.target_ratio != 0.0]
    assert len(zero) == 3 and len(table) == len(others) + 1  # the baseline is on the front, once
    assert f"the 0 % row of {len(zero)} methods" in table[table.target == "0%"].iloc[0]["method"]
    for (_, p), (_, t) in zip(others.iterrows(), table[table.target != "0%"].iterrows()):
        assert t["method"] == p["method"] and t["GFLOPs"] == p["x"] and t["accuracy (%)"] == round(p["y"], 2)


def test_a_significant_digits_cell_writes_the_std_to_the_means_last_decimal():
    gflops = results_frame([{"method": "m", "target_ratio": 0.5, "seed": s, "status": "ok", "gflops": g}
                            for s, g in enumerate([0.01093, 0.01083, 0.01100])])
    cell = tables(gflops)["GFLOPs (2 x MACs)"].iloc[0, 0]
    mean, std = gflops.gflops.mean(), gflops.gflops.std()
    assert cell == f"{mean:.4g} ± {std:.5f}" == "0.01092 ± 0.00009"
