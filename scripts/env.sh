# Shared setup for scripts/test.sh and scripts/demo.sh (sourced, not run).
export MIDGE_CACHE="${MIDGE_CACHE:-$HOME/.cache/midge}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MIDGE_CACHE/target}"
export MIDGE_TOOLS="$MIDGE_CACHE/tools"
export PATH="$MIDGE_TOOLS/bin:$HOME/.local/bin:$PATH"
mkdir -p "$MIDGE_CACHE/logs"

# Installs the wasm32-wasip2 target and the wasmtime CLI (pinned, cached) when missing.
ensure_wasm_tools() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "== installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2 || return 1
  fi
  if ! "$MIDGE_TOOLS/bin/wasmtime" --version 2>/dev/null | grep -q "48.0.8"; then
    echo "== installing wasmtime CLI 48.0.8 into $MIDGE_TOOLS (one-time, several minutes on 2 cores)"
    cargo install wasmtime-cli --version 48.0.8 --locked --root "$MIDGE_TOOLS" \
      --no-default-features --features run,cranelift,component-model,cache,parallel-compilation || return 1
  fi
}

# Installs the local S3-compatible server the cloud tests start on 127.0.0.1 (moto honours If-None-Match and
# If-Match, which fencing needs).
ensure_moto() {
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "== installing moto[server] (local S3-compatible test server)"
    python3 -m pip install --quiet 'moto[server]' \
      || python3 -m pip install --quiet --user --break-system-packages 'moto[server]' || return 1
  fi
}
