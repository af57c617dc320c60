//! midge-host: loads Midge's `plugin` component (`guest/`, world `cntryl:midge/plugin`) into wasmtime and
//! exposes it as [`ComponentEngine`], a client with the native engine's method names and `MidgeResult` types,
//! so switching between linking `cntryl_midge::Engine` and loading the sandboxed component is a one-line change.
//!
//! Storage reaches the guest through the `cntryl:midge/fs` and `objects` imports ([`storage`]), served by the
//! engine's own backends on the host (`LocalFs` for a directory, `MemoryFs`, the crash simulator `SimFs`, any
//! `ObjectStore` such as [`s3::S3ObjectStore`]) — so the syscalls that make a commit durable are the same code
//! as native. The sandbox gets that capability, a memory cap, an optional per-call deadline (epoch
//! interruption) and nothing else. Guest errors arrive as the WIT `error` variant and become the same
//! [`MidgeError`] variant; a trap becomes a typed error (`Timeout` for a missed deadline, `Internal`
//! otherwise) and marks the instance unusable. The host never panics on guest misbehaviour.

use cntryl_midge::storage::SharedFs;
use cntryl_midge::storage::object::SharedObjectStore;
use cntryl_midge::{
    BatchOp, Bytes, ConflictPolicy, MidgeError, MidgeResult, Query, RecoveryMetricsSnapshot, TransactionMode,
    WriteOptions,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod group;
pub mod s3;
pub mod storage;
mod turns;

use turns::TurnLock;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        with: {
            "cntryl:midge/fs.file": crate::storage::HostFile,
            "cntryl:midge/fs.lock-guard": crate::storage::HostLock,
        },
    });
}

use bindings::cntryl::midge::types as wt;
use bindings::exports::cntryl::midge::engine::ShortRead;

/// How often the host advances the epoch that per-call deadlines are measured in.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// A deadline in epoch ticks (none: effectively never).
fn ticks(limit: Option<Duration>) -> u64 {
    match limit {
        Some(d) => u64::try_from(d.as_millis() / EPOCH_TICK.as_millis())
            .unwrap_or(u64::MAX / 2)
            .max(1),
        None => u64::MAX / 2,
    }
}

/// Per-instance host state.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    fs: Option<SharedFs>,
    objects: Option<SharedObjectStore>,
    /// The files the component has open through the `fs` import, by path (the latest handle opened for each):
    /// where the host finds the log file a `sync-plan` names, to fsync it outside the instance.
    open_files: std::collections::HashMap<String, std::sync::Weak<dyn cntryl_midge::storage::File>>,
}

/// Engine tuning passed to the component's `open-imported` / `open-cloud` (`None` = the engine's default).
/// Mirrors the `OpenOptionsBuilder` knobs the test harnesses need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentOptions {
    /// `with_memtable_size_limit`.
    pub memtable_bytes: Option<u64>,
    /// `with_l0_compaction_trigger`.
    pub l0_compaction_trigger: Option<u32>,
    /// `with_target_sst_size`.
    pub target_sst_bytes: Option<u64>,
    /// `with_wal_segment_bytes`.
    pub wal_segment_bytes: Option<u64>,
    /// Judge TTLs against a clock fixed at this many milliseconds (deterministic simulation).
    pub fixed_clock_millis: Option<u64>,
    /// `memory_budget` in bytes; `None`: half the instance's memory cap ([`ComponentHost::with_memory_limit`]),
    /// since the engine inside cannot see the cap and would otherwise assume its 512 MiB default.
    pub memory_budget: Option<u64>,
}

impl ComponentOptions {
    /// The WIT form; an unset memory budget becomes half of `memory_cap`.
    fn wit(&self, memory_cap: usize) -> wt::OpenConfig {
        wt::OpenConfig {
            memory_budget: Some(self.memory_budget.unwrap_or(memory_cap as u64 / 2)),
            memtable_bytes: self.memtable_bytes,
            l0_compaction_trigger: self.l0_compaction_trigger,
            target_sst_bytes: self.target_sst_bytes,
            wal_segment_bytes: self.wal_segment_bytes,
            fixed_clock_millis: self.fixed_clock_millis,
        }
    }
}

/// What one instance is granted and how the engine inside it opens.
enum Grant {
    /// `open-imported` on a host backend.
    Fs(SharedFs, ComponentOptions),
    /// `open-cloud`: cache on a host backend, bucket on a host object store.
    Cloud(SharedFs, SharedObjectStore, String, ComponentOptions),
    /// `open-dir` on a directory preopened through wasi:filesystem.
    WasiDir(std::path::PathBuf, Option<u64>),
    /// `open-in-memory` inside the instance.
    Memory(Option<u64>),
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A compiled plugin component, ready to instantiate many times.
pub struct ComponentHost {
    engine: wasmtime::Engine,
    component: Component,
    linker: Linker<State>,
    memory_limit: usize,
    deadline: Option<Duration>,
    /// Whether the code was compiled with epoch-interruption checks, which call deadlines need.
    deadlines: bool,
    idle_maintenance: Option<Duration>,
}

impl std::fmt::Debug for ComponentHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentHost")
            .field("memory_limit", &self.memory_limit)
            .finish_non_exhaustive()
    }
}

/// A deadline asked of a host compiled without deadline checks.
fn no_deadlines() -> MidgeError {
    MidgeError::NotSupported(
        "call deadlines: this host was loaded with ComponentHost::load_without_deadlines".into(),
    )
}

