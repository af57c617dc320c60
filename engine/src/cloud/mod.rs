//! Cloud-backed durability: the object store is the source of truth, the local directory a cache.
//!
//! Owns the object layout under the configured prefix and every conditional write that fences other writers:
//!
//! ```text
//! <prefix>/lease                          "midge-lease 1\nepoch <n>\n"          (create / if-match)
//! <prefix>/wal/catalog                    "midge-catalog 1\nepoch <n>\nseg <epoch> <id> <len> <crc> <max_seq>\n…"
//! <prefix>/wal/<epoch:020>/<id:020>.wal   sealed WAL segments (create-only, read back before cataloguing)
//! <prefix>/sst/<id:020>.sst               SSTs, uploaded before the manifest edit that publishes them
//! <prefix>/manifest                       the manifest snapshot (if-match: a fenced writer cannot overwrite)
//! ```
//! Only catalogued segments are replayable. Opening bumps the lease epoch and republishes the catalog and the
//! manifest under it, so every later conditional write by an older writer fails: that writer is `Fenced`.
//!
//! Failures: every request is retried a bounded number of times ([`ATTEMPTS`], exponential backoff through the
//! runtime seam) when the store reports a transient (`Other`) or ambiguous outcome. Idempotent requests (reads,
//! overwrites of immutable objects, deletes) are simply reissued; a conditional put whose outcome is unknown is
//! never blindly reissued — it is reconciled by reading the object back (our bytes: it landed; the old version:
//! it did not, try again; anything else: another writer moved on, `Fenced`). What still fails surfaces as a
//! typed error and nothing is acknowledged.
//! Talks only to [`crate::storage::object::ObjectStore`], the local [`crate::storage::FileSystem`] and the
//! runtime's executor (for backoff sleeps); never lists the bucket to decide what exists.

use crate::codec::crc32;
use crate::error::{MidgeError, MidgeResult};
use crate::runtime::{Clock, Executor};
use crate::storage::object::{ObjectError, PutMode, SharedObjectStore};
use crate::storage::{OpenMode, SharedFs, publish_file};
use crate::types::Seq;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts per request before a transient or ambiguous failure is reported.
pub const ATTEMPTS: u32 = 4;
/// First backoff; doubled per attempt (5, 10, 20 ms).
const BACKOFF: Duration = Duration::from_millis(5);

const LEASE: &str = "lease";
const CATALOG: &str = "wal/catalog";
const MANIFEST: &str = "manifest";
/// Local marker: the lease epoch this cache last wrote under.
pub(crate) const CACHE_EPOCH: &str = "CLOUD_EPOCH";

/// One published WAL segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogEntry {
    pub epoch: u64,
    pub id: u64,
    pub len: u64,
    pub crc: u32,
    pub max_seq: Seq,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Catalog {
    epoch: u64,
    segments: Vec<CatalogEntry>,
}

impl Catalog {
    fn encode(&self) -> Bytes {
        let mut s = format!("midge-catalog 1\nepoch {}\n", self.epoch);
        for e in &self.segments {
            s.push_str(&format!(
                "seg {} {} {} {} {}\n",
                e.epoch, e.id, e.len, e.crc, e.max_seq
            ));
        }
        Bytes::from(s)
    }

    fn decode(b: &[u8]) -> MidgeResult<Catalog> {
        let bad = |why: &str| MidgeError::Corruption(format!("cloud WAL catalog: {why}"));
        let text = std::str::from_utf8(b).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.lines();
        if lines.next() != Some("midge-catalog 1") {
            return Err(MidgeError::CompatibilityError(
                "unknown cloud WAL catalog version".into(),
            ));
        }
        let epoch = lines
            .next()
            .and_then(|l| l.strip_prefix("epoch "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("missing epoch"))?;
        let mut segments = Vec::new();
        for l in lines {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).ok_or_else(|| bad(l));
            if f.first() != Some(&"seg") || f.len() != 6 {
                return Err(bad(l));
            }
            segments.push(CatalogEntry {
                epoch: n(1)?,
                id: n(2)?,
                len: n(3)?,
                crc: u32::try_from(n(4)?).map_err(|_| bad(l))?,
                max_seq: n(5)?,
            });
        }
        Ok(Catalog { epoch, segments })
    }
}

