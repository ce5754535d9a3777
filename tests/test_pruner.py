import random

import pytest

from pruning_lib.pruner import closest_threshold


@pytest.mark.parametrize("seed", range(20))
def test_closest_threshold_matches_a_brute_force_scan(seed):
    rng = random.Random(seed)
    candidates = sorted(rng.sample(range(1000), rng.randint(1, 60)))
    steps = sorted(rng.random() for _ in candidates)  # a non-decreasing "fraction removed"
    removed = dict(zip(candidates, steps)).__getitem__
    target = rng.random()
    t, got = closest_threshold(candidates, removed, target)
    best = min(abs(removed(c) - target) for c in candidates)
    assert got == removed(t) and abs(got - target) == pytest.approx(best)