fn host_err(what: &str, e: impl std::fmt::Display) -> MidgeError {
    MidgeError::Internal(format!("{what}: {e}"))
}

impl ComponentHost {
    /// Compiles the component at `wasm` (the `midge_guest.wasm` built for wasm32-wasip2).
    pub fn load(wasm: &Path) -> MidgeResult<ComponentHost> {
        ComponentHost::compile(wasm, true)
    }

    /// Like [`ComponentHost::load`], but compiled without the epoch-interruption checks that per-call
    /// deadlines need (a load and compare at every function entry and loop back-edge of the guest): ~7% less
    /// CPU per point-read miss (~370 -> ~345 ns), for a host that never sets a deadline. Everything else is
    /// the same sandbox (memory cap, traps as typed errors). Deadlines are then refused, never silently
    /// ignored: [`ComponentEngine::set_call_deadline`] with a limit fails with `NotSupported`, and after
    /// [`ComponentHost::with_call_deadline`] every open does.
    pub fn load_without_deadlines(wasm: &Path) -> MidgeResult<ComponentHost> {
        ComponentHost::compile(wasm, false)
    }

    fn compile(wasm: &Path, deadlines: bool) -> MidgeResult<ComponentHost> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(deadlines);
        // `MIDGE_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report` can name the guest's functions.
        if std::env::var_os("MIDGE_WASM_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Reuse compiled code across processes (keyed by the component's hash and this config); a missing or
        // unusable cache directory only costs a recompile.
        if let Ok(cache) = wasmtime::Cache::from_file(None) {
            config.cache(Some(cache));
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| host_err("configure wasmtime", e))?;
        let component = Component::from_file(&engine, wasm).map_err(|e| host_err("load component", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| host_err("link wasi", e))?;
        bindings::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| host_err("link the storage imports", e))?;
        // The epoch ticker: per-call deadlines are counted in its ticks. It stops when the engine is dropped.
        if deadlines {
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("midge-host-epoch".into())
                .spawn(move || {
                    while let Some(e) = weak.upgrade() {
                        e.increment_epoch();
                        drop(e);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })
                .map_err(|e| host_err("start the epoch ticker", e))?;
        }
        Ok(ComponentHost {
            engine,
            component,
            linker,
            memory_limit: 1 << 30,
            deadline: None,
            deadlines,
            idle_maintenance: None,
        })
    }

    /// Caps each instance's linear memory (default 1 GiB).
    pub fn with_memory_limit(mut self, bytes: usize) -> ComponentHost {
        self.memory_limit = bytes;
        self
    }

    /// Interrupts any single call into the component that runs longer than `limit` (measured in 5 ms epoch
    /// ticks): the call fails with `MidgeError::Timeout` and the instance is marked unusable — a runaway or
    /// hostile plugin cannot hold the host thread. Default: no deadline. On a host from
    /// [`ComponentHost::load_without_deadlines`], every open then fails with `NotSupported`.
    pub fn with_call_deadline(mut self, limit: Duration) -> ComponentHost {
        self.deadline = Some(limit);
        self
    }

    /// Gives every engine opened from this host idle maintenance after `after` without calls (see
    /// [`ComponentEngine::set_idle_maintenance`]). Default: off.
    pub fn with_idle_maintenance(mut self, after: Duration) -> ComponentHost {
        self.idle_maintenance = Some(after);
        self
    }

    fn deadline_ticks(&self) -> u64 {
        ticks(self.deadline)
    }

    fn instantiate(&self, grant: &Grant) -> MidgeResult<(Store<State>, bindings::Plugin)> {
        if self.deadline.is_some() && !self.deadlines {
            return Err(no_deadlines());
        }
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        let (mut fs, mut objects) = (None, None);
        match grant {
            Grant::WasiDir(d, _) => {
                wasi.preopened_dir(d, "/db", wasmtime_wasi::FsPerms::ReadWrite)
                    .map_err(|e| host_err("grant the database directory", e))?;
            }
            Grant::Fs(f, _) => fs = Some(f.clone()),
            Grant::Cloud(f, o, _, _) => {
                fs = Some(f.clone());
                objects = Some(o.clone());
            }
            Grant::Memory(_) => {}
        }
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            fs,
            objects,
            open_files: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let plugin = bindings::Plugin::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| host_err("instantiate component", e))?;
        Ok((store, plugin))
    }
}

/// Maps the WIT error variant back to the engine's error of the same name.
fn from_wit(e: wt::Error) -> MidgeError {
    use wt::Error as W;
    match e {
        W::Io(s) => MidgeError::Io(std::io::Error::other(s)),
        W::NotFound => MidgeError::NotFound,
        W::InvalidArgument(s) => MidgeError::InvalidArgument(s),
        W::Corruption(s) => MidgeError::Corruption(s),
        W::NotSupported(s) => MidgeError::NotSupported(s),
        W::Internal(s) => MidgeError::Internal(s),
        W::InvalidPath => MidgeError::InvalidPath,
        W::NoSpace(s) => MidgeError::NoSpace(s),
        W::RecoveryFailed(s) => MidgeError::RecoveryFailed(s),
        W::CompatibilityError(s) => MidgeError::CompatibilityError(s),
        W::WriteStall(s) => MidgeError::WriteStall(s),
        W::MemoryModeViolation(s) => MidgeError::MemoryModeViolation(s),
        W::Fenced(s) => MidgeError::Fenced(s),
        W::LeaseHeld(s) => MidgeError::LeaseHeld(s),
        W::LeaseUnavailable(s) => MidgeError::LeaseUnavailable(s),
        W::LeaseIndeterminate(s) => MidgeError::LeaseIndeterminate(s),
        W::LeaseEpochExhausted => MidgeError::LeaseEpochExhausted,
        W::WriteConflict(s) => MidgeError::WriteConflict(s),
        W::Aborted(s) => MidgeError::Aborted(s),
        W::Busy(s) => MidgeError::Busy(s),
        W::Timeout(s) => MidgeError::Timeout(s),
        W::ResourceLimit(s) => MidgeError::ResourceLimit(s),
        W::UnflushedDataPresent((cf_id, bytes)) => MidgeError::UnflushedDataPresent {
            cf_id,
            bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
        },
        W::Poisoned(s) => MidgeError::Poisoned(s),
    }
}

