#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (wasm target, wasmtime CLI), builds the
# guest component, and runs every test natively and through the component. Caches build output and tools under
# ~/.cache/midge so repeated runs are warm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_tools
ensure_moto
echo "== cargo test (workspace default members: engine, host, conformance suite)"
cargo test --no-fail-fast "$@" -- --show-output 2>&1 | tee "$MIDGE_CACHE/logs/test.log" | grep -E --line-buffered \
  "^(test result|running|error|warning: unused|failures:|---- |\{\"(sweep|canar))|panicked|FAILED|Doc-tests" || true
status=${PIPESTATUS[0]}
echo "== the same engine tests compiled to wasm32-wasip2 and run under the wasmtime CLI"
export CARGO_TARGET_WASM32_WASIP2_RUNNER="wasmtime run --dir /tmp --env TMPDIR=/tmp"
cargo test -p cntryl-midge --target wasm32-wasip2 --lib --test api --test model 2>&1 \
  | tee -a "$MIDGE_CACHE/logs/test.log" | grep -E --line-buffered "^(test result|running|error)|panicked|FAILED" || true
wasm_status=${PIPESTATUS[0]}
[ "$wasm_status" -eq 0 ] || status=$wasm_status
echo "== harness self-test: canary mutants must be caught"
./scripts/canaries.sh || status=1
echo "== summary"
grep -E "^test result" "$MIDGE_CACHE/logs/test.log" | awk '
  { for (i=1;i<=NF;i++) { if ($(i)=="passed;") p+=$(i-1); if ($(i)=="failed;") f+=$(i-1); if ($(i)=="ignored;") s+=$(i-1) } }
  END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
exit "$status"
