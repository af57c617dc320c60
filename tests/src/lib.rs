//! midge-conformance: one suite, two drivers (native engine and component).