struct Inner {
    store: Store<State>,
    plugin: bindings::Plugin,
    db: Option<ResourceAny>,
    trapped: Option<String>,
    deadline_ticks: u64,
    /// Whether the code checks deadlines ([`ComponentHost::load_without_deadlines`]: no).
    deadlines: bool,
}

/// A trap becomes a typed error: a missed deadline is `Timeout`, hitting the memory cap `ResourceLimit`,
/// anything else `Internal`.
fn trap_error(trap: &wasmtime::Error) -> MidgeError {
    if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        MidgeError::Timeout(format!("component call exceeded its deadline: {trap}"))
    } else if trap
        .chain()
        .any(|c| c.to_string().contains("forcing trap when growing memory"))
    {
        MidgeError::ResourceLimit(format!("component hit its memory cap: {trap}"))
    } else {
        MidgeError::Internal(format!("component trapped: {trap}"))
    }
}

/// Runs `f` against the locked instance; a trap marks it unusable and becomes a typed error.
fn call_locked<T>(
    g: &mut Inner,
    f: impl FnOnce(&mut Store<State>, &bindings::Plugin, ResourceAny) -> wasmtime::Result<Result<T, wt::Error>>,
) -> MidgeResult<T> {
    if let Some(t) = &g.trapped {
        return Err(MidgeError::Internal(format!(
            "component instance trapped earlier: {t}"
        )));
    }
    let db =
        g.db.ok_or_else(|| MidgeError::InvalidArgument("engine is shut down".into()))?;
    g.store.set_epoch_deadline(g.deadline_ticks);
    match f(&mut g.store, &g.plugin, db) {
        Ok(r) => r.map_err(from_wit),
        Err(trap) => {
            let e = trap_error(&trap);
            g.trapped = Some(trap.to_string());
            Err(e)
        }
    }
}

/// The WIT durability of `opts`.
fn durability(opts: WriteOptions) -> wt::Durability {
    match opts.policy() {
        cntryl_midge::DurabilityPolicy::Sync => wt::Durability::Sync,
        cntryl_midge::DurabilityPolicy::Buffered => wt::Durability::Buffered,
        cntryl_midge::DurabilityPolicy::BestEffort => wt::Durability::BestEffort,
        cntryl_midge::DurabilityPolicy::CloudAsync => wt::Durability::CloudAsync,
        cntryl_midge::DurabilityPolicy::CloudStrict => wt::Durability::CloudStrict,
    }
}

/// [`call_locked`], then drops `consumed` (a transaction the call finished) in the same turn.
fn call_then_drop<T>(
    g: &mut Inner,
    consumed: ResourceAny,
    f: impl FnOnce(&mut Store<State>, &bindings::Plugin, ResourceAny) -> wasmtime::Result<Result<T, wt::Error>>,
) -> MidgeResult<T> {
    let r = call_locked(g, f);
    if g.trapped.is_none() {
        let _ = consumed.resource_drop(&mut g.store);
    }
    r
}

/// The idle-maintenance thread of one engine (see [`ComponentEngine::set_idle_maintenance`]): after a quiet
/// spell with no call, and only if calls came since its last run, it runs the engine's due background work.
/// It holds the engine only while it looks or runs, and ends once the engine is dropped.
fn maintain(shared: &Weak<Shared>) {
    let mut done_at = 0u64;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let (seen, ms) = (s.calls.load(Ordering::Relaxed), s.idle_ms.load(Ordering::Relaxed));
        drop(s);
        // While off, look again now and then in case it is turned back on.
        std::thread::sleep(Duration::from_millis(if ms == 0 { 100 } else { ms }));
        let Some(s) = shared.upgrade() else { return };
        if ms == 0 || seen == done_at || s.calls.load(Ordering::Relaxed) != seen {
            continue;
        }
        // A caller that holds the instance right now is not idle.
        let ran = s.inner.try_with(|g| {
            if s.calls.load(Ordering::Relaxed) == seen {
                // A failure is the engine's: it is poisoned (or the instance trapped) and the next call says so.
                let _ = call_locked(g, |st, p, db| {
                    p.cntryl_midge_engine().database().call_run_pending_work(st, db)
                });
                true
            } else {
                false
            }
        });
        if ran == Some(true) {
            done_at = seen;
        }
    }
}

