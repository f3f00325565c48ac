"""Benchmark: training throughput of the default recipe (`ours`, batch 128) on one process and on two under torchrun.

Each setup trains for warm-up + measured steps and reports images/s over the measured steps, on the first process's
clock (every step is a step of all processes together: they wait for each other in the gradient sum). Each process
runs in a fresh interpreter. The machine is shared with other work, so every setup runs --repeats times, alternating,
and the best run counts (all are kept in the JSON).

One more setup is not a way to train: two processes whose batch norms see only their own half batch, as plain DDP
would do. Its weights would not match one process; it is there to show what the batch norm over the whole batch
costs. Usage:

    python benchmarks/train_distributed.py --data-dir ../shared/data/mnist [--steps 60] [--warmup 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# (name, processes, threads per process, batch norm over the whole batch)
SETUPS = [
    ("1 process x 1 thread", 1, 1, True),
    ("1 process x 2 threads", 1, 2, True),
    ("2 processes x 1 thread", 2, 1, True),
    ("2 x 1, per-process BN", 2, 1, False),
]


def measure(args: argparse.Namespace) -> None:
    """One setup, in the process(es) the parent started; the first process writes the result to --result."""
    from digitrecognizer import distributed, recipes, train

    if args.per_process_batch_norm:
        distributed._synchronise_batch_norms = lambda module: None  # the comparison only: see the docstring
    processes = distributed.Processes.from_environment()
    step_starts: list[float] = []
    steps = args.warmup + args.steps + 1  # the start of the step after the last measured one ends the clock
    config = recipes.preset_config("default", epochs=1, batch_size=args.batch_size, limit_train=args.batch_size * steps,
                                 threads=args.threads)
    with tempfile.TemporaryDirectory() as out:
        train.fit(config, Path(out), args.data_dir, progress=False, command="benchmarks/train_distributed.py",
                  on_step=lambda step: step_starts.append(time.perf_counter()))
    if processes.is_main:
        seconds = step_starts[args.warmup + args.steps] - step_starts[args.warmup]
        result = {"processes": processes.world_size, "threads_per_process": args.threads, "steps": args.steps,
                  "batch_size": args.batch_size, "seconds": seconds, "ms_per_step": 1000 * seconds / args.steps,
                  "images_per_s": args.batch_size * args.steps / seconds}
        args.result.write_text(json.dumps(result))


def run_setup(args: argparse.Namespace, processes: int, threads: int, global_batch_norm: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "result.json"
        worker = [__file__, "--worker", "--threads", str(threads), "--result", str(result_path), "--steps",
                  str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
        if args.data_dir:
            worker += ["--data-dir", str(args.data_dir)]
        if not global_batch_norm:
            worker.append("--per-process-batch-norm")
        if processes == 1:
            command = [sys.executable, *worker]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                       *worker]
        load_before = os.getloadavg()[0]
        finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if finished.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
        return {**json.loads(result_path.read_text()), "load_average_before": load_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--steps", type=int, default=60, help="measured steps (default 60)")
    parser.add_argument("--warmup", type=int, default=8, help="steps before the clock starts (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setup; the best counts (default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (default 128, the recipe's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--per-process-batch-norm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        measure(args)
        return

    runs: dict[str, list[dict]] = {name: [] for name, *_ in SETUPS}
    for repeat in range(args.repeats):
        for name, processes, threads, global_batch_norm in SETUPS:
            run = run_setup(args, processes, threads, global_batch_norm)
            runs[name].append(run)
            print(f"run {repeat + 1}: {name:24s} {run['images_per_s']:5.0f} images/s "
                  f"(load average before {run['load_average_before']:.2f})", flush=True)
    results = [{"setup": name, **max(runs[name], key=lambda r: r["images_per_s"]),
                "all_images_per_s": [round(r["images_per_s"], 1) for r in runs[name]]} for name, *_ in SETUPS]
    by_name = {r["setup"]: r for r in results}
    one_thread, one, two, two_local = (by_name[name]["images_per_s"] for name, *_ in SETUPS)
    ratio_line = (f"2 processes / 1 process (2 threads), same 2 cores: {two / one:.2f}x; 2 threads / 1 thread in one "
                  f"process: {one / one_thread:.2f}x; batch norm over the whole batch costs "
                  f"{1 - two / two_local:.0%} of the 2-process throughput")
    print(ratio_line)
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"machine": machine, "results": results, "runs": runs}
    (args.out / "train_distributed.json").write_text(json.dumps(summary, indent=2))
    lines = [f"{r['setup']:24s} {r['images_per_s']:5.0f} images/s  ({r['ms_per_step']:.0f} ms a step of "
             f"{r['batch_size']}; best of {r['all_images_per_s']}, {r['steps']} steps after {args.warmup} warm-up)"
             for r in results]
    print("\n".join(lines))
    (args.out / "train_distributed.txt").write_text(
        "\n".join([f"{machine['date']}, {machine['cpus']} CPUs, torch {machine['torch']}", *lines, ratio_line]) + "\n")


if __name__ == "__main__":
    main()
