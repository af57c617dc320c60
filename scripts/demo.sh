#!/usr/bin/env bash
# The main job: a demo that exercises Midge natively and as a WASI component. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_tools
echo "== native engine"
cargo run -q -p cntryl-midge --example demo
if cargo metadata --format-version 1 --no-deps 2>/dev/null | grep -q '"name":"midge"'; then
  echo "== the same engine as a WASI component (wasmtime host)"
  cargo run -q -p midge-host --bin midge -- demo
fi