/// Midge running inside a wasmtime sandbox, with the native [`cntryl_midge::Engine`] method names.
///
/// ```no_run
/// use midge_host::{ComponentEngine, ComponentHost};
/// use cntryl_midge::{TransactionMode, WriteOptions};
/// let host = ComponentHost::load("midge_guest.wasm".as_ref())?;
/// let engine = ComponentEngine::open(&host, "./db".as_ref())?;
/// let cf = engine.get_column_family("default").unwrap();
/// let mut tx = engine.begin_tx(cf, TransactionMode::ReadWrite)?;
/// tx.put(b"k".to_vec(), b"v".to_vec(), None)?;
/// tx.commit(WriteOptions::sync())?;
/// # Ok::<(), cntryl_midge::MidgeError>(())
/// ```
pub struct ComponentEngine {
    shared: Arc<Shared>,
    /// Whether the idle-maintenance thread was started (it runs until the engine is dropped).
    maintainer: AtomicBool,
}

/// What the engine's callers and its idle-maintenance thread share.
struct Shared {
    /// The instance; threads take turns (see [`turns`]).
    inner: TurnLock<Inner>,
    /// Calls into the instance so far (counted as they start): maintenance waits for a quiet spell in which
    /// this does not move.
    calls: AtomicU64,
    /// The quiet spell after which maintenance runs, in milliseconds (0: off).
    idle_ms: AtomicU64,
    /// Sync commits waiting to share an fsync (see [`group`]).
    group: group::Group,
}

impl std::fmt::Debug for ComponentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentEngine")
    }
}

impl ComponentEngine {
    fn start(host: &ComponentHost, grant: Grant) -> MidgeResult<ComponentEngine> {
        let (mut store, plugin) = host.instantiate(&grant)?;
        let db = {
            let g = plugin.cntryl_midge_engine().database();
            let r = match &grant {
                Grant::WasiDir(_, memtable) => g.call_open_dir(&mut store, "/db", *memtable),
                Grant::Memory(memtable) => g.call_open_in_memory(&mut store, *memtable),
                Grant::Fs(_, o) => g.call_open_imported(&mut store, o.wit(host.memory_limit)),
                Grant::Cloud(_, _, prefix, o) => {
                    g.call_open_cloud(&mut store, prefix, o.wit(host.memory_limit))
                }
            };
            r.map_err(|e| trap_error(&e))?.map_err(from_wit)?
        };
        let engine = ComponentEngine {
            shared: Arc::new(Shared {
                inner: TurnLock::new(Inner {
                    store,
                    plugin,
                    db: Some(db),
                    trapped: None,
                    deadline_ticks: host.deadline_ticks(),
                    deadlines: host.deadlines,
                }),
                calls: AtomicU64::new(0),
                idle_ms: AtomicU64::new(0),
                group: group::Group::default(),
            }),
            maintainer: AtomicBool::new(false),
        };
        if host.idle_maintenance.is_some() {
            engine.set_idle_maintenance(host.idle_maintenance)?;
        }
        Ok(engine)
    }

