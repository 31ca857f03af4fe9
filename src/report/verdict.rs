//! The per-test outcome model: attempts and final verdicts.
//!
//! The orchestrator produces one [`TestResult`] per scheduled test: the group that
//! selected it, every [`Attempt`] (one execution, as read back from JUnit), and the final
//! [`Verdict`]. The merged report ([`super::junit::write_merged`]) and the summary
//! ([`super::summary`]) only read this model; they never decide verdicts.
//!
//! # Attempts without a result ("not run")
//!
//! A test that never produced a result still gets an [`Attempt`], synthesized by the
//! orchestrator with [`Attempt::not_run`]: its case outcome is
//! `CaseOutcome::Error(Detail { message: Some(reason), kind: Some(NOT_RUN_KIND), .. })`,
//! where `reason` says why, in a few words (`"sandbox died"`, `"no result in the JUnit
//! file"`, ...). The merged report writes it as
//! `<error type="offload.NotRun" message="not run: <reason>">`, and `offload logs` shows
//! it under `--errors`.
//!
//! A test that timed out is *failed*, not "not run": its attempt is a
//! `CaseOutcome::Failed` of type `offload.Timeout` whose message says "timed out after
//! N s".
//!
//! # Failures and errors
//!
//! Test runners tell a failed assertion (`<failure>`) from an error outside the test's
//! body (`<error>`: a fixture that raised during setup or teardown, say). The kind is
//! kept: a test whose deciding attempt (see [`TestResult::final_attempt_index`]) is an
//! error ends [`Verdict::Errored`], and the merged report writes it as `<error>` again.

use super::junit::NOT_RUN_KIND;
use super::junit::{CaseOutcome, Detail, TestCase};

/// The final verdict of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Verdict {
    /// Passed on its first attempt.
    Passed,
    /// Failed on every attempt, the deciding one a failure.
    Failed,
    /// Failed on every attempt, the deciding one an error (setup, teardown, collection):
    /// the runner's `<error>`, as opposed to an assertion's `<failure>`.
    Errored,
    /// Failed, then passed on a retry.
    Flaky,
    /// Skipped by the test runner.
    Skipped,
    /// Never produced a result (see the reason on its last attempt).
    NotRun,
}

impl Verdict {
    /// The verdict a testcase of a merged report (see [`super::junit::write_merged`])
    /// stands for: `<failure>` is failed, the `offload.NotRun` `<error>` is not run, any
    /// other `<error>` is errored, `<skipped>` is skipped, and a pass with
    /// `<flakyFailure>` / `<flakyError>` children is flaky.
    pub(crate) fn of_report_case(case: &TestCase) -> Self {
        match &case.outcome {
            CaseOutcome::Failed(_) => Self::Failed,
            outcome @ CaseOutcome::Error(_) if outcome.is_not_run() => Self::NotRun,
            CaseOutcome::Error(_) => Self::Errored,
            CaseOutcome::Skipped(_) => Self::Skipped,
            CaseOutcome::Passed if case.reruns.iter().any(|r| r.kind.is_flaky()) => Self::Flaky,
            CaseOutcome::Passed => Self::Passed,
        }
    }

    /// The verdict of a test whose attempts all failed (`attempts` non-empty): not run
    /// when none of them produced a result, else errored or failed after the kind of the
    /// last attempt that produced one.
    pub(crate) fn of_failed_attempts(attempts: &[Attempt]) -> Self {
        match attempts.iter().rev().find(|a| !a.is_not_run()) {
            None => Self::NotRun,
            Some(a) if matches!(a.case.outcome, CaseOutcome::Error(_)) => Self::Errored,
            Some(_) => Self::Failed,
        }
    }
}

/// One execution of one test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attempt {
    /// The test case as read from JUnit, with `name` set to the canonical ID; `classname`
    /// keeps the framework's original when known (the merged report writes it). For
    /// attempts without a result, a case synthesized by [`Attempt::not_run`].
    pub(crate) case: TestCase,
    /// The batch it ran in.
    pub(crate) batch: usize,
}

