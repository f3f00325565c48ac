"""Where a benchmark keeps its figures: printed, and written as benchmarks/results/NAME.json (every figure) and
NAME.txt (the lines printed), which the README's tables and docs are generated from."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save(name: str, result: dict, lines: list[str]) -> None:
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.txt").write_text("\n".join(lines) + "\n")
