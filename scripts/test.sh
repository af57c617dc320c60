#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (wasm target, wasmtime CLI, moto), builds
# the guest component, and runs every test natively and through the component, then the canary gate. Caches
# build output and tools under ~/.cache/midge so repeated runs are warm. Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_tools || { echo "FAILED: could not install the wasm tools"; exit 1; }
ensure_moto || { echo "FAILED: could not install moto"; exit 1; }
# One log per checkout, so two checkouts sharing the cache never interleave their summaries.
log="$MIDGE_CACHE/logs/test-$(pwd | cksum | cut -d" " -f1).log"
echo "(full log: $log)"
status=0

echo "== cargo test (workspace default members: engine, host, conformance suite)"
cargo test --no-fail-fast "$@" -- --show-output 2>&1 | tee "$log" | grep -E --line-buffered \
  "^(test result|running|error|warning: unused|failures:|---- |\{\"(sweep|canar))|panicked|FAILED|Doc-tests"
codes=("${PIPESTATUS[@]}")
[ "${codes[0]}" -eq 0 ] || status=${codes[0]}

echo "== the same engine tests compiled to wasm32-wasip2 and run under the wasmtime CLI"
export CARGO_TARGET_WASM32_WASIP2_RUNNER="wasmtime run --dir /tmp --env TMPDIR=/tmp"
cargo test -p cntryl-midge --target wasm32-wasip2 --lib --test api --test model 2>&1 \
  | tee -a "$log" | grep -E --line-buffered "^(test result|running|error)|panicked|FAILED"
codes=("${PIPESTATUS[@]}")
[ "${codes[0]}" -eq 0 ] || status=${codes[0]}

echo "== harness self-test: canary mutants must be caught"
./scripts/canaries.sh 2>&1 | tee -a "$log"
codes=("${PIPESTATUS[@]}")
[ "${codes[0]}" -eq 0 ] || status=1

echo "== summary"
python3 scripts/harness_figures.py "$log"
grep -E "^test result" "$log" | awk '
  { for (i=1;i<=NF;i++) { if ($(i)=="passed;") p+=$(i-1); if ($(i)=="failed;") f+=$(i-1); if ($(i)=="ignored;") s+=$(i-1) } }
  END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
[ "$status" -eq 0 ] && echo "OK" || echo "FAILED (exit $status)"
exit "$status"
