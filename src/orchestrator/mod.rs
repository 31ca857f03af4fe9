//! The run engine: a shared queue of batches, one worker per sandbox, reactive retries,
//! verdicts, cancellation.
//!
//! [`engine`] owns the run state and the workers; [`batch`] executes one batch in one
//! sandbox and maps its results back to tests; [`progress`] shows how far the run is.
//! See `DESIGN.md` beside this file for the life of a run and its invariants.

pub mod batch;
pub mod engine;
pub mod progress;

pub use engine::{EngineOutcome, EngineSettings};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::framework::{Framework, TestRecord};
use crate::provider::Provider;
use crate::report::junit::{CaseOutcome, Detail, TestCase};
use crate::report::verdict::{Attempt, TestResult, Verdict};
use progress::Progress;

/// The `type` of the skip of a test the runner lists but does not run unless asked.
pub const IGNORED_KIND: &str = "offload.Ignored";

/// Runs `records` (unique IDs): the ignored ones (see [`TestRecord::ignored`]) are
/// skipped at once, the others go through [`engine::run`].
pub async fn run(
    records: Vec<TestRecord>,
    framework: Arc<dyn Framework>,
    provider: Arc<dyn Provider>,
    settings: &EngineSettings,
    interrupt: &CancellationToken,
    progress: &mut Progress,
) -> EngineOutcome {
    let (ignored, runnable): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.ignored);
    for _ in &ignored {
        progress.test_decided(Verdict::Skipped);
    }
    let mut outcome =
        engine::run(runnable, framework, provider, settings, interrupt, progress).await;
    outcome.results.extend(ignored.into_iter().map(|record| {
        let case = TestCase {
            name: record.id.clone(),
            outcome: CaseOutcome::Skipped(Detail {
                message: Some(
                    "ignored (`#[ignore]`); `include_ignored = true` in `[framework]` runs it"
                        .to_owned(),
                ),
                kind: Some(IGNORED_KIND.to_owned()),
                body: String::new(),
            }),
            ..TestCase::default()
        };
        TestResult {
            id: record.id,
            group: record.group,
            verdict: Verdict::Skipped,
            attempts: vec![Attempt { case, batch: 0 }],
        }
    }));
    outcome
}
