#!/usr/bin/env bash
# The test command: installs what the tests need, then vets, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PATH="$(go env GOPATH)/bin:$PATH"
echo "== go vet" >&2
go vet ./...
echo "== staticcheck" >&2
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The Go PAL SDK's entry points exist only under GOOS=wasip1: lint it (and the PALs) there.
staticcheck $(go list ./... | grep -v -e '/sdk/go/pal$' -e '/examples/sealdemo/')
GOOS=wasip1 GOARCH=wasm staticcheck ./sdk/go/pal/ ./examples/sealdemo/...
echo "== go test" >&2
go test -count=1 -timeout 15m ./...
if [ ! -e /dev/kvm ]; then
	# go test skipped the kvm engine's tests (no /dev/kvm here): run them, and the daemon's
	# kvm end-to-end test, against a real KVM inside QEMU.
	echo "== engine/kvm under a real KVM nested in QEMU (this machine has no /dev/kvm)" >&2
	bash internal/engine/kvm/testdata/qemu/run-tests.sh
fi
echo "== go test -race (concurrent core)" >&2
go test -count=1 -race -timeout 10m ./internal/visor/ ./internal/utpm/ ./internal/engine/ ./internal/engine/wasm/ ./internal/engine/kvm/ ./internal/api/server/ ./client/... ./internal/lean/... ./internal/config/ ./internal/rot/none/ ./internal/atomicfile/
