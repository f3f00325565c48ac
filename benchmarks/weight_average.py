"""Benchmark: averaging the weights of a run's last epochs (stochastic weight averaging), on the validation split.

    digitrecognizer train --preset default --keep-epochs --out runs/NAME   # keeps OUT/epochs/NNN.pt
    python benchmarks/weight_average.py --run runs/NAME --data-dir ../shared/data/mnist

Each epoch's averaged (EMA) weights, and the mean of the weights of epochs A..B for several windows, are measured
on the 6,000 clean validation digits and on the same digits drawn in the four canvas styles (24,000 drawings,
as `robustness.py --split validation` draws them), by the plain argmax: no not-a-digit thresholds, which are
fitted at export. Batch-norm statistics are averaged with the weights (they are part of the EMA too). The test
set is not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from digitrecognizer import data, synth
from digitrecognizer.models import create_model
from digitrecognizer.models import predict_logits
from digitrecognizer.recipes import TrainConfig


def drawn_validation(val: data.MnistSplit) -> tuple[np.ndarray, np.ndarray]:
    """The validation digits drawn in every canvas style and preprocessed (blank ones kept as zeros: an error)."""
    drawn = synth.drawn_digits(val.images, val.labels, len(val), 100)  # as robustness.py
    return drawn.preprocessed()[0], drawn.labels


def averaged(states: list[dict]) -> dict:
    """The mean of several state dicts; integer buffers (batch-norm's step counts) are taken from the last."""
    return {name: (torch.stack([s[name] for s in states]).mean(0) if states[-1][name].is_floating_point()
                   else states[-1][name]) for name in states[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run trained with --keep-epochs")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--first", type=int, default=20, help="first epoch measured alone (default 20)")
    parser.add_argument("--lengths", default="2,4,6,8,12,16", help="window lengths to average, ending at the last "
                        "epoch kept and at the best single epoch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    snapshots = {int(p.stem): torch.load(p, map_location="cpu", weights_only=False)
                 for p in sorted((args.run / "epochs").glob("[0-9][0-9][0-9].pt"))}
    if not snapshots:
        parser.error(f"{args.run / 'epochs'} holds no epochs: train with --keep-epochs")
    config = TrainConfig.from_dict(next(iter(snapshots.values()))["config"])
    val = config.split(data.load_split(args.data_dir, "train"))[1]
    drawn, drawn_labels = drawn_validation(val)
    model, _ = create_model(config.model, **config.model_args)
    model = model.to(memory_format=torch.channels_last)

    def measure(name: str, state: dict) -> dict:
        model.load_state_dict(state)
        clean = predict_logits(model, val.images).argmax(1).numpy()
        drawn_read = predict_logits(model, drawn).argmax(1).numpy()
        row = {"weights": name, "clean_errors": int(np.sum(clean != val.labels)),
               "drawn_errors": int(np.sum(drawn_read != drawn_labels))}
        print(f"{name:>16}: clean validation errors {row['clean_errors']:3d} of {len(val):,} | drawn errors "
              f"{row['drawn_errors']:3d} of {len(drawn_labels):,}", flush=True)
        return row

    rows = [measure(f"epoch {e}", snapshots[e]["ema"]) for e in sorted(snapshots) if e >= args.first]
    last = max(snapshots)
    best = max((e for e in snapshots if e >= args.first), key=lambda e: (snapshots[e]["val_acc"], e))
    for end in sorted({last, best}):
        for length in (int(n) for n in args.lengths.split(",")):
            window = [e for e in range(end - length + 1, end + 1) if e in snapshots]
            if len(window) == length:
                rows.append(measure(f"mean {window[0]}-{end}", averaged([snapshots[e]["ema"] for e in window])))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"weight_average_{args.run.name}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
