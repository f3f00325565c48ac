"""Benchmark: the training recipe on writers it never saw. For each shared collection, train the default recipe
without it (`train --exclude NAME`), export, and score the left-out collection as benchmarks/writers.py draws it.

    python benchmarks/leave_one_out.py [--epochs 8 --stop-after 6] [--only optdigits,pendigits,usps] [--runs runs]
                                       [--tag TAG] [--augment NAME=VALUE ...] [--seed N]

The runs use a shorter schedule than the shipped model (8-epoch one-cycle schedule stopped after 6 epochs: about
10 minutes each on two cores), so their figures understate what the full recipe reaches. Results:
benchmarks/results/writers_leave-out-NAME.{json,txt} and benchmarks/results/leave_one_out.json; with `--tag TAG`
(runs of another schedule or augmentation, say), writers_leave-out-NAME-TAG and leave_one_out-TAG.json.
`--augment` and `--seed` are passed to `train` as they are (e.g. `--augment square=0.2`); the summary records
them, and a run folder in --runs trained with other settings is refused rather than scored again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from digitrecognizer.recipes import parse_augment

HERE = Path(__file__).parent
COLLECTIONS = ("optdigits", "pendigits", "usps")


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def trained_as_asked(run: Path, asked: dict) -> bool:
    """Whether the exported run in `run` was trained with the settings asked for (a key "augment" holds a dict of
    augmentation settings; the others are the config's own)."""
    config = json.loads((run / "export" / "card.json").read_text())["training"]["config"]
    augment = asked.get("augment", {})
    return all(config[key] == value for key, value in asked.items() if key != "augment") and \
        all(config["augment"].get(key) == value for key, value in augment.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--stop-after", type=int, default=6)
    parser.add_argument("--only", default=",".join(COLLECTIONS))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--tag", help="suffix of the result files, for runs of another schedule")
    parser.add_argument("--augment", action="append", default=[], metavar="NAME=VALUE",
                        help="change one of the recipe's augmentation settings (repeatable)")
    parser.add_argument("--seed", type=int, help="the runs' random seed (default: the recipe's)")
    args = parser.parse_args()
    data = ["--data-dir", str(args.data_dir)] if args.data_dir else []
    recipe_flags = [f"--augment={pair}" for pair in args.augment]
    if args.seed is not None:
        recipe_flags += ["--seed", str(args.seed)]
    suffix = f"-{args.tag}" if args.tag else ""
    try:
        asked = {"epochs": args.epochs, "stop_after": args.stop_after, "augment": parse_augment(args.augment)}
    except ValueError as err:
        sys.exit(str(err))
    if args.seed is not None:
        asked["seed"] = args.seed
    summary_path = HERE / "results" / f"leave_one_out{suffix}.json"
    summary = {**asked, "collections": {}}
    if summary_path.is_file():  # runs of the same settings made one --only at a time add up
        earlier = json.loads(summary_path.read_text())
        if all(earlier.get(key, {} if key == "augment" else None) == value for key, value in asked.items()):
            summary["collections"] = earlier["collections"]
    for name in args.only.split(","):
        out = args.runs / f"leave-out-{name}"
        if (out / "export" / "card.json").is_file() and not trained_as_asked(out, asked):
            sys.exit(f"{out} holds a run trained with other settings: give another --runs, or remove it")
        if not (out / "export" / "card.json").is_file():
            run("digitrecognizer", "train", "--preset", "default", "--exclude", name, "--epochs", str(args.epochs),
                "--stop-after", str(args.stop_after), "--out", str(out), "--no-progress", *recipe_flags, *data)
            run("digitrecognizer", "export", "--run", str(out), "--out", str(out / "export"), *data)
        run(sys.executable, str(HERE / "writers.py"), "--model", str(out / "export"), "--only", name,
            "--numbers", "0", "--name", f"leave-out-{name}{suffix}")
        result = json.loads((HERE / "results" / f"writers_leave-out-{name}{suffix}.json").read_text())
        summary["collections"][name] = result["collections"][name]
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")  # after each: a later failure keeps it


if __name__ == "__main__":
    main()
