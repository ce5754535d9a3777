"""The GPU check (`make gpu-check`): everything of the kit that only a GPU exercises, in one script of at most
8 minutes on one H100 / H200, no network; writes its section of benchmarks/RESULTS.md, the device named.

Steps (each a subprocess with its own time limit; a failing step is reported and the others still run):
  1. tests/test_device.py on the device (every family prunes there as on the CPU, K-FAC agrees, the training
     options run);
  2. the wide ResNet-32 CIFAR-100 config's --smoke with bf16 autocast and channels_last;
  3. one full-size run, configs/gpu_fashion_mnist_resnet32.json: all Fashion-MNIST training images, narrow
     ResNet-32, baseline + l1 / obs / improved_eigendamage at 90 %, data kept on the device, with its wall time;
  4. K-FAC / EKFAC / HVP cost against one forward+backward (benchmarks/curvature.py);
  5. torchrun --nproc_per_node=1 (NCCL) on a smoke sweep.

--dry (the default where torch sees no CUDA device) runs the same steps on the CPU at tiny sizes (digits instead of Fashion-MNIST, a few steps): tests/test_gpu_check.py
calls it, so the script cannot rot before a GPU is lent. On the device machine (torch is there, two pure-Python
dependencies travel as wheels, the data as its .gz files; docs/results/gpu.md gives the command):

    python scripts/gpu_check.py [--dry] [--results benchmarks/RESULTS.md] [--out DIR] [--budget 480]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
FULL_CONFIG = ROOT / "configs" / "gpu_fashion_mnist_resnet32.json"
SMOKE_CONFIG = ROOT / "configs" / "cifar100_resnet32_wide.json"
FAST_RECIPE = {"precision": "bf16", "channels_last": True}


def device_facts(dry: bool) -> dict:
    """The machine: device name, torch / CUDA versions, CPU threads."""
    import torch
    facts = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
             "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if not dry:
        props = torch.cuda.get_device_properties(0)
        facts.update(device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                     memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    else:
        facts["device"] = f"CPU dry run ({platform.processor() or platform.machine()})"
    return facts


def unpack_fashion_mnist(gz_dir: Path | None) -> None:
    """data/FashionMNIST/raw from the four .gz files of `gz_dir` when the raw files are not there yet."""
    raw = ROOT / "data" / "FashionMNIST" / "raw"
    if gz_dir is None or (raw / "train-images-idx3-ubyte").is_file():
        return
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(gz_dir.glob("*-ubyte.gz")):
        with gzip.open(gz) as src, open(raw / gz.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)


def write_config(path: Path, base: Path, dry: bool, **over) -> Path:
    """`base` with the fast training options in both recipes and `over` applied (dry: tiny sizes on digits)."""
    cfg = json.loads(base.read_text(encoding="utf-8"))
    for recipe in ("baseline", "finetune"):
        cfg[recipe] = {**cfg.get(recipe, {}), **FAST_RECIPE}
    cfg.update(over)
    if dry:
        cfg.update(dataset="digits", train_subset=None, measure_latency=False)
        for recipe in ("baseline", "finetune"):
            cfg[recipe].update(epochs=1, max_steps_per_epoch=3)
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path


class Steps:
    """Runs the steps as subprocesses within the time budget and keeps their outcome."""

    def __init__(self, budget: float, out: Path, env: dict):
        self.deadline, self.out, self.env, self.rows = time.monotonic() + budget, out, env, []

    def run(self, name: str, cmd: list[str], limit: float, keep_tail: int = 40) -> str:
        left = self.deadline - time.monotonic()
        if left < 10:
            self.rows.append((name, "skipped (time budget spent)", 0.0, ""))
            return ""
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=min(limit, left))
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
            text = done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            status, text = f"timed out after {min(limit, left):.0f} s", (e.stdout or b"").decode(errors="replace")
        seconds = time.perf_counter() - t0
        (self.out / f"{name.split()[0]}.log").write_text(text, encoding="utf-8")
        tail = "\n".join(text.strip().splitlines()[-keep_tail:])
        self.rows.append((name, status, seconds, tail))
        print(f"gpu_check: {name}: {status} in {seconds:.0f} s", flush=True)
        return text


def section(facts: dict, rows: list, full_table: str, curvature_table: str, dry: bool) -> str:
    """The Markdown section for benchmarks/RESULTS.md."""
    lines = [START, "## GPU check (`make gpu-check`)", "",
             f"`python scripts/gpu_check.py{' --dry' if dry else ''}` on {facts['device']}, torch {facts['torch']}"
             + (f", CUDA {facts['cuda']}, {facts['memory_gib']} GiB" if not dry else "")
             + f", {facts['date']}." + (" A dry run: CPU, tiny sizes; no GPU figure." if dry else ""), "",
             "| step | outcome | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {status} | {seconds:.0f} |" for name, status, seconds, _ in rows]
    if full_table:
        lines += ["", "Full-size run (`configs/gpu_fashion_mnist_resnet32.json`" + (", dry sizes" if dry else "")
                  + "), test accuracy (%) and wall time:", "", full_table]
    if curvature_table:
        lines += ["", "Curvature cost against one forward+backward (`benchmarks/curvature.py`):", "", curvature_table]
    return "\n".join(lines + [END]) + "\n"


def write_section(results: Path, text: str) -> None:
    """Replace the gpu-check section of `results` (or append it)."""
    old = results.read_text(encoding="utf-8") if results.is_file() else ""
    if START in old and END in old:
        new = old[:old.index(START)] + text + old[old.index(END) + len(END) + 1:]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    results.write_text(new, encoding="utf-8")


def markdown_table(text: str) -> str:
    """The last Markdown table printed in `text`."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return "\n".join(blocks[-1]) if blocks else ""


