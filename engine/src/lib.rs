//! Midge (`cntryl-midge`): an embedded LSM key-value engine with explicit, tested durability.
#![warn(missing_docs)]

mod codec;
mod error;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod storage;
mod types;

pub use error::{MidgeError, MidgeResult, Severity};
pub use runtime::{Clock, ManualClock, SystemClock};
pub use types::{ColumnFamilyId, MAX_KEY_SIZE, MAX_VALUE_SIZE};
