#!/usr/bin/env bash
# fer-edge vs the `fer` PyPI package, in one process, with the benchmark-only venv.
#
#   bash benchmarks/compare_fer.sh                 # builds .venv-peer/ first if needed
#   bash benchmarks/compare_fer.sh --limit 500 --repeats 2 --out /tmp/cmp   # a quick check
#
# Writes benchmarks/results/compare_fer.{json,md,png} and prints the table.
# Options: python -m fer_edge.benchmarks.compare_fer --help (run with .venv-peer/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FER_PEER_VENV:-.venv-peer}
if ! "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('fer') and u.find_spec('fer_edge')))" 2>/dev/null; then
    echo "compare_fer: building the peer environment in $VENV (benchmarks/peer_env.sh)" >&2
    bash benchmarks/peer_env.sh
fi
exec "$VENV/bin/python" -m fer_edge.benchmarks.compare_fer "$@"
