"""Evaluation: metrics on the official test set and the report folder (report.md + PNG plots) (numpy, matplotlib)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import numpy as np

ECE_BINS = 15


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """rows: true class, columns: predicted class."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def confidence_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, images) of each non-empty equal-width bin of the top probability."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            out.append((confidence[in_bin].mean(), correct[in_bin].mean(), int(in_bin.sum())))
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """The gap |accuracy - confidence| of each bin, weighted by the bin's share of the images (Guo et al.)."""
    ece = 0.0
    for confidence, accuracy, count in confidence_bins(probs, labels, bins):
        ece += count / len(labels) * abs(accuracy - confidence)
    return float(ece)


def compute_metrics(probs: np.ndarray, labels: np.ndarray, summary_only: bool = False) -> dict:
    """Accuracy, top-3, macro precision/recall/F1, per-class figures, ECE and NLL for (N, 10) probabilities."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    predicted = probs.argmax(1)
    cm = confusion_matrix(labels, predicted)
    true_pos = np.diag(cm).astype(np.float64)
    precision = np.divide(true_pos, cm.sum(0), out=np.zeros(10), where=cm.sum(0) > 0)
    recall = np.divide(true_pos, cm.sum(1), out=np.zeros(10), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(10), where=(precision + recall) > 0)
    top3 = (np.argsort(-probs, axis=1)[:, :3] == labels[:, None]).any(1)
    metrics = {
        "images": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "errors": int((predicted != labels).sum()),
        "top3_accuracy": float(top3.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "ece": expected_calibration_error(probs, labels),
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)))),
    }
    if not summary_only:
        metrics["per_class"] = {
            str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(cm[c].sum())} for c in range(10)
        }
        metrics["confusion_matrix"] = cm.tolist()
    return metrics


# ----------------------------------------------------------------------------------------------
# Report

NEON = {"bg": "#0b0f1a", "panel": "#121829", "fg": "#e6f1ff", "cyan": "#00e5ff", "pink": "#ff2bd6",
        "green": "#39ff88", "muted": "#7f8db3"}


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.facecolor": NEON["bg"], "axes.facecolor": NEON["panel"], "savefig.facecolor": NEON["bg"],
        "text.color": NEON["fg"], "axes.labelcolor": NEON["fg"], "xtick.color": NEON["muted"],
        "ytick.color": NEON["muted"], "axes.edgecolor": NEON["muted"], "grid.color": "#24304f",
        "axes.grid": True, "font.size": 10, "axes.titleweight": "bold",
    })
    return plt


def plot_training_curves(history: list[dict], path: Path) -> None:
    plt = _style()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], color=NEON["cyan"], label="train (augmented, smoothed)")
    ax1.plot(epochs, [h["val_loss"] for h in history], color=NEON["pink"], label="validation")
    ax1.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], color=NEON["cyan"], label="train (augmented)")
    ax2.plot(epochs, [100 * h["val_acc"] for h in history], color=NEON["pink"], label="validation")
    best = max(history, key=lambda h: h["val_acc"])
    ax2.axhline(100 * best["val_acc"], color=NEON["green"], lw=0.8, ls="--",
                label=f"best validation {100 * best['val_acc']:.2f}%")
    # Low enough for both curves: augmented training inputs (with the non-digits of outlier exposure) read worse than
    # validation digits, and a line below the axis would still have its legend entry.
    lowest = min(min(h["val_acc"], h["train_acc"]) for h in history)
    ax2.set(title="Accuracy", xlabel="epoch", ylabel="%", ylim=(max(90, 100 * lowest - 1), 100))
    for ax in (ax1, ax2):
        ax.legend(facecolor=NEON["panel"], edgecolor=NEON["muted"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    plt = _style()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    off_diagonal = cm.astype(float).copy()
    np.fill_diagonal(off_diagonal, np.nan)  # the diagonal would swamp the colour scale: show errors
    image = ax.imshow(off_diagonal, cmap="magma")
    brightest = max(np.nanmax(off_diagonal), 1)
    for i in range(10):
        for j in range(10):
            # Dark text on the bright end of the colour map, light text elsewhere: readable on every cell.
            colour = NEON["green"] if i == j else "#111111" if cm[i, j] > 0.6 * brightest else NEON["fg"]
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color=colour,
                    fontweight="bold" if i == j else None)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title="Confusion matrix (colour: errors only)")
    ax.grid(False)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_digit_grid(images: np.ndarray, captions: list[str], title: str, path: Path, columns: int = 10,
                    colours: list[str] | None = None) -> None:
    plt = _style()
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3 + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(captions[k], fontsize=8, color=(colours[k] if colours else NEON["fg"]))
    fig.suptitle(title, color=NEON["cyan"], fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_class_distribution(counts: dict[str, np.ndarray], path: Path) -> None:
    plt = _style()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(counts)
    palette = [NEON["cyan"], NEON["pink"], NEON["green"]]
    for k, (name, c) in enumerate(counts.items()):
        ax.bar(np.arange(10) + (k - (len(counts) - 1) / 2) * width, c, width, label=name, color=palette[k % 3])
    ax.set(xticks=range(10), xlabel="digit", ylabel="images", title="Class distribution")
    ax.legend(facecolor=NEON["panel"], edgecolor=NEON["muted"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, labels: np.ndarray, path: Path, bins: int = ECE_BINS) -> None:
    plt = _style()
    centres, accs, counts = zip(*confidence_bins(probs, labels, bins))
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.plot([0, 1], [0, 1], color=NEON["muted"], ls="--", lw=1, label="perfect calibration")
    ax.plot(centres, accs, marker="o", color=NEON["pink"], label="model")
    # A good model puts almost every image in the top bin, so the lower bins hold a handful each and swing
    # between 0 and 1: the count of each bin is written along the top, clear of the curve.
    for x, n in zip(centres, counts):
        ax.text(x, 1.015, f"{n:,}", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                rotation=90, color=NEON["muted"])
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("Reliability (test set; images per bin on top)", pad=30)
    ax.legend(facecolor=NEON["panel"], edgecolor=NEON["muted"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: Path, card, test_images: np.ndarray, test_labels: np.ndarray, probs: np.ndarray,
                 train_labels: np.ndarray | None = None, extra_sections: list[str] | None = None) -> dict:
    """Write report.md, metrics.json and the plots; returns the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(probs, test_labels)
    predicted = probs.argmax(1)
    history = card.training.history
    if history:
        plot_training_curves(history, out_dir / "training_curves.png")
    plot_confusion(np.array(metrics["confusion_matrix"]), out_dir / "confusion_matrix.png")
    wrong = np.flatnonzero(predicted != test_labels)
    wrong = wrong[np.argsort(-probs[wrong].max(1))][:60]  # the most confident mistakes first
    plot_digit_grid(test_images[wrong], [f"{test_labels[i]}→{predicted[i]} {probs[i].max():.0%}" for i in wrong],
                    f"Misclassified test digits (true→predicted, confidence): {metrics['errors']} of "
                    f"{metrics['images']}", out_dir / "misclassified.png",
                    colours=[NEON["pink"]] * len(wrong))
    counts = {"test": np.bincount(test_labels, minlength=10)}
    if train_labels is not None:
        counts = {"train": np.bincount(train_labels, minlength=10), **counts}
    plot_class_distribution(counts, out_dir / "class_distribution.png")
    rng = np.random.default_rng(0)
    sample = np.concatenate([rng.choice(np.flatnonzero(test_labels == d), 4, replace=False) for d in range(10)])
    sample = sample.reshape(10, 4).T.ravel()
    plot_digit_grid(test_images[sample], [f"{test_labels[i]} ({probs[i].max():.0%})" for i in sample],
                    "Sample test inputs (label, confidence)", out_dir / "samples.png")
    plot_reliability(probs, test_labels, out_dir / "reliability.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "report.md").write_text(_report_markdown(card, metrics, bool(history), extra_sections or []))
    return metrics


def _report_markdown(card, m: dict, has_history: bool, extra_sections: list[str]) -> str:
    t = card.training
    lines = [
        f"# Evaluation report: `{card.version}`",
        "",
        f"Official MNIST test set ({m['images']:,} images), model `{card.name}` run through ONNX Runtime exactly as "
        f"the app runs it. Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | **{m['accuracy']:.2%}** ({m['errors']} errors) |",
        f"| top-3 accuracy | {m['top3_accuracy']:.2%} |",
        f"| macro precision / recall / F1 | {m['macro_precision']:.4f} / {m['macro_recall']:.4f} / {m['macro_f1']:.4f} |",
        f"| expected calibration error ({ECE_BINS} bins) | {m['ece']:.2%} (temperature {card.temperature:.3f}) |",
        f"| negative log-likelihood | {m['nll']:.4f} |",
    ]
    if t.epochs:
        lines += [
            f"| training | {t.epochs} epochs, {t.seconds / 60:.1f} min on {t.environment.get('cpus', '?')} CPU cores |",
            f"| best validation accuracy | {t.best_val_acc:.2%} |",
            "", f"Trained with `{t.command or '?'}`.",
        ]
    nd = card.not_digit
    if nd.validation_digits_accepted is not None:
        novelty = f" or novelty > {nd.max_novelty}" if nd.max_novelty is not None else ""
        output = f" or the not-a-digit output > {nd.max_not_digit}" if nd.max_not_digit < 1 else ""
        lines += ["", f"Not a digit when the top probability < {nd.min_confidence}{novelty}{output} "
                      f"(accepts {nd.validation_digits_accepted:.2%} of validation digits, refuses "
                      f"{nd.rendered_non_digits_refused:.1%} of {nd.rendered_non_digits} rendered non-digits)."]
    lines += ["", "## Per class", "", "| digit | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, v in m["per_class"].items():
        lines.append(f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |")
    lines += [""]
    if has_history:
        lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    lines += [
        "## Confusion matrix", "", "![confusion matrix](confusion_matrix.png)", "",
        "## Misclassified examples", "", "![misclassified](misclassified.png)", "",
        "## Calibration", "", "![reliability](reliability.png)", "",
        "## Data", "", "![class distribution](class_distribution.png)", "", "![samples](samples.png)", "",
    ]
    return "\n".join(lines + extra_sections) + "\n"


def evaluate(model: str | Path | None, out_dir: Path, data_dir: Path | None) -> dict:
    """`digitrecognizer evaluate`: the model (default: shipped) on the official test set, with a report."""
    from . import data
    from .recognizer import Recognizer

    recognizer = Recognizer(model, threads=2)
    test = data.load_split(data_dir, "test")
    probs = recognizer.predict_mnist(test.images)
    try:
        train_labels = data.load_split(data_dir, "train", verify=False).labels
    except data.DataError:
        train_labels = None
    corpus = recognizer.card.training.config.get("corpus", {})
    extra = styles_section(recognizer, Path(out_dir)) if corpus.get("styles") else []
    return write_report(out_dir, recognizer.card, test.images, test.labels, probs, train_labels, extra)


STYLE_SEED = 909  # not the training corpus's seed: these drawings were never trained on
STYLE_DIGITS = 200


def styles_section(recognizer, out_dir: Path) -> list[str]:
    """The synthetic writing styles: a preview grid, and how many of STYLE_DIGITS new drawings of each the model
    reads right (a refusal counts as an error)."""
    from . import preprocess, styles

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(STYLE_SEED)
    lines = ["## Synthetic writing styles", "",
             f"Drawn by the stroke generator with seeds never trained on, {STYLE_DIGITS} of each, read as the "
             "app reads a drawing.", "", "![synthetic styles](styles.png)", "", "| style | read right |", "|---|---|"]
    preview, captions = [], []
    for name, (digit, _) in styles.STYLES.items():
        inputs = [x for x in (preprocess.to_mnist(styles.render_style(name, rng)) for _ in range(STYLE_DIGITS))
                  if x is not None]
        predictions = recognizer.predict_inputs(inputs)
        right = np.mean([p.digit == digit for p in predictions])
        lines.append(f"| {name} | {right:.1%} |")
        preview += inputs[:5]
        captions += [textwrap.fill(name, 15)] * 5  # at most two lines: a whole name fits above a tile
    plot_digit_grid(np.stack(preview), captions, "Synthetic writing styles", out_dir / "styles.png", columns=10)
    return lines + [""]