    /// Runs `f` with the instance to itself (waiting for its turn).
    fn with_inner<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.shared.inner.with(f)
    }

    fn local(dir: &Path) -> SharedFs {
        std::sync::Arc::new(cntryl_midge::storage::local::LocalFs::new(dir.to_path_buf()))
    }

    /// Opens (creating if needed) the database in `dir`, the only directory the sandbox can reach. The host
    /// serves the guest's `fs` import with the engine's own `LocalFs` on `dir`.
    pub fn open(host: &ComponentHost, dir: &Path) -> MidgeResult<ComponentEngine> {
        ComponentEngine::start(host, Grant::Fs(Self::local(dir), ComponentOptions::default()))
    }

    /// Like [`ComponentEngine::open`] with a memtable size limit (small values force flushes).
    pub fn open_with_memtable(host: &ComponentHost, dir: &Path, bytes: u64) -> MidgeResult<ComponentEngine> {
        let opts = ComponentOptions {
            memtable_bytes: Some(bytes),
            ..Default::default()
        };
        ComponentEngine::start(host, Grant::Fs(Self::local(dir), opts))
    }

    /// Opens the database on any engine storage backend the host chooses — `LocalFs`, `MemoryFs`, or the
    /// crash simulator `SimFs` (whose I/O trace then matches a native run of the same workload op for op).
    pub fn open_with_file_system(
        host: &ComponentHost,
        fs: SharedFs,
        options: ComponentOptions,
    ) -> MidgeResult<ComponentEngine> {
        ComponentEngine::start(host, Grant::Fs(fs, options))
    }

    /// A cloud-backed database: the bucket is `store` under `prefix` (served through the `objects` import),
    /// the local cache is `cache` (served through the `fs` import).
    pub fn open_cloud(
        host: &ComponentHost,
        cache: SharedFs,
        store: SharedObjectStore,
        prefix: &str,
        options: ComponentOptions,
    ) -> MidgeResult<ComponentEngine> {
        ComponentEngine::start(host, Grant::Cloud(cache, store, prefix.to_string(), options))
    }

    /// Opens `dir` through wasi:filesystem instead of the `fs` import (the guest's `local` backend over
    /// std::fs, as under `wasmtime run --dir`).
    pub fn open_wasi_dir(
        host: &ComponentHost,
        dir: &Path,
        memtable: Option<u64>,
    ) -> MidgeResult<ComponentEngine> {
        ComponentEngine::start(host, Grant::WasiDir(dir.to_path_buf(), memtable))
    }

    /// A database that lives only in the component instance.
    pub fn open_in_memory(host: &ComponentHost) -> MidgeResult<ComponentEngine> {
        ComponentEngine::start(host, Grant::Memory(None))
    }

    /// Discards the instance without closing the database inside it — what a crash or `kill -9` of the
    /// plugin looks like to storage. Nothing more is written; the next open recovers.
    pub fn abandon(self) {
        self.with_inner(|g| {
            g.db = None;
            g.trapped = Some("abandoned".into());
        });
    }

    /// Sets (or with `None` removes) the deadline for each later call into this instance, overriding the
    /// host's [`ComponentHost::with_call_deadline`]. A call that overruns fails with `MidgeError::Timeout`
    /// and leaves the instance unusable (its database is recovered by the next open, as after a crash).
    /// A limit on an engine of a host from [`ComponentHost::load_without_deadlines`] is `NotSupported`.
    pub fn set_call_deadline(&self, limit: Option<Duration>) -> MidgeResult<()> {
        self.with_inner(|g| {
            if limit.is_some() && !g.deadlines {
                return Err(no_deadlines());
            }
            g.deadline_ticks = ticks(limit);
            Ok(())
        })
    }

    /// Drops a column family, discarding writes still in its memtable.
    pub fn drop_column_family_discarding_unflushed(&self, id: u32) -> MidgeResult<()> {
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_drop_column_family_discarding_unflushed(s, db, id)
        })
    }

    /// The raw `get-short` export: the value of the first `len` bytes of `key` (three little-endian words) in the
    /// transaction whose `short-handle` is `handle`. [`ComponentTransaction::get`] is the way to read; this is
    /// public only so tests can hand the guest bad handles and lengths (typed errors, never a trap).
    #[doc(hidden)]
    pub fn get_short(&self, handle: u64, len: u32, key: [u64; 3]) -> MidgeResult<Option<Bytes>> {
        let [k0, k1, k2] = key;
        let r = self.call(|s, p, _| {
            p.cntryl_midge_engine()
                .call_get_short(s, handle, len, k0, k1, k2)
                .map(Ok)
        })?;
        match r {
            ShortRead::Found(v) => Ok(Some(Bytes::from(v))),
            ShortRead::Absent => Ok(None),
            ShortRead::Failed => {
                let e = self.call(|s, p, _| p.cntryl_midge_engine().call_take_short_error(s).map(Ok))?;
                Err(e.map(from_wit).unwrap_or_else(|| {
                    MidgeError::Internal("get-short failed without an error to take".into())
                }))
            }
        }
    }

    /// Runs `f` against the instance; a trap marks it unusable and becomes `Internal`.
    fn call<T>(
        &self,
        f: impl FnOnce(
            &mut Store<State>,
            &bindings::Plugin,
            ResourceAny,
        ) -> wasmtime::Result<Result<T, wt::Error>>,
    ) -> MidgeResult<T> {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        self.with_inner(|g| call_locked(g, f))
    }

    /// [`ComponentEngine::call`] for a call that finishes `consumed` (a transaction's commit or rollback), which
    /// is dropped in the same turn.
    fn call_consuming<T>(
        &self,
        consumed: ResourceAny,
        f: impl FnOnce(
            &mut Store<State>,
            &bindings::Plugin,
            ResourceAny,
        ) -> wasmtime::Result<Result<T, wt::Error>>,
    ) -> MidgeResult<T> {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        self.with_inner(|g| call_then_drop(g, consumed, f))
    }

    /// Runs the engine's due background work now and returns whether it did any (`run-pending-work`, the
    /// engine's `Engine::run_pending_work`). The component has no background threads, so its reads never
    /// compact — the compaction would run inside a read: after a load, reads keep consulting every overlapping
    /// L0 table until this call, a flush or [`ComponentEngine::compact_all`] folds L0 into L1 (the native
    /// engine does it on a background thread once reads have paid for it). Call it while the engine is idle,
    /// or let [`ComponentEngine::set_idle_maintenance`] do so.
    ///
    /// ```no_run
    /// use midge_host::{ComponentEngine, ComponentHost};
    /// let host = ComponentHost::load("midge_guest.wasm".as_ref())?;
    /// let engine = ComponentEngine::open(&host, "./db".as_ref())?;
    /// // … a load, then reads; the application goes idle:
    /// engine.run_pending_work()?;
    /// # Ok::<(), cntryl_midge::MidgeError>(())
    /// ```
    pub fn run_pending_work(&self) -> MidgeResult<bool> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_run_pending_work(s, db))
    }

    /// Runs [`ComponentEngine::run_pending_work`] on a host thread whenever no call has entered this instance
    /// for `after` (once per quiet spell; `None` turns it off; [`ComponentHost::with_idle_maintenance`] sets it
    /// for every engine of a host), so the layout a read-mostly phase paid for arrives without the application
    /// scheduling it, and never inside one of its calls. A maintenance call holds the instance like any
    /// other: a call arriving meanwhile waits for it (folding L0 takes as long as compacting it, tens to
    /// hundreds of milliseconds), and it runs under the call deadline, so a deadline shorter than a
    /// compaction fails the instance. Default: off.
    ///
    /// ```no_run
    /// use midge_host::{ComponentEngine, ComponentHost};
    /// use std::time::Duration;
    /// let host = ComponentHost::load("midge_guest.wasm".as_ref())?;
    /// let engine = ComponentEngine::open(&host, "./db".as_ref())?;
    /// engine.set_idle_maintenance(Some(Duration::from_millis(50)))?;
    /// # Ok::<(), cntryl_midge::MidgeError>(())
    /// ```
    pub fn set_idle_maintenance(&self, after: Option<Duration>) -> MidgeResult<()> {
        let ms = after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.shared.idle_ms.store(ms, Ordering::Relaxed);
        if ms > 0 && !self.maintainer.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.shared);
            let started = std::thread::Builder::new()
                .name("midge-host-maintenance".into())
                .spawn(move || maintain(&weak));
            if let Err(e) = started {
                self.maintainer.store(false, Ordering::Release);
                return Err(host_err("start the idle-maintenance thread", e));
            }
        }
        Ok(())
    }

    /// The id of the column family named `name`.
    pub fn get_column_family(&self, name: &str) -> Option<u32> {
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_get_column_family(s, db, name)
                .map(Ok)
        })
        .ok()?
    }

    /// Creates a column family; returns its id.
    pub fn create_column_family(&self, name: &str) -> MidgeResult<u32> {
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_create_column_family(s, db, name)
        })
    }

    /// All column families as `(id, name)`.
    pub fn list_column_families(&self) -> MidgeResult<Vec<(u32, String)>> {
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_list_column_families(s, db)
        })
    }

    /// Drops a column family.
    pub fn drop_column_family(&self, id: u32) -> MidgeResult<()> {
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_drop_column_family(s, db, id)
        })
    }

    /// Begins a transaction.
    pub fn begin_tx(&self, cf: u32, mode: TransactionMode) -> MidgeResult<ComponentTransaction<'_>> {
        let mode = match mode {
            TransactionMode::ReadOnly => wt::TransactionMode::ReadOnly,
            TransactionMode::ReadWrite => wt::TransactionMode::ReadWrite,
        };
        let tx = self.call(|s, p, db| p.cntryl_midge_engine().database().call_begin_tx(s, db, cf, mode))?;
        Ok(ComponentTransaction {
            engine: self,
            tx: Some(tx),
            short: AtomicU64::new(0),
        })
    }

    /// Writes `ops` to column family `cf` atomically in one call into the instance (the engine's
    /// `Engine::write`: a transaction begun, filled and committed at once). `sync` batches from several threads
    /// share fsyncs, as sync transaction commits do.
    pub fn write(&self, cf: u32, ops: Vec<BatchOp>, opts: WriteOptions) -> MidgeResult<()> {
        let ops: Vec<wt::BatchOp> = ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { key, value, ttl_secs } => wt::BatchOp::Put((key, value, ttl_secs)),
                BatchOp::Delete { key } => wt::BatchOp::Delete(key),
                BatchOp::DeleteRange { start, end } => wt::BatchOp::DeleteRange((start, end)),
            })
            .collect();
        let d = durability(opts);
        if d == wt::Durability::Sync {
            return self.commit_grouped(group::Work::Batch(cf, ops));
        }
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_write(s, db, cf, &ops, d))
    }

    /// Flushes a column family's memtable to an SST.
    pub fn flush_cf(&self, cf: u32) -> MidgeResult<()> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_flush(s, db, cf))
    }

    /// Compacts until no level is over its threshold.
    pub fn compact_all(&self) -> MidgeResult<()> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_compact_all(s, db))
    }

    /// Makes every buffered commit durable now (one fsync, on the host).
    pub fn sync_wal(&self) -> MidgeResult<()> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_sync_wal(s, db))
    }

    /// Waits until writes to `cf` are no longer stalled; `Ok(false)` if `timeout` passed first.
    pub fn wait_for_write_stall_clear(&self, cf: u32, timeout: Duration) -> MidgeResult<bool> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.call(|s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_wait_for_write_stall_clear(s, db, cf, ms)
        })
    }

    /// Verifies the database inside the component (never repairs).
    pub fn verify_storage(&self, timeout: Duration) -> MidgeResult<cntryl_midge::StorageVerificationReport> {
        use cntryl_midge::EngineHealth as H;
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let r = self.call(|s, p, db| p.cntryl_midge_engine().database().call_verify_storage(s, db, ms))?;
        Ok(cntryl_midge::StorageVerificationReport {
            health: match r.health {
                wt::Health::Healthy => H::Healthy,
                wt::Health::Degraded => H::Degraded,
                wt::Health::SalvageMode => H::SalvageMode,
                wt::Health::WriteStalled => H::WriteStalled,
                wt::Health::Corrupt => H::Corrupt,
                wt::Health::Poisoned => H::Poisoned,
            },
            manifest_files_verified: r.manifest_files_verified,
            sst_files_verified: r.sst_files_verified,
            data_blocks_verified: r.data_blocks_verified,
            bytes_verified: r.bytes_verified,
            wal_recovery_records_replayed: r.wal_records_replayed,
            authoritative: r.authoritative,
            problems: r.problems,
            ..Default::default()
        })
    }

    /// What recovery did at open.
    pub fn get_recovery_metrics(&self) -> MidgeResult<RecoveryMetricsSnapshot> {
        let r = self.call(|s, p, db| p.cntryl_midge_engine().database().call_recovery_metrics(s, db))?;
        Ok(RecoveryMetricsSnapshot {
            wal_recovery_records_replayed: r.wal_records_replayed,
            wal_recovery_bytes_replayed: r.wal_bytes_replayed,
            intent_log_replay_runs: r.intent_log_replay_runs,
            intent_log_entries_replayed: r.intent_log_entries_replayed,
            wal_torn_tail_bytes_truncated: r.wal_torn_tail_bytes,
            manifest_torn_edit_dropped: r.manifest_torn_edit_dropped,
            orphan_files_removed: r.orphan_files_removed,
            cloud_manifest_fetched: r.cloud_manifest_fetched,
            cloud_wal_segments_fetched: r.cloud_wal_segments_fetched,
            cloud_ssts_fetched: r.cloud_ssts_fetched,
            cloud_bytes_fetched: r.cloud_bytes_fetched,
            ..Default::default()
        })
    }

    /// What the engine inside the component is doing now (the counters the WIT record carries; the rest keep
    /// their defaults).
    pub fn get_runtime_metrics(&self) -> MidgeResult<cntryl_midge::RuntimeMetricsSnapshot> {
        let m = self.call(|s, p, db| p.cntryl_midge_engine().database().call_runtime_metrics(s, db))?;
        Ok(cntryl_midge::RuntimeMetricsSnapshot {
            current_sequence: m.current_sequence,
            commits_total: m.commits,
            wal_fsync_count: m.wal_fsyncs,
            sst_count: m.sst_count,
            sst_bytes: m.sst_bytes,
            flush_publish_count: m.flushes,
            compactions_run: m.compactions,
            write_stalled: m.write_stalled,
            wal_local_durable_seq: m.wal_local_durable_seq,
            wal_cloud_durable_seq: m.wal_cloud_durable_seq,
            cloud_wal_segments_uploaded: m.cloud_wal_segments_uploaded,
            cloud_object_puts_total: m.cloud_object_puts,
            ..Default::default()
        })
    }

    /// Shuts the database down inside the component.
    pub fn shutdown(&mut self, _timeout: std::time::Duration) -> MidgeResult<()> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_shutdown(s, db))
    }
}

