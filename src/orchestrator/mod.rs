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

/// What the engine's and the warm-ups' tests run instead of a real framework.
#[cfg(test)]
mod fakes {
    use anyhow::{Result, bail};

    use crate::framework::{BatchCommand, BatchPaths, Discovered, Framework};
    use crate::process::{CapturedOutput, CommandSpec};

    /// Runs `fake TEST...` with the result path in `RESULT`; discovers nothing and has
    /// no resident worker.
    pub(super) struct FakeFramework;

    impl Framework for FakeFramework {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn discover_command(&self, _: &str) -> Result<CommandSpec> {
            bail!("not used")
        }
        fn parse_discovery(&self, _: &CommandSpec, _: &CapturedOutput) -> Result<Discovered> {
            bail!("not used")
        }
        fn batch_command(
            &self,
            tests: &[String],
            paths: &BatchPaths,
            _: bool,
        ) -> Result<BatchCommand> {
            Ok(CommandSpec::new("fake")
                .args(tests)
                .env("RESULT", &paths.result)
                .into())
        }
        fn junit_key<'a>(&self, name: &'a str, _: Option<&'a str>) -> std::borrow::Cow<'a, str> {
            std::borrow::Cow::Borrowed(name)
        }
    }
}
