//! Group commit for `sync` commits from threads sharing one component instance.
//!
//! The instance runs one call at a time, so a sync commit that waited for its fsync inside the instance held
//! every other thread out for that fsync: N writers got one fsync per commit, the device's rate at best, where
//! the native engine's writers share one fsync per round. Here the threads' commits are combined instead: a
//! sync commit joins a queue; one thread (the leader) takes the instance once for the whole queue, commits each
//! queued transaction with `commit-deferred` (logged and applied, neither durable nor visible) and begins one
//! fsync covering the last of them with `begin-sync` — one fsync for every commit of the round, as RocksDB's
//! write group leader writes its followers' batches. It then hands the lead to the first commit that queued
//! meanwhile and runs the fsync itself, **outside the instance** (on the engine's own handle of the log file,
//! the one the `fs` import serves), so the next round's commits run in the instance while this round's fsync
//! runs on the device, as the native engine's committers append while their leader fsyncs. One more short
//! turn hands the outcome back (`end-sync`) and finishes the last ticket (`finish-commit`, covered by then:
//! it returns once the round is visible).
//!
//! The leader commits the queued requests as they arrive, a turn of the instance for each handful, until as
//! many as the last round saw are in (or half a round's time is spent), so the round's gather overlaps its
//! commits instead of preceding them. Queued commits yield their CPU for up to two rounds' time before they
//! sleep, as the native engine's group-commit waiters do: on a small VM a futex wake-up per follower cost more
//! than the commit (16 writers: ≈ 45–50 K commits/s with sleeping followers, ≈ 65–70 K yielding).
//!
//! Owns only the queue and the hand-off. Whether a commit is durable is the engine's answer: a follower is told
//! it is done only when `finish-commit` returned a log position at or past its ticket; a failed fsync goes back
//! to the engine through `end-sync`, which poisons it; after any failure a follower finishes its own ticket with
//! its own call and gets its own typed error (poisoned, trapped, …). Never touches the engine's data or the
//! instance outside [`ComponentEngine`]'s turns.

use super::{ComponentEngine, Inner, call_locked, call_then_drop, wt};
use cntryl_midge::runtime::spin_until;
use cntryl_midge::storage::File;
use cntryl_midge::{MidgeError, MidgeResult};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceAny;

/// What the first half of a round hands the second: each request's ticket (or error), the last ticket, and
/// the fsync `begin-sync` planned for it (the plan and the file to sync, if the host has it open).
struct Logged {
    tickets: Vec<MidgeResult<Option<wt::CommitTicket>>>,
    last: Option<wt::CommitTicket>,
    sync: Option<MidgeResult<Option<Begun>>>,
}

/// An fsync `begin-sync` planned: the plan to end, and the log file to sync if the host has it open.
struct Begun {
    plan: ResourceAny,
    file: Option<Arc<dyn File>>,
}

/// The queue of sync commits waiting for a leader.
#[derive(Default)]
pub(crate) struct Group {
    state: Mutex<GroupState>,
    /// Smoothed time of a round (its commits and its fsync), which bounds the gather.
    finish_ewma_ns: AtomicU64,
}

#[derive(Default)]
struct GroupState {
    queue: Vec<Arc<Request>>,
    /// A leader is running a round (or has been woken to run the next one).
    leading: bool,
    /// Commits the next round gathers for: the last round's batch and the commits that queued while it ran,
    /// which are about what commits again soon.
    want: usize,
}

/// The longest a leader gathers, whatever the fsync costs.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// The longest a queued commit yields before it sleeps.
const MAX_SPIN: Duration = Duration::from_micros(600);

/// What a queued commit commits.
pub(crate) enum Work {
    /// A transaction (consumed by the commit).
    Tx(ResourceAny),
    /// A write batch for a column family (`database.write-deferred`).
    Batch(u32, Vec<wt::BatchOp>),
}

/// One queued commit and where its outcome goes.
struct Request {
    work: Work,
    outcome: Mutex<Option<Outcome>>,
    /// `outcome` is set (read without the lock by a waiter that yields before it sleeps).
    done: AtomicBool,
    ready: Condvar,
}

enum Outcome {
    /// Committed (durable and visible), or refused with this error.
    Done(MidgeResult<()>),
    /// Logged and applied, but the round's `finish-commit` failed or fell short: finish it yourself.
    Finish(wt::CommitTicket),
    /// Lead the next round.
    Lead,
}

impl Group {
    /// How long a leader keeps its round open for commits on their way: half a round's time, at most
    /// [`MAX_GATHER`]. Threads committing back to back reach the queue a few microseconds apart (each builds
    /// its next commit first); without the wait a round would often carry one commit while the others were
    /// on their way.
    fn gather_budget(&self) -> Duration {
        Duration::from_nanos(self.finish_ewma_ns.load(Ordering::Relaxed) / 2).min(MAX_GATHER)
    }

