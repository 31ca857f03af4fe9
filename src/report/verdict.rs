//! The per-test outcome model: attempts and final verdicts.

use super::junit::TestCase;

/// The final verdict of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Passed on its first attempt.
    Passed,
    /// Failed on every attempt.
    Failed,
    /// Failed, then passed on a retry.
    Flaky,
    /// Skipped by the test runner.
    Skipped,
    /// Never produced a result (see the reason on its last attempt).
    NotRun,
}

/// One execution of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The test case as read from JUnit, with `name` set to the canonical ID and no
    /// classname; for attempts without a result, a synthesized case whose outcome
    /// carries the reason.
    pub case: TestCase,
    /// The batch it ran in.
    pub batch: usize,
}

/// Everything known about one test at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// The canonical ID.
    pub id: String,
    /// The group that selected it.
    pub group: String,
    /// The final verdict.
    pub verdict: Verdict,
    /// Every attempt, in the order they finished.
    pub attempts: Vec<Attempt>,
}
