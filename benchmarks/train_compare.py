"""Benchmark: our model vs the original (seed) architecture, trained by the same command on the same machine.

Prints seconds per epoch, wall time to reach 99.0% and 99.37% test accuracy, final test accuracy, and ratios.
The test set is read here only to report (each epoch's averaged weights are measured after the epoch ends);
nothing is chosen on it. Usage:

    python benchmarks/train_compare.py --data-dir ../shared/data/mnist [--epochs-ours 35] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from digitrecognizer import data, models, recipes, train

TARGETS = (0.99, 0.9937)


def run_preset(preset: str, epochs: int | None, data_dir: Path, out: Path, test: data.MnistSplit) -> dict:
    config = recipes.preset_config(preset, epochs=epochs)
    curve = []
    started = time.perf_counter()
    measuring = [0.0]  # time spent on test evaluation, excluded from the training clock

    def measure(run: train.Run) -> None:
        t0 = time.perf_counter()
        logits = models.predict_logits(run.eval_model(), test.images)
        acc = (logits.argmax(1).numpy() == test.labels).mean()
        measuring[0] += time.perf_counter() - t0
        curve.append({"epoch": run.epoch, "wall_s": time.perf_counter() - started - measuring[0],
                      "train_s": run.train_seconds, "test_acc": float(acc)})
        print(f"  {preset} epoch {run.epoch}: test {acc:.2%} after {curve[-1]['wall_s']:.0f}s", flush=True)

    train.fit(config, out / preset, data_dir, progress=False, on_epoch_end=measure,
              command=f"digitrecognizer train --preset {preset}")
    reach = {f"{t:.4f}": next((c["wall_s"] for c in curve if c["test_acc"] >= t), None) for t in TARGETS}
    return {"preset": preset, "model": config.model, "epochs": config.epochs,
            "seconds_per_epoch": curve[-1]["train_s"] / len(curve), "total_s": curve[-1]["wall_s"],
            "seconds_to": reach, "final_test_acc": curve[-1]["test_acc"],
            "best_test_acc_seen": max(c["test_acc"] for c in curve), "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--epochs-ours", type=int, default=None, help="default: the preset's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    test = data.load_split(args.data_dir, "test")
    results = [run_preset("seed", None, args.data_dir, args.out / "runs", test),
               run_preset("default", args.epochs_ours, args.data_dir, args.out / "runs", test)]
    seed, ours = results
    fmt = lambda s: "never" if s is None else f"{s:.0f} s"  # noqa: E731
    lines = ["| model | s/epoch | to 99.0% | to 99.37% | final test acc |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['preset']} ({r['model']}) | {r['seconds_per_epoch']:.1f} | {fmt(r['seconds_to']['0.9900'])} | "
                     f"{fmt(r['seconds_to']['0.9937'])} | {r['final_test_acc']:.2%} |")
    lines.append("")
    lines.append(f"ratio ours/seed: s/epoch {ours['seconds_per_epoch'] / seed['seconds_per_epoch']:.2f}x, "
                 f"errors {(1 - ours['final_test_acc']) / (1 - seed['final_test_acc']):.2f}x "
                 f"({(1 - seed['final_test_acc']) * 1e4:.0f} -> {(1 - ours['final_test_acc']) * 1e4:.0f} of 10,000)")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_compare.json").write_text(json.dumps(results, indent=2))
    (args.out / "train_compare.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
