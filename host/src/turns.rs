//! The lock in front of a component instance: one store serves one call at a time, so threads sharing an
//! engine take turns. A plain mutex lets a busy thread (a writer committing back to back) re-take the lock
//! before the thread it just woke gets to run, so that thread starves: a reader sharing an instance with a busy
//! writer got ~1% of the instance (readwhilewriting: 10 K reads/s against the native engine's 730 K).
//!
//! [`TurnLock`] hands the instance over in time slices instead: while another thread waits, the holder keeps
//! calling (cheap re-entry, no context switch per call) until it has held its turn for [`SLICE`]; its next
//! release then steps aside and wakes a waiter, and the holder's own next call queues behind it. Waiters sleep
//! on a condition variable, not on the instance's mutex: a holder's release within its slice wakes one waiter
//! but hands nothing over, so a holder calling again right away re-takes the instance (it is already running)
//! and the woken waiter sleeps on, while a holder that went quiet leaves the instance to that waiter at once.
//! (Before session 11 such releases woke nobody and a waiter looked again only after a slice: with many
//! threads making short calls — writers opening, filling and committing transactions — the instance sat idle
//! for most of each slice.) A caller that finds the instance busy first yields its CPU a few times
//! ([`SPINS`]) and looks again before it queues and sleeps, as an adaptive mutex spins: most calls take a few
//! microseconds, less than a sleep and a wake-up. Without waiters a call costs two atomic loads, one
//! compare-and-swap to lock and one to unlock.

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a thread keeps the instance while another waits. Long enough that a hand-off (a wake-up, ~10 µs
/// on a busy machine) is a small share of a turn, short enough that a waiting point read stays sub-millisecond.
pub(crate) const SLICE: Duration = Duration::from_micros(200);

/// Times a caller finding the instance busy yields its CPU and looks again before it queues and sleeps.
const SPINS: u32 = 4;

struct Slot<T> {
    value: T,
    /// When the current holder's turn began (when it got the lock after waiting for it).
    turn_started: Instant,
}

/// A mutex whose holder steps aside for a waiting thread once its turn is [`SLICE`] long.
pub(crate) struct TurnLock<T> {
    slot: Mutex<Slot<T>>,
    /// Threads waiting for a turn right now.
    waiting: AtomicU32,
    /// A holder stepped aside and no waiter has taken the turn yet: arrivals queue instead of taking the lock.
    pending: AtomicBool,
    /// While a hand-off is pending: the thread that stepped aside (it must not take the turn it gave up).
    gate: Mutex<Option<usize>>,
    turn: Condvar,
    /// Tests only: microseconds a waiter pauses after passing the gate, before it takes the instance (widens
    /// the race window the gate test needs).
    #[cfg(test)]
    pause_past_gate: std::sync::atomic::AtomicU64,
}

/// A cheap id for the calling thread (the address of a thread-local).
fn me() -> usize {
    thread_local! { static ID: u8 = const { 0 }; }
    ID.with(|id| std::ptr::from_ref(id) as usize)
}

impl<T> TurnLock<T> {
    pub(crate) fn new(value: T) -> TurnLock<T> {
        TurnLock {
            slot: Mutex::new(Slot {
                value,
                turn_started: Instant::now(),
            }),
            waiting: AtomicU32::new(0),
            pending: AtomicBool::new(false),
            gate: Mutex::new(None),
            turn: Condvar::new(),
            #[cfg(test)]
            pause_past_gate: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs `f` with the lock held, waiting for a turn if another thread holds it.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        for spin in 0..=SPINS {
            if spin > 0 {
                std::thread::yield_now();
            }
            if !self.pending.load(Ordering::SeqCst)
                && let Some(g) = self.slot.try_lock()
            {
                return self.run(g, f);
            }
        }
        let g = self.wait_turn();
        self.run(g, f)
    }

    /// Runs `f` with the lock held if no other thread holds or waits for it now; `None` (without running `f`)
    /// otherwise.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.pending.load(Ordering::SeqCst) || self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let g = self.slot.try_lock()?;
        Some(self.run(g, f))
    }

    fn wait_turn(&self) -> MutexGuard<'_, Slot<T>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let me = me();
        let mut gate = self.gate.lock();
        loop {
            match *gate {
                // A holder stepped aside for us. `pending` stays set until we hold the instance, so nobody —
                // an arrival, another waiter, the thread that stepped aside — gets in between. (Clearing it
                // here let that thread call again, get in first and, still counting us as waiting, step aside
                // for us: a hand-off nobody would ever take, and its own next call waited behind it for ever.)
                Some(yielder) if yielder != me => {
                    *gate = None;
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    drop(gate);
                    #[cfg(test)]
                    {
                        let us = self.pause_past_gate.load(Ordering::SeqCst);
                        if us > 0 {
                            std::thread::sleep(Duration::from_micros(us));
                        }
                    }
                    let mut g = self.slot.lock();
                    self.pending.store(false, Ordering::SeqCst);
                    g.turn_started = Instant::now();
                    return g;
                }
                _ => {}
            }
            // Free with no hand-off pending or in flight (its holder went quiet, or nobody held it): take it.
            // A thread that stepped aside waits here until the waiter it stepped aside for has taken its turn.
            if gate.is_none()
                && !self.pending.load(Ordering::SeqCst)
                && let Some(mut g) = self.slot.try_lock()
            {
                drop(gate);
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                g.turn_started = Instant::now();
                return g;
            }
            self.turn.wait_for(&mut gate, SLICE);
        }
    }

    fn run<R>(&self, mut g: MutexGuard<'_, Slot<T>>, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut g.value);
        if self.waiting.load(Ordering::SeqCst) > 0 && g.turn_started.elapsed() >= SLICE {
            {
                let mut gate = self.gate.lock();
                *gate = Some(me());
                self.pending.store(true, Ordering::SeqCst);
            }
            drop(g);
            self.turn.notify_all();
        } else {
            drop(g);
            if self.waiting.load(Ordering::SeqCst) > 0 {
                // Wake one waiter in case this holder has gone quiet (a holder calling again right away takes
                // the instance first and the waiter sleeps on). Under the gate, so a waiter between its look
                // and its sleep cannot miss it.
                let _gate = self.gate.lock();
                self.turn.notify_one();
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    /// Bounded waiting: a thread that re-takes the lock back to back, each call longer than a slice, lets a
    /// second thread's calls in after at most a couple of its own. Counted in calls, not time; preemption on a
    /// loaded machine may delay a few of the second thread's calls, so the bound holds for most calls, not
    /// all. (A plain mutex also passes this pattern on this machine — the busy thread is preempted often
    /// enough; the hand-off test below is the one that fails without the turn-taking.)
    #[test]
    fn a_waiter_gets_in_after_a_slice_of_a_busy_holder() {
        let lock = Arc::new(TurnLock::new(0u64));
        let busy_calls = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let (lock, busy_calls, stop) = (lock.clone(), busy_calls.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    lock.with(|v| {
                        let t = Instant::now();
                        while t.elapsed() < SLICE * 2 {
                            std::hint::spin_loop();
                        }
                        *v += 1;
                    });
                    busy_calls.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        while busy_calls.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // The second thread's calls, and those that waited through at most two busy calls.
        let (mut calls, mut prompt) = (0u32, 0u32);
        while calls < 100 {
            let before = busy_calls.load(Ordering::SeqCst);
            lock.with(|_| ());
            if busy_calls.load(Ordering::SeqCst) - before <= 2 {
                prompt += 1;
            }
            calls += 1;
            std::thread::sleep(Duration::from_micros(100));
        }
        stop.store(true, Ordering::SeqCst);
        busy.join().unwrap();
        assert!(lock.with(|v| *v) > 0);
        assert!(
            prompt >= 75,
            "only {prompt} of {calls} calls got in within two busy calls"
        );
    }

    /// Holds the lock ("holder") while a second thread starts waiting for it ("waiter"), past the end of a
    /// slice, so the holder's release steps aside; returns the waiter's thread.
    fn hold_past_a_slice_with_a_waiter(
        lock: &Arc<TurnLock<Vec<&'static str>>>,
    ) -> std::thread::JoinHandle<()> {
        lock.with(|order| {
            order.push("holder");
            let l = lock.clone();
            let waiter = std::thread::spawn(move || l.with(|order| order.push("waiter")));
            while lock.waiting.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            std::thread::sleep(SLICE);
            waiter
        })
    }

    /// A hand-off is never overtaken, nor left for nobody. A holder steps aside for a waiter; the waiter passes
    /// the gate and, before it reaches the instance, the old holder calls again. It must queue behind the
    /// waiter: when it could get in first (the hand-off was cleared at the gate), it then stepped aside for
    /// that waiter — already on its way in — so nobody ever took that hand-off and the holder's own next call
    /// waited behind it for ever (a hung CI run, session 10). Runs on a helper thread so a hang fails the test.
    #[test]
    fn a_hand_off_is_never_left_for_nobody() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for round in 0..10 {
                let lock = Arc::new(TurnLock::new(Vec::new()));
                lock.pause_past_gate.store(20_000, Ordering::SeqCst);
                let waiter = hold_past_a_slice_with_a_waiter(&lock);
                // The waiter has passed the gate once it is cleared; it then pauses before the instance, and
                // the old holder calls again meanwhile: it must queue behind the waiter.
                while lock.gate.lock().is_some() {
                    std::thread::yield_now();
                }
                lock.with(|order| order.push("holder again"));
                waiter.join().unwrap();
                assert!(
                    !lock.pending.load(Ordering::SeqCst) && lock.gate.lock().is_none(),
                    "round {round}: a hand-off was left pending with nobody waiting"
                );
                assert_eq!(
                    lock.with(|order| order.clone()),
                    ["holder", "waiter", "holder again"],
                    "round {round}"
                );
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the rounds finish, none waiting for ever behind a hand-off");
    }

    /// The hand-off itself, step by step: a holder whose turn is over, and for whom a thread waits, queues
    /// behind that thread when it calls again right away; with a plain mutex its immediate re-lock wins the race
    /// against the parked waiter (it is already running), every time.
    #[test]
    fn a_holder_past_its_slice_queues_behind_the_waiter_when_it_calls_again() {
        for round in 0..20 {
            let lock = Arc::new(TurnLock::new(Vec::new()));
            let waiter = hold_past_a_slice_with_a_waiter(&lock);
            lock.with(|order| order.push("holder again"));
            waiter.join().unwrap();
            assert_eq!(
                lock.with(|order| order.clone()),
                ["holder", "waiter", "holder again"],
                "round {round}"
            );
        }
    }
}