fn obj_err(what: &str, e: ObjectError) -> MidgeError {
    match e {
        ObjectError::PreconditionFailed(m) | ObjectError::AlreadyExists(m) => {
            MidgeError::Fenced(format!("{what}: another writer holds the lease ({m})"))
        }
        ObjectError::Ambiguous(m) => MidgeError::Timeout(format!("{what}: outcome unknown ({m})")),
        ObjectError::NotFound(m) => MidgeError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{what}: {m} not found"),
        )),
        other => MidgeError::Io(std::io::Error::other(format!("{what}: {other}"))),
    }
}

/// What attaching to the object store did (reported in recovery metrics).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AttachReport {
    pub segments_fetched: u64,
    pub bytes_fetched: u64,
    pub ssts_fetched: u64,
    pub manifest_fetched: bool,
}

/// The attached cloud state of one open engine.
#[derive(Debug)]
pub(crate) struct Cloud {
    store: SharedObjectStore,
    prefix: String,
    pub epoch: u64,
    catalog: Mutex<(Catalog, String)>,
    manifest_etag: Mutex<Option<String>>,
    uploaded: Mutex<BTreeSet<u64>>,
    upload_lock: Mutex<()>,
    pub durable_lsn: AtomicU64,
    pub durable_seq: AtomicU64,
    fenced: AtomicBool,
    pub puts: AtomicU64,
    pub uploads: AtomicU64,
    /// Requests reissued after a transient or ambiguous failure.
    pub retries: AtomicU64,
    /// Obsolete objects deleted (pruned WAL segments, compacted-away SSTs).
    pub deletes: AtomicU64,
    /// `cloud_async` commits since the last seal (a seal threshold).
    pub pending_commits: AtomicU64,
    executor: Arc<dyn Executor>,
    /// Written into the lease so an ambiguous lease put can be reconciled by content.
    owner: String,
}

impl Cloud {
    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    fn fence(&self, e: MidgeError) -> MidgeError {
        if matches!(e, MidgeError::Fenced(_)) {
            self.fenced.store(true, Ordering::Release);
        }
        e
    }

