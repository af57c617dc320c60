//! The LSM workers: memtable rotation, flush to L0 SSTs, compaction execution, orphan cleanup and WAL release.
//!
//! Publication protocol (flush and compaction alike): write every output SST and fsync it → fsync `sst/` →
//! one manifest edit (fsynced) that adds the outputs, removes the inputs and records the flushed sequence →
//! swap the in-memory version → delete inputs / release covered WAL segments. The manifest edit is the commit
//! point: a crash before it leaves orphan outputs (deleted at open, never trusted); a crash after it leaves
//! orphan inputs (deleted at open).

use super::{CfState, Core, lock};
use crate::compaction::{Choice, PickerConfig, choose};
use crate::error::{MidgeError, MidgeResult};
use crate::iter::{Input, MergeIter};
use crate::manifest::{Edit, FileMeta};
use crate::memtable::Memtable;
use crate::sst::{SstIter, SstOptions, SstReader, SstWriter};
use crate::storage::OpenMode;
use crate::types::{ColumnFamilyId, Entry, EntryKind, RangeTombstone, Seq, keys_eq};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) const SST_DIR: &str = "sst";

pub(crate) fn sst_path(id: u64) -> String {
    format!("{SST_DIR}/{id:020}.sst")
}

pub(crate) fn parse_sst_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sst")?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Keeps a column family's tables newest first (by largest sequence), the order point reads consult them in.
pub(crate) fn sort_tables(tables: &mut [Arc<Table>]) {
    tables.sort_by_key(|t| std::cmp::Reverse(t.meta.largest_seq));
}

/// A live SST: its manifest record and an open reader.
#[derive(Debug)]
pub(crate) struct Table {
    pub meta: FileMeta,
    pub reader: Arc<SstReader>,
}

impl Core {
    pub(crate) fn sst_options(&self) -> SstOptions {
        SstOptions {
            block_size: self.opts.block_size,
            compress: self.opts.compression,
            bloom_bits_per_key: 10,
        }
    }

    pub(crate) fn open_table(&self, meta: FileMeta) -> MidgeResult<Arc<Table>> {
        let path = sst_path(meta.id);
        let file = self
            .fs
            .open(&path, OpenMode::Read)
            .map_err(|e| MidgeError::from_io(&path, e))?;
        let reader = SstReader::open(
            file,
            path,
            meta.id,
            Some(self.block_cache.clone()),
            self.sst_stats.clone(),
        )?;
        Ok(Arc::new(Table {
            meta,
            reader: Arc::new(reader),
        }))
    }

    /// Freezes the active memtable of `cf` (caller holds the commit lock) so a flush can write it out.
    pub(crate) fn rotate_locked(&self, cf: &CfState) -> MidgeResult<()> {
        let mut v = cf.mems_mut();
        if v.active.approximate_bytes() == 0 {
            return Ok(());
        }
        self.wal.rotate()?;
        let old = std::mem::replace(
            &mut v.active,
            Arc::new(Memtable::new(self.opts.memtable_size_limit)),
        );
        Arc::make_mut(&mut v.immutable).push(old);
        Ok(())
    }

