#!/usr/bin/env bash
# Makes a finished training run the shipped model: exports its float32 and int8 graphs, and only when both
# exports succeed puts them into the package (src/digitrecognizer/assets, assets/int8); then writes both evaluation
# reports (reports/shipped, reports/shipped-int8), reruns the benchmarks whose result files describe the shipped
# model, and regenerates the README's results table. It reads the test sets, so run it only for a run already
# chosen on validation. What to do before and after it is in docs/training.md ("Shipping a run"). About 15 minutes
# on two cores; if it stops halfway, `git checkout src/digitrecognizer/assets reports benchmarks/results` undoes it.
#
#   bash scripts/ship_model.sh runs/NAME
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${1:?usage: bash scripts/ship_model.sh runs/NAME}
[ -f "$RUN/best.pt" ] || { echo "ship_model: no best.pt in $RUN" >&2; exit 2; }
PY=${PYTHON:-.venv/bin/python}
export DIGITRECOGNIZER_DATA=${DIGITRECOGNIZER_DATA:-../shared/data/mnist}
export DIGITRECOGNIZER_WRITERS=${DIGITRECOGNIZER_WRITERS:-$(dirname "$DIGITRECOGNIZER_DATA")/writers}
DATA=$DIGITRECOGNIZER_DATA
ASSETS=src/digitrecognizer/assets
RESULTS=benchmarks/results
cli() { "$PY" -m digitrecognizer.cli "$@"; }

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cli export --run "$RUN" --out "$STAGE" --data-dir "$DATA"
cli export --run "$RUN" --out "$STAGE/int8" --precision int8 --data-dir "$DATA"
cp "$STAGE"/model.onnx "$STAGE"/model.pt "$ASSETS"/
cp "$STAGE"/int8/model.onnx "$STAGE"/int8/model.pt "$ASSETS"/int8/
cp "$STAGE"/int8/card.json "$ASSETS"/int8/
cp "$STAGE"/card.json "$ASSETS"/  # the card last: it vouches for the graph beside it

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
