//! The execution seam: time ([`Clock`]), background work ([`Executor`]) and seeded randomness ([`SeededRng`]).
//!
//! Natively background jobs run on worker threads; on wasm32 (no threads) they run inline at well-defined
//! points, so the same durable steps happen in the same order. Platform `cfg`s live here and in `storage/` only.
#![allow(clippy::disallowed_methods)]

pub(crate) mod memory;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A source of time. The TTL clock and every timeout read time through this trait, so tests (and the crash
/// simulator) can replay a run exactly.
///
/// ```
/// use cntryl_midge::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_millis(500);
/// assert_eq!(clock.now_millis(), 1_500);
/// ```
pub trait Clock: Send + Sync + Debug {
    /// Wall-clock milliseconds since the Unix epoch (used for TTL expiry). Must never go backwards.
    fn now_millis(&self) -> u64;
    /// Monotonic nanoseconds from an arbitrary origin (used for timeouts and latency metrics).
    fn monotonic_nanos(&self) -> u64;
}

/// The real clock (wall time for TTL, a monotonic clock for timeouts), with a non-decreasing floor.
#[derive(Debug, Default)]
pub struct SystemClock {
    floor: AtomicU64,
}

impl SystemClock {
    /// A new system clock.
    pub fn new() -> SystemClock {
        SystemClock::default()
    }
}

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let prev = self.floor.fetch_max(now, Ordering::Relaxed);
        prev.max(now)
    }

    fn monotonic_nanos(&self) -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to; for deterministic tests of TTL and timeouts.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `millis`.
    pub fn new(millis: u64) -> ManualClock {
        ManualClock {
            millis: Arc::new(AtomicU64::new(millis)),
        }
    }
    /// Moves the clock forward.
    pub fn advance_millis(&self, by: u64) {
        self.millis.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::Relaxed)
    }
    fn monotonic_nanos(&self) -> u64 {
        self.millis.load(Ordering::Relaxed).saturating_mul(1_000_000)
    }
}

/// A unit of background work (flush, compaction, WAL sync, obsolete-file GC).
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Where background work runs.
pub trait Executor: Send + Sync + Debug {
    /// Runs `job` in the background, or inline if this executor has no threads.
    fn spawn(&self, name: &str, job: Job);
    /// True when jobs run inline on the caller's thread (wasm32, deterministic simulation).
    fn is_inline(&self) -> bool;
    /// Blocks the calling thread for `d` (a no-op for inline executors, which must never wait).
    fn sleep(&self, d: Duration);
    /// Whether [`Executor::sleep`] is the OS clock on a thread of the job's own, so a periodic job may park its
    /// thread instead and be woken early (the WAL syncer, nudged by buffered commits). An executor that
    /// virtualises time (a simulator) keeps the default `false`: its periodic jobs then wait only through
    /// `sleep`.
    fn sleeps_in_real_time(&self) -> bool {
        false
    }
}

/// Runs background jobs on one long-lived worker thread per executor (flush and compaction are serialised, as
/// the engine expects), plus a dedicated thread for each periodic job named `*-ticker`. The worker exits when
/// the executor is dropped.
#[derive(Debug, Default)]
pub struct ThreadExecutor {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl ThreadExecutor {
    /// A new executor; its worker starts with the first job.
    pub fn new() -> ThreadExecutor {
        ThreadExecutor::default()
    }

    fn start(name: &str, job: Job) {
        let spawned = std::thread::Builder::new()
            .name(format!("midge-{name}"))
            .spawn(job);
        if let Err(e) = spawned {
            // Thread exhaustion: surface it in logs; the job is lost, callers treat work as not done.
            tracing::error!("failed to spawn background thread {name}: {e}");
        }
    }
}

impl Executor for ThreadExecutor {
    fn spawn(&self, name: &str, job: Job) {
        if name.ends_with("-ticker") {
            ThreadExecutor::start(name, job);
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let job = match q.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        ThreadExecutor::start(
            "worker",
            Box::new(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            }),
        );
        let _ = tx.send(job);
        *q = Some(tx);
    }
    fn is_inline(&self) -> bool {
        false
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
    fn sleeps_in_real_time(&self) -> bool {
        true
    }
}

/// Runs every job immediately on the caller's thread.
#[derive(Debug, Default)]
pub struct InlineExecutor;

impl Executor for InlineExecutor {
    fn spawn(&self, _name: &str, job: Job) {
        job();
    }
    fn is_inline(&self) -> bool {
        true
    }
    fn sleep(&self, _d: Duration) {}
}

/// A one-shot wake-up for one blocked thread: [`WakeSlot::wait`] blocks the thread that created the slot
/// until another calls [`WakeSlot::wake`]. Cheaper than a shared condition variable when a group of waiters
/// is released at once: each is woken directly and none has to re-take a contended mutex on its way out.
/// Only for targets with threads ([`THREADS`]); a single-threaded caller must never wait.
#[derive(Debug)]
pub struct WakeSlot {
    /// 0 until woken, then the waker's token.
    token: std::sync::atomic::AtomicU32,
    thread: std::thread::Thread,
}

impl WakeSlot {
    /// A slot the calling thread will wait on.
    pub fn new() -> Arc<WakeSlot> {
        Arc::new(WakeSlot {
            token: std::sync::atomic::AtomicU32::new(0),
            thread: std::thread::current(),
        })
    }

