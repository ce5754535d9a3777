"""Seed-style tables of a results frame (method x target ratio, mean ± std over seeds) and the data behind the
notebook's styled table (the best mean of each column)."""
from __future__ import annotations

import pandas as pd

from .schema import EMPTY_WHEN_FAILED

# (title, column, format) of each method x target table, in the order tables.md shows them.
TABLES = [("test accuracy after fine-tuning (%)", "acc_finetuned", ".2f"),
          ("test accuracy right after pruning, BatchNorm re-estimated (%)", "acc_pruned", ".2f"),
          ("GFLOPs (2 x MACs)", "gflops", ".4g"),
          ("achieved parameter reduction", "param_reduction", ".3f"),
          ("measured latency, batch 1 (ms)", "latency_ms_b1", ".3g"),
          ("measured latency, batch 128 (ms)", "latency_ms_b128", ".3g"),
          ("measured speed-up, batch 128 (unpruned / pruned latency)", "measured_speedup_b128", ".3g"),
          ("measured / predicted speed-up, batch 128 (latency table)", "speedup_vs_predicted", ".3g")]
TITLES = {col: title for title, col, _ in TABLES}
LOWER_IS_BETTER = {"gflops", "latency_ms_b1", "latency_ms_b128"}


def percent(ratio: float) -> str:
    """A target ratio as a column label: 0.501 -> '50.1%' (labels never collide)."""
    return f"{100 * float(ratio):g}%"


def _mean_std(values: pd.Series, fmt: str) -> str:
    """'mean ± std' over seeds (std omitted for one seed; with a significant-digits format "g" the std is written
    to the mean's last decimal place: 0.01093 ± 0.00009); 'n/a' when no seed has a value."""
    values = values.dropna()
    if len(values) == 0:
        return "n/a"
    mean = f"{values.mean():{fmt}}"
    if len(values) == 1:
        return mean
    if fmt.endswith("g") and "e" not in mean:  # significant digits: the std to the mean's last decimal place
        return f"{mean} ± {values.std():.{len(mean.partition('.')[2])}f}"
    return f"{mean} ± {values.std():{fmt}}"


def with_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with two columns derived per row from its seed's unpruned (target 0) rows: measured_speedup_b128 =
    t0 / t of the measured batch-128 latencies, and speedup_vs_predicted = (t0 / t) / (p0 / p) with p the
    latency table's predictions (t0, p0: the mean over the seed's unpruned rows, of which --jobs workers may
    each have measured one; empty where a row, or its seed's unpruned rows, have no value)."""
    unpruned = df[(df["target_ratio"] == 0) & (df["status"] == "ok")].groupby("seed")[
        ["latency_ms_b128", "latency_predicted_ms_b128"]].mean()
    t0 = df["seed"].map(unpruned["latency_ms_b128"])
    p0 = df["seed"].map(unpruned["latency_predicted_ms_b128"])
    measured = t0 / df["latency_ms_b128"]
    return df.assign(measured_speedup_b128=measured,
                     speedup_vs_predicted=measured / (p0 / df["latency_predicted_ms_b128"]))


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Seed-style tables (method x target ratio): fine-tuned and one-shot accuracy, GFLOPs, achieved
    reduction, latencies, measured and measured / predicted speed-ups, compression. Failed rows count as missing; a cell with no finished row reads 'n/a'."""
    order = list(dict.fromkeys(df["method"]))
    ok = with_speedups(df.assign(**{c: df[c].where(df["status"] == "ok") for c in EMPTY_WHEN_FAILED}))
    out = {}
    for name, col, fmt in TABLES:
        if ok[col].isna().all():  # files written before latencies were measured
            continue
        t = ok.groupby(["method", "target_ratio"])[col].apply(lambda v: _mean_std(v, fmt)).unstack(fill_value="n/a")
        t.columns = [percent(c) for c in t.columns]
        out[name] = t.reindex(order)
    done = df[df["status"] == "ok"]
    if len(done):
        comp = done.groupby(["method", "target_ratio"]).agg(
            params=("params", "mean"), nonzero_params=("nonzero_params", "mean"), macs=("macs", "mean"),
            gflops=("gflops", "mean"), param_reduction=("param_reduction", "mean"),
            compression=("compression", "mean"), theoretical_speedup=("theoretical_speedup", "mean"),
            seeds=("seed", "nunique"))
        comp.index = comp.index.set_levels([comp.index.levels[0], [percent(r) for r in comp.index.levels[1]]])
        out["compression"] = comp.round(4)
    return out


def best_cells(df: pd.DataFrame, col: str, text: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame shaped like the table `text` of `col`: True where the mean over finished seeds is the best
    of its column (highest, or lowest for GFLOPs and latencies)."""
    done = with_speedups(df[df["status"] == "ok"])
    means = done.groupby(["method", "target_ratio"])[col].mean().unstack().reindex(text.index)
    means.columns = text.columns
    best = means.min() if col in LOWER_IS_BETTER else means.max()
    return means.eq(best, axis="columns")


def variant_table(df: pd.DataFrame, label: str, col: str = "acc_pruned", fmt: str = ".2f") -> pd.DataFrame:
    """Methods that also ran as the variant "<method>@<label>" (e.g. @comp: with compensation) x target: `col`
    (mean ± std over finished seeds) of the method and of its variant, and the variant's extra seconds per row
    (mean seconds_prune of the variant minus the method's). Columns "<target> plain", "<target> <label>",
    "<target> extra s"."""
    done = df[df["status"] == "ok"]
    suffix = f"@{label}"
    base = [m for m in dict.fromkeys(done["method"]) if not m.endswith(suffix) and m + suffix in set(done["method"])]
    cells = {}
    for r in sorted(done["target_ratio"].unique()):
        at = done[done["target_ratio"] == r]
        for name, which in (("plain", ""), (label, suffix)):
            cells[f"{percent(r)} {name}"] = {m: _mean_std(at[at["method"] == m + which][col], fmt) for m in base}
        seconds = at.groupby("method")["seconds_prune"].mean()
        cells[f"{percent(r)} extra s"] = {m: f"{seconds.get(m + suffix, float('nan')) - seconds.get(m, float('nan')):.1f}"
                                          for m in base}
    return pd.DataFrame(cells)
