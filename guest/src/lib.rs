//! midge-guest: Midge compiled to `wasm32-wasip2`.
//!
//! Today this crate builds the `midge-cmd` command component, run as
//! `wasmtime run --dir <db>::/db midge-cmd.wasm <command> …`: it links `cntryl-midge` unchanged and reaches the
//! host directory through std::fs over wasi:filesystem (the engine's `local` storage backend), so the bytes it
//! writes and the fsyncs it issues are the engine's own. The same binary also builds natively, which is how the
//! tests prove byte-identical databases. It holds no engine logic.
