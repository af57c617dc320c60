//! A deterministic fault-injecting object store for the cloud crash harness.
//!
//! [`SimObjectStore`] wraps a [`MemoryObjectStore`] (the "bucket", which survives any crash) and numbers every
//! request. A plan can make request `n`:
//! - **crash**: it and every later request fail — the writer's machine is gone; [`SimObjectStore::survivor`]
//!   hands the bucket to the next writer with no faults;
//! - **fail**: a typed `Other` error, nothing stored (or read);
//! - **ambiguous, applied**: the put is stored but reported `Ambiguous` (a timeout after the server acted);
//! - **ambiguous, lost**: the put is not stored and reported `Ambiguous`;
//! - **fail `k` times**: `Other` for `k` consecutive requests from `n` (exercises bounded retries).
//!
//! Plus **listing lag** (a listing omits objects written in the last `k` requests, as eventually consistent
//! stores do) and a trace of `(index, op, path, outcome)` for reports. Same seed, same plan → same run.

use super::object::{MemoryObjectStore, ObjectError, ObjectMeta, ObjectStore, PutMode};
use bytes::Bytes;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// What happens to the planned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFault {
    /// The request and every later one fail: the writer's machine is lost.
    Crash,
    /// The request fails with `Other`; nothing changes.
    Fail,
    /// Fails with `Other` for this many consecutive requests.
    FailTimes(u64),
    /// A put is applied but reported `Ambiguous` (other requests: like `Fail`, reported `Ambiguous`).
    AmbiguousApplied,
    /// A put is not applied and reported `Ambiguous`.
    AmbiguousLost,
}

/// One traced request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTraceOp {
    /// Global request index.
    pub index: u64,
    /// `put`, `get`, `get_range`, `head`, `list`, `delete`.
    pub op: &'static str,
    /// Object path (or listing prefix).
    pub path: String,
    /// `ok`, `err` (the store's own answer, e.g. a failed precondition), or the injected fault.
    pub outcome: &'static str,
}

#[derive(Debug, Default)]
struct State {
    ops: u64,
    plan: Option<(u64, ObjectFault)>,
    failing_until: u64,
    crashed: bool,
    listing_lag: u64,
    /// (request index, path) of every successful put, for listing lag.
    writes: Vec<(u64, String)>,
    trace: Vec<ObjectTraceOp>,
    injected: u64,
}

/// A fault-injecting view of a shared in-memory bucket. Clones share the bucket and the plan.
#[derive(Debug, Clone, Default)]
pub struct SimObjectStore {
    bucket: MemoryObjectStore,
    state: Arc<Mutex<State>>,
}

enum Verdict {
    Go,
    Inject(ObjectFault),
}

impl SimObjectStore {
    /// An empty bucket with no faults planned.
    pub fn new() -> SimObjectStore {
        SimObjectStore::default()
    }

    /// Plans `fault` for request `n` (0-based, counted from now on this store's counter).
    pub fn plan(&self, n: u64, fault: ObjectFault) {
        self.lock().plan = Some((n, fault));
    }

    /// Listings omit objects written in the last `requests` requests.
    pub fn set_listing_lag(&self, requests: u64) {
        self.lock().listing_lag = requests;
    }

    /// Requests seen so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.lock().injected
    }

    /// Whether a planned crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The request trace.
    pub fn trace(&self) -> Vec<ObjectTraceOp> {
        self.lock().trace.clone()
    }

    /// The same bucket with a fresh counter and no faults: what the next writer sees after a crash.
    pub fn survivor(&self) -> SimObjectStore {
        SimObjectStore {
            bucket: self.bucket.clone(),
            state: Arc::default(),
        }
    }

    /// The bucket itself (no faults, no tracing).
    pub fn bucket(&self) -> &MemoryObjectStore {
        &self.bucket
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers the request and decides its fate.
    fn begin(&self, op: &'static str, path: &str) -> (u64, Verdict) {
        let mut s = self.lock();
        let i = s.ops;
        s.ops += 1;
        let mut verdict = Verdict::Go;
        if s.crashed {
            verdict = Verdict::Inject(ObjectFault::Crash);
        } else if i < s.failing_until {
            verdict = Verdict::Inject(ObjectFault::Fail);
        } else if let Some((n, f)) = s.plan
            && n == i
        {
            match f {
                ObjectFault::Crash => s.crashed = true,
                ObjectFault::FailTimes(k) => s.failing_until = i + k,
                _ => {}
            }
            verdict = Verdict::Inject(match f {
                ObjectFault::FailTimes(_) => ObjectFault::Fail,
                f => f,
            });
        }
        let outcome = match verdict {
            Verdict::Go => "ok",
            Verdict::Inject(ObjectFault::Crash) => "crash",
            Verdict::Inject(ObjectFault::AmbiguousApplied) => "ambiguous-applied",
            Verdict::Inject(ObjectFault::AmbiguousLost) => "ambiguous-lost",
            Verdict::Inject(_) => "fail",
        };
        if outcome != "ok" {
            s.injected += 1;
        }
        s.trace.push(ObjectTraceOp {
            index: i,
            op,
            path: path.to_string(),
            outcome,
        });
        (i, verdict)
    }

    fn injected_error(f: ObjectFault, path: &str) -> ObjectError {
        match f {
            ObjectFault::Crash => ObjectError::Other(format!("{path}: the writer's machine is gone")),
            ObjectFault::AmbiguousApplied | ObjectFault::AmbiguousLost => {
                ObjectError::Ambiguous(format!("{path}: request timed out"))
            }
            _ => ObjectError::Other(format!("{path}: injected failure")),
        }
    }

    fn note(&self, i: u64, r: &Result<impl Sized, ObjectError>) {
        if r.is_err() {
            let mut s = self.lock();
            if let Some(t) = s.trace.iter_mut().rev().find(|t| t.index == i) {
                t.outcome = "err";
            }
        }
    }
}