    /// How long a queued commit yields before it sleeps: two rounds, at most [`MAX_SPIN`]. A commit waits
    /// about a round (the gather, its round's commits, the fsync, the hand-back); a wake-up from a sleep costs
    /// the waker a system call and the waiter a context switch, each more CPU than the commit on a small VM
    /// (the native engine's group-commit waiters yield likewise).
    fn spin_budget(&self) -> Duration {
        Duration::from_nanos(self.finish_ewma_ns.load(Ordering::Relaxed).saturating_mul(2)).min(MAX_SPIN)
    }

    fn record_round(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.finish_ewma_ns.load(Ordering::Relaxed);
        let ewma = if old == 0 { ns } else { (old * 7 + ns) / 8 };
        self.finish_ewma_ns.store(ewma, Ordering::Relaxed);
    }
}

impl Request {
    fn set(&self, o: Outcome) {
        *self.outcome.lock() = Some(o);
        self.done.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Waits for the outcome: yields for up to `spin` first (see [`Group::spin_budget`]), then sleeps.
    fn wait(&self, spin: Duration) -> Outcome {
        spin_until(spin, || self.done.load(Ordering::Acquire));
        let mut o = self.outcome.lock();
        loop {
            if let Some(o) = o.take() {
                return o;
            }
            self.ready.wait(&mut o);
        }
    }
}

impl ComponentEngine {
    /// Commits `work` with `sync` durability, sharing one fsync with the sync commits of other threads.
    pub(crate) fn commit_grouped(&self, work: Work) -> MidgeResult<()> {
        let me = Arc::new(Request {
            work,
            outcome: Mutex::new(None),
            done: AtomicBool::new(false),
            ready: Condvar::new(),
        });
        let group = &self.shared.group;
        {
            let mut s = group.state.lock();
            s.queue.push(me.clone());
            if s.leading {
                drop(s);
                match me.wait(group.spin_budget()) {
                    Outcome::Done(r) => return r,
                    Outcome::Finish(t) => return self.finish_one(t),
                    Outcome::Lead => {}
                }
            } else {
                s.leading = true;
            }
        }
        // Leading: one round over everything queued (ours included) and what queues while it logs. The lead
        // passes to the first commit that queued meanwhile as soon as the round's commits are logged, so the
        // next round's commits run in the instance while this round's fsync runs outside it.
        let started = Instant::now();
        let (batch, logged) = self.log_round();
        {
            let mut s = group.state.lock();
            s.want = batch.len() + s.queue.len();
            match s.queue.first() {
                Some(next) => next.set(Outcome::Lead),
                None => s.leading = false,
            }
        }
        let mine = self.finish_round(&batch, &me, logged);
        group.record_round(started.elapsed());
        match mine {
            Outcome::Done(r) => r,
            Outcome::Finish(t) => self.finish_one(t),
            // `finish_round` never returns it; an error rather than a panic if that ever changed.
            Outcome::Lead => Err(MidgeError::Internal(
                "group commit: a round handed its own leader the lead".into(),
            )),
        }
    }

