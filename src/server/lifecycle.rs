//! Transient states, as an option (`serve --create-delay-ms/--update-delay-ms/--delete-delay-ms`,
//! all 0 by default): a stream is `CREATING` for a while after CreateStream, `UPDATING` after a
//! reshard or a settings change, `DELETING` before DeleteStream takes effect, and a registered
//! consumer is `CREATING` at first, so a client's waiters and retry logic can be tested as
//! against AWS. The store itself changes at once; only what the API reports, and what it lets a
//! client do meanwhile, follow the clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long each transient state lasts (zero: none, AWS's states are skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransientStates {
    /// A new stream (and a new consumer) is `CREATING` this long.
    pub create: Duration,
    /// A stream is `UPDATING` this long after a change.
    pub update: Duration,
    /// A stream is `DELETING` this long before it is deleted.
    pub delete: Duration,
}

/// A stream's transient state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Creating,
    Updating,
    Deleting,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Creating => "CREATING",
            State::Updating => "UPDATING",
            State::Deleting => "DELETING",
        }
    }
}

/// The streams and consumers in a transient state, and until when.
#[derive(Default)]
pub(crate) struct Lifecycle {
    delays: TransientStates,
    streams: Mutex<HashMap<String, (State, Instant)>>,
    /// Consumers `CREATING`, by ARN.
    consumers: Mutex<HashMap<String, Instant>>,
    /// Whether anything may be in a transient state (the hot path checks only this).
    busy: AtomicBool,
}

impl Lifecycle {
    pub fn new(delays: TransientStates) -> Lifecycle {
        Lifecycle {
            delays,
            ..Lifecycle::default()
        }
    }

    /// Whether no stream or consumer is (or may be) in a transient state.
    pub fn quiet(&self) -> bool {
        !self.busy.load(Ordering::Acquire)
    }

    /// Puts `stream` in `state` for its configured time; `false` when that time is zero.
    pub fn begin(&self, stream: &str, state: State) -> bool {
        let delay = match state {
            State::Creating => self.delays.create,
            State::Updating => self.delays.update,
            State::Deleting => self.delays.delete,
        };
        if delay.is_zero() {
            return false;
        }
        self.busy.store(true, Ordering::Release);
        lock(&self.streams).insert(stream.to_string(), (state, Instant::now() + delay));
        true
    }

    /// A new consumer `CREATING` for the create delay.
    pub fn begin_consumer(&self, arn: &str) {
        if self.delays.create.is_zero() {
            return;
        }
        self.busy.store(true, Ordering::Release);
        lock(&self.consumers).insert(arn.to_string(), Instant::now() + self.delays.create);
    }

    /// The state `stream` is in now, if a transient one.
    pub fn state(&self, stream: &str) -> Option<State> {
        if self.quiet() {
            return None;
        }
        let now = Instant::now();
        lock(&self.streams)
            .get(stream)
            .filter(|(_, until)| *until > now)
            .map(|(state, _)| *state)
    }

    /// Whether the consumer `arn` is still `CREATING`.
    pub fn consumer_creating(&self, arn: &str) -> bool {
        !self.quiet()
            && lock(&self.consumers)
                .get(arn)
                .is_some_and(|until| *until > Instant::now())
    }

    /// Forgets the states that are over; returns the streams whose `DELETING` is over, for the
    /// caller to delete now.
    pub fn settle(&self) -> Vec<String> {
        if self.quiet() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        let deleted: Vec<String> = streams
            .iter()
            .filter(|(_, (state, until))| *state == State::Deleting && *until <= now)
            .map(|(name, _)| name.clone())
            .collect();
        streams.retain(|_, (_, until)| *until > now);
        let mut consumers = lock(&self.consumers);
        consumers.retain(|_, until| *until > now);
        if streams.is_empty() && consumers.is_empty() {
            self.busy.store(false, Ordering::Release);
        }
        deleted
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_last_their_delay_and_deletions_come_due() {
        let life = Lifecycle::new(TransientStates {
            create: Duration::from_millis(30),
            update: Duration::ZERO,
            delete: Duration::from_millis(30),
        });
        assert!(life.quiet());
        assert!(!life.begin("a", State::Updating), "no update delay");
        assert!(life.begin("a", State::Creating));
        assert!(life.begin("b", State::Deleting));
        life.begin_consumer("arn:c");
        assert_eq!(life.state("a"), Some(State::Creating));
        assert!(life.consumer_creating("arn:c"));
        assert!(life.settle().is_empty(), "nothing due yet");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(life.state("a"), None);
        assert!(!life.consumer_creating("arn:c"));
        assert_eq!(life.settle(), ["b"]);
        assert!(life.quiet());
    }
}