    /// Writes `entries` (internal order) and `tombstones` to one new SST; returns its manifest record. Its data
    /// blocks also go into the block cache while the `fill` budget (bytes, 0: none) lasts; what they used is
    /// taken off it.
    fn write_table(
        &self,
        cf: ColumnFamilyId,
        level: u32,
        entries: &mut GcIter,
        tombstones: &[RangeTombstone],
        limit: u64,
        fill: &mut u64,
    ) -> MidgeResult<Option<FileMeta>> {
        let id = {
            let mut m = lock(&self.manifest);
            m.reserve_file_id()
        };
        let path = sst_path(id);
        let file = self
            .fs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| MidgeError::from_io(&path, e))?;
        let mut w = SstWriter::new(file, path.clone(), self.sst_options());
        if *fill > 0 {
            w = w.fill_cache(self.block_cache.clone(), id, *fill);
        }
        let mut any = false;
        for t in tombstones {
            w.add_range_tombstone(t.clone());
            any = true;
        }
        while let Some(e) = entries.next_entry()? {
            // A table ends only between two keys: after the first version of a new one.
            let boundary = w.last_key().is_some_and(|k| !keys_eq(k, &e.key));
            w.add(e)?;
            any = true;
            if boundary && w.estimated_size() >= limit {
                break;
            }
        }
        if !any {
            drop(w);
            let _ = self.fs.remove(&path);
            return Ok(None);
        }
        *fill = w.fill_left();
        let sm = w.finish()?;
        if let Some(cloud) = &self.cloud {
            // The object store is the source of truth: an SST is uploaded before any edit publishes it.
            cloud.upload_sst(&self.fs, id)?;
        }
        Ok(Some(FileMeta {
            id,
            cf,
            level,
            size: sm.size,
            entries: sm.entries,
            smallest_key: sm.smallest_key,
            largest_key: sm.largest_key,
            smallest_seq: sm.smallest_seq,
            largest_seq: sm.largest_seq,
        }))
    }

    /// Flushes the oldest frozen memtable of `cf`, if any. Returns whether one was flushed.
    pub(crate) fn flush_one(&self, cf: &Arc<CfState>) -> MidgeResult<bool> {
        let _guard = lock(&self.flush_lock);
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mem = {
            let v = cf.mems.read().unwrap_or_else(|p| p.into_inner());
            match v.immutable.first() {
                Some(m) => m.clone(),
                None => return Ok(false),
            }
        };
        self.wait_visible(mem.max_seq())?;
        let started = self.clock.monotonic_nanos();
        let tombs = mem.range_tombstones();
        // When no table holds a key in the memtable's span, nothing older than it can be under any of its
        // keys (older memtables were flushed first): its output is the bottom for those keys, so it goes
        // straight to L1 and drops what a bottommost compaction would — a load into an empty range, or a
        // range delete whose rows are all still in the memtable, is written once instead of flushed to L0 and
        // rewritten by the next compaction. A compaction running meanwhile could publish an L1 file spanning
        // this range, so the check and the publish happen under the compaction lock; a busy compactor is not
        // waited for (the flush goes to L0).
        let compaction = self.compaction_lock.try_lock().ok();
        let bottom = compaction.is_some() && {
            let tables = cf.mems.read().unwrap_or_else(|p| p.into_inner()).tables.clone();
            mem.key_span().is_some_and(|(lo, hi)| {
                tables.iter().all(|t| {
                    t.meta.largest_key.as_ref() < lo.as_ref() || hi.as_ref() < t.meta.smallest_key.as_ref()
                })
            })
        };
        let compaction = compaction.filter(|_| bottom);
        // Versions no snapshot can see are dropped now rather than at a later compaction: those shadowed by a
        // newer version in this memtable and those hidden by its own range tombstones, so an overwrite- or
        // delete-heavy memtable writes what is live, not everything it held. Point and range tombstones are
        // carried (older tables may hold what they hide) unless the output is the bottom.
        let visible = self.visible_seq();
        let horizon = self.snapshots.oldest().map_or(visible, |o| o.min(visible));
        let cursor = mem.cursor(Bound::Unbounded, Bound::Unbounded, false);
        let mut live = GcIter::new(
            MergeIter::new(vec![Input::Mem(cursor)], false),
            horizon,
            bottom,
            self.clock.now_millis(),
            bottom && self.snapshots.count() == 0,
            &tombs,
        );
        // As a compaction: carried tombstones go into a single output, so files in a level never overlap.
        let carry: Vec<RangeTombstone> = tombs
            .iter()
            .filter(|t| !(bottom && t.seq <= horizon))
            .cloned()
            .collect();
        let (level, limit) = match bottom {
            true if carry.is_empty() => (1, self.opts.target_sst_size),
            true => (1, u64::MAX),
            false => (0, u64::MAX),
        };
        let mut metas = Vec::new();
        let mut first = true;
        // A flushed table holds the newest data, which reads want next: its blocks go into the cache as they
        // are written (into free room only).
        let mut fill = u64::MAX;
        loop {
            let t: &[RangeTombstone] = if first { &carry } else { &[] };
            first = false;
            match self.write_table(cf.id, level, &mut live, t, limit, &mut fill)? {
                Some(m) => metas.push(m),
                None => break,
            }
        }
        self.fs
            .sync_dir(SST_DIR)
            .map_err(|e| MidgeError::from_io("sync sst dir", e))?;
        self.counters
            .flush_build_ns
            .fetch_add(self.clock.monotonic_nanos() - started, Ordering::Relaxed);
        let tables: Vec<Arc<Table>> = metas
            .iter()
            .map(|m| self.open_table(m.clone()))
            .collect::<MidgeResult<_>>()?;
        let edit = Edit {
            add_files: metas,
            flushed: vec![(cf.id, mem.max_seq())],
            last_seq: Some(mem.max_seq()),
            ..Default::default()
        };
        self.apply_edit(&mut lock(&self.manifest), edit)?;
        {
            let mut v = cf.mems_mut();
            let all = Arc::make_mut(&mut v.tables);
            all.extend(tables);
            sort_tables(all);
            Arc::make_mut(&mut v.immutable).retain(|m| !Arc::ptr_eq(m, &mem));
        }
        drop(compaction);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.release_wal()?;
        Ok(true)
    }
}

