"""Benchmark: the batch-norm statistics of the averaged (EMA) weights, as a run saves them and recomputed for them.

    python benchmarks/bn_recalibration.py --checkpoint runs/NAME/best.pt [--checkpoint ...] [--images 20000]
                                          [--name NAME]

A run validates and exports the exponential moving average of its weights, whose batch-norm running statistics
are averaged along with them. For each checkpoint this measures, on the run's own validation split (the test set
is not read): the live weights, the averaged weights as saved, and the averaged weights with their batch-norm
statistics recomputed on a fixed sample of the run's training inputs (MNIST's training part and the corpus, not
augmented), as training does when its config sets `bn_images` (`models.recompute_batch_norm`). Errors are counted
over all outputs (a digit read as "not a digit" is an error) and over the ten digits alone (how training
validates). Results:
benchmarks/results/bn_recalibration[_NAME].{json,txt}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import record
from digitrecognizer import corpus, data, writers
from digitrecognizer.constants import NOT_A_DIGIT
from digitrecognizer.models import create_model, predict_logits, recompute_batch_norm
from digitrecognizer.recipes import TrainConfig

SAMPLE_SEED = 0


def errors(model: torch.nn.Module, val: data.MnistSplit) -> dict:
    logits = predict_logits(model, val.images)
    read_all, read_digits = logits.argmax(1).numpy(), logits[:, :NOT_A_DIGIT].argmax(1).numpy()
    return {"errors": int(np.sum(read_all != val.labels)), "digit_errors": int(np.sum(read_digits != val.labels)),
            "called_not_a_digit": int(np.sum(read_all == NOT_A_DIGIT))}


def measure(checkpoint: Path, count: int, data_dir: Path | None) -> dict:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = TrainConfig.from_dict(saved["config"])
    train_part, val = config.split(data.load_split(data_dir, "train"))
    inputs = train_part.images
    if config.corpus.enabled:
        inputs = np.concatenate([inputs, corpus.build(config.corpus, train_part,
                                                      writers.default_writers_dir(data_dir)).images])
    sample = inputs[np.random.default_rng(SAMPLE_SEED).choice(len(inputs), min(count, len(inputs)), replace=False)]
    model, _ = create_model(config.model, **config.model_args)
    row = {"checkpoint": str(checkpoint), "epoch": saved["epoch"], "validation_digits": len(val)}
    model.load_state_dict(saved["model"])
    row["live"] = errors(model, val)
    model.load_state_dict(saved["ema"])
    row["averaged"] = errors(model, val)
    recompute_batch_norm(model, sample)
    row["averaged_bn_recomputed"] = errors(model, val)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--images", type=int, default=20_000, help="training inputs the statistics are taken over")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--name", help="suffix of the results file")
    args = parser.parse_args()
    rows = [measure(c, args.images, args.data_dir) for c in args.checkpoint]
    lines = [f"validation errors: all outputs / ten digits / digits called not a digit; statistics recomputed on "
             f"{args.images:,} training inputs"]
    for row in rows:
        cells = " | ".join(f"{k.replace('_', ' ')} {r['errors']} / {r['digit_errors']} / {r['called_not_a_digit']}"
                           for k, r in row.items() if isinstance(r, dict))
        lines.append(f"{row['checkpoint']} (epoch {row['epoch']}): {cells}")
    record.save("bn_recalibration" + (f"_{args.name}" if args.name else ""), {"images": args.images, "runs": rows},
                lines)


if __name__ == "__main__":
    main()
