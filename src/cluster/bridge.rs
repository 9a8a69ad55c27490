//! Calls to the API server from the engine's synchronous state traits, each bounded by
//! the decision's deadline ([`crate::budget`]).
//!
//! The kube client is async and runs on the server's runtime. The engine judges a
//! review synchronously, on a runtime worker (small reviews) or a blocking thread
//! (large ones). A call is spawned onto the runtime and the judging thread waits for
//! its answer no longer than the deadline; on a worker it waits inside
//! `block_in_place`, so the worker's other tasks (the kube client's own I/O among
//! them) move to another thread instead of stalling behind the wait.
//!
//! A call that timed out (with a fair share of the budget left) opens a short breaker: for [`BREAKER_OPEN`] the calls that
//! follow do not wait at all, so while the API server is gone each decision answers at
//! once from what is known instead of each spending its whole budget on it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

/// How long calls skip the API server after one timed out.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Runs futures on the runtime for synchronous callers, within deadlines.
#[derive(Debug)]
pub struct Bridge {
    handle: Handle,
    open_until: Mutex<Option<Instant>>,
}

/// A call started with [`Bridge::start`].
#[derive(Debug)]
pub struct Started<T>(Option<mpsc::Receiver<T>>);

/// Why a bounded call has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Late {
    /// The deadline passed first.
    #[error("no answer from the API server within the time budget")]
    TimedOut,
    /// An earlier call timed out moments ago: this one was not tried.
    #[error("the API server did not answer moments ago; not asked again yet")]
    BreakerOpen,
}

impl Bridge {
    /// A bridge onto the runtime behind `handle`.
    pub fn new(handle: Handle) -> Self {
        Self {
            handle,
            open_until: Mutex::new(None),
        }
    }

