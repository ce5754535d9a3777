"""The support matrix (benchmarks/model_zoo.py) at small widths: every registered method on every network either
prunes to the target within one point with finite outputs, or is refused by pruning_lib in one line, and exactly
the pairs in model_zoo.LIMITS are refused (a new refusal, or a crash, fails; so does a limit that went away without
the matrix saying so). ResNet-18 keeps torchvision's widths, so its slowest methods (CP's ALS on 512-channel
kernels, the eigen methods, C-OBS) run in the benchmark only."""
import sys
from pathlib import Path

import pytest

from pruning_lib.registry import METHODS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import model_zoo  # noqa: E402

SLOW = {("resnet18", m) for m in ("cp", "eigendamage", "improved_eigendamage", "obs")}
CASES = [(n, m) for n in model_zoo.NETS for m in METHODS if (n, m) not in SLOW]


def test_limits_name_known_networks_and_methods():
    assert all(n in model_zoo.NETS and m in METHODS for n, m in model_zoo.LIMITS)


@pytest.mark.parametrize("net,method", CASES)
def test_every_case_prunes_or_is_refused_as_listed(net, method):
    row = model_zoo.run_case(net, method)
    assert row["status"] != "CRASH", f"{net} / {method} crashed: {row['reason']}"
    if (net, method) in model_zoo.LIMITS:
        assert row["status"] == "refused", f"{net} / {method} now prunes: remove it from LIMITS"
        assert row["reason"] and "\n" not in row["reason"]
    else:
        assert row["status"] == "ok", f"{net} / {method} refused: {row['reason']}"
        assert abs(row["achieved"] - model_zoo.TARGET) <= 0.01
