//! midge-host: the wasmtime embedding (filled in by the component work).