    /// The runtime, for tasks of their own.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` and waits for it until `deadline`. The future is dropped
    /// (its request cancelled) at the deadline.
    pub fn call<T, F>(&self, deadline: Instant, future: F) -> Result<T, Late>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.wait(deadline, future)
    }

    /// Runs `future` to its end, whenever that is, and waits for it until `deadline`:
    /// for a write that must still happen when the decision can no longer wait.
    pub fn call_detached<T, F>(&self, deadline: Instant, future: F) -> Result<T, Late>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let started = self.start(future);
        self.finish(started, deadline)
    }

    /// Starts `future`, to run to its end; [`Bridge::finish`] waits for it. Several
    /// calls started before any is waited for run at the same time.
    pub fn start<T, F>(&self, future: F) -> Started<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        if self.breaker_open() {
            // Still made, in the background; nobody waits for it.
            self.handle.spawn(future);
            return Started(None);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        Started(Some(rx))
    }

    /// Waits for a started call until `deadline`.
    pub fn finish<T>(&self, started: Started<T>, deadline: Instant) -> Result<T, Late> {
        let Some(rx) = started.0 else {
            return Err(Late::BreakerOpen);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.receive(rx, remaining)
    }

    /// Waits for a started call until `deadline` like [`Bridge::finish`], but a wait
    /// that runs out opens no breaker: for a write that is queued behind others (a
    /// group commit), whose lateness says the writes are busy, not that the API server
    /// is gone. Failing calls still open it where they are seen.
    pub fn finish_without_breaker<T>(
        &self,
        started: Started<T>,
        deadline: Instant,
    ) -> Result<T, Late> {
        let Some(rx) = started.0 else {
            return Err(Late::BreakerOpen);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let receive = move || rx.recv_timeout(remaining).ok();
        let answer = match Handle::try_current() {
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(receive)
            }
            _ => receive(),
        };
        answer.ok_or(Late::TimedOut)
    }

    /// [`Bridge::finish_without_breaker`] that goes on waiting past `deadline`, up to
    /// `longest`, for as long as `alive` says the API server answers other calls (the
    /// write is queued behind others, as behind another identity's flood), asking
    /// every 100 ms. A hung API server answers none, so it costs only `deadline`.
    pub fn finish_while_alive<T>(
        &self,
        started: Started<T>,
        deadline: Instant,
        longest: Instant,
        alive: impl Fn() -> bool,
    ) -> Result<T, Late> {
        let Some(rx) = started.0 else {
            return Err(Late::BreakerOpen);
        };
        let mut until = deadline;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let receive = || rx.recv_timeout(remaining);
            let answer = match Handle::try_current() {
                Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(receive)
                }
                _ => receive(),
            };
            match answer {
                Ok(out) => return Ok(out),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Late::TimedOut),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if now >= longest || !alive() {
                        return Err(Late::TimedOut);
                    }
                    until = (now + Duration::from_millis(100)).min(longest);
                }
            }
        }
    }

    /// Whether a call would be skipped now.
    pub fn breaker_open(&self) -> bool {
        let open_until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        open_until.is_some_and(|t| Instant::now() < t)
    }

    /// Notes that the API server failed to answer (a timeout, or a connection error
    /// seen by the caller): calls skip it for [`BREAKER_OPEN`].
    pub fn trip(&self) {
        let mut open_until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        *open_until = Some(Instant::now() + BREAKER_OPEN);
    }

    fn reset(&self) {
        let mut open_until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        *open_until = None;
    }

    fn wait<T, F>(&self, deadline: Instant, future: F) -> Result<T, Late>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        if self.breaker_open() {
            return Err(Late::BreakerOpen);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (tx, rx) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            if let Ok(out) = tokio::time::timeout(remaining, future).await {
                // The waiter may have given up; the answer then has nowhere to go.
                let _ = tx.send(out);
            }
        });
        self.receive(rx, remaining)
    }

    /// Waits on the judging thread for an answer, no longer than `remaining`.
    fn receive<T>(&self, rx: mpsc::Receiver<T>, remaining: Duration) -> Result<T, Late> {
        let receive = move || rx.recv_timeout(remaining).ok();
        let answer = match Handle::try_current() {
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(receive)
            }
            // A plain thread, or a blocking-pool thread of a runtime: waiting here
            // stalls no task.
            _ => receive(),
        };
        match answer {
            Some(out) => {
                self.reset();
                Ok(out)
            }
            None => {
                // A wait cut short because the decision had little budget left says
                // nothing about the API server; one that had a fair share of it does.
                if remaining >= crate::budget::per_decision() / 4 {
                    self.trip();
                }
                Err(Late::TimedOut)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn answers_in_time_and_gives_up_at_the_deadline() {
        let rt = runtime();
        let bridge = Bridge::new(rt.handle().clone());
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(bridge.call(soon, async { 7 }), Ok(7));

        let started = Instant::now();
        let late = bridge.call(started + Duration::from_millis(100), async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            1
        });
        assert_eq!(late, Err(Late::TimedOut));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "waited {waited:?} past a 100 ms deadline"
        );

        // The breaker: the next call is not even tried.
        let started = Instant::now();
        assert_eq!(
            bridge.call(started + Duration::from_secs(5), async { 2 }),
            Err(Late::BreakerOpen)
        );
        assert!(started.elapsed() < Duration::from_millis(50));
        std::thread::sleep(BREAKER_OPEN);
        assert_eq!(
            bridge.call(Instant::now() + Duration::from_secs(5), async { 3 }),
            Ok(3)
        );

        // A wait cut short by a nearly spent budget opens no breaker.
        let late = bridge.call(Instant::now() + Duration::from_millis(5), async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            4
        });
        assert_eq!(late, Err(Late::TimedOut));
        assert!(!bridge.breaker_open());
    }

    #[test]
    fn a_detached_call_finishes_after_its_caller_gave_up() {
        let rt = runtime();
        let bridge = Bridge::new(rt.handle().clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let late = bridge.call_detached(Instant::now() + Duration::from_millis(20), async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send("written");
        });
        assert_eq!(late, Err(Late::TimedOut));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("written"));
    }

    #[test]
    fn a_call_from_a_blocking_thread_of_the_runtime_waits_there() {
        // Large reviews are judged with spawn_blocking.
        let rt = runtime();
        let bridge = std::sync::Arc::new(Bridge::new(rt.handle().clone()));
        let b = bridge.clone();
        let task =
            rt.spawn_blocking(move || b.call(Instant::now() + Duration::from_secs(5), async { 5 }));
        assert_eq!(rt.block_on(task).unwrap(), Ok(5));
    }

    #[test]
    fn a_call_from_a_runtime_worker_does_not_stall_the_runtime() {
        // Both workers judge at once and each waits on a call that needs a worker to
        // run: block_in_place hands their queues over, so neither call starves.
        let rt = runtime();
        let bridge = std::sync::Arc::new(Bridge::new(rt.handle().clone()));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let bridge = bridge.clone();
                rt.spawn(async move {
                    bridge.call(Instant::now() + Duration::from_secs(5), async move {
                        tokio::task::yield_now().await;
                        i
                    })
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(rt.block_on(task).unwrap(), Ok(i));
        }
    }
}
