#!/usr/bin/env bash
# The paper's evaluation in one run: builds the CLI, then `palisade bench` writes results.md,
# results.json and chart.png into the directory given (default build/bench). Extra arguments
# go to palisade bench (e.g. --quick, --ab 300, --sections https).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/bench}
shift || true
mkdir -p bin
go build -o bin/palisade ./cmd/palisade
exec bin/palisade bench --out "$out" "$@"
