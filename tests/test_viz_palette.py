"""One colour per method in every plot: a method keeps its colour and marker whichever others are drawn."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
import pandas as pd  # noqa: E402

from pruning_lib.registry import METHODS  # noqa: E402
from pruning_lib.viz.palette import METHOD_STYLES, method_style  # noqa: E402
from pruning_lib.viz.results import plot_tradeoff  # noqa: E402
from pruning_lib.widgets.results import tradeoff_view  # noqa: E402


def _frame(methods):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"method": m, "target_ratio": r, "seed": s, "status": "ok", "param_reduction": r,
                          "gflops": 1e-3 * (1 - r), "acc_finetuned": 90 - 10 * r + rng.normal(), "acc_pruned": 50.0}
                         for m in methods for r in (0.0, 0.5, 0.9) for s in (0, 1)])


def _drawn(ax) -> dict:
    """{legend label: (rgba colour, marker)} of what `ax`'s legend shows (an error bar by its data line)."""
    out = {}
    for handle, label in zip(*ax.get_legend_handles_labels()):
        line = handle[0] if isinstance(handle, ErrorbarContainer) else handle
        out[label] = (mcolors.to_rgba(line.get_color()), line.get_marker())
    return out


def test_every_registered_method_has_its_own_colour_and_marker():
    assert set(METHODS) <= set(METHOD_STYLES)
    colours = [c for c, _ in METHOD_STYLES.values()]
    markers = [m for _, m in METHOD_STYLES.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)


def test_a_method_keeps_its_colour_whichever_methods_are_plotted():
    names = ["l1", "taylor", "random", "eigendamage", "improved_eigendamage@tucker", "my_method"]
    df = _frame(names)
    styles = {}
    for subset in (names, ["taylor", "my_method"], ["improved_eigendamage@tucker", "l1"], names[::-1]):
        fig, ax = plt.subplots()
        plot_tradeoff(ax, df, "gflops", methods=subset)
        for label, style in _drawn(ax).items():
            if label != "Pareto front":
                assert styles.setdefault(label, style) == style, label
        plt.close(fig)
        view = tradeoff_view(df, subset, 0.5)  # notebook 08's checkboxes
        for ax in view["figure"].axes:
            for label, style in _drawn(ax).items():
                if label != "Pareto front":
                    assert styles[label] == style, label
        plt.close(view["figure"])
    assert styles["l1"] == (mcolors.to_rgba(method_style("l1")["color"]), method_style("l1")["marker"])
    assert len(set(styles.values())) == len(names)  # six methods, six styles


def test_a_variant_takes_its_methods_colour_with_a_dashed_line():
    v, m = method_style("l1@normalize_max"), method_style("l1")
    assert v["color"] == m["color"] and v["linestyle"] == "--" and m["linestyle"] == "-"
    assert method_style("unknown_method") == method_style("unknown_method")