/// Drops versions no snapshot can see: for each key keeps every version above `horizon` and the newest at or
/// below it (unless, at the bottom level, that one is a tombstone or expired), and drops versions hidden by a
/// range tombstone at or below the horizon. A cursor: [`GcIter::next_entry`] lends each kept version in place,
/// so a flush or compaction copies each version's bytes once, into its output, and bumps no reference count.
struct GcIter {
    inner: MergeIter,
    rule: GcRule,
    /// The version last lent is still the merge's current one: the next call moves past it first.
    lent: bool,
}

/// What [`GcIter`] decides with, and where its sweep over keys stands.
struct GcRule {
    horizon: Seq,
    bottommost: bool,
    now_ms: u64,
    drop_expired: bool,
    /// Range tombstones that can hide something (at or below the horizon), sorted by start.
    tombstones: Vec<RangeTombstone>,
    /// `tombstones[next_tombstone..]` start after the current key.
    next_tombstone: usize,
    /// Tombstones covering the current key (start <= key < end): a sweep, since keys arrive in order, so
    /// each version is checked against the few ranges around it rather than all of them.
    covering: Vec<RangeTombstone>,
    /// The key whose versions are arriving (a copy), and whether one arrived yet.
    current: Vec<u8>,
    started: bool,
    kept_floor: bool,
}

impl GcIter {
    fn new(
        inner: MergeIter,
        horizon: Seq,
        bottommost: bool,
        now_ms: u64,
        drop_expired: bool,
        tombstones: &[RangeTombstone],
    ) -> GcIter {
        let mut tombstones: Vec<RangeTombstone> =
            tombstones.iter().filter(|t| t.seq <= horizon).cloned().collect();
        tombstones.sort_by(|a, b| a.start.cmp(&b.start));
        GcIter {
            inner,
            rule: GcRule {
                horizon,
                bottommost,
                now_ms,
                drop_expired,
                tombstones,
                next_tombstone: 0,
                covering: Vec::new(),
                current: Vec::new(),
                started: false,
                kept_floor: false,
            },
            lent: false,
        }
    }

    /// The next version to keep, borrowed from the merge until the next call; `None` at the end.
    fn next_entry(&mut self) -> MidgeResult<Option<&Entry>> {
        if std::mem::take(&mut self.lent) {
            self.inner.advance()?;
        }
        loop {
            let keep = match self.inner.peek()? {
                Some(e) => self.rule.keeps(e),
                None => return Ok(None),
            };
            if keep {
                self.lent = true;
                return self.inner.peek();
            }
            self.inner.advance()?;
        }
    }
}

impl GcRule {
    /// Whether `e`, the next version in internal order, is kept.
    fn keeps(&mut self, e: &Entry) -> bool {
        if !self.started || !keys_eq(&self.current, &e.key) {
            self.started = true;
            self.current.clear();
            self.current.extend_from_slice(&e.key);
            self.kept_floor = false;
            self.sweep_to(&e.key);
        }
        if e.seq > self.horizon {
            return true;
        }
        if self.kept_floor {
            return false; // shadowed by a newer version every snapshot sees
        }
        self.kept_floor = true;
        if self.covering.iter().any(|t| e.seq < t.seq) {
            return false;
        }
        let dead =
            e.kind == EntryKind::Delete || (self.drop_expired && e.expiry.is_some_and(|x| x <= self.now_ms));
        !(self.bottommost && dead)
    }

