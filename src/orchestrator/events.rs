//! What the coordinator tells the rest of the program while a run goes on.
//!
//! The coordinator ([`super::engine`]) decides; it neither displays nor records.
//! Whatever follows a run — the progress display, and any later consumer such as a
//! history of durations or a stream of JSON lines — implements [`Subscriber`] and is
//! handed to [`super::run`]. Events arrive in the order things happen, on the
//! coordinator's task: a subscriber must return quickly (no blocking I/O of unbounded
//! length), or it holds up the run.

use std::time::Duration;

use crate::report::junit::CaseOutcome;
use crate::report::verdict::{Attempt, Verdict};

/// One thing that happened in a run.
#[derive(Debug)]
pub(crate) enum RunEvent<'a> {
    /// The tests are planned into batches; first of all events.
    Planned {
        /// How long the run should take, from the known durations; `None` when no
        /// duration is known.
        expected: Option<Duration>,
    },
    /// Batch `number`, holding `tests` tests, was handed to a sandbox.
    BatchStarted {
        /// The run-wide batch number (the log files are named after it).
        number: usize,
        /// How many tests it holds.
        tests: usize,
    },
    /// A test of a running batch started, as its runner said (not every runner says:
    /// see [`crate::framework::live`]).
    TestStarted {
        /// The test's ID, as discovered.
        id: &'a str,
    },
    /// A test of a running batch finished, as its runner said while the batch went
    /// on. Provisional: the batch's result file may add details, and the attempt is
    /// recorded when the batch ends ([`RunEvent::AttemptFinished`], `announced`).
    TestFinished {
        /// The test's ID, as discovered.
        id: &'a str,
        /// How it ended, with the one-line reason when it did not pass.
        outcome: &'a CaseOutcome,
        /// How long it took, in seconds.
        time: f64,
        /// Which attempt of the test this is (1 for the first run).
        number: usize,
        /// Whether a failure now would be retried.
        retries_left: bool,
    },
    /// One attempt of a test came back from its batch. A test that is retried has
    /// several; the last one is followed by [`RunEvent::TestDecided`].
    AttemptFinished {
        /// The test's ID, as discovered.
        id: &'a str,
        /// What the attempt produced.
        attempt: &'a Attempt,
        /// Which attempt of the test this is (1 for the first run).
        number: usize,
        /// The test goes again (it failed with retries left).
        retried: bool,
        /// A [`RunEvent::TestFinished`] already told of this attempt.
        announced: bool,
    },
    /// Batch `number` ended; its attempts were told just before.
    BatchFinished {
        /// The run-wide batch number.
        number: usize,
    },
    /// A test reached its final verdict; no attempt of it follows.
    TestDecided {
        /// The test's ID, as discovered.
        id: &'a str,
        /// The verdict.
        verdict: Verdict,
    },
    /// About once a second while the run goes on, for whatever a subscriber shows by
    /// time (slow tests, a heartbeat).
    Tick,
    /// The run stops early (fail-fast or a signal): no batch starts any more and the
    /// running ones are cancelled. Tests without a verdict get "not run" afterwards,
    /// each announced by [`RunEvent::TestDecided`].
    Stopping {
        /// Why, as the not-run tests' reason says it.
        reason: &'a str,
    },
}

/// Something that follows a run through its events.
pub(crate) trait Subscriber: Send {
    /// Called for every event, in order.
    fn notify(&mut self, event: &RunEvent<'_>);
}

/// Follows nothing: for runs nobody watches.
impl Subscriber for () {
    fn notify(&mut self, _: &RunEvent<'_>) {}
}