    /// Runs an idempotent request, reissuing it after transient or ambiguous failures (bounded, with backoff).
    fn retry<T>(&self, mut f: impl FnMut() -> Result<T, ObjectError>) -> Result<T, ObjectError> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(ObjectError::Other(_) | ObjectError::Ambiguous(_)) if attempt + 1 < ATTEMPTS => {
                    self.backoff(attempt);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn backoff(&self, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.executor.sleep(BACKOFF * (1 << attempt.min(8)));
    }

    fn get(&self, rel: &str) -> Result<(Bytes, crate::storage::object::ObjectMeta), ObjectError> {
        let key = self.key(rel);
        self.retry(|| self.store.get(&key))
    }

    /// Stores an immutable object (a sealed WAL segment, an SST): reissuing the same bytes is harmless.
    fn put_idempotent(&self, rel: &str, data: Bytes) -> MidgeResult<String> {
        let key = self.key(rel);
        self.retry(|| {
            self.puts.fetch_add(1, Ordering::Relaxed);
            self.store.put(&key, data.clone(), PutMode::Overwrite)
        })
        .map(|m| m.etag)
        .map_err(|e| self.fence(obj_err(&key, e)))
    }

    /// A conditional put (create-only or if-match). An unknown outcome is reconciled by reading back, never by
    /// blindly reissuing: our bytes there → it landed; the version we expected (or nothing, for a create) → it
    /// did not, try again; anything else → another writer moved on.
    fn put_conditional(&self, rel: &str, data: Bytes, mode: PutMode) -> MidgeResult<String> {
        let key = self.key(rel);
        let mut attempt = 0;
        loop {
            self.puts.fetch_add(1, Ordering::Relaxed);
            let err = match self.store.put(&key, data.clone(), mode.clone()) {
                Ok(m) => return Ok(m.etag),
                Err(e @ (ObjectError::Other(_) | ObjectError::Ambiguous(_))) => e,
                Err(e) => return Err(self.fence(obj_err(&key, e))),
            };
            if cfg!(feature = "canary-cloud-blind-retry") && attempt + 1 < ATTEMPTS {
                self.backoff(attempt);
                attempt += 1;
                continue;
            }
            let landed = match self.retry(|| self.store.get(&key)) {
                Ok((bytes, meta)) if bytes == data => Some(meta.etag),
                Ok((_, meta)) => match &mode {
                    PutMode::IfMatch(want) if *want == meta.etag => None,
                    _ => {
                        return Err(self.fence(MidgeError::Fenced(format!(
                            "{key}: changed by another writer while our update's outcome was unknown"
                        ))));
                    }
                },
                Err(ObjectError::NotFound(_)) if matches!(mode, PutMode::Create) => None,
                Err(ObjectError::NotFound(_)) => {
                    return Err(self.fence(MidgeError::Fenced(format!("{key}: removed by another writer"))));
                }
                Err(e) => return Err(obj_err(&key, e)),
            };
            if let Some(tag) = landed {
                return Ok(tag);
            }
            if attempt + 1 >= ATTEMPTS {
                return Err(obj_err(&key, err));
            }
            self.backoff(attempt);
            attempt += 1;
        }
    }

    /// Takes the lease (bumping its epoch), republishes the catalog and manifest under it, and restores the
    /// local cache from the object store where it is missing or stale.
    pub fn attach(
        fs: &SharedFs,
        store: SharedObjectStore,
        prefix: &str,
        executor: Arc<dyn Executor>,
        clock: &dyn Clock,
    ) -> MidgeResult<(Cloud, AttachReport)> {
        static OPENS: AtomicU64 = AtomicU64::new(0);
        let prefix = prefix.trim_matches('/').to_string();
        let owner = format!(
            "{:x}-{:x}-{}",
            clock.now_millis(),
            clock.monotonic_nanos(),
            OPENS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cloud = Cloud {
            retries: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            pending_commits: AtomicU64::new(0),
            executor,
            owner,
            store,
            prefix,
            epoch: 0,
            catalog: Mutex::new((Catalog::default(), String::new())),
            manifest_etag: Mutex::new(None),
            uploaded: Mutex::default(),
            upload_lock: Mutex::new(()),
            durable_lsn: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            puts: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
        };
        cloud.take_lease()?;
        let mut report = AttachReport::default();
        // Catalog: read, then republish under our epoch so older writers' catalog updates fail from now on.
        let mut previous_epoch;
        loop {
            let (cat, etag) = match cloud.get(CATALOG) {
                Ok((b, m)) => (Catalog::decode(&b)?, Some(m.etag)),
                Err(ObjectError::NotFound(_)) => (Catalog::default(), None),
                Err(e) => return Err(obj_err("read catalog", e)),
            };
            if cat.epoch > cloud.epoch {
                return Err(MidgeError::Fenced(format!(
                    "catalog epoch {} is newer than ours {}",
                    cat.epoch, cloud.epoch
                )));
            }
            previous_epoch = cat.epoch;
            let mine = Catalog {
                epoch: cloud.epoch,
                segments: cat.segments.clone(),
            };
            let mode = etag.map_or(PutMode::Create, PutMode::IfMatch);
            match cloud.put_conditional(CATALOG, mine.encode(), mode) {
                Ok(tag) => {
                    *cloud.catalog.lock().unwrap_or_else(|p| p.into_inner()) = (mine, tag);
                    break;
                }
                Err(MidgeError::Fenced(_)) => {
                    cloud.fenced.store(false, Ordering::Release);
                    continue; // an older writer published in between: re-read and include its segments
                }
                Err(e) => return Err(e),
            }
        }
        cloud.restore_cache(fs, previous_epoch, &mut report)?;
        publish_file(fs.as_ref(), CACHE_EPOCH, cloud.epoch.to_string().as_bytes())
            .map_err(|e| MidgeError::from_io("publish cloud epoch", e))?;
        Ok((cloud, report))
    }

    fn take_lease(&mut self) -> MidgeResult<()> {
        for _ in 0..8 {
            let (epoch, mode) = match self.get(LEASE) {
                Ok((b, m)) => {
                    let text = String::from_utf8_lossy(&b).to_string();
                    let e = text
                        .lines()
                        .find_map(|l| l.strip_prefix("epoch "))
                        .and_then(|n| n.parse::<u64>().ok())
                        .ok_or_else(|| MidgeError::Corruption(format!("lease object: {text:?}")))?;
                    (e, PutMode::IfMatch(m.etag))
                }
                Err(ObjectError::NotFound(_)) => (0, PutMode::Create),
                Err(e) => return Err(obj_err("read lease", e)),
            };
            let next = epoch.checked_add(1).ok_or(MidgeError::LeaseEpochExhausted)?;
            let body = Bytes::from(format!("midge-lease 1\nepoch {next}\nowner {}\n", self.owner));
            match self.put_conditional(LEASE, body, mode) {
                Ok(_) => {
                    self.fenced.store(false, Ordering::Release);
                    self.epoch = next;
                    return Ok(());
                }
                Err(MidgeError::Fenced(_)) => {
                    self.fenced.store(false, Ordering::Release);
                    continue; // another writer took it first: read again and go one higher
                }
                Err(MidgeError::Timeout(m)) => return Err(MidgeError::LeaseIndeterminate(m)),
                Err(e) => return Err(e),
            }
        }
        Err(MidgeError::LeaseUnavailable(
            "lease contended; gave up after 8 attempts".into(),
        ))
    }

    /// Makes the local cache agree with the object store: manifest, catalogued WAL segments, live SSTs.
    fn restore_cache(
        &self,
        fs: &SharedFs,
        previous_epoch: u64,
        report: &mut AttachReport,
    ) -> MidgeResult<()> {
        fn io(ctx: &'static str) -> impl Fn(std::io::Error) -> MidgeError {
            move |e| MidgeError::from_io(ctx, e)
        }
        for d in ["wal", "sst"] {
            fs.mkdir_all(d).map_err(io("create cache dir"))?;
        }
        fs.sync_dir("").map_err(io("sync cache dir"))?;
        // The manifest: the remote copy is always at least as new as any acknowledged local state.
        match self.get(MANIFEST) {
            Ok((bytes, meta)) => {
                let name = "MANIFEST-000001";
                publish_file(fs.as_ref(), name, &bytes).map_err(io("restore manifest"))?;
                publish_file(
                    fs.as_ref(),
                    crate::manifest::CURRENT,
                    format!("{name}\n").as_bytes(),
                )
                .map_err(io("restore CURRENT"))?;
                crate::manifest::remove_stale(fs, 1)?;
                *self.manifest_etag.lock().unwrap_or_else(|p| p.into_inner()) = Some(meta.etag);
                report.manifest_fetched = true;
                if !fs.exists(crate::core::open::FORMAT).map_err(io("stat FORMAT"))? {
                    let marker = format!("midge-format={}\n", crate::core::open::FORMAT_VERSION);
                    publish_file(fs.as_ref(), crate::core::open::FORMAT, marker.as_bytes())
                        .map_err(io("FORMAT"))?;
                }
            }
            Err(ObjectError::NotFound(_)) => {}
            Err(e) => return Err(obj_err("read manifest", e)),
        }
        // WAL: catalogued segments must exist locally with their exact catalogued prefix.
        let (cat, _) = self.catalog.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let catalogued: BTreeSet<u64> = cat.segments.iter().map(|s| s.id).collect();
        let local_epoch: Option<u64> = fs
            .open(CACHE_EPOCH, OpenMode::Read)
            .and_then(|f| f.read_all())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok());
        for seg in &cat.segments {
            let path = crate::wal::segment_path(seg.id);
            let intact = fs
                .open(&path, OpenMode::Read)
                .and_then(|f| {
                    let d = f.read_all()?;
                    Ok(d.len() as u64 >= seg.len && crc32(&d[..seg.len as usize]) == seg.crc)
                })
                .unwrap_or(false);
            if !intact {
                let rel = format!("wal/{:020}/{:020}.wal", seg.epoch, seg.id);
                let key = self.key(&rel);
                let (bytes, _) = self.get(&rel).map_err(|e| obj_err(&key, e))?;
                if bytes.len() as u64 != seg.len || crc32(&bytes) != seg.crc {
                    return Err(MidgeError::Corruption(format!(
                        "{key}: object does not match its catalog entry"
                    )));
                }
                publish_file(fs.as_ref(), &path, &bytes).map_err(io("restore wal segment"))?;
                report.segments_fetched += 1;
                report.bytes_fetched += bytes.len() as u64;
            }
            self.uploaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(seg.id);
        }
        // Local segments the catalog does not list: keep them only if this cache wrote them under the epoch the
        // catalog was last published with (same-cache restart after cloud_async); otherwise another writer has
        // moved on and they are never replayed.
        let same_lineage = local_epoch == Some(previous_epoch) && previous_epoch != 0
            || cat.segments.is_empty() && local_epoch.is_none();
        let names = fs.list("wal").map_err(io("list wal"))?;
        let max_catalogued = catalogued.iter().max().copied().unwrap_or(0);
        for n in names {
            let Some(id) = n.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if catalogued.contains(&id) {
                continue;
            }
            if !same_lineage || id < max_catalogued {
                let p = format!("wal/{n}");
                fs.rename(&p, &format!("{p}.fenced"))
                    .map_err(io("set aside stale wal segment"))?;
            }
        }
        fs.sync_dir("wal").map_err(io("sync wal dir"))?;
        Ok(())
    }

    /// Downloads live SSTs missing from the cache.
    pub fn restore_ssts(&self, fs: &SharedFs, ids: &[u64], report: &mut AttachReport) -> MidgeResult<()> {
        for id in ids {
            let path = crate::core::lsm::sst_path(*id);
            if fs.exists(&path).map_err(|e| MidgeError::from_io(&path, e))? {
                continue;
            }
            let (bytes, _) = self.get(&path).map_err(|e| obj_err(&path, e))?;
            publish_file(fs.as_ref(), &path, &bytes).map_err(|e| MidgeError::from_io(&path, e))?;
            report.ssts_fetched += 1;
            report.bytes_fetched += bytes.len() as u64;
        }
        Ok(())
    }

    /// Uploads a finished local SST (before the manifest edit that publishes it).
    pub fn upload_sst(&self, fs: &SharedFs, id: u64) -> MidgeResult<()> {
        let path = crate::core::lsm::sst_path(id);
        let data = fs
            .open(&path, OpenMode::Read)
            .and_then(|f| f.read_all())
            .map_err(|e| MidgeError::from_io(&path, e))?;
        self.put_idempotent(&path, Bytes::from(data))?;
        Ok(())
    }

    /// Publishes the manifest snapshot; fails `Fenced` if another writer published since.
    pub fn upload_manifest(&self, snapshot: Bytes) -> MidgeResult<()> {
        let mut etag = self.manifest_etag.lock().unwrap_or_else(|p| p.into_inner());
        let mode = etag.clone().map_or(PutMode::Create, PutMode::IfMatch);
        let tag = match self.put_conditional(MANIFEST, snapshot.clone(), mode) {
            Err(MidgeError::Fenced(_)) if etag.is_none() => {
                // First publication by this epoch: adopt the current object only if the lease is still ours.
                self.fenced.store(false, Ordering::Release);
                self.check_lease()?;
                let key = self.key(MANIFEST);
                let cur = self
                    .retry(|| self.store.head(&key))
                    .map_err(|e| obj_err("head manifest", e))?;
                self.put_conditional(MANIFEST, snapshot, PutMode::IfMatch(cur.etag))?
            }
            other => other?,
        };
        *etag = Some(tag);
        Ok(())
    }

    fn check_lease(&self) -> MidgeResult<()> {
        let (b, _) = self.get(LEASE).map_err(|e| obj_err("read lease", e))?;
        let text = String::from_utf8_lossy(&b);
        let e = text
            .lines()
            .find_map(|l| l.strip_prefix("epoch "))
            .and_then(|n| n.parse::<u64>().ok());
        if e != Some(self.epoch) {
            self.fenced.store(true, Ordering::Release);
            return Err(MidgeError::Fenced(format!(
                "lease epoch is now {e:?}, ours is {}",
                self.epoch
            )));
        }
        Ok(())
    }

    /// Uploads every sealed, not yet uploaded WAL segment (ids below `active`), reads each back, and publishes
    /// them in the catalog. Returns the highest sequence now cloud-durable.
    pub fn publish_sealed(&self, fs: &SharedFs, sealed: &[(u64, Seq)]) -> MidgeResult<()> {
        let _g = self.upload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_fenced() {
            return Err(MidgeError::Fenced("this writer was fenced".into()));
        }
        let mut new = Vec::new();
        for &(id, max_seq) in sealed {
            if self
                .uploaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
            {
                continue;
            }
            let path = crate::wal::segment_path(id);
            let data = fs
                .open(&path, OpenMode::Read)
                .and_then(|f| f.read_all())
                .map_err(|e| MidgeError::from_io(&path, e))?;
            let key = format!("wal/{:020}/{:020}.wal", self.epoch, id);
            self.put_idempotent(&key, Bytes::from(data.clone()))?;
            let (back, _) = self.get(&key).map_err(|e| obj_err(&key, e))?;
            if back.as_ref() != data.as_slice() {
                return Err(MidgeError::Io(std::io::Error::other(format!(
                    "{key}: read-back differs from upload"
                ))));
            }
            self.uploads.fetch_add(1, Ordering::Relaxed);
            new.push(CatalogEntry {
                epoch: self.epoch,
                id,
                len: data.len() as u64,
                crc: crc32(&data),
                max_seq,
            });
        }
        if new.is_empty() {
            return Ok(());
        }
        let mut cat = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = cat.0.clone();
        next.segments.extend(new.iter().cloned());
        let tag = self.put_conditional(CATALOG, next.encode(), PutMode::IfMatch(cat.1.clone()))?;
        let max = new.iter().map(|e| e.max_seq).max().unwrap_or(0);
        *cat = (next, tag);
        let mut up = self.uploaded.lock().unwrap_or_else(|p| p.into_inner());
        for e in new {
            up.insert(e.id);
        }
        self.durable_seq.fetch_max(max, Ordering::AcqRel);
        Ok(())
    }
}

impl Cloud {
    /// Drops catalog entries whose every record is at or below `flushed` (covered by SSTs the mirrored
    /// manifest already publishes), with one conditional catalog put, and only then deletes their objects.
    /// A crash in between leaves unreferenced objects (garbage, never replayed), never a catalogued segment
    /// without its object. Failures to delete are left for a later prune; a lost lease stops it (`Fenced`).
    pub fn prune_catalog(&self, flushed: Seq) -> MidgeResult<usize> {
        let _g = self.upload_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_fenced() {
            return Err(MidgeError::Fenced("this writer was fenced".into()));
        }
        let mut cat = self.catalog.lock().unwrap_or_else(|p| p.into_inner());
        let (gone, keep): (Vec<CatalogEntry>, Vec<CatalogEntry>) =
            cat.0.segments.iter().cloned().partition(|e| e.max_seq <= flushed);
        if gone.is_empty() {
            return Ok(0);
        }
        let next = Catalog {
            epoch: cat.0.epoch,
            segments: keep,
        };
        let tag = self.put_conditional(CATALOG, next.encode(), PutMode::IfMatch(cat.1.clone()))?;
        *cat = (next, tag);
        drop(cat);
        for e in &gone {
            self.delete(&format!("wal/{:020}/{:020}.wal", e.epoch, e.id));
        }
        Ok(gone.len())
    }