    /// Moves the sweep to `key` (keys never decrease).
    fn sweep_to(&mut self, key: &[u8]) {
        self.covering.retain(|t| key < t.end.as_ref());
        while let Some(t) = self.tombstones.get(self.next_tombstone)
            && t.start.as_ref() <= key
        {
            if key < t.end.as_ref() {
                self.covering.push(t.clone());
            }
            self.next_tombstone += 1;
        }
    }
}

/// When L0 is compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L0Policy {
    /// At `l0_compaction_trigger` files (moving disjoint files down without rewriting them).
    Trigger,
    /// At one file: reads paid for it (see `Core::charge_read`); disjoint files still move.
    Reads,
    /// At one file, always merging (`compact_all`: tombstones must be dropped at the bottom).
    All,
}

impl Core {
    pub(crate) fn picker_config(&self, l0: L0Policy) -> PickerConfig {
        PickerConfig {
            l0_trigger: match l0 {
                L0Policy::Trigger => self.opts.l0_compaction_trigger,
                L0Policy::Reads | L0Policy::All => 1,
            },
            l0_critical: self
                .opts
                .l0_stall_ceiling
                .saturating_sub(2)
                .max(self.opts.l0_compaction_trigger),
            base_level_bytes: self.opts.target_sst_size.saturating_mul(4),
            multiplier: 10,
            max_level: 6,
            l0_moves: l0 != L0Policy::All,
        }
    }

    /// Runs one compaction step for `cf` if the picker finds work. Returns whether anything changed.
    pub(crate) fn compact_once(&self, cf: &Arc<CfState>, l0: L0Policy) -> MidgeResult<bool> {
        let _guard = lock(&self.compaction_lock);
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.check_writable()?;
        let tables: Arc<Vec<Arc<Table>>> = cf.mems.read().unwrap_or_else(|p| p.into_inner()).tables.clone();
        let metas: Vec<FileMeta> = tables.iter().map(|t| t.meta.clone()).collect();
        let choice = choose(&metas, &self.picker_config(l0), &BTreeSet::new());
        let find = |id: u64| tables.iter().find(|t| t.meta.id == id).cloned();
        match choice {
            Choice::Nothing => Ok(false),
            Choice::Move { files, to_level } => {
                let moved: Vec<FileMeta> = files
                    .iter()
                    .filter_map(|id| find(*id))
                    .map(|t| FileMeta {
                        level: to_level,
                        ..t.meta.clone()
                    })
                    .collect();
                let edit = Edit {
                    remove_files: files.clone(),
                    add_files: moved.clone(),
                    ..Default::default()
                };
                self.apply_edit(&mut lock(&self.manifest), edit)?;
                let mut v = cf.mems_mut();
                for t in Arc::make_mut(&mut v.tables).iter_mut() {
                    if let Some(m) = moved.iter().find(|m| m.id == t.meta.id) {
                        *t = Arc::new(Table {
                            meta: m.clone(),
                            reader: t.reader.clone(),
                        });
                    }
                }
                Ok(true)
            }
            Choice::Merge {
                inputs,
                overlapping,
                output_level,
                bottommost,
                ..
            } => {
                let ids: Vec<u64> = inputs.iter().chain(&overlapping).copied().collect();
                let ins: Vec<Arc<Table>> = ids.iter().filter_map(|id| find(*id)).collect();
                let visible = self.visible_seq();
                let horizon = self.snapshots.oldest().map_or(visible, |o| o.min(visible));
                let mut tombs: Vec<RangeTombstone> = ins
                    .iter()
                    .flat_map(|t| t.reader.range_tombstones().to_vec())
                    .collect();
                tombs.sort_by(|a, b| a.start.cmp(&b.start).then(b.seq.cmp(&a.seq)));
                tombs.dedup();
                let sources: Vec<Input> = ins
                    .iter()
                    .map(|t| {
                        Input::Sst(
                            SstIter::new(t.reader.clone(), Bound::Unbounded, Bound::Unbounded, false)
                                .without_cache_fill(),
                        )
                    })
                    .collect();
                let mut gc = GcIter::new(
                    MergeIter::new(sources, false),
                    horizon,
                    bottommost,
                    self.clock.now_millis(),
                    self.snapshots.count() == 0,
                    &tombs,
                );
                // Range tombstones are carried unless nothing below can hold what they hide. Carried tombstones
                // go into a single output so files in a level never overlap.
                let carry: Vec<RangeTombstone> = tombs
                    .into_iter()
                    .filter(|t| !(bottommost && t.seq <= horizon))
                    .collect();
                let limit = if carry.is_empty() {
                    self.opts.target_sst_size
                } else {
                    u64::MAX
                };
                let mut outputs: Vec<FileMeta> = Vec::new();
                let mut first = true;
                // Outputs go into the cache (free room only) as a flush's do, since the inputs' cached blocks die
                // with them. A compaction for readers' sake, or one the user asked for, fills up to half the
                // cache. A background compaction under a write load keeps what was warm warm: it fills as many
                // bytes as its inputs held in the cache, so data that readers or flushes had cached stays
                // cached through the rewrite, and data nobody read (its inputs cold) does not displace room.
                let mut fill = match l0 {
                    L0Policy::Trigger => self.block_cache.cached_bytes(&ids),
                    L0Policy::Reads | L0Policy::All => self.opts.block_cache_bytes / 2,
                };
                loop {
                    let t: &[RangeTombstone] = if first { &carry } else { &[] };
                    first = false;
                    match self.write_table(cf.id, output_level, &mut gc, t, limit, &mut fill)? {
                        Some(m) => outputs.push(m),
                        None => break,
                    }
                }
                self.fs
                    .sync_dir(SST_DIR)
                    .map_err(|e| MidgeError::from_io("sync sst dir", e))?;
                let new_tables: Vec<Arc<Table>> = outputs
                    .iter()
                    .map(|m| self.open_table(m.clone()))
                    .collect::<MidgeResult<_>>()?;
                let written: u64 = outputs.iter().map(|m| m.size).sum();
                let edit = Edit {
                    remove_files: ids.clone(),
                    add_files: outputs,
                    ..Default::default()
                };
                self.apply_edit(&mut lock(&self.manifest), edit)?;
                {
                    let mut v = cf.mems_mut();
                    let all = Arc::make_mut(&mut v.tables);
                    all.retain(|t| !ids.contains(&t.meta.id));
                    all.extend(new_tables);
                    sort_tables(all);
                }
                // Open readers keep serving live scans; the files go now (a crash leaves orphans, removed at open).
                self.block_cache.evict_files(&ids);
                for id in &ids {
                    let _ = self.fs.remove(&sst_path(*id));
                }
                let _ = self.fs.sync_dir(SST_DIR);
                if let Some(cloud) = &self.cloud {
                    cloud.delete_ssts(&ids);
                }
                self.counters.compactions.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .compaction_bytes
                    .fetch_add(written, Ordering::Relaxed);
                Ok(true)
            }
        }
    }

