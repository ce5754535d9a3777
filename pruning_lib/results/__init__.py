"""The results of a run: results.csv (one row per method, target and seed), results.json, tables.md, and the
tables and statistics notebooks 07 and 08 draw from them. A runner package: methods and curvature never
import it (tests/test_layout.py).

- schema: the record `Row` (each column with its unit) and the column lists generated from it;
- files: reading results.csv strictly, writing it atomically, the results frame and the summaries;
- tables: seed-style method x target tables (mean ± std over seeds);
- stats: accuracy / cost trade-off, Pareto front, gaps beyond the spread over seeds.
A row whose target cannot be reached has status "failed", its reason, and the closest achievable reduction
in `param_reduction`; the tables show it as "n/a".
"""
from .files import ResultsFileError, read_rows, results_frame, shard_file_name, write_rows, write_summaries
from .schema import (COLUMNS, DESCRIPTIONS, EMPTY_WHEN_FAILED, INTS, KEY, NULLABLE, OPTIONAL, STAGE_COLUMNS,
                     STATUSES, TEXT, TIMING, Row, failed_row)
from .stats import front_table, gaps_beyond_spread, pareto_front, tradeoff
from .tables import TABLES, TITLES, best_cells, tables, variant_table

__all__ = ["COLUMNS", "DESCRIPTIONS", "EMPTY_WHEN_FAILED", "INTS", "KEY", "NULLABLE", "OPTIONAL", "STAGE_COLUMNS",
           "STATUSES", "TABLES", "TEXT", "TIMING", "TITLES", "ResultsFileError", "Row", "best_cells", "failed_row",
           "front_table", "gaps_beyond_spread", "pareto_front", "read_rows", "results_frame", "shard_file_name",
           "tables", "tradeoff", "variant_table", "write_rows", "write_summaries"]
