//! Holding back the tasks of an integration whose app fails every call.
//!
//! An app that does not answer (a timeout, a refused connection, a 5xx) makes each attempt hold
//! one of the pool's slots until it fails, and a large removal for one such integration would
//! take every slot of its app kind: the other integrations' tasks would wait behind attempts
//! that cannot succeed. Once an integration's attempts failed that way `after` times in a row,
//! one of its tasks at a time calls the app (a probe); the others are held back (parked) and
//! look again later. The first attempt the app answers, whatever it answers, ends the hold.
//! The count is per pool and per process: every replica sends its own probe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Debug, Default)]
struct Failing {
    in_a_row: u32,
    last_error: String,
    probing: bool,
}

/// The pool's integrations whose recent attempts all failed.
#[derive(Debug)]
pub(crate) struct Breakers {
    /// Failures in a row after which tasks are held back; 0 never holds any back.
    after: u32,
    failing: Mutex<HashMap<Uuid, Failing>>,
}

/// Why a task is held back: the failures in a row so far and the last one's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldBack {
    pub in_a_row: u32,
    pub last_error: String,
}

/// Leave to call the app, taken before an attempt's calls. Say how they went with
/// [`Ticket::answered`] or [`Ticket::failed`]; a ticket dropped unsaid (the attempt ended
/// before calling, or on a database error) frees the probe for another task.
#[derive(Debug)]
pub(crate) struct Ticket {
    breakers: Arc<Breakers>,
    integration: Uuid,
    probe: bool,
    said: bool,
}

impl Breakers {
    pub(crate) fn new(after: u32) -> Arc<Self> {
        Arc::new(Self { after, failing: Mutex::new(HashMap::new()) })
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Failing>> {
        self.failing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leave for a task of `integration` to call the app, or why it is held back: its app
    /// failed the last `after` attempts and another task is trying it now.
    pub(crate) fn call(self: &Arc<Self>, integration: Uuid) -> Result<Ticket, HeldBack> {
        let mut failing = self.failing();
        let probe = match failing.get_mut(&integration) {
            Some(f) if self.after > 0 && f.in_a_row >= self.after => {
                if f.probing {
                    return Err(HeldBack { in_a_row: f.in_a_row, last_error: f.last_error.clone() });
                }
                f.probing = true;
                true
            }
            _ => false,
        };
        Ok(Ticket { breakers: Arc::clone(self), integration, probe, said: false })
    }

    /// Whether a task of `integration` would be held back now (its app failing, a probe in
    /// flight), asked without taking anything.
    pub(crate) fn holding_back(&self, integration: Uuid) -> bool {
        self.failing().get(&integration).is_some_and(|f| self.after > 0 && f.in_a_row >= self.after && f.probing)
    }

    /// Integrations whose tasks are held back now.
    pub(crate) fn holding(&self) -> usize {
        self.failing().values().filter(|f| self.after > 0 && f.in_a_row >= self.after).count()
    }
}

impl Ticket {
    /// The app answered (success or an answer of its own, a throttle included): the hold ends.
    pub(crate) fn answered(mut self) {
        self.said = true;
        self.breakers.failing().remove(&self.integration);
    }

    /// The app did not answer, or failed on its side.
    pub(crate) fn failed(mut self, error: &str) {
        self.said = true;
        if self.breakers.after == 0 {
            return;
        }
        let mut failing = self.breakers.failing();
        let f = failing.entry(self.integration).or_default();
        f.in_a_row = f.in_a_row.saturating_add(1);
        f.last_error = error.to_string();
        if self.probe {
            f.probing = false;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.probe && !self.said {
            if let Some(f) = self.breakers.failing().get_mut(&self.integration) {
                f.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_at_a_time_tries_an_integration_that_failed_in_a_row() {
        let b = Breakers::new(3);
        let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            b.call(a).expect("not held back yet").failed("timeout");
        }
        // Another integration is not affected.
        let _ = b.call(other).expect("other integration");
        assert!(!b.holding_back(a), "no probe in flight yet");
        let probe = b.call(a).expect("the probe");
        assert!(b.holding_back(a));
        assert!(!b.holding_back(other));
        let held = b.call(a).expect_err("held back while the probe runs");
        assert_eq!(held, HeldBack { in_a_row: 3, last_error: "timeout".into() });
        assert_eq!(b.holding(), 1);
        // The probe failing frees its place for the next probe.
        probe.failed("refused");
        let probe = b.call(a).expect("next probe");
        assert_eq!(b.call(a).expect_err("held").last_error, "refused");
        probe.answered();
        assert_eq!(b.holding(), 0);
        let _first = b.call(a).expect("no hold after an answer");
        let _second = b.call(a).expect("several at once again");
    }

    #[test]
    fn a_probe_that_ends_before_calling_frees_its_place() {
        let b = Breakers::new(1);
        let a = Uuid::new_v4();
        b.call(a).expect("first").failed("timeout");
        drop(b.call(a).expect("probe"));
        let _ = b.call(a).expect("the place is free again");
    }

    #[test]
    fn zero_never_holds_back() {
        let b = Breakers::new(0);
        let a = Uuid::new_v4();
        for _ in 0..10 {
            b.call(a).expect("never held").failed("timeout");
        }
        let _x = b.call(a).expect("never held");
        let _y = b.call(a).expect("never held");
        assert_eq!(b.holding(), 0);
    }
}
