"""The results files of a run: results.csv (one row per method, target and seed), results.json, tables.md.

results.csv is the record the sweep resumes from, so it is read strictly and written atomically:
- every write rewrites the whole file through a temporary file and a rename (files.write_atomic), so a
  kill, a full disk or a sync conflict leaves the old file or the new one, and every line ends in '\\n';
- on reading, every column must be present and parse. A damaged last line (no final newline, a missing or
  unparsable field, extra fields glued on) is dropped with a warning, so its row is computed again; a
  damaged line anywhere else is an error naming the line (exit 2), because rows after it may be lost.
A row whose target cannot be reached has status "failed", its reason, and the closest achievable reduction
in `param_reduction`; the tables show it as "n/a".
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .files import write_text_atomic

COLUMNS = ["method", "target_ratio", "seed", "params", "nonzero_params", "param_reduction", "macs", "gflops",
           "acc_pruned", "acc_finetuned", "finetune_epochs", "seconds", "compression", "theoretical_speedup",
           "status", "error", "seconds_prune", "seconds_bn", "seconds_finetune", "seconds_eval",
           "latency_ms_b1", "latency_ms_b128", "latency_threads"]
KEY = ("method", "target_ratio", "seed")
# Wall-clock measurements: they differ between two runs of the same row, everything else does not.
TIMING = ("seconds", "seconds_prune", "seconds_bn", "seconds_finetune", "seconds_eval", "latency_ms_b1",
          "latency_ms_b128")
INTS = {"seed", "params", "nonzero_params", "macs", "finetune_epochs", "latency_threads"}
STATUSES = ("ok", "failed")
# Columns a failed row leaves empty (param_reduction holds the closest achievable reduction, or is empty).
EMPTY_WHEN_FAILED = set(COLUMNS) - set(KEY) - {"status", "error"}
# Files written before the status / error columns existed hold only finished rows; the stage timings and
# latencies came later still and may be empty.
OPTIONAL = {"status": "ok", "error": "", **{c: "" for c in COLUMNS[COLUMNS.index("seconds_prune"):]}}
NULLABLE = set(COLUMNS[COLUMNS.index("seconds_prune"):])


def shard_file_name(index: int, count: int) -> str:
    """The results file of shard `index` of `count` (experiment.run(shard=...), merged by merge_shards)."""
    return f"results.shard-{index}-of-{count}.csv"


class ResultsFileError(ValueError):
    """results.csv is damaged before its last line; the message names the file and the line."""


def _parse_row(fields: dict[str, str]) -> dict[str, Any]:
    """Typed row from CSV strings; ValueError saying which column is missing or unparsable."""
    row: dict[str, Any] = {}
    status = fields.get("status", "ok")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    for col in COLUMNS:
        text = fields.get(col, OPTIONAL.get(col))
        if text is None:
            raise ValueError(f"column '{col}' is missing")
        if col in ("method", "status", "error"):
            if col == "method" and not text:
                raise ValueError("column 'method' is empty")
            row[col] = text
        elif text == "" and (col in NULLABLE or (status == "failed" and col in EMPTY_WHEN_FAILED)):
            row[col] = None
        else:
            try:
                value = int(text) if col in INTS else float(text)
            except ValueError:
                raise ValueError(f"column '{col}' = {text!r} is not a number") from None
            if col not in INTS and not math.isfinite(value):
                raise ValueError(f"column '{col}' = {text!r} is not finite")
            row[col] = value
    return row


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The valid rows of results.csv (see the module docstring for what is dropped and what is an error)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    complete = text.endswith("\n")
    if complete:
        lines.pop()  # the empty string after the final newline
    if not lines:
        return []
    last = len(lines)  # 1-based number of the last line

    def damaged(number: int, why: str) -> None:
        if number == last:
            warnings.warn(f"{path}: line {number} is damaged ({why}); dropped, its row will be computed again",
                          stacklevel=3)
        else:
            raise ResultsFileError(f"{path}: line {number} is damaged ({why}); the rows after it may be wrong. "
                                   "Fix or delete that line, or delete the file to recompute every row")

    header = next(csv.reader([lines[0]]), [])
    unknown = [c for c in header if c not in COLUMNS]
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL]
    if unknown or missing or (last == 1 and not complete):
        damaged(1, f"the header is not the results columns (unknown: {', '.join(unknown) or 'none'}; "
                   f"missing: {', '.join(missing) or 'none'})")
        return []
    rows, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        if number == last and not complete:
            damaged(number, "it does not end with a newline: the write was cut")
            continue
        values = next(csv.reader([line]), [])
        if len(values) != len(header):
            damaged(number, f"{len(values)} fields, the header has {len(header)}")
            continue
        try:
            row = _parse_row(dict(zip(header, values)))
        except ValueError as e:
            damaged(number, str(e))
            continue
        key = (row["method"], row["target_ratio"], row["seed"])
        if key in seen:
            raise ResultsFileError(f"{path}: line {number} repeats the row {key} of line {seen[key]}; delete one")
        seen[key] = number
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row to results.csv atomically (all COLUMNS, each line ending in a newline)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})
    write_text_atomic(path, buf.getvalue())


def failed_row(method: str, ratio: float, seed: int, error: Exception, closest: float | None) -> dict[str, Any]:
    """A results row for a target that cannot be reached: the reason on one line, the closest reduction."""
    return {"method": method, "target_ratio": ratio, "seed": seed, "status": "failed",
            "error": " ".join(str(error).split()), "param_reduction": None if closest is None else round(closest, 6)}


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


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Seed-style tables (method x target ratio): fine-tuned and one-shot accuracy, GFLOPs, achieved
    reduction, compression. Failed rows count as missing; a cell with no finished row reads 'n/a'."""
    order = list(dict.fromkeys(df["method"]))
    pct = lambda r: f"{100 * float(r):g}%"  # noqa: E731  (0.501 -> 50.1%: labels never collide)
    ok = df.assign(**{c: df[c].where(df["status"] == "ok") for c in EMPTY_WHEN_FAILED})
    out = {}
    for name, col, fmt in [("test accuracy after fine-tuning (%)", "acc_finetuned", ".2f"),
                           ("test accuracy right after pruning, BatchNorm re-estimated (%)", "acc_pruned", ".2f"),
                           ("GFLOPs (2 x MACs)", "gflops", ".4g"),
                           ("achieved parameter reduction", "param_reduction", ".3f"),
                           ("measured latency, batch 1 (ms)", "latency_ms_b1", ".3g"),
                           ("measured latency, batch 128 (ms)", "latency_ms_b128", ".3g")]:
        if ok[col].isna().all():  # files written before latencies were measured
            continue
        t = ok.groupby(["method", "target_ratio"])[col].apply(lambda v: _mean_std(v, fmt)).unstack(fill_value="n/a")
        t.columns = [pct(c) for c in t.columns]
        out[name] = t.reindex(order)
    done = df[df["status"] == "ok"]
    if len(done):
        comp = done.groupby(["method", "target_ratio"]).agg(
            params=("params", "mean"), nonzero_params=("nonzero_params", "mean"), macs=("macs", "mean"),
            gflops=("gflops", "mean"), param_reduction=("param_reduction", "mean"),
            compression=("compression", "mean"), theoretical_speedup=("theoretical_speedup", "mean"),
            seeds=("seed", "nunique"))
        comp.index = comp.index.set_levels([comp.index.levels[0], [pct(r) for r in comp.index.levels[1]]])
        out["compression"] = comp.round(4)
    return out


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame with every column (numeric columns as numbers, missing as NaN)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS:
        if c not in ("method", "status", "error"):
            df[c] = pd.to_numeric(df[c])
    return df


def write_summaries(run_dir: Path) -> pd.DataFrame:
    """Rewrite results.json and tables.md from results.csv (atomically); returns the results DataFrame."""
    df = results_frame(read_rows(run_dir / "results.csv"))
    write_text_atomic(run_dir / "results.json", df.to_json(orient="records", indent=1))
    if len(df):
        md = [f"# {run_dir.name}\n",
              "Mean ± std over seeds. Columns: target fraction of parameters removed. `acc_pruned` is measured "
              "after re-estimating BatchNorm statistics on training batches (no weight update). Weight "
              "(unstructured) pruning keeps dense FLOPs. n/a: the target cannot be reached (see below).\n"]
        for title, t in tables(df).items():
            md += [f"## {title}\n", t.to_markdown(), ""]
        failed = df[df["status"] == "failed"]
        if len(failed):
            md += ["## rows that failed (target cannot be reached)\n",
                   failed[["method", "target_ratio", "seed", "param_reduction", "error"]]
                   .rename(columns={"param_reduction": "closest reduction"}).to_markdown(index=False), ""]
        write_text_atomic(run_dir / "tables.md", "\n".join(md) + "\n")
    return df


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
