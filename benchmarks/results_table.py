"""The README's results table, built from the result files in the repository, so that no figure in it is typed by hand.

    python benchmarks/results_table.py                     # print the block as markdown
    python benchmarks/results_table.py --write README.md   # replace the block between the markers in place
    python benchmarks/results_table.py --check README.md   # exit 1 if the README's block is not up to date

Rows are models and columns are test sets; both are plain data below (ROWS, COLUMNS), so a model or a collection is
one line to add. A row names a model by its version (the name of its result files), or "shipped" / "shipped-int8"
for whatever the package ships now. A cell whose result file does not exist reads "—".

Where each figure comes from:
- MNIST test: the model card (`src/digitrecognizer/assets/**/card.json`), else an evaluation report
  (`reports/*/metrics.json`, whose `report.md` names the model), else `benchmarks/results/**/robustness*.json` on the
  test split; the original architecture from `benchmarks/results/train_compare.json`. To keep a model's row after it
  stops being the shipped one, keep its report folder (for example `reports/mnist-only/`).
- MNIST test drawn: the worst of the four canvas styles in `robustness*.json` (benchmarks/robustness.py).
- Other writers' collections and numbers: `benchmarks/results/writers_<version>.json` (benchmarks/writers.py).
- Non-digits refused: `benchmarks/results/refusal_<version>.json` (benchmarks/refusal.py), all held-out families.
- The speed line under the table: `benchmarks/results/speed.json` and `load_digitrecognizer-2-workers.json`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ASSETS = ROOT / "src" / "digitrecognizer" / "assets"
START, END = "<!-- results:start -->", "<!-- results:end -->"
MISSING = "—"
LEAVE_OUT = "leave-out"  # rows of benchmarks/leave_one_out.py's runs: "leave-out" and "leave-out-TAG"


@dataclass(frozen=True)
class Row:
    label: str
    model: str  # a model version, "seed" (the original architecture), "shipped" or "shipped-int8"


ROWS = [
    Row("original architecture, MNIST only (`--preset seed`)", "seed"),
    Row("MNIST only (`--preset mnist`)", "ours-20261202-ace9a3f2"),
    Row("shipped", "shipped"),
    Row("the shipped recipe on a 30-epoch schedule stopped after 24", "ours-20261206-4b8c01c6"),
    Row("shipped recipe without the column's collection (6-epoch runs, `leave_one_out.py`)", "leave-out"),
    Row("the same on a 24-epoch schedule, batch-norm statistics not recomputed (`--tag full`)",
        "leave-out-full"),
    Row("shipped, int8 graph", "shipped-int8"),
]


def read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cards() -> dict[str, dict]:
    found = {}
    for path in sorted(ASSETS.glob("**/card.json")):
        card = read_json(path)
        if isinstance(card, dict) and "version" in card:
            found[card["version"]] = card
    return found


def shipped_version(int8: bool) -> str | None:
    card = read_json(ASSETS / ("int8" if int8 else "") / "card.json")
    return card.get("version") if isinstance(card, dict) else None


def robustness_test(version: str) -> dict | None:
    """The robustness result of this model on the test split, if one exists."""
    for path in sorted(RESULTS.glob("**/robustness*.json")):
        result = read_json(path)
        if isinstance(result, dict) and result.get("model") == version and result.get("split") == "test":
            return result
    return None


def report_metrics(version: str) -> dict | None:
    """reports/NAME/metrics.json of the report whose title names this model."""
    for report in sorted((ROOT / "reports").glob("*/report.md")):
        title = report.read_text().split("\n", 1)[0]
        if re.search(rf"`{re.escape(version)}`", title):
            return read_json(report.parent / "metrics.json")
    return None


def mnist_test(version: str) -> float | None:
    if version == "seed":
        for entry in read_json(RESULTS / "train_compare.json") or []:
            if entry.get("preset") == "seed":
                return entry.get("final_test_acc")
        return None
    card = cards().get(version)
    if card is not None:
        return card.get("metrics", {}).get("test", {}).get("accuracy")
    metrics = report_metrics(version)
    if isinstance(metrics, dict):
        return metrics.get("accuracy")
    result = robustness_test(version)
    return result.get("clean_accuracy") if result else None


def drawn_worst(version: str) -> float | None:
    result = robustness_test(version)
    if not result or not result.get("styles"):
        return None
    return min(style["accuracy"] for style in result["styles"].values())


def writers(version: str) -> dict:
    return read_json(RESULTS / f"writers_{version}.json") or {}


def collection(name: str) -> Callable[[str], float | None]:
    def accuracy(version: str) -> float | None:
        if version.startswith(LEAVE_OUT):  # each column from the run that left that collection out
            tag = version[len(LEAVE_OUT):]
            version = f"{LEAVE_OUT}-{name}{tag}"
        return writers(version).get("collections", {}).get(name, {}).get("accuracy")

    return accuracy


def numbers(version: str) -> float | None:
    return writers(version).get("sklearn_numbers", {}).get("exact")


def non_digits_refused(version: str) -> float | None:
    result = read_json(RESULTS / f"refusal_{version}.json")
    return result.get("refused_all") if isinstance(result, dict) else None


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[str], float | None]
    decimals: int = 2


COLUMNS = [
    Column("MNIST test", mnist_test),
    Column("MNIST test, drawn (worst style)", drawn_worst),
    Column("optdigits", collection("optdigits")),
    Column("pendigits", collection("pendigits")),
    Column("USPS", collection("usps")),
    Column("scikit-learn digits", collection("sklearn")),
    Column("numbers of scikit-learn digits, exact", numbers, 1),
    Column("non-digits refused", non_digits_refused, 1),
]


def resolved_rows() -> list[tuple[str, str]]:
    """(label, version) for each row; a model in two rows (the shipped one is also MNIST only) is shown once."""
    rows: list[tuple[str, str]] = []
    for row in ROWS:
        version = shipped_version(row.model == "shipped-int8") if row.model.startswith("shipped") else row.model
        if version is None:
            continue
        for i, (label, seen) in enumerate(rows):
            if seen == version:
                rows[i] = (f"{label}, {row.label}", seen)
                break
        else:
            rows.append((row.label, version))
    return rows


def cell(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}%}"


def table() -> str:
    lines = ["| model | " + " | ".join(c.header for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for label, version in resolved_rows():
        name = label if version == "seed" or version.startswith(LEAVE_OUT) else f"{label}: `{version}`"
        lines.append(f"| {name} | " + " | ".join(cell(c.value(version), c.decimals) for c in COLUMNS) + " |")
    return "\n".join(lines)


def speed_line() -> str:
    speed = read_json(RESULTS / "speed.json")
    load = read_json(RESULTS / "load_digitrecognizer-2-workers.json")
    parts = []
    if isinstance(speed, dict):
        parts.append(f"a drawn canvas is read in {speed['predict_canvas_png']['p50_ms']:.1f} ms (p50, decoding and "
                     f"preprocessing included); `predict_mnist` reads {speed['predict_mnist_images_per_s']:,.0f} "
                     "images/s with the float32 graph")
        if "int8" in speed:
            parts[-1] += f" and {speed['int8']['predict_mnist_images_per_s']:,.0f} with the int8 graph"
        parts[-1] += " (`benchmarks/results/speed.json`)"
    if isinstance(load, dict):
        predict = load["/api/predict"]
        parts.append(f"the server with 2 workers answered {predict['requests_per_s']:,.0f} predictions/s at p99 "
                     f"{predict['p99_ms']:.0f} ms under 16 clients, with {predict['error_count']} errors "
                     "(`benchmarks/results/load_digitrecognizer-2-workers.json`)")
    return ("On 2 CPU cores, " + "; ".join(parts) + ".") if parts else ""


def block() -> str:
    notes = ["", "MNIST test: the official test set, by the top guess. The other columns read digits drawn on canvases "
             "through the whole pipeline, where a refused digit counts as an error. "
             f"{MISSING}: not measured yet. Generated by `python benchmarks/results_table.py` from the result files."]
    speed = speed_line()
    if speed:
        notes += ["", speed]
    return "\n".join([START, table(), *notes, END])


def replace_block(text: str, new_block: str) -> str:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the file has no {START} ... {END} block")
    return text[:start] + new_block + text[end + len(END):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="FILE", help="replace the block between the markers in FILE")
    group.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE's block differs from the results")
    args = parser.parse_args()
    new_block = block()
    if args.write:
        args.write.write_text(replace_block(args.write.read_text(), new_block))
    elif args.check:
        if replace_block(args.check.read_text(), new_block) != args.check.read_text():
            sys.exit(f"{args.check}: the results table is out of date: python benchmarks/results_table.py --write "
                     f"{args.check}")
    else:
        print(new_block)


if __name__ == "__main__":
    main()
