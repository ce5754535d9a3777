"""The results record: one `Row` per (method, target, seed), the single definition of results.csv's columns.

Every list of columns the kit uses is generated from `Row`'s fields, in field order (the order of results.csv
since the first file was written, so runs resume from and merge with old files):
- COLUMNS: every column; KEY: the columns naming a row;
- TIMING: wall-clock measurements (they differ between two runs of the same row, nothing else does);
- STAGE_COLUMNS: the seconds of each stage of a row (prune, BatchNorm, fine-tune, evaluate);
- INTS: the integer columns; NULLABLE: columns added later, which older files leave empty;
- EMPTY_WHEN_FAILED: what a failed row leaves empty (param_reduction holds the closest reduction, or is empty).
A field's metadata holds its description with its unit ("doc") and its role ("key", "timing", "stage", "later").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STATUSES = ("ok", "failed")


def _col(doc: str, *roles: str, default: Any = None) -> Any:
    """A column: its one-line description (with the unit) and its roles; a key column is required, any other
    is empty (None) unless given."""
    metadata = {"doc": doc, "roles": frozenset(roles)}
    return field(metadata=metadata) if "key" in roles else field(default=default, metadata=metadata)


@dataclass
class Row:
    """One row of results.csv: a method pruned to a target on the baseline of a seed, then fine-tuned and tested.
    Every field but the key may be None (an empty CSV cell): failed rows, and files written before a column
    existed."""

    method: str = _col("method name as registered, or a 'name@label' variant (text)", "key")
    target_ratio: float = _col("target fraction of the parameters to remove (0..1)", "key")
    seed: int = _col("seed of the baseline, the data order and the method (integer)", "key")
    params: int | None = _col("parameters of the pruned model (count)")
    nonzero_params: int | None = _col("nonzero parameters of the pruned model (count)")
    param_reduction: float | None = _col("achieved fraction of parameters removed (0..1; failed: the closest)")
    macs: int | None = _col("multiply-accumulates of one forward pass of one image (count)")
    gflops: float | None = _col("2 x MACs of one image (GFLOPs)")
    acc_pruned: float | None = _col("test accuracy right after pruning, BatchNorm re-estimated (%)")
    acc_finetuned: float | None = _col("test accuracy after fine-tuning (%)")
    finetune_epochs: int | None = _col("fine-tuning epochs of the recipe (count)")
    seconds: float | None = _col("wall time of the whole row (s)", "timing")
    compression: float | None = _col("unpruned / remaining parameters (ratio)")
    theoretical_speedup: float | None = _col("unpruned / pruned MACs (ratio)")
    status: str = _col("'ok', or 'failed' when the target cannot be reached (text)", default="ok")
    error: str = _col("why a failed row failed, on one line (text; empty when ok)", default="")
    seconds_prune: float | None = _col("wall time of the pruning step (s)", "timing", "stage", "later")
    seconds_bn: float | None = _col("wall time of the BatchNorm re-estimation (s)", "timing", "stage", "later")
    seconds_finetune: float | None = _col("wall time of the fine-tuning (s)", "timing", "stage", "later")
    seconds_eval: float | None = _col("wall time of both test evaluations (s)", "timing", "stage", "later")
    latency_ms_b1: float | None = _col("median forward time at batch 1, eval mode (ms)", "timing", "later")
    latency_ms_b128: float | None = _col("median forward time at batch 128, eval mode (ms)", "timing", "later")
    latency_threads: int | None = _col("torch threads while the latencies were measured (count)", "later")
    latency_predicted_ms_b128: float | None = _col(
        "forward time at batch 128 predicted by the unpruned model's per-layer latency table (ms; config "
        "predict_latency; empty where the layers were replaced, e.g. low-rank)", "timing", "later")

    def to_dict(self) -> dict[str, Any]:
        """The row as the dict read_rows returns and write_rows takes (every column, None for empty)."""
        return asdict(self)


def _with(role: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Row) if role in f.metadata["roles"])


COLUMNS: list[str] = [f.name for f in fields(Row)]
KEY: tuple[str, ...] = _with("key")
TIMING: tuple[str, ...] = _with("timing")
STAGE_COLUMNS: tuple[str, ...] = _with("stage")
NULLABLE: set[str] = set(_with("later"))
TEXT: set[str] = {f.name for f in fields(Row) if f.type == "str"}
INTS: set[str] = {f.name for f in fields(Row) if f.type.startswith("int")}
DESCRIPTIONS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(Row)}
EMPTY_WHEN_FAILED: set[str] = set(COLUMNS) - set(KEY) - {"status", "error"}
# Files written before the status / error columns existed hold only finished rows; the later columns may be empty.
OPTIONAL: dict[str, str] = {"status": "ok", "error": "", **{c: "" for c in COLUMNS if c in NULLABLE}}


def failed_row(method: str, ratio: float, seed: int, error: Exception, closest: float | None) -> dict[str, Any]:
    """A results row for a target that cannot be reached: the reason on one line, the closest reduction."""
    return Row(method, ratio, seed, status="failed", error=" ".join(str(error).split()),
               param_reduction=None if closest is None else round(closest, 6)).to_dict()
