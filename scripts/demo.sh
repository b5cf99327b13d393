#!/usr/bin/env bash
# The main job: build the CLI and the demo PALs from source, then run the sealing demo — PAL A
# seals a secret for PAL B, B unseals it and attests with a µTPM quote that the demo verifies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2

mkdir -p bin build/pal
echo "demo: building palisade and the demo PALs (GOOS=wasip1)..." >&2
go build -o bin/palisade ./cmd/palisade
for p in sealer unsealer; do
	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -o "build/pal/$p.wasm" "./examples/sealdemo/$p"
done
exec bin/palisade demo seal --pal-dir build/pal --state-dir build/demo-state "$@"
