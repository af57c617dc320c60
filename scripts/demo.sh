#!/usr/bin/env bash
# The main job: a demo that exercises Midge natively and as a WASI component. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_wasm_tools
echo "== 1. the native engine: each durability mode, then reopen and recovery metrics"
cargo run -q -p cntryl-midge --example demo
echo
echo "== 2. the same engine as a WASI component, under wasmtime run (one granted directory)"
cargo build -q -p midge-guest --bin midge-cmd --target wasm32-wasip2
cargo build -q -p midge-guest --bin midge-cmd
wasm="$CARGO_TARGET_DIR/wasm32-wasip2/debug/midge-cmd.wasm"
native="$CARGO_TARGET_DIR/debug/midge-cmd"
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
echo "\$ wasmtime run --dir $db::/db midge-cmd.wasm load 0 5"
wasmtime run --dir "$db::/db" "$wasm" load 0 5
echo "\$ wasmtime run --dir $db::/db midge-cmd.wasm put hello world"
wasmtime run --dir "$db::/db" "$wasm" put hello world
echo "\$ wasmtime run --dir $db::/db midge-cmd.wasm recover      # in the sandbox"
wasmtime run --dir "$db::/db" "$wasm" recover
echo "\$ midge-cmd recover                                        # natively, same files"
MIDGE_DB="$db" "$native" recover
echo "\$ midge-cmd get hello"
MIDGE_DB="$db" "$native" get hello
echo "\$ wasmtime run --dir $db::/db midge-cmd.wasm verify"
wasmtime run --dir "$db::/db" "$wasm" verify
echo
echo "== 3. the component as a plugin embedded by a wasmtime host (midge-host), storage served by the host"
cargo build -q -p midge-guest --lib --target wasm32-wasip2
db2=$(mktemp -d)
trap 'rm -rf "$db" "$db2"' EXIT
cargo run -q -p midge-host --example plugin -- "$CARGO_TARGET_DIR/wasm32-wasip2/debug/midge_guest.wasm" "$db2"