/// Rows per `next-batch-flat` crossing.
const SCAN_BATCH: u32 = 256;

/// Appends the rows of one `next-batch-flat` buffer (`u32` LE key length, key, `u32` LE value length, value —
/// repeated) to `out` as zero-copy slices of `batch`; returns how many rows it held. A malformed buffer from the
/// guest is an `Internal` error, never a panic.
fn decode_flat_batch(batch: &Bytes, out: &mut Vec<(Bytes, Bytes)>) -> MidgeResult<usize> {
    let bad = || MidgeError::Internal("component returned a malformed scan batch".into());
    let mut at = 0usize;
    let take = |at: &mut usize| -> MidgeResult<Bytes> {
        let len = batch.get(*at..*at + 4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let start = *at + 4;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= batch.len())
            .ok_or_else(bad)?;
        *at = end;
        Ok(batch.slice(start..end))
    };
    let mut n = 0;
    while at < batch.len() {
        let k = take(&mut at)?;
        let v = take(&mut at)?;
        out.push((k, v));
        n += 1;
    }
    Ok(n)
}

/// The longest key `get-short` takes.
pub const SHORT_KEY: usize = 24;

/// `get-short`'s arguments for `key`: its length, then its bytes as three little-endian words (zero-padded);
/// `None` if the key is longer than [`SHORT_KEY`].
fn pack_short_key(key: &[u8]) -> Option<(u32, [u64; 3])> {
    if key.len() > SHORT_KEY {
        return None;
    }
    let mut b = [0u8; SHORT_KEY];
    b[..key.len()].copy_from_slice(key);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    Some((key.len() as u32, [word(0), word(8), word(16)]))
}