impl Attempt {
    /// The attempt of a test that produced no result, for the reason given
    /// (see the module docs for the convention).
    pub(crate) fn not_run(id: &str, reason: impl Into<String>, batch: usize) -> Self {
        Self {
            case: TestCase {
                name: id.to_owned(),
                outcome: CaseOutcome::Error(Detail {
                    message: Some(reason.into()),
                    kind: Some(NOT_RUN_KIND.to_owned()),
                    body: String::new(),
                }),
                ..TestCase::default()
            },
            batch,
        }
    }

    /// Whether this attempt failed or errored (skipped and passed are not failures).
    fn is_failure(&self) -> bool {
        self.case.outcome.is_failure()
    }

    /// Whether this attempt is a synthesized "not run" one.
    pub(crate) fn is_not_run(&self) -> bool {
        self.case.outcome.is_not_run()
    }
}

/// Everything known about one test at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TestResult {
    /// The canonical ID.
    pub(crate) id: String,
    /// The group that selected it.
    pub(crate) group: String,
    /// The final verdict.
    pub(crate) verdict: Verdict,
    /// Every attempt, in the order they finished.
    pub(crate) attempts: Vec<Attempt>,
}

impl TestResult {
    /// The index of the attempt that decided the verdict: the last passing attempt of a
    /// passed or flaky test, the last failing one of a failed test (one with a result if
    /// any), the last skipped one of
    /// a skipped test, the last attempt otherwise. `None` when there are no attempts.
    fn final_attempt_index(&self) -> Option<usize> {
        let last_where = |pred: &dyn Fn(&Attempt) -> bool| self.attempts.iter().rposition(pred);
        let found = match self.verdict {
            Verdict::Passed | Verdict::Flaky => {
                last_where(&|a| matches!(a.case.outcome, CaseOutcome::Passed))
            }
            // A real failure says more than a later attempt that produced no result.
            Verdict::Failed | Verdict::Errored => {
                last_where(&|a| a.is_failure() && !a.is_not_run())
                    .or_else(|| last_where(&|a| a.is_failure()))
            }
            Verdict::Skipped => last_where(&|a| matches!(a.case.outcome, CaseOutcome::Skipped(_))),
            Verdict::NotRun => None,
        };
        found.or_else(|| self.attempts.len().checked_sub(1))
    }

    /// The attempt that decided the verdict (see [`Self::final_attempt_index`]).
    pub(super) fn final_attempt(&self) -> Option<&Attempt> {
        self.final_attempt_index().map(|i| &self.attempts[i])
    }

    /// The time of the attempt that decided the verdict, in seconds.
    pub(crate) fn deciding_time(&self) -> Option<f64> {
        self.final_attempt().map(|a| a.case.time)
    }

    /// Every failed attempt other than the final one, in order.
    pub(super) fn earlier_failures(&self) -> impl Iterator<Item = &Attempt> {
        let last = self.final_attempt_index();
        self.attempts
            .iter()
            .enumerate()
            .filter(move |(i, a)| Some(*i) != last && a.is_failure())
            .map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: CaseOutcome, batch: usize) -> Attempt {
        Attempt {
            case: TestCase {
                name: "t".into(),
                outcome,
                ..TestCase::default()
            },
            batch,
        }
    }

    fn failed(msg: &str) -> CaseOutcome {
        CaseOutcome::Failed(Detail {
            message: Some(msg.into()),
            ..Detail::default()
        })
    }

    fn result(verdict: Verdict, attempts: Vec<Attempt>) -> TestResult {
        TestResult {
            id: "t".into(),
            group: "g".into(),
            verdict,
            attempts,
        }
    }

