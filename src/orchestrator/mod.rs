//! The run engine: a shared queue of batches, one worker per sandbox, reactive retries,
//! verdicts, cancellation.
//!
//! [`engine`] owns the run state and the workers; [`batch`] executes one batch in one
//! sandbox and maps its results back to tests; [`events`] is what the engine tells its
//! subscribers as the run goes, and [`progress`] is the subscriber that shows how far
//! the run is; [`warm`] starts resident workers while the tests are discovered. See
//! `DESIGN.md` beside this file for the life of a run and its invariants.

mod batch;
mod engine;
mod events;
pub(crate) mod progress;
mod warm;

pub(crate) use engine::{EngineOutcome, EngineSettings, run};
pub(crate) use warm::{HeadStart, WarmUp};
