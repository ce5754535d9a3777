"""Statistics of a results frame: the accuracy / cost trade-off per (method, target), its Pareto front (as
points and as a table to read) and the gaps between methods larger than their spread over seeds."""
from __future__ import annotations

import pandas as pd

def tradeoff(df: pd.DataFrame, x: str = "param_reduction", y: str = "acc_finetuned") -> pd.DataFrame:
    """One point per (method, target) over its finished seeds: mean of `x`, mean and std of `y`, seed count,
    in the order methods first appear (the curves of the accuracy / cost plots)."""
    done = df[df["status"] == "ok"]
    out = done.groupby(["method", "target_ratio"], sort=False).agg(
        x=(x, "mean"), y=(y, "mean"), y_std=(y, "std"), seeds=("seed", "nunique")).reset_index()
    out["y_std"] = out["y_std"].fillna(0.0)
    order = {m: i for i, m in enumerate(dict.fromkeys(df["method"]))}
    return out.sort_values(["method", "target_ratio"], key=lambda c: c.map(order) if c.name == "method" else c,
                           ignore_index=True)


def pareto_front(points: pd.DataFrame, lower_x_is_better: bool = False, tolerance: float = 0.0) -> pd.DataFrame:
    """The points of `tradeoff` that no other point beats on both axes (higher `y`, and higher `x` such as
    the reduction, or lower `x` such as GFLOPs with `lower_x_is_better`), sorted by x. x values within
    `tolerance` count as equal (0.01 for reductions: every method hits its target within one point)."""
    sign = -1.0 if lower_x_is_better else 1.0
    x, y = sign * points["x"], points["y"]
    keep = [i for i, p in points.iterrows()
            if not ((x >= sign * p["x"] - tolerance) & (y >= p["y"])
                    & ((x > sign * p["x"] + tolerance) | (y > p["y"]))).any()]
    return points.loc[keep].sort_values("x", ignore_index=True)


def front_table(front: pd.DataFrame, x_label: str) -> pd.DataFrame:
    """The Pareto front of `pareto_front` as a table to read: points that coincide (every method's 0 % row is the
    same unpruned baseline) are one row naming them; columns method, target, `x_label`, accuracy and its standard
    deviation over seeds."""
    rows = []
    for (x, y, std), part in front.groupby(["x", "y", "y_std"], sort=False):
        methods = list(dict.fromkeys(part["method"]))
        zero = bool((part["target_ratio"] == 0).all())
        name = f"unpruned (the 0 % row of {len(methods)} methods)" if zero and len(methods) > 1 else ", ".join(methods)
        rows.append({"method": name, "target": f"{100 * part['target_ratio'].iloc[0]:g}%", x_label: x,
                     "accuracy (%)": round(y, 2), "std over seeds": round(std, 2)})
    return pd.DataFrame(rows)


def gaps_beyond_spread(df: pd.DataFrame, ratio: float, col: str = "acc_finetuned") -> pd.DataFrame:
    """Pairs of methods at target `ratio` whose mean `col` differ by more than the sum of their standard
    deviations over seeds (the gaps a reader may trust; needs >= 2 seeds each), largest gap first."""
    done = df[(df["status"] == "ok") & (df["target_ratio"] == ratio)]
    stats = done.groupby("method", sort=False)[col].agg(["mean", "std", "count"])
    stats = stats[stats["count"] >= 2]
    pairs = [(a, b, stats.at[a, "mean"] - stats.at[b, "mean"], stats.at[a, "std"] + stats.at[b, "std"])
             for a in stats.index for b in stats.index if stats.at[a, "mean"] > stats.at[b, "mean"]]
    out = pd.DataFrame([p for p in pairs if p[2] > p[3]], columns=["better", "worse", "gap", "spread"])
    return out.sort_values("gap", ascending=False, ignore_index=True)
