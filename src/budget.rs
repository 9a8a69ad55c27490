//! The time one admission decision may spend on the API server, and what it could not
//! read within it.
//!
//! The engine's state traits ([`crate::change_sets::ChangeSets`],
//! [`crate::approval::WorkloadAnnotations`], [`crate::policy::NamespaceLabels`]) are
//! synchronous and know nothing of decisions. So the engine opens a [`Scope`] for each
//! AI-assisted decision: a deadline, on the judging thread, that every cluster read and
//! write of that decision shares (so their waits add up to at most the budget, never
//! the budget each), and a note of what could not be read in time, which the engine
//! turns into the decision's [`crate::verdict::Unavailable`]. Outside a scope (tests,
//! tools), each call gets the whole budget for itself.
//!
//! The engine judges one review on one thread from start to end, which is what makes a
//! thread-local the right carrier here.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default budget: all the API-server calls of one decision together. The API
/// server gives the webhook seconds (the chart's timeoutSeconds is 3); a decision
/// that waits longer than this on the API server decides with what it knows instead.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(200);

/// Most notes kept per decision: the message stays one readable line.
const MAX_NOTES: usize = 4;

static BUDGET_MICROS: AtomicU64 = AtomicU64::new(DEFAULT_BUDGET.as_micros() as u64);

/// Sets the budget of every decision from now on (`serve --api-budget`).
pub fn set_per_decision(budget: Duration) {
    let micros = u64::try_from(budget.as_micros()).unwrap_or(u64::MAX);
    BUDGET_MICROS.store(micros, Ordering::Relaxed);
}

/// The budget of one decision.
pub fn per_decision() -> Duration {
    Duration::from_micros(BUDGET_MICROS.load(Ordering::Relaxed))
}

struct Current {
    deadline: Instant,
    unavailable: Vec<String>,
    /// Waits for calls started by the decision (its change-set writes), run when it
    /// ends: the writes of all its keys go out together and are waited for once.
    deferred: Vec<Deferred>,
}

/// A wait deferred to the end of the decision; given the decision's deadline.
pub type Deferred = Box<dyn FnOnce(Instant)>;

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// One decision's budget, open on this thread until dropped.
#[must_use = "the budget ends when the scope is dropped"]
pub struct Scope {
    previous: Option<Current>,
    // The scope belongs to the thread that opened it.
    _not_send: PhantomData<*const ()>,
}

impl Scope {
    /// Opens a scope whose deadline is [`per_decision`] from now.
    pub fn begin() -> Scope {
        let current = Current {
            deadline: Instant::now() + per_decision(),
            unavailable: Vec::new(),
            deferred: Vec::new(),
        };
        let previous = CURRENT.with(|c| c.replace(Some(current)));
        Scope {
            previous,
            _not_send: PhantomData,
        }
    }

    /// What this decision could not read from the API server in time, joined into
    /// one phrase; `None` when everything it asked for was answered.
    pub fn unavailable(&self) -> Option<String> {
        CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|c| !c.unavailable.is_empty())
                .map(|c| c.unavailable.join(" and "))
        })
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // The deferred waits run outside the borrow: they may use the scope too.
        let (deadline, deferred) = CURRENT.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(|c| (c.deadline, std::mem::take(&mut c.deferred)))
                .unwrap_or_else(|| (Instant::now(), Vec::new()))
        });
        for wait in deferred {
            wait(deadline);
        }
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Defers `wait` to the end of the current decision, which runs it with its deadline.
/// Outside a decision it runs at once, with a whole budget.
pub fn defer(wait: Deferred) {
    let not_deferred = CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(current) => {
            current.deferred.push(wait);
            None
        }
        None => Some(wait),
    });
    if let Some(wait) = not_deferred {
        wait(Instant::now() + per_decision());
    }
}

/// When the current decision must stop waiting on the API server: its scope's
/// deadline, or a whole budget from now outside a scope.
pub fn deadline() -> Instant {
    CURRENT
        .with(|c| c.borrow().as_ref().map(|c| c.deadline))
        .unwrap_or_else(|| Instant::now() + per_decision())
}

/// Notes that the current decision could not read `what` (e.g. `the labels of
/// namespace team-a`). Outside a scope there is no decision to tell, and nothing
/// happens.
pub fn note_unavailable(what: impl Into<String>) {
    CURRENT.with(|c| {
        if let Some(current) = c.borrow_mut().as_mut() {
            let what = what.into();
            if current.unavailable.len() < MAX_NOTES && !current.unavailable.contains(&what) {
                current.unavailable.push(what);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_collects_what_its_decision_could_not_read() {
        note_unavailable("ignored outside a scope");
        let scope = Scope::begin();
        assert_eq!(scope.unavailable(), None);
        let deadline = deadline();
        assert!(deadline <= Instant::now() + per_decision());
        note_unavailable("the labels of namespace a");
        note_unavailable("the labels of namespace a");
        note_unavailable("change set user:bot");
        assert_eq!(
            scope.unavailable().as_deref(),
            Some("the labels of namespace a and change set user:bot")
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(super::deadline(), deadline, "one deadline per decision");
        drop(scope);
        let next = Scope::begin();
        assert_eq!(next.unavailable(), None, "a new decision starts clean");
        assert!(super::deadline() > deadline);
    }

    #[test]
    fn deferred_waits_run_when_the_decision_ends() {
        use std::cell::Cell;
        use std::rc::Rc;
        let ran = Rc::new(Cell::new(0));
        let scope = Scope::begin();
        let deadline = deadline();
        for _ in 0..2 {
            let ran = ran.clone();
            defer(Box::new(move |d| {
                assert_eq!(d, deadline, "with the decision's deadline");
                ran.set(ran.get() + 1);
            }));
        }
        assert_eq!(ran.get(), 0);
        drop(scope);
        assert_eq!(ran.get(), 2);
        let at_once = ran.clone();
        defer(Box::new(move |_| at_once.set(at_once.get() + 1)));
        assert_eq!(ran.get(), 3, "outside a decision: at once");
    }

    #[test]
    fn notes_are_bounded() {
        let scope = Scope::begin();
        for i in 0..10 {
            note_unavailable(format!("thing {i}"));
        }
        assert_eq!(
            scope.unavailable().unwrap().matches(" and ").count(),
            MAX_NOTES - 1
        );
    }
}
