#!/usr/bin/env bash
# Makes a finished training run the shipped model: exports its float32 and int8 graphs into the package
# (src/digitrecognizer/assets, assets/int8), writes both evaluation reports (reports/shipped, reports/shipped-int8),
# reruns the benchmarks whose result files describe the shipped model, and regenerates the README's results table.
# It reads the test sets, so run it only for a run already chosen on validation. What is left by hand is listed in
# docs/training.md ("Shipping a run"). About 15 minutes on two cores.
#
#   bash scripts/ship_model.sh runs/NAME
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${1:?usage: bash scripts/ship_model.sh runs/NAME}
[ -f "$RUN/best.pt" ] || { echo "ship_model: no best.pt in $RUN" >&2; exit 2; }
PY=${PYTHON:-.venv/bin/python}
DATA=${DIGITRECOGNIZER_DATA:-../shared/data/mnist}
ASSETS=src/digitrecognizer/assets
RESULTS=benchmarks/results
cli() { "$PY" -m digitrecognizer.cli "$@"; }

cli export --run "$RUN" --out "$ASSETS" --data-dir "$DATA"
cli export --run "$RUN" --out "$ASSETS/int8" --precision int8 --data-dir "$DATA"
cli evaluate --model "$ASSETS" --out reports/shipped --data-dir "$DATA"
cli evaluate --model "$ASSETS/int8" --out reports/shipped-int8 --data-dir "$DATA"

"$PY" benchmarks/robustness.py --data-dir "$DATA" | tee "$RESULTS/robustness.txt"
"$PY" benchmarks/robustness.py --data-dir "$DATA" --model "$ASSETS/int8" --out "$RESULTS/int8" \
    | tee "$RESULTS/int8/robustness.txt"
"$PY" benchmarks/writers.py
"$PY" benchmarks/writers.py --int8
"$PY" benchmarks/refusal.py --data-dir "$DATA"
"$PY" benchmarks/refusal.py --data-dir "$DATA" --int8
"$PY" benchmarks/new_writers.py --model "$ASSETS" --model "$ASSETS/int8" | tee "$RESULTS/new_writers.txt"
"$PY" benchmarks/results_table.py --write README.md
