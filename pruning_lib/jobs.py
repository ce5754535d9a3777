"""A sweep over N worker processes on one machine (`pruning-kit run CONFIG --jobs N`).

N processes with one thread each keep N cores busy. On the 2-core CPU they finish 1.17x the rows per minute of one
process with two threads (benchmarks/jobs_speed.py). Each worker is `pruning-kit run CONFIG --shard i/N --threads T`
(the rows of shard i, written row by row and atomically into the shared run folder, results.shard-i-of-N.csv);
this process checks the config and the folder first, shows one progress bar over every worker's rows, and merges
the shards when all are done. A rerun resumes: every worker skips the rows any file of the folder holds.

A row depends on the number of torch threads that computed it (CPU kernels split their reductions by thread), never
on which worker or how many workers ran it: the run folder records the threads and refuses rows of another count,
and on CPU the baseline checkpoints are keyed by it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import Config, ConfigError, smoke_config
from .experiment import merge_shards, pending
from .results import read_rows, shard_file_name, write_summaries

POLL_SECONDS = 2.0


class WorkerFailed(RuntimeError):
    """A worker process of run_jobs exited with an error; the message names its log."""


def default_threads(jobs: int) -> int:
    """Torch threads per worker when none are asked for: the machine's cores shared evenly, at least one."""
    return max(1, (os.cpu_count() or 1) // jobs)


def worker_command(config_path: str, index: int, jobs: int, threads: int, smoke: bool,
                   seeds: list[int] | None) -> list[str]:
    """The command line of worker `index` of `jobs`."""
    cmd = [sys.executable, "-m", "pruning_lib.cli", "run", str(config_path), "--shard", f"{index}/{jobs}",
           "--threads", str(threads), "--quiet"]
    return cmd + (["--smoke"] if smoke else []) + (["--seeds", *map(str, seeds)] if seeds else [])


def _finished(run_dir: Path, jobs: int, todo: list[set]) -> int:
    """How many of each worker's pending rows its shard file holds now."""
    return sum(len(keys & {(r["seed"], r["method"], r["target_ratio"]) for r in read_rows(run_dir / shard_file_name(i, jobs))})
               for i, keys in enumerate(todo))


def run_jobs(cfg: Config, config_path: str, jobs: int, threads: int | None = None, smoke: bool = False,
             seeds: list[int] | None = None, progress: bool = True):
    """Run `cfg`'s sweep in `jobs` worker processes of `threads` torch threads each (default_threads), then merge
    the shards into results.csv; returns the merged results table. A worker that fails stops the others; its log
    (run folder, jobs/worker-i.log) is named in the error, and the rows finished so far stay for a rerun."""
    if jobs < 1:
        raise ConfigError(f"--jobs: {jobs} must be >= 1")
    threads = threads or default_threads(jobs)
    torch.set_num_threads(threads)  # the folder records this process's count: the workers' one
    swept = smoke_config(cfg) if smoke else cfg
    todo = [{(s, m, r) for s, m, r in pending(swept, (i, jobs))[1]} for i in range(jobs)]
    run_dir = swept.run_dir
    if not any(todo):
        return merge_shards(run_dir) if any(run_dir.glob("results.shard-*.csv")) else write_summaries(run_dir)
    logs = run_dir / "jobs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    workers = []
    for i in range(jobs):
        log = open(logs / f"worker-{i}.log", "w", encoding="utf-8")
        workers.append((subprocess.Popen(worker_command(config_path, i, jobs, threads, smoke, seeds), env=env,
                                         stdout=log, stderr=subprocess.STDOUT), log))
    bar = tqdm(total=sum(map(len, todo)), desc=f"{swept.exp_name} ({jobs} jobs x {threads} thread(s))",
               disable=not progress)
    failed = None
    try:
        while True:
            codes = [w.poll() for w, _ in workers]
            bar.update(_finished(run_dir, jobs, todo) - bar.n)
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0, 3)), None)
            if failed is not None or all(c is not None for c in codes):
                break
            time.sleep(POLL_SECONDS)
    finally:
        for w, log in workers:
            if w.poll() is None:
                w.terminate()
                w.wait()
            log.close()
        bar.close()
    if failed is not None:
        tail = (logs / f"worker-{failed}.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
        raise WorkerFailed(f"--jobs: worker {failed} exited with code {workers[failed][0].returncode} "
                           f"({tail[0] if tail else 'no output'}); log: {logs / f'worker-{failed}.log'}")
    return merge_shards(run_dir)
