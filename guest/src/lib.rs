//! midge-guest: wit-bindgen exports delegating to cntryl-midge (filled in by the component work).