    /// Blocks until every commit up to `seq` is visible (flush never writes a half-published commit). A
    /// deferred sync commit at or below `seq` that its caller has not finished is synced here (see
    /// [`Core::settle_deferred`]); any other commit still invisible is in flight on another thread, so the wait
    /// is only reachable with concurrent committers (never on single-threaded wasm32).
    pub(crate) fn wait_visible(&self, seq: Seq) -> MidgeResult<()> {
        if self.visible_seq() >= seq {
            return Ok(());
        }
        self.settle_deferred(seq)?;
        let mut v = lock(&self.vis);
        while v.visible < seq {
            if let Some(p) = lock(&self.poison).as_ref() {
                return Err(MidgeError::Poisoned(p.clone()));
            }
            v.waiters += 1;
            v = self.vis_cv.wait(v).unwrap_or_else(|p| p.into_inner());
            v.waiters -= 1;
        }
        Ok(())
    }

    /// Deletes WAL segments whose every record is in published SSTs.
    pub(crate) fn release_wal(&self) -> MidgeResult<()> {
        let floor = self
            .list_cfs()
            .iter()
            .filter_map(|cf| cf.memtables().iter().filter_map(|m| m.min_seq()).min())
            .min()
            .unwrap_or_else(|| self.visible_seq() + 1);
        self.wal.release_upto(floor.saturating_sub(1))?;
        if let Some(cloud) = &self.cloud {
            // The flush's manifest edit is already mirrored, so these segments are no longer needed remotely.
            match cloud.prune_catalog(floor.saturating_sub(1)) {
                Ok(_) => {}
                Err(e @ MidgeError::Fenced(_)) => return Err(e),
                Err(e) => tracing::warn!("cloud: catalog prune deferred: {e}"),
            }
        }
        Ok(())
    }