    #[test]
    fn not_run_attempts_follow_the_convention() {
        let a = Attempt::not_run("x::y", "sandbox died", 3);
        assert_eq!(a.case.name, "x::y");
        assert_eq!(a.batch, 3);
        assert!(a.is_not_run());
        assert!(a.is_failure());
        match &a.case.outcome {
            CaseOutcome::Error(d) => {
                assert_eq!(d.message.as_deref(), Some("sandbox died"));
                assert_eq!(d.kind.as_deref(), Some(NOT_RUN_KIND));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn verdicts_survive_the_merged_report() {
        use crate::report::junit::{parse, render_merged};
        let results: Vec<TestResult> = [
            (Verdict::Passed, vec![attempt(CaseOutcome::Passed, 0)]),
            (
                Verdict::Flaky,
                vec![attempt(failed("x"), 0), attempt(CaseOutcome::Passed, 1)],
            ),
            (Verdict::Failed, vec![attempt(failed("x"), 0)]),
            (
                Verdict::Errored,
                vec![attempt(CaseOutcome::Error(Detail::default()), 0)],
            ),
            (
                Verdict::Errored,
                vec![
                    attempt(failed("x"), 0),
                    attempt(CaseOutcome::Error(Detail::default()), 1),
                ],
            ),
            (
                Verdict::Failed,
                vec![
                    attempt(CaseOutcome::Error(Detail::default()), 0),
                    attempt(failed("x"), 1),
                ],
            ),
            (
                Verdict::Skipped,
                vec![attempt(CaseOutcome::Skipped(Detail::default()), 0)],
            ),
            (Verdict::NotRun, vec![Attempt::not_run("t", "gone", 0)]),
            (Verdict::NotRun, vec![]),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (verdict, attempts))| TestResult {
            id: format!("t{i}"),
            group: "g".into(),
            verdict,
            attempts,
        })
        .collect();
        let framework = crate::framework::cargo::Cargo::new(&Default::default());
        let run = crate::report::junit::RunInfo {
            started: std::time::SystemTime::now(),
            hostname: "h",
            framework: Some(&framework),
            properties: &[],
        };
        let xml = render_merged(&results, &run);
        let back: Vec<Verdict> = parse(&xml).unwrap()[0]
            .cases
            .iter()
            .map(Verdict::of_report_case)
            .collect();
        let expected: Vec<Verdict> = results.iter().map(|r| r.verdict).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn final_attempt_of_a_flaky_test_is_the_pass() {
        let r = result(
            Verdict::Flaky,
            vec![
                attempt(failed("one"), 0),
                attempt(CaseOutcome::Passed, 1),
                attempt(failed("late"), 2),
            ],
        );
        assert_eq!(r.final_attempt_index(), Some(1));
        let earlier: Vec<_> = r.earlier_failures().map(|a| a.batch).collect();
        assert_eq!(earlier, vec![0, 2]);
    }

    #[test]
    fn final_attempt_of_a_failed_test_is_the_last_failure() {
        let r = result(
            Verdict::Failed,
            vec![attempt(failed("one"), 0), attempt(failed("two"), 1)],
        );
        assert_eq!(r.final_attempt_index(), Some(1));
        assert_eq!(r.earlier_failures().count(), 1);
    }

    #[test]
    fn final_attempt_of_a_failed_test_prefers_a_real_failure() {
        let r = result(
            Verdict::Failed,
            vec![attempt(failed("real"), 0), Attempt::not_run("t", "gone", 1)],
        );
        assert_eq!(r.final_attempt_index(), Some(0));
        let earlier: Vec<_> = r.earlier_failures().map(|a| a.batch).collect();
        assert_eq!(earlier, vec![1]);
    }

    #[test]
    fn failed_attempts_keep_the_kind_of_the_last_real_one() {
        let error = || attempt(CaseOutcome::Error(Detail::default()), 0);
        let gone = || Attempt::not_run("t", "gone", 1);
        assert_eq!(
            Verdict::of_failed_attempts(&[error(), gone()]),
            Verdict::Errored
        );
        assert_eq!(
            Verdict::of_failed_attempts(&[error(), attempt(failed("x"), 1)]),
            Verdict::Failed
        );
        assert_eq!(
            Verdict::of_failed_attempts(&[gone(), gone()]),
            Verdict::NotRun
        );
    }

    #[test]
    fn final_attempt_falls_back_to_the_last_one() {
        let r = result(
            Verdict::NotRun,
            vec![attempt(failed("one"), 0), Attempt::not_run("t", "gone", 1)],
        );
        assert_eq!(r.final_attempt_index(), Some(1));
        assert_eq!(result(Verdict::NotRun, vec![]).final_attempt_index(), None);
    }
}