    /// Deletes SST objects the mirrored manifest no longer references (call after the edit is applied).
    pub fn delete_ssts(&self, ids: &[u64]) {
        if self.is_fenced() {
            return;
        }
        for id in ids {
            self.delete(&crate::core::lsm::sst_path(*id));
        }
    }

    /// Best-effort delete of an unreferenced object (a leftover is garbage, never data).
    fn delete(&self, rel: &str) {
        let key = self.key(rel);
        match self.retry(|| self.store.delete(&key)) {
            Ok(()) => {
                self.deletes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("cloud: could not delete unreferenced {key}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_round_trips_and_rejects_garbage() {
        let c = Catalog {
            epoch: 3,
            segments: vec![CatalogEntry {
                epoch: 2,
                id: 7,
                len: 100,
                crc: 0xdead_beef,
                max_seq: 42,
            }],
        };
        assert_eq!(Catalog::decode(&c.encode()).unwrap(), c);
        assert!(Catalog::decode(b"midge-catalog 1\nepoch x\n").is_err());
        assert!(matches!(
            Catalog::decode(b"midge-catalog 9\n"),
            Err(MidgeError::CompatibilityError(_))
        ));
        assert!(Catalog::decode(b"midge-catalog 1\nepoch 1\nseg 1 2\n").is_err());
    }
}
