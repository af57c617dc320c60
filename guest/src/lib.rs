//! midge-guest: Midge compiled to `wasm32-wasip2`, with no engine logic of its own.
//!
//! - The `plugin` world (`wit/midge.wit`): wit-bindgen exports of the `engine` interface — `database`,
//!   `transaction` and `scan-iterator` resources — each method delegating to `cntryl-midge`. Storage reaches the
//!   host either through the `cntryl:midge/fs` and `objects` imports (`src/imported.rs`: the engine's storage
//!   traits over the imports, served on the host by the engine's own backends) or, for `open-dir`, through
//!   wasi:filesystem (the engine's `local` backend over std::fs). Either way the bytes and fsyncs are the
//!   engine's own.
//! - The `midge-cmd` command (`src/bin/midge-cmd.rs`) for `wasmtime run` recovery tests.
//!
//! The crate also builds natively (without the plugin exports) so the command can run on both targets.

#[cfg(target_arch = "wasm32")]
mod imported;
#[cfg(any(target_arch = "wasm32", test))]
mod memcmp;
#[cfg(target_arch = "wasm32")]
mod plugin;