/// A transaction inside the component; same methods as [`cntryl_midge::Transaction`].
pub struct ComponentTransaction<'e> {
    engine: &'e ComponentEngine,
    tx: Option<ResourceAny>,
    /// The transaction's `short-handle` for `get-short` (0: not fetched yet; the guest never issues 0).
    short: AtomicU64,
}

impl std::fmt::Debug for ComponentTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentTransaction")
    }
}

impl ComponentTransaction<'_> {
    fn tx(&self) -> MidgeResult<ResourceAny> {
        self.tx
            .ok_or_else(|| MidgeError::InvalidArgument("transaction already finished".into()))
    }

    /// Buffers a put.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine.call(|s, p, _| {
            p.cntryl_midge_engine()
                .transaction()
                .call_put(s, tx, &key, &value, ttl_secs)
        })
    }

    /// Buffers many puts in one boundary crossing.
    pub fn put_many(&mut self, rows: &[(Vec<u8>, Vec<u8>)]) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine
            .call(|s, p, _| p.cntryl_midge_engine().transaction().call_put_many(s, tx, rows))
    }

    /// Buffers an insert (fails at commit if the key exists).
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_secs: Option<u64>) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine.call(|s, p, _| {
            p.cntryl_midge_engine()
                .transaction()
                .call_insert(s, tx, &key, &value, ttl_secs)
        })
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: Vec<u8>) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine
            .call(|s, p, _| p.cntryl_midge_engine().transaction().call_delete(s, tx, &key))
    }

    /// Buffers a range delete of `[start, end)`.
    pub fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine.call(|s, p, _| {
            p.cntryl_midge_engine()
                .transaction()
                .call_delete_range(s, tx, &start, &end)
        })
    }

    /// Installs a compare-and-set guard checked at commit.
    pub fn assert_value(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.engine.call(|s, p, _| {
            p.cntryl_midge_engine()
                .transaction()
                .call_assert_value(s, tx, &key, expected.as_deref())
        })
    }

    /// Reads a key (own writes first, then the snapshot). A key of at most [`SHORT_KEY`] bytes crosses the
    /// boundary as scalars (`get-short`: one call into the guest, with no argument allocation, no resource
    /// borrow and no `post-return`); a longer one goes through `transaction.get`.
    pub fn get(&self, key: &[u8]) -> MidgeResult<Option<Bytes>> {
        if let Some((len, words)) = pack_short_key(key) {
            return self.engine.get_short(self.short_handle()?, len, words);
        }
        let tx = self.tx()?;
        let v = self
            .engine
            .call(|s, p, _| p.cntryl_midge_engine().transaction().call_get(s, tx, key))?;
        Ok(v.map(Bytes::from))
    }

    /// This transaction's `short-handle` (fetched from the guest on first use). Exposed for tests of
    /// [`ComponentEngine::get_short`].
    #[doc(hidden)]
    pub fn short_handle(&self) -> MidgeResult<u64> {
        let tx = self.tx()?;
        match self.short.load(Ordering::Relaxed) {
            0 => {
                let h = self.engine.call(|s, p, _| {
                    p.cntryl_midge_engine()
                        .transaction()
                        .call_short_handle(s, tx)
                        .map(Ok)
                })?;
                self.short.store(h, Ordering::Relaxed);
                Ok(h)
            }
            h => Ok(h),
        }
    }

    /// Scans rows matching `query` (fetched in batches of 256 rows per boundary crossing).
    pub fn scan(&self, query: &Query) -> MidgeResult<Vec<(Bytes, Bytes)>> {
        let tx = self.tx()?;
        let q = wt::Query {
            start: query.start.as_ref().map(|b| b.to_vec()),
            end: query.end.as_ref().map(|b| b.to_vec()),
            prefix: query.prefix.as_ref().map(|b| b.to_vec()),
            limit: query.limit.map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
            reverse: query.direction == cntryl_midge::Direction::Reverse,
        };
        let it = self
            .engine
            .call(|s, p, _| p.cntryl_midge_engine().transaction().call_scan(s, tx, &q))?;
        let mut out = Vec::new();
        let r = loop {
            let batch = match self.engine.call(|s, p, _| {
                p.cntryl_midge_engine()
                    .scan_iterator()
                    .call_next_batch_flat(s, it, SCAN_BATCH)
            }) {
                Ok(b) => Bytes::from(b),
                Err(e) => break Err(e),
            };
            match decode_flat_batch(&batch, &mut out) {
                Ok(n) if n < SCAN_BATCH as usize => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.engine.drop_resource(it);
        r.map(|()| out)
    }

    /// Sets the conflict policy.
    pub fn set_conflict_policy(&mut self, policy: ConflictPolicy) {
        let policy = match policy {
            ConflictPolicy::LastWriteWins => wt::ConflictPolicy::LastWriteWins,
            ConflictPolicy::AbortOnWriteConflict => wt::ConflictPolicy::AbortOnWriteConflict,
        };
        if let Ok(tx) = self.tx() {
            let _ = self.engine.call(|s, p, _| {
                p.cntryl_midge_engine()
                    .transaction()
                    .call_set_conflict_policy(s, tx, policy)
                    .map(Ok)
            });
        }
    }

    /// Commits with the chosen durability.
    pub fn commit(mut self, opts: WriteOptions) -> MidgeResult<()> {
        let tx = self.tx()?;
        let d = durability(opts);
        self.tx = None;
        if d == wt::Durability::Sync {
            return self.engine.commit_grouped(group::Work::Tx(tx));
        }
        self.engine.call_consuming(tx, |s, p, _| {
            p.cntryl_midge_engine().transaction().call_commit(s, tx, d)
        })
    }

    /// Discards the buffered writes.
    pub fn rollback(mut self) -> MidgeResult<()> {
        let tx = self.tx()?;
        self.tx = None;
        self.engine.call_consuming(tx, |s, p, _| {
            p.cntryl_midge_engine().transaction().call_rollback(s, tx)
        })
    }
}

impl Drop for ComponentTransaction<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.engine.drop_resource(tx);
        }
    }
}