impl ObjectStore for SimObjectStore {
    fn put(&self, path: &str, data: Bytes, mode: PutMode) -> Result<ObjectMeta, ObjectError> {
        let (i, v) = self.begin("put", path);
        match v {
            Verdict::Go => {
                let r = self.bucket.put(path, data, mode);
                self.note(i, &r);
                if r.is_ok() {
                    self.lock().writes.push((i, path.to_string()));
                }
                r
            }
            Verdict::Inject(ObjectFault::AmbiguousApplied) => {
                if self.bucket.put(path, data, mode).is_ok() {
                    self.lock().writes.push((i, path.to_string()));
                }
                Err(Self::injected_error(ObjectFault::AmbiguousApplied, path))
            }
            Verdict::Inject(f) => Err(Self::injected_error(f, path)),
        }
    }

    fn get(&self, path: &str) -> Result<(Bytes, ObjectMeta), ObjectError> {
        match self.begin("get", path) {
            (i, Verdict::Go) => {
                let r = self.bucket.get(path);
                self.note(i, &r);
                r
            }
            (_, Verdict::Inject(f)) => Err(Self::injected_error(f, path)),
        }
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        match self.begin("get_range", path) {
            (i, Verdict::Go) => {
                let r = self.bucket.get_range(path, range);
                self.note(i, &r);
                r
            }
            (_, Verdict::Inject(f)) => Err(Self::injected_error(f, path)),
        }
    }

    fn head(&self, path: &str) -> Result<ObjectMeta, ObjectError> {
        match self.begin("head", path) {
            (i, Verdict::Go) => {
                let r = self.bucket.head(path);
                self.note(i, &r);
                r
            }
            (_, Verdict::Inject(f)) => Err(Self::injected_error(f, path)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        match self.begin("list", prefix) {
            (i, Verdict::Go) => {
                let r = self.bucket.list(prefix);
                self.note(i, &r);
                let s = self.lock();
                let hidden: Vec<&String> = s
                    .writes
                    .iter()
                    .filter(|(w, _)| w + s.listing_lag > i)
                    .map(|(_, p)| p)
                    .collect();
                r.map(|v| v.into_iter().filter(|m| !hidden.contains(&&m.path)).collect())
            }
            (_, Verdict::Inject(f)) => Err(Self::injected_error(f, prefix)),
        }
    }

    fn delete(&self, path: &str) -> Result<(), ObjectError> {
        match self.begin("delete", path) {
            (i, Verdict::Go) => {
                let r = self.bucket.delete(path);
                self.note(i, &r);
                r
            }
            (_, Verdict::Inject(f)) => Err(Self::injected_error(f, path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_inject_exactly_what_they_say() {
        let s = SimObjectStore::new();
        s.plan(1, ObjectFault::AmbiguousApplied);
        s.put("a", Bytes::from_static(b"1"), PutMode::Create).unwrap();
        let r = s.put("b", Bytes::from_static(b"2"), PutMode::Create);
        assert!(matches!(r, Err(ObjectError::Ambiguous(_))));
        assert_eq!(
            s.get("b").unwrap().0,
            Bytes::from_static(b"2"),
            "applied despite the timeout"
        );
        s.plan(3, ObjectFault::AmbiguousLost);
        assert!(matches!(
            s.put("c", Bytes::from_static(b"3"), PutMode::Create),
            Err(ObjectError::Ambiguous(_))
        ));
        assert!(matches!(s.get("c"), Err(ObjectError::NotFound(_))));
        s.plan(5, ObjectFault::FailTimes(2));
        assert!(s.get("a").is_err() && s.get("a").is_err());
        assert!(s.get("a").is_ok());
        s.set_listing_lag(2);
        s.put("d", Bytes::from_static(b"4"), PutMode::Create).unwrap();
        let names: Vec<String> = s.list("").unwrap().into_iter().map(|m| m.path).collect();
        assert_eq!(names, ["a", "b"], "the write one request ago is not listed yet");
        s.plan(s.op_count(), ObjectFault::Crash);
        assert!(s.get("a").is_err() && s.get("a").is_err() && s.crashed());
        let next = s.survivor();
        assert_eq!(
            next.get("d").unwrap().0,
            Bytes::from_static(b"4"),
            "the bucket survives"
        );
        assert_eq!(s.faults_injected(), 6);
        assert!(s.trace().iter().any(|t| t.outcome == "ambiguous-lost"));
    }
}
