"""The `digitrecognizer` command: argument parsing only; each sub-command imports its library module lazily."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder or card.json (default: the shipped model)")
    p.add_argument("--int8", action="store_true",
                   help="the shipped int8 graph of the same network: faster on batches, "
                        "its own card and test figures")


def _model(args: argparse.Namespace) -> Path | None:
    from .card import SHIPPED_GRAPHS

    if args.int8 and args.model:
        raise CliError("--int8 picks the shipped int8 graph; --model names another model: give one of them")
    return SHIPPED_GRAPHS["int8"] if args.int8 else args.model


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with the four MNIST files (default: $DIGITRECOGNIZER_DATA, else ~/.cache/digitrecognizer/mnist)")


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed, recipes, train

    overrides = {"epochs": args.epochs, "stop_after": args.stop_after, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "limit_train": args.limit_train, "threads": args.threads, "outliers": args.outliers,
                 "extra_data": str(args.extra_data) if args.extra_data else None,
                 "init_weights": str(args.init_weights) if args.init_weights else None,
                 "keep_epochs": args.keep_epochs or None,
                 "exclude": args.exclude.split(",") if args.exclude else None,
                 "augment": recipes.parse_augment(args.augment) if args.augment else None}
    if args.extra_data and not args.extra_data.is_file():
        raise CliError(f"{args.extra_data}: no such file (write one with `digitrecognizer feedback export`)")
    if args.width or args.hidden:
        overrides["model_args"] = {k: v for k, v in (("width", args.width), ("hidden", args.hidden)) if v}
    try:
        config = recipes.preset_config(args.preset, **overrides)
    except ValueError as err:  # an unknown preset or collection, a stop outside the schedule: the message says which
        raise CliError(str(err)) from err
    if args.init_weights and not args.resume:
        if args.width or args.hidden:
            raise CliError("--width and --hidden cannot change the network of --init-weights: fine-tuning keeps it")
        config = recipes.with_network_of(config, args.init_weights)  # a CheckpointError says which file and why
    # Under torchrun every process runs this command; the first one speaks for all.
    processes = distributed.Processes.from_environment()
    try:
        run = train.fit(config, args.out, args.data_dir, resume=args.resume, progress=not args.no_progress,
                        processes=processes)
    except KeyboardInterrupt:
        if processes.is_main:
            launcher = "torchrun ... -m digitrecognizer.cli" if processes.several else "digitrecognizer"
            print(f"\ninterrupted: progress saved to {args.out / 'last.pt'}; continue with "
                  f"`{launcher} train --out {args.out} --resume`", file=sys.stderr)
        return 130
    if processes.is_main:
        print(f"done: {run.epoch} epochs in {run.train_seconds / 60:.1f} min, best validation accuracy "
              f"{run.best_val_acc:.4%}; checkpoints in {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    card = export(args.run, args.out, args.data_dir, checkpoint=args.checkpoint, version=args.version,
                  precision=args.precision)
    test = card.metrics.test
    print(f"exported {card.version} ({args.precision}) to {args.out}: test accuracy {test.accuracy:.2%}, ECE {test.ece:.2%}, "
          f"temperature {card.temperature:.3f}, ONNX/PyTorch max difference {card.metrics.onnx_torch_max_prob_diff:.1e}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    metrics = evaluate(_model(args), args.out, args.data_dir)
    print(f"test accuracy {metrics['accuracy']:.2%} ({metrics['errors']} errors), top-3 {metrics['top3_accuracy']:.2%}, "
          f"macro F1 {metrics['macro_f1']:.4f}, ECE {metrics['ece']:.2%}; report: {args.out / 'report.md'}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from . import data

    folder = data.download(args.data_dir)
    print(f"MNIST is in {folder} (checksums verified)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    import numpy as np

    from . import data

    for split in data.SPLITS:
        s = data.load_split(args.data_dir, split)
        print(f"{split}: {len(s)} images {s.images.shape[1]}x{s.images.shape[2]}, labels {np.bincount(s.labels).tolist()}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .preprocess import PreprocessError
    from .recognizer import Recognizer

    recognizer = Recognizer(_model(args))
    if args.save_input:
        args.save_input.mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    for index, path in enumerate(args.files):
        try:
            if args.number:
                reading = recognizer.read_number(path)
                row = {"file": str(path), "text": reading.text, "digits": [d.to_dict() for d in reading.digits]}
                inputs = [d.input28 for d in reading.digits]
            else:
                prediction = recognizer.predict(path)
                row = {"file": str(path), **prediction.to_dict()}
                inputs = [] if prediction.blank else [prediction.input28]
        except (PreprocessError, OSError) as err:
            failures += 1
            row = {"file": str(path), "error": str(err)}
            inputs = []
        rows.append(row)
        if args.save_input:
            from PIL import Image

            for k, input28 in enumerate(inputs):
                # Index-based names: the output folder never sees a user-controlled path component.
                Image.fromarray(input28).save(args.save_input / f"{index:04d}_{Path(path).stem[:40]}_{k}.png")
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    else:
        print(_prediction_table(rows, args.number))
    for row in rows:
        if "error" in row:
            message = row["error"] if row["error"].startswith(row["file"]) else f"{row['file']}: {row['error']}"
            print(f"digitrecognizer predict: {message}", file=sys.stderr)
    return 1 if failures else 0


def _prediction_table(rows: list[dict], number: bool) -> str:
    width = max([len("file")] + [len(r["file"]) for r in rows])
    header = f"{'file':<{width}}  {'number' if number else 'digit':>7}  confidence"
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            answer, confidence = "error", "-"
        elif number:
            answer = r["text"] or "(blank)"
            confidence = " ".join(f"{d['confidence']:.0%}" for d in r["digits"]) or "-"
        else:
            answer = "(blank)" if r["blank"] else str(r["digit"]) if r["is_digit"] else "not a digit"
            confidence = f"{r['confidence']:.1%}" if not r["blank"] else "-"
        lines.append(f"{r['file']:<{width}}  {answer:>7}  {confidence}")
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .store import Quota
    from .web.app import ENV_ALLOWED_HOSTS, ENV_DB, ENV_FEEDBACK_QUOTA, ENV_FEEDBACK_RATE, Settings, serve, split_names
    from .web.guards import default_allowed_hosts

    listed = args.allowed_hosts or os.environ.get(ENV_ALLOWED_HOSTS)
    allowed_hosts = split_names(listed) if listed else default_allowed_hosts(args.host)
    if not allowed_hosts:
        raise CliError(f"--host {args.host} is not a loopback address: list the names clients reach this server "
                       f"by with --allowed-hosts (e.g. digits.example.org,10.0.0.11; '*' for any), or set "
                       f"{ENV_ALLOWED_HOSTS}")
    quota = args.feedback_quota or os.environ.get(ENV_FEEDBACK_QUOTA)
    settings = Settings(model=_model(args), db=args.db or os.environ.get(ENV_DB), allowed_hosts=allowed_hosts,
                        feedback_rate=args.feedback_rate or os.environ.get(ENV_FEEDBACK_RATE) or Settings.feedback_rate,
                        feedback_quota=Quota.parse(quota) if quota else Quota())
    serve(settings, host=args.host, port=args.port, workers=args.workers, access_log=args.access_log)
    return 0


def cmd_build_site(args: argparse.Namespace) -> int:
    from .site import build_site

    out = build_site(args.out, _model(args), args.ort_web)
    print(f"wrote the static site to {out}: try it with `python -m http.server -d {out}`, publish the folder as it is")
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from .store import FeedbackStore

    with FeedbackStore(args.db) as store:
        if args.format == "npz":
            count = store.export_npz(args.out)
        else:
            count = store.export_idx(args.out)
    print(f"wrote {count} corrected examples to {args.out} ({args.format}); fine-tune with "
          f"`digitrecognizer train --preset finetune --init-weights <model.pt> --extra-data <file.npz>`")
    return 0


def cmd_feedback_list(args: argparse.Namespace) -> int:
    from .store import CONFIRMATION, FeedbackStore

    with FeedbackStore(args.db) as store:
        confirmations = store.count(CONFIRMATION)
        print(f"{store.count() - confirmations} corrections and {confirmations} confirmations in {store.location}")
        for r in store.recent(args.limit):
            predicted = "-" if r.predicted is None else r.predicted
            print(f"#{r.id:<6} {r.created_at:%Y-%m-%d %H:%M}  read {predicted} -> correct {r.correct}  ({r.model_version})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitrecognizer", description=__doc__.split(":")[0] + ": recognise handwritten digits.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_command(sub)
    _add_export_command(sub)
    _add_evaluate_command(sub)
    _add_predict_command(sub)
    _add_serve_command(sub)
    _add_build_site_command(sub)
    _add_feedback_command(sub)
    _add_data_command(sub)
    return parser


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on MNIST with checkpoints and resume",
                       description="Train on MNIST. Writes last.pt/best.pt checkpoints and metrics.jsonl to --out "
                                   "after every epoch; Ctrl-C saves and stops; --resume continues exactly. Runs "
                                   "unchanged on several processes: torchrun --standalone --nproc_per_node=N -m "
                                   "digitrecognizer.cli train ... (--batch-size is the batch of all processes together)")
    p.add_argument("--preset", default="default", help="named recipe: default (the shipped model: MNIST, other "
                   "writers' collections, synthetic styles and non-digits), mnist (the same network on MNIST alone), "
                   "seed (the original Keras architecture), compact (a "
                   "4x cheaper network for batch throughput), finetune (a few epochs from --init-weights), quick (a "
                   "smoke run)")
    p.add_argument("--exclude", metavar="NAMES", help="leave these collections of other writers out of training "
                   "(comma-separated: optdigits, pendigits, usps), to measure the recipe on writers it never saw")
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="run folder (default: runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override the length of the preset's learning-rate schedule, in epochs "
                   "(all of it is trained unless --stop-after says otherwise)")
    p.add_argument("--stop-after", type=int, metavar="N", help="train only the first N epochs of the learning-rate "
                   "schedule (its length is --epochs)")
    p.add_argument("--keep-epochs", action="store_true", help="also keep every epoch's averaged weights in "
                   "OUT/epochs/ (about 1.3 MB each), e.g. to study weight averaging")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size (of all processes together)")
    p.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's; 1 for default, 0 for the others)")
    p.add_argument("--width", type=int, help="override the model's first-stage channel width")
    p.add_argument("--hidden", type=int, help="override the model's hidden units")
    p.add_argument("--limit-train", type=int, help="train on only the first N images (quick checks)")
    p.add_argument("--threads", type=int, help="CPU threads for torch in each process (default: the cores, "
                   "shared among the processes under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--extra-data", type=Path, metavar="NPZ",
                   help="extra examples mixed into MNIST (from `digitrecognizer feedback export`)")
    p.add_argument("--outliers", type=float, metavar="SHARE",
                   help="outlier exposure: add this many rendered scribbles per digit to each batch (e.g. 0.25), "
                        "trained towards equal probabilities, so that non-digits are refused more often")
    p.add_argument("--augment", action="append", metavar="NAME=VALUE",
                   help="change one of the preset's augmentation settings (repeatable), e.g. square=0.2 or "
                        "elastic_px=0.9; the names are AugmentConfig's (augment.py)")
    p.add_argument("--init-weights", type=Path, metavar="FILE",
                   help="start from these weights (e.g. src/digitrecognizer/assets/model.pt) to fine-tune; the "
                        "network is the one the file holds, whatever the preset builds")
    _add_data_dir(p)
    p.set_defaults(func=cmd_train)


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write ONNX + weights + model card from a training run",
                       description="Export a run's best checkpoint: ONNX graph (checked against PyTorch; float32 or int8), weights, and a "
                                   "model card with temperature, not-a-digit threshold and test metrics.")
    p.add_argument("--run", type=Path, default=Path("runs/default"),
                   help="training run folder (default: runs/default), or a model folder to export again")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in the run folder (default: best.pt)")
    p.add_argument("--out", type=Path, default=Path("runs/default/export"), help="model folder to write")
    p.add_argument("--version", help="version string for the card (default: name-date-hash)")
    p.add_argument("--precision", choices=("float32", "int8"), default="float32",
                   help="float32 (default): the graph as trained; int8: quantised with ONNX Runtime, about 2x the "
                        "batch throughput, refused if it reads validation digits 0.05 points worse than float32")
    _add_data_dir(p)
    p.set_defaults(func=cmd_export)


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure a model on the official test set and write a report with plots",
                       description="Accuracy, top-3, macro precision/recall/F1, per-class figures, calibration; writes "
                                   "report.md, metrics.json and PNG plots to --out.")
    _add_model(p)
    p.add_argument("--out", type=Path, default=Path("reports/latest"), help="report folder (default: reports/latest)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_evaluate)


def _add_predict_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="read digits from image files",
                       description="Predict the digit in each image (PNG, JPEG, WebP). Missing or unreadable files are "
                                   "reported and the rest still processed; the exit status is 1 if any failed.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="image files")
    p.add_argument("--number", action="store_true", help="read several digits side by side as a number")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--save-input", type=Path, metavar="DIR", help="write the 28x28 images the model saw to DIR")
    _add_model(p)
    p.set_defaults(func=cmd_predict)


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the web app and REST API (http://127.0.0.1:5000)",
                       description="Serve the drawing page at / and the API at /api (docs at /docs).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    _add_model(p)
    p.add_argument("--db", help="feedback database: a file path, sqlite:///... or postgresql://user:pass@host/db "
                                "(default: $DIGITRECOGNIZER_DB, else a SQLite file in your data folder)")
    p.add_argument("--access-log", action="store_true", help="log one line per request (off: it costs throughput)")
    p.add_argument("--allowed-hosts", metavar="NAMES",
                   help="comma-separated Host names the server answers to, e.g. digits.example.org ('*.example.org' "
                        "for subdomains, '*' for any); default: $DIGITRECOGNIZER_ALLOWED_HOSTS, else the localhost "
                        "names when bound to loopback (required when bound elsewhere)")
    p.add_argument("--feedback-quota", metavar="ROWS,SIZE",
                   help="the most corrections the store keeps, in rows and bytes (default 100000,1GB; "
                        "$DIGITRECOGNIZER_FEEDBACK_QUOTA); beyond it /api/feedback answers 507")
    p.add_argument("--feedback-rate", metavar="RATE",
                   help="corrections per client and worker process, e.g. 30/minute (the default) or 5/second; "
                        "beyond it /api/feedback answers 429")
    p.set_defaults(func=cmd_serve)


def _add_build_site_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-site", help="write a static site that runs the model in the browser",
                       description="The drawing page, the model and ONNX Runtime Web (fetched from the npm registry "
                                   "and checked) in one folder that any static host can publish.")
    p.add_argument("--out", type=Path, default=Path("site"), help="folder to write (replaced; default: site)")
    p.add_argument("--ort-web", metavar="PATH", help="the onnxruntime-web package as a .tgz or folder, instead of "
                                                     "fetching it (also $DIGITRECOGNIZER_ORT_WEB)")
    _add_model(p)
    p.set_defaults(func=cmd_build_site)


def _add_feedback_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="list or export the corrections users sent from the app",
                       description="Corrections are stored by the app (`serve --db`). Export them to fine-tune the "
                                   "model on your own handwriting with `train --extra-data`.")
    fb_sub = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    q = fb_sub.add_parser("export", help="write the corrections as NPZ (for --extra-data) or MNIST IDX files")
    q.add_argument("--db", help="feedback database: a path, sqlite:///... or postgresql://... URL (default: in your "
                                "data folder)")
    q.add_argument("--format", choices=("npz", "idx"), default="npz", help="npz (default) or idx")
    q.add_argument("--out", type=Path, required=True, help="NPZ file, or folder for the IDX files")
    q.set_defaults(func=cmd_feedback_export)
    q = fb_sub.add_parser("list", help="show the most recent corrections")
    q.add_argument("--db", help="feedback database (default: in your data folder)")
    q.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    q.set_defaults(func=cmd_feedback_list)


def _add_data_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download or check the MNIST files")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("download", help="fetch MNIST from a public mirror and verify the official sha256")
    _add_data_dir(q)
    q.set_defaults(func=cmd_data_download)
    q = data_sub.add_parser("check", help="read and validate the four files")
    _add_data_dir(q)
    q.set_defaults(func=cmd_data_check)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except CliError as err:
        print(f"digitrecognizer: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as err:
        # Library errors carry the fix in their message (DataError, CheckpointError, ModelError ...).
        print(f"digitrecognizer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