    /// The first half of a round: commits the queued requests with `commit-deferred` (or `write-deferred`)
    /// as they arrive — a turn of the instance for each handful — until as many as the last round saw are
    /// logged or the gather budget ([`Group::gather_budget`]) is spent, then begins the fsync that covers the
    /// last of them (`begin-sync`), which [`ComponentEngine::finish_round`] runs outside the instance. Logging
    /// the first arrivals while the rest are on their way overlaps the round's gather with its commits. A
    /// lone writer never waits.
    fn log_round(&self) -> (Vec<Arc<Request>>, Logged) {
        let group = &self.shared.group;
        let want = group.state.lock().want;
        let deadline = Instant::now() + group.gather_budget();
        let mut batch: Vec<Arc<Request>> = Vec::new();
        let mut tickets: Vec<MidgeResult<Option<wt::CommitTicket>>> = Vec::new();
        loop {
            let arrived = std::mem::take(&mut group.state.lock().queue);
            if !arrived.is_empty() {
                self.shared
                    .calls
                    .fetch_add(arrived.len() as u64, Ordering::Relaxed);
                self.with_inner(|g| tickets.extend(arrived.iter().map(|r| log_one(g, &r.work))));
                batch.extend(arrived);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.len() >= want
                || left.is_zero()
                || !spin_until(left, || !group.state.lock().queue.is_empty())
            {
                break;
            }
        }
        // The last ticket's fsync covers every earlier one (the log is appended in order).
        let last = tickets
            .iter()
            .filter_map(|r| r.as_ref().ok().copied().flatten())
            .max_by_key(|t| t.log_position);
        let sync = last.map(|t| {
            self.shared.calls.fetch_add(1, Ordering::Relaxed);
            self.with_inner(|g| {
                call_locked(g, |s, p, db| {
                    p.cntryl_midge_engine()
                        .database()
                        .call_begin_sync(s, db, t.log_position)
                })
                .map(|start| {
                    start.map(|st| Begun {
                        file: g.store.data().open_file(&st.path),
                        plan: st.plan,
                    })
                })
            })
        });
        (batch, Logged { tickets, last, sync })
    }

    /// The second half of a round: the fsync `log_round` began, outside the instance, then one turn that
    /// ends it (`end-sync`) and finishes the last ticket (`finish-commit`: covered by then, so no second
    /// fsync; it returns once the round's commits are visible). Sets every other request's outcome and
    /// returns `me`'s.
    fn finish_round(&self, batch: &[Arc<Request>], me: &Arc<Request>, logged: Logged) -> Outcome {
        let Logged { tickets, last, sync } = logged;
        // The fsync, holding nothing: the file is the engine's own handle (the one the `fs` import serves).
        let synced = match &sync {
            Some(Ok(Some(Begun { file: Some(file), .. }))) => {
                Some(file.sync_data().map_err(|e| e.to_string()))
            }
            _ => None,
        };
        let finished = last.map(|t| {
            self.with_inner(|g| {
                let ended = match (sync, synced) {
                    (Some(Err(e)), _) => Err(e),
                    (Some(Ok(Some(Begun { plan, .. }))), Some(outcome)) => call_locked(g, |s, p, db| {
                        p.cntryl_midge_engine().database().call_end_sync(
                            s,
                            db,
                            plan,
                            outcome.err().as_deref(),
                        )
                    })
                    .map(|_| ()),
                    // Covered already, or (never expected) the file is not open through the import: the
                    // plan is dropped unended and `finish-commit` syncs inside the instance.
                    (Some(Ok(Some(Begun { plan, file: None }))), _) => {
                        let _ = plan.resource_drop(&mut g.store);
                        Ok(())
                    }
                    _ => Ok(()),
                };
                ended.and_then(|()| {
                    call_locked(g, |s, p, db| {
                        p.cntryl_midge_engine().database().call_finish_commit(s, db, t)
                    })
                })
            })
        });
        let finished_at = last.map(|t| t.log_position);
        let covered = match &finished {
            Some(Ok(c)) => Some(*c),
            _ => None,
        };
        let mut mine = None;
        for (r, out) in batch.iter().zip(tickets) {
            let o = match out {
                Err(e) => Outcome::Done(Err(e)),
                Ok(None) => Outcome::Done(Ok(())),
                // Another ticket whose finish schedules a flush is finished by its own thread (cheap: covered);
                // the one the round finished (`finished_at`) had its flush scheduled already.
                Ok(Some(t))
                    if covered.is_some_and(|c| c >= t.log_position)
                        && (!t.rotated_memtable || finished_at == Some(t.log_position)) =>
                {
                    Outcome::Done(Ok(()))
                }
                Ok(Some(t)) => Outcome::Finish(t),
            };
            if Arc::ptr_eq(r, me) {
                mine = Some(o);
            } else {
                r.set(o);
            }
        }
        match (mine, finished) {
            // The leader's own finish failed: report that error rather than calling again.
            (Some(Outcome::Finish(_)), Some(Err(e))) => Outcome::Done(Err(e)),
            (Some(o), _) => o,
            (None, _) => Outcome::Done(Err(MidgeError::Internal(
                "group commit: the leader's request was not in its round".into(),
            ))),
        }
    }

    /// Finishes one ticket with its own call (after a round that did not cover it).
    fn finish_one(&self, t: wt::CommitTicket) -> MidgeResult<()> {
        self.call(|s, p, db| p.cntryl_midge_engine().database().call_finish_commit(s, db, t))
            .map(|_| ())
    }
}

/// Commits one queued request without its fsync (`commit-deferred` / `write-deferred`): its ticket, `None`
/// when it needed no fsync, or its error.
fn log_one(g: &mut Inner, work: &Work) -> MidgeResult<Option<wt::CommitTicket>> {
    match work {
        Work::Tx(tx) => call_then_drop(g, *tx, |s, p, _| {
            p.cntryl_midge_engine()
                .transaction()
                .call_commit_deferred(s, *tx, wt::Durability::Sync)
        }),
        Work::Batch(cf, ops) => call_locked(g, |s, p, db| {
            p.cntryl_midge_engine()
                .database()
                .call_write_deferred(s, db, *cf, ops, wt::Durability::Sync)
        }),
    }
}
