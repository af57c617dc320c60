//! SSTables: immutable sorted files of versions, their block cache, and lazy cursors.
//!
//! Owns the byte format (documented in `docs/formats/sst.md`), [`SstWriter`], [`SstReader`], [`BlockCache`]
//! and [`RunIter`] (tables with disjoint key ranges read as one cursor; the caller says which tables may form
//! a run). Knows nothing about levels, the manifest or visibility; reads and writes only through the
//! [`crate::storage::File`] it is given. Every integer is fixed-width little-endian.

mod block;
mod bloom;
mod cache;
#[cfg(test)]
pub(crate) mod footprint_tests;
mod reader;
mod run;
mod writer;

pub(crate) use bloom::key_hash;
pub(crate) use cache::BlockCache;
pub(crate) use reader::{SstIter, SstReader};
pub(crate) use run::{RunIter, disjoint_runs};
pub(crate) use writer::{SstOptions, SstWriter};

/// Footer magic ("midgeSST" as little-endian bytes).
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"midgeSST");
/// Format version written by this build.
pub(crate) const VERSION: u32 = 1;
/// Footer size: 4 handles (16 bytes each) + version u32 + magic u64 + crc u32.
pub(crate) const FOOTER_LEN: usize = 4 * 16 + 4 + 8 + 4;
/// Entries between restart points in a data block.
pub(crate) const RESTART_INTERVAL: usize = 16;
/// Blocks smaller than this are stored raw.
pub(crate) const MIN_COMPRESS: usize = 256;

/// Counters shared by every reader of one engine (exported as runtime metrics).
#[derive(Debug, Default)]
pub(crate) struct SstStats {
    pub bloom_checks: std::sync::atomic::AtomicU64,
    pub bloom_rejects: std::sync::atomic::AtomicU64,
    pub blocks_read: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests;
