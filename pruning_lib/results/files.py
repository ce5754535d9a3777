"""results.csv on disk: strict reading, atomic writing, the shard file names and the summaries
(results.json, tables.md) rewritten from it.

results.csv is the record the sweep resumes from, so it is read strictly and written atomically:
- every write rewrites the whole file through a temporary file and a rename (pruning_lib.files), so a
  kill, a full disk or a sync conflict leaves the old file or the new one, and every line ends in '\\n';
- on reading, every column must be present and parse. A damaged last line (no final newline, a missing or
  unparsable field, extra fields glued on) is dropped with a warning, so its row is computed again; a
  damaged line anywhere else is an error naming the line (exit 2), because rows after it may be lost.
Files written before a column existed (status / error, the stage timings, the latencies) are read with that
column at its default. The columns and their order come from `schema.Row`.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..files import write_text_atomic
from .schema import COLUMNS, EMPTY_WHEN_FAILED, INTS, KEY, NULLABLE, OPTIONAL, STATUSES, TEXT
from .tables import tables


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
        if col in TEXT:
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
        key = tuple(row[c] for c in KEY)
        if key in seen:
            raise ResultsFileError(f"{path}: line {number} repeats the row {key} of line {seen[key]}; delete one")
        seen[key] = number
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row to results.csv atomically (all COLUMNS in order, each line ending in a newline)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})
    write_text_atomic(path, buf.getvalue())


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame with every column (numeric columns as numbers, missing as NaN)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in COLUMNS:
        if c not in TEXT:
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