impl ComponentEngine {
    fn drop_resource(&self, r: ResourceAny) {
        self.with_inner(|g| {
            if g.trapped.is_none() {
                let _ = r.resource_drop(&mut g.store);
            }
        });
    }
}

impl Drop for ComponentEngine {
    fn drop(&mut self) {
        self.with_inner(|g| {
            if let Some(db) = g.db.take()
                && g.trapped.is_none()
            {
                let _ = db.resource_drop(&mut g.store);
            }
        });
    }
}

#[cfg(test)]
mod flat_batch_tests {
    use super::*;

    fn encode(rows: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in rows {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }

    #[test]
    fn decodes_rows_including_empty_keys_and_values() {
        let rows: [(&[u8], &[u8]); 3] = [(b"a", b"1"), (b"", b"x"), (b"key", b"")];
        let mut out = Vec::new();
        assert_eq!(
            decode_flat_batch(&Bytes::from(encode(&rows)), &mut out).unwrap(),
            3
        );
        let got: Vec<(&[u8], &[u8])> = out.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert_eq!(got, rows);
        assert_eq!(decode_flat_batch(&Bytes::new(), &mut Vec::new()).unwrap(), 0);
    }

    #[test]
    fn malformed_batches_are_internal_errors_not_panics() {
        let good = encode(&[(b"key", b"value")]);
        for cut in 1..good.len() {
            let r = decode_flat_batch(&Bytes::copy_from_slice(&good[..cut]), &mut Vec::new());
            assert!(matches!(r, Err(MidgeError::Internal(_))), "cut at {cut}");
        }
        let huge = [u32::MAX.to_le_bytes().as_slice(), b"k"].concat();
        assert!(matches!(
            decode_flat_batch(&Bytes::from(huge), &mut Vec::new()),
            Err(MidgeError::Internal(_))
        ));
    }
}
