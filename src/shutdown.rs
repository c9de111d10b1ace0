//! A stop signal for background threads that wake up on an interval.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Set once by the owner when it closes; background threads sleep on it between passes.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Shutdown {
    /// Sleeps up to `interval`; returns whether the owner asked to stop meanwhile (at once if
    /// it already had).
    pub(crate) fn wait(&self, interval: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, interval, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }

    /// Asks every waiting thread to stop, and wakes it.
    pub(crate) fn signal(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }
}
