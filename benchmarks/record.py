"""Where a benchmark keeps its figures: printed, and written as benchmarks/results/NAME.json (every figure) and
NAME.txt (the lines printed), which the README's tables and docs are generated from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"


def save(name: str, result: dict, lines: list[str]) -> None:
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.txt").write_text("\n".join(lines) + "\n")


def by_model(result: dict[str, dict[str, dict]], label: str, label_width: int, cell_width: int,
             cell: Callable[[dict], str]) -> list[str]:
    """Lines of a table with a column per model and a row per item (`result[version][item]`): a header, then one
    line per item, each cell written by `cell`."""
    items = next(iter(result.values()))
    lines = [f"{label:{label_width}s}  " + "  ".join(f"{version:>{cell_width}s}" for version in result)]
    for item in items:
        cells = (cell(by_item[item]) for by_item in result.values())
        lines.append(f"{item:{label_width}s}  " + "  ".join(f"{text:>{cell_width}s}" for text in cells))
    return lines


def most_read_as(read_as: dict[str, int]) -> str:
    """The note `(as D: N)` for the digit read most often, after a space; as many spaces when none was read."""
    most = next(iter(read_as.items()), None)
    return f" (as {most[0]}: {most[1]:3d})" if most else " " * 13