def full_run_table(run_dir: Path, seconds: float) -> str:
    """Method x target accuracy (pruned, fine-tuned) and the run's wall time, from the run folder's results.csv."""
    import pandas as pd
    path = run_dir / "results.csv"
    if not path.is_file():
        return ""
    df = pd.read_csv(path)
    lines = ["| method | target | params removed | acc pruned | acc fine-tuned | seconds |", "|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.method} | {r.target_ratio:.0%} | {r.param_reduction:.3f} | {r.acc_pruned:.2f} | "
                     f"{r.acc_finetuned:.2f} | {r.seconds:.1f} |")
    return "\n".join(lines + ["", f"Whole run, baseline training included: {seconds:.0f} s."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true",
                        help="the same steps on the CPU at tiny sizes (the default where torch sees no CUDA device)")
    parser.add_argument("--results", type=Path,
                        help="file to write the section into (default: benchmarks/RESULTS.md, or OUT/RESULTS.md dry)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_check", help="logs and run folders")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps (default 480)")
    parser.add_argument("--fashion-gz", type=Path, help="folder of the four Fashion-MNIST .gz files to unpack first")
    args = parser.parse_args(argv)
    import torch
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device: a dry run (CPU, tiny sizes)", flush=True)
        args.dry = True
    out = args.out.resolve()
    results = args.results or (out / "RESULTS.md" if args.dry else ROOT / "benchmarks" / "RESULTS.md")
    out.mkdir(parents=True, exist_ok=True)
    facts = device_facts(args.dry)
    if not args.dry:
        unpack_fashion_mnist(args.fashion_gz)
    device = "cpu" if args.dry else "cuda"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PRUNING_TEST_DEVICE": device, "PYTHONUNBUFFERED": "1"}
    steps = Steps(args.budget, out, env)
    py, cli = sys.executable, [sys.executable, "-m", "pruning_lib.cli", "run"]

    steps.run("tests on the device (tests/test_device.py)", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                              "tests/test_device.py"], 150)
    smoke_methods = ["l1", "eigendamage"] if args.dry else json.loads(SMOKE_CONFIG.read_text())["methods"]
    smoke = write_config(out / "smoke.json", SMOKE_CONFIG, False, output_dir=str(out / "runs"), device=device,
                         methods=smoke_methods)
    steps.run("smoke: wide ResNet-32 CIFAR-100, bf16 + channels_last", [*cli, str(smoke), "--smoke", "--quiet"], 120)
    full = write_config(out / "full.json", FULL_CONFIG, args.dry, output_dir=str(out / "runs"), device=device)
    run_dir = out / "runs" / json.loads(full.read_text())["exp_name"]
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: its wall time is the figure
    t0 = time.perf_counter()
    steps.run("full-size Fashion-MNIST run", [*cli, str(full), "--quiet"], 300)
    full_table = full_run_table(run_dir, time.perf_counter() - t0)
    sizes = ["--batch", "8", "--repeats", "1"] if args.dry else ["--repeats", "5"]
    curvature = steps.run("curvature cost (benchmarks/curvature.py)",
                          [py, "benchmarks/curvature.py", "--device", device, "--threads", str(facts["threads"]), *sizes], 90)
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "pruning_lib.cli", "run",
                str(write_config(out / "dist.json", SMOKE_CONFIG, False, output_dir=str(out / "runs_dist"),
                                 methods=["l1", "eigendamage"], device="auto")), "--smoke", "--quiet"]
    steps.run(f"torchrun --nproc_per_node=1 ({'gloo' if args.dry else 'NCCL'})", torchrun, 90)

    text = section(facts, steps.rows, full_table, markdown_table(curvature), args.dry)
    write_section(results, text)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    print(text)
    failed = [name for name, status, _, _ in steps.rows if status != "ok"]
    for name, status, _, tail in steps.rows:
        if status != "ok":
            print(f"--- {name}: {status}\n{tail}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