    /// Blocks until [`WakeSlot::wake`] was called (at once if it already was); returns its token. For up to
    /// `spin` the thread yields instead of sleeping: a wake-up that arrives meanwhile costs the waker no
    /// system call and the waiter no context switch (on a small VM each costs more CPU than the commit).
    pub fn wait(&self, spin: Duration) -> u32 {
        spin_until(spin, || self.token.load(Ordering::Acquire) != 0);
        loop {
            let t = self.token.load(Ordering::Acquire);
            if t != 0 {
                return t;
            }
            std::thread::park();
        }
    }

    /// Releases the waiter with `token` (not 0).
    pub fn wake(&self, token: u32) {
        debug_assert_ne!(token, 0);
        self.token.store(token, Ordering::Release);
        self.thread.unpark();
    }
}

/// Wakes one long-lived background thread early: the thread waits in [`Nudge::wait`] (its period, unless
/// nudged), and any other thread may call [`Nudge::nudge`] to end that wait at once. A nudge while the thread
/// is busy is kept and ends its next wait. Nudging costs one atomic swap, plus an unpark for the first nudge
/// of a wait. Only threaded executors run the waiting side; without a registered waiter a nudge does nothing.
#[derive(Debug, Default)]
pub(crate) struct Nudge {
    waiter: std::sync::OnceLock<std::thread::Thread>,
    nudged: std::sync::atomic::AtomicBool,
}

impl Nudge {
    /// Makes the calling thread the one [`Nudge::nudge`] wakes (the first caller stays registered).
    pub fn register(&self) {
        let _ = self.waiter.set(std::thread::current());
    }

    /// Whether a waiter is registered (a background thread will act on a nudge).
    pub fn has_waiter(&self) -> bool {
        self.waiter.get().is_some()
    }

    /// Blocks the registered thread for up to `d`, or until nudged (at once if a nudge is pending). Returns
    /// whether it was nudged, and clears the nudge.
    pub fn wait(&self, d: Duration) -> bool {
        if !self.nudged.load(Ordering::Acquire) {
            // Spurious wake-ups only shorten the wait.
            std::thread::park_timeout(d);
        }
        self.nudged.swap(false, Ordering::AcqRel)
    }

    /// Ends the registered thread's current or next wait.
    pub fn nudge(&self) {
        if !self.nudged.swap(true, Ordering::AcqRel)
            && let Some(t) = self.waiter.get()
        {
            t.unpark();
        }
    }
}

/// Yields the thread (letting other runnable threads run) until `done` holds or `budget` of real time has
/// passed; returns `done()`. A spin-wait for events expected within microseconds, where sleeping and being
/// woken would cost more. Returns at once on targets without threads (nothing else could make it true).
pub fn spin_until(budget: Duration, done: impl Fn() -> bool) -> bool {
    if !THREADS || budget.is_zero() {
        return done();
    }
    let start = std::time::Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Whether this target can run OS threads (false on wasm32). Tests that need real concurrency check it here,
/// so no platform `cfg` leaks into the modules they test.
pub const THREADS: bool = cfg!(not(target_family = "wasm"));

/// Runs `a` and `b` and returns both results: `b` on a scoped helper thread where the target has threads
/// (and one can be started), else one after the other on the caller's thread. For CPU work that splits in two
/// (recovery sorts a replayed log in halves); the results do not depend on which way it ran.
pub fn join<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    if !THREADS {
        return (a(), b());
    }
    // Taken by whichever runs it: the helper, or the caller when no helper could start.
    let b = std::sync::Mutex::new(Some(b));
    let take = || b.lock().unwrap_or_else(|p| p.into_inner()).take();
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("midge-join".into())
            .spawn_scoped(s, || take().map(|f| f()));
        if let Err(e) = &helper {
            tracing::debug!("no helper thread ({e}); running both halves on the caller's thread");
        }
        let ra = a();
        let rb = match helper.map(|h| h.join()) {
            Ok(Ok(Some(rb))) => Some(rb),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(None)) | Err(_) => None,
        };
        match rb.or_else(|| take().map(|f| f())) {
            Some(rb) => (ra, rb),
            // `b` is taken once, by the helper or here; a helper that took it returned its result above.
            None => unreachable!("join: the second half ran nowhere"),
        }
    })
}

