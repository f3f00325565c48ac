"""Benchmark: which part of the training augmentation makes digits a trained network cannot read.

    python benchmarks/augment_errors.py --data-dir ../shared/data/mnist [--model DIR]

The network (default: the shipped one, in PyTorch, eval mode) reads 8,000 training images distorted by each
part of `AugmentConfig` alone, and by all of it but that part. A distortion that makes many images unreadable
teaches the network to call ambiguous shapes by the original label, which costs clean accuracy. This is how the
default preset's elastic wobble was chosen (docs/experiments/augmentation.md, "Gentler elastic wobble"). The test set
is not read.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from digitrecognizer import data
from digitrecognizer.card import SHIPPED_DIR
from digitrecognizer.augment import AugmentConfig, apply_distortions, draw_distortions
from digitrecognizer.checkpoint import read_weights
from digitrecognizer.models import normalize, to_unit_tensor
from digitrecognizer.recipes import TrainConfig

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path, default=SHIPPED_DIR, help="model folder with model.pt (default: shipped)")
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/augment_errors.txt"))
    args = parser.parse_args()

    net = read_weights(args.model / "model.pt").network()
    train_split = TrainConfig().split(data.load_split(args.data_dir, "train"))[0]
    pick = np.random.default_rng(3).permutation(len(train_split))[: args.images]
    images, labels = to_unit_tensor(train_split.images[pick]), torch.from_numpy(train_split.labels[pick])

    @torch.no_grad()
    def error_rate(augment: AugmentConfig) -> float:
        g = torch.Generator().manual_seed(1)  # the same draws for every setting
        wrong = 0
        for i in range(0, len(images), 500):
            x = images[i : i + 500]
            if augment.enabled:
                x = apply_distortions(x, draw_distortions(len(x), augment, g))
            wrong += int((net(normalize(x)).argmax(1) != labels[i : i + 500]).sum())
        return wrong / len(images)

    full = AugmentConfig()
    none = AugmentConfig(**{f.name: 0.0 for f in fields(AugmentConfig)})
    lines = [f"{args.model.name or args.model}: {len(images):,} training images, errors of the network in eval mode",
             f"  no distortion {error_rate(none):.2%} | all of AugmentConfig() {error_rate(full):.2%}"]
    for f in fields(AugmentConfig):
        value = getattr(full, f.name)
        alone, without = error_rate(replace(none, **{f.name: value})), error_rate(replace(full, **{f.name: 0.0}))
        lines.append(f"  {f.name:>10} = {value:<5}: alone {alone:.2%} | all but this one {without:.2%}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
