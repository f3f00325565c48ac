"""Experiment: does one more family of training non-digits help? Fine-tune a run's checkpoint a few epochs on the
default recipe, once as it is (the control) and once with the family added, export both and compare them on the
validation split only.

    python benchmarks/negatives_finetune.py --init runs/default/best.pt [--epochs 3 --lr 0.01] [--runs runs/exp]

The family tried here, "decorated digits", is an MNIST training digit made into a picture with two to four dots
or small rings inside or around it. Compared: MNIST validation errors, digits accepted (clean), validation digits
drawn in the four canvas styles and misread or refused, and the share refused of validation non-digits: 150 of
each training family drawn with a seed no run trains on, and the export's 400 rendered non-digits. The held-out
families are measured by `refusal.py --split validation` on the exported models. Results:
benchmarks/results/negatives_finetune.{json,txt}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import record
from digitrecognizer import Recognizer, data, negatives, notdigit, recipes, synth, train
from digitrecognizer.recognizer import softmax

VALIDATION_SEED = 777  # training families drawn with a seed the corpus never uses
DRAWN_SEED = 900


def decorated_digit_ink(mnist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit made into a picture: two to four dots or small rings inside or around it. Strokes and arcs are
    left out: added to a digit they can make another way of writing one (a crossed 7, a slashed 0)."""
    ink = negatives._digit_ink(mnist, rng, int(negatives.CANVAS_PX * 0.6))
    h, w = ink.shape
    pad = int(0.25 * max(h, w))
    image = Image.fromarray(np.uint8(np.pad(ink, pad) * 255))
    draw = ImageDraw.Draw(image)
    pen = max(3, int(rng.uniform(0.06, 0.11) * w))
    for _ in range(int(rng.integers(2, 5))):
        x, y = pad + rng.uniform(-0.1, 1.1) * w, pad + rng.uniform(-0.1, 1.1) * h
        if rng.random() < 0.6:
            r = pen * rng.uniform(1.0, 1.8)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        else:
            r = rng.uniform(0.1, 0.22) * w
            draw.ellipse([x - r, y - r, x + r, y + r], outline=255, width=pen)
    return np.asarray(image, np.float32) / 255


def finetune(variant: str, init: str, out: Path, epochs: int, lr: float) -> None:
    if variant == "decorated":
        negatives.TRAINING_FAMILIES["decorated digits"] = lambda rng, mnist: decorated_digit_ink(mnist, rng)
    config = recipes.preset_config("default", epochs=epochs, lr=lr, init_weights=init)
    train.fit(config, out, None, progress=False, command=f"negatives_finetune.py {variant}")


def compare(model: Path, val: data.MnistSplit, validation_non_digits: list[bytes], families: np.ndarray,
            rendered: list[bytes], drawn: synth.DrawnDigits) -> dict:
    rec = Recognizer(model)
    scores = rec.scores_mnist(val.images)
    accepted = rec.accepts(softmax(scores.logits, rec.temperature).max(1), scores.novelty, scores.not_digit)
    drawn_read = rec.predict_many(drawn.pngs)
    refused = np.array([not p.is_digit for p in rec.predict_many(validation_non_digits)])
    return {"validation_errors": int((scores.logits.argmax(1) != val.labels).sum()),
            "validation_accepted": float(accepted.mean()),
            "drawn_errors": int(sum(p.digit != label for p, label in zip(drawn_read, drawn.labels))),
            "drawn": len(drawn.pngs),
            "training_families_refused": float(refused.mean()),
            "per_family_refused": {f: float(refused[families == f].mean()) for f in dict.fromkeys(families)},
            "rendered_refused": float(np.mean([not p.is_digit for p in rec.predict_many(rendered)]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="checkpoint or model.pt of the default recipe to start from")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--runs", type=Path, default=Path("runs/exp"))
    parser.add_argument("--only-train", choices=("control", "decorated"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only_train:  # one fine-tune per process: the added family must not leak into the control
        finetune(args.only_train, args.init, args.runs / f"ft-{args.only_train}", args.epochs, args.lr)
        return
    for variant in ("control", "decorated"):
        out = args.runs / f"ft-{variant}"
        if not (out / "model" / "card.json").is_file():
            subprocess.run([sys.executable, __file__, "--init", args.init, "--epochs", str(args.epochs), "--lr",
                            str(args.lr), "--runs", str(args.runs), "--only-train", variant], check=True)
            subprocess.run(["digitrecognizer", "export", "--run", str(out), "--checkpoint", "last.pt", "--out",
                            str(out / "model"), "--version", f"ft-{variant}"], check=True)

    _, val = recipes.preset_config("default").split(data.load_split(None, "train"))
    rng = np.random.default_rng(VALIDATION_SEED)
    pngs, families = [], []
    for name, make in negatives.TRAINING_FAMILIES.items():
        for i in range(150):
            pngs.append(synth.encode_png(synth.compose(make(rng, val.images), synth.CANVAS_STYLES[i % 4], rng)))
            families.append(name)
    rendered = synth.non_digit_set(400, notdigit.NON_DIGIT_SEED)
    drawn = synth.drawn_digits(val.images, val.labels, 500, DRAWN_SEED)
    result = {v: compare(args.runs / f"ft-{v}" / "model", val, pngs, np.array(families), rendered, drawn)
              for v in ("control", "decorated")}
    lines = [f"fine-tuned {args.epochs} epochs at lr {args.lr} from {args.init}; validation split only"]
    for v, r in result.items():
        per = ", ".join(f"{f} {share:.0%}" for f, share in r["per_family_refused"].items())
        lines.append(f"{v:10s} validation errors {r['validation_errors']}, accepted {r['validation_accepted']:.2%}, "
                     f"drawn errors {r['drawn_errors']} of {r['drawn']} | non-digits refused: training families "
                     f"{r['training_families_refused']:.1%} ({per}); rendered {r['rendered_refused']:.1%}")
    record.save("negatives_finetune", result, lines)


if __name__ == "__main__":
    main()
