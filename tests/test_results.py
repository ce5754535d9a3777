"""The results helpers behind the tables, plots and notebook 08, against brute-force definitions."""
import itertools

import numpy as np
import pandas as pd
import pytest

from pruning_lib.results import gaps_beyond_spread, pareto_front, tradeoff


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