/// Hints the CPU to start loading the cache lines holding `*at`, without waiting for them (x86-64; a no-op
/// elsewhere). Lets a batch overlap the cache misses of independent lookups.
#[inline(always)]
pub fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = (at as *const T).cast::<i8>();
        let last = start.wrapping_add(std::mem::size_of::<T>().saturating_sub(1));
        let mut line = start;
        loop {
            #[allow(unsafe_code)]
            // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists; a prefetch reads nothing
            // the program sees and never faults, whatever the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line);
            }
            if line.addr() / 64 >= last.addr() / 64 {
                break;
            }
            line = line.wrapping_add(64);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = at;
    }
}

/// The executor for this target: threads natively, inline on wasm32.
pub fn default_executor() -> Arc<dyn Executor> {
    #[cfg(target_family = "wasm")]
    {
        Arc::new(InlineExecutor)
    }
    #[cfg(not(target_family = "wasm"))]
    {
        Arc::new(ThreadExecutor::new())
    }
}

/// A tiny deterministic PRNG (SplitMix64). Every random choice in the engine comes from a seeded instance.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator for `seed`; the same seed always yields the same sequence.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both halves run exactly once and their results come back in place; each half may borrow the caller's
    /// data mutably (disjoint halves of one slice), and on a target with threads the second half runs on
    /// another thread.
    #[test]
    fn join_runs_both_halves_and_returns_both_results() {
        let mut data: Vec<u32> = (0..10_000).rev().collect();
        let (lo, hi) = data.split_at_mut(5_000);
        let caller = std::thread::current().id();
        let (a, (b, other)) = join(
            || {
                lo.sort_unstable();
                lo[0]
            },
            || {
                hi.sort_unstable();
                (hi[0], std::thread::current().id() != caller)
            },
        );
        assert_eq!((a, b), (5_000, 0));
        assert_eq!(other, THREADS);
        assert!(data[..5_000].is_sorted() && data[5_000..].is_sorted());
    }

    /// A nudge ends the registered thread's wait at once, a nudge sent while it was busy ends its next wait,
    /// and an un-nudged wait times out reporting no nudge.
    #[test]
    fn a_nudge_ends_the_waiters_wait() {
        if !THREADS {
            return;
        }
        let n = Arc::new(Nudge::default());
        assert!(!n.has_waiter());
        n.nudge(); // no waiter yet: kept for the first wait
        n.register();
        assert!(n.has_waiter());
        assert!(
            n.wait(Duration::from_secs(60)),
            "a pending nudge ends the wait at once"
        );
        assert!(!n.wait(Duration::from_millis(1)), "an un-nudged wait times out");
        // A waiter on another thread, nudged from here (before or during its wait: either ends it).
        let n = Arc::new(Nudge::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let n = n.clone();
            std::thread::spawn(move || {
                n.register();
                tx.send(()).unwrap();
                let started = std::time::Instant::now();
                (n.wait(Duration::from_secs(60)), started.elapsed())
            })
        };
        rx.recv().unwrap();
        n.nudge();
        let (nudged, waited) = waiter.join().unwrap();
        assert!(
            nudged && waited < Duration::from_secs(30),
            "{nudged} after {waited:?}"
        );
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SeededRng::new(8).next_u64(), xs[0]);
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let c = SystemClock::new();
        let a = c.now_millis();
        let b = c.now_millis();
        assert!(b >= a);
    }

    #[test]
    fn inline_executor_runs_jobs_immediately() {
        let hit = Arc::new(AtomicU64::new(0));
        let h = hit.clone();
        InlineExecutor.spawn("t", Box::new(move || h.store(1, Ordering::SeqCst)));
        assert_eq!(hit.load(Ordering::SeqCst), 1);
    }
}