    /// Flushes every frozen memtable of `cf`, then compacts while the picker finds work (if enabled), including
    /// a fold of L0 that reads paid for (see `Core::charge_read`). Returns whether anything changed.
    pub(crate) fn background_work(&self, cf: &Arc<CfState>) -> MidgeResult<bool> {
        if self.closing.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut changed = false;
        while self.flush_one(cf)? {
            changed = true;
        }
        if self.opts.background_compaction {
            while self.compact_once(cf, L0Policy::Trigger)? {
                changed = true;
            }
            if cf.read_compaction.swap(false, Ordering::AcqRel) {
                while self.compact_once(cf, L0Policy::Reads)? {
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Runs every column family's due background work on the caller's thread (see
    /// `Engine::run_pending_work`); a failure poisons the engine, as it does on the executor.
    pub(crate) fn run_pending_work(&self) -> MidgeResult<bool> {
        self.check_writable()?;
        let mut changed = false;
        for cf in self.list_cfs() {
            changed |= self.background_work(&cf).map_err(|e| self.durability_failed(e))?;
        }
        Ok(changed)
    }

    /// Runs [`Core::background_work`] on the executor (inline on wasm32); failures poison the engine.
    pub(crate) fn schedule(self: &Arc<Self>, cf: Arc<CfState>) {
        let weak = Arc::downgrade(self);
        self.executor.spawn(
            "flush",
            Box::new(move || {
                if let Some(core) = weak.upgrade()
                    && let Err(e) = core.background_work(&cf)
                {
                    // Whatever failed (an SST fsync reports itself as `Poisoned`), the engine stops
                    // acknowledging: recovery from the WAL is the only trustworthy path.
                    core.counters.flush_failures.fetch_add(1, Ordering::Relaxed);
                    core.poison(&format!("background flush/compaction failed: {e}"));
                }
            }),
        );
    }
}

/// Removes files in `sst/` that the manifest does not list (outputs of unpublished flushes/compactions and
/// inputs whose deletion was interrupted) and leftover temp files. Returns how many were removed.
pub(crate) fn remove_orphans(fs: &crate::storage::SharedFs, live: &BTreeSet<u64>) -> MidgeResult<u64> {
    if cfg!(feature = "canary-trust-listing") {
        return Ok(0); // the mutant keeps orphans and trusts them (see `core::open`)
    }
    let names = match fs.list(SST_DIR) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(MidgeError::from_io("list sst", e)),
    };
    let mut removed = 0;
    for n in names {
        if parse_sst_name(&n).is_none_or(|id| !live.contains(&id)) {
            let p = format!("{SST_DIR}/{n}");
            fs.remove(&p).map_err(|e| MidgeError::from_io(&p, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fs.sync_dir(SST_DIR)
            .map_err(|e| MidgeError::from_io("sync sst dir", e))?;
    }
    Ok(removed)
}

impl Core {
    /// Freezes `cf`'s active memtable and writes every frozen memtable to L0, synchronously.
    pub(crate) fn flush_cf(&self, id: ColumnFamilyId) -> MidgeResult<()> {
        self.check_writable()?;
        let cf = self
            .cf(id)
            .ok_or_else(|| MidgeError::InvalidArgument(format!("unknown column family {id}")))?;
        {
            let _c = lock(&self.commit);
            self.rotate_locked(&cf).map_err(|e| self.durability_failed(e))?;
        }
        // A flush that cannot publish leaves memory growing and the WAL unreleasable; like a failed fsync it
        // stops all acknowledgements until reopen (recovery replays the WAL).
        while self.flush_one(&cf).map_err(|e| self.durability_failed(e))? {}
        Ok(())
    }

    /// Compacts every column family until the picker (with an L0 trigger of one file) finds nothing to do.
    pub(crate) fn compact_all(&self) -> MidgeResult<()> {
        for cf in self.list_cfs() {
            while self
                .compact_once(&cf, L0Policy::All)
                .map_err(|e| self.durability_failed(e))?
            {}
        }
        Ok(())
    }
}
