//! What `offload logs` shows: one entry per test of a merged report, filtered and rendered.
//!
//! [`entries`] reduces parsed suites to one [`LogEntry`] per test ID, [`LogFilter`] keeps
//! the ones asked for and [`render_entry`] formats one. Reading files, the config and exit
//! codes belong to `commands::logs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;

use super::junit::{CaseOutcome, Detail, TestCase, TestSuite};

/// The status `offload logs` shows in a test's banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LogStatus {
    /// No outcome child and no failed attempt.
    Passed,
    /// Skipped by the test runner.
    Skipped,
    /// Passed after failed attempts (`<flakyFailure>` / `<flakyError>` children).
    Flaky,
    /// An `<error>`: in our own reports, a test that was not run.
    Error,
    /// A `<failure>`.
    Failed,
}

impl LogStatus {
    /// Of a test case as read from a report.
    fn of(case: &TestCase) -> Self {
        match case.outcome {
            CaseOutcome::Failed(_) => Self::Failed,
            CaseOutcome::Error(_) => Self::Error,
            CaseOutcome::Skipped(_) => Self::Skipped,
            CaseOutcome::Passed if case.reruns.iter().any(|r| r.kind.is_flaky()) => Self::Flaky,
            CaseOutcome::Passed => Self::Passed,
        }
    }

    /// The banner label: `PASSED`, `FAILED`, `ERROR`, `SKIPPED` or `FLAKY`.
    fn label(self) -> &'static str {
        match self {
            Self::Passed => "PASSED",
            Self::Skipped => "SKIPPED",
            Self::Flaky => "FLAKY",
            Self::Error => "ERROR",
            Self::Failed => "FAILED",
        }
    }
}

/// One test of a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogEntry {
    /// Its status.
    status: LogStatus,
    /// The testcase it was read from (its `name` is the test ID).
    case: TestCase,
}

/// One entry per testcase `name`, sorted by ID (byte-wise). When a name occurs more than
/// once (a report written by another tool, with one testcase per attempt), the worst
/// status is kept, and the first of equals.
pub(crate) fn entries(suites: Vec<TestSuite>) -> Vec<LogEntry> {
    let mut by_id: BTreeMap<String, LogEntry> = BTreeMap::new();
    for case in suites.into_iter().flat_map(|s| s.cases) {
        let status = LogStatus::of(&case);
        match by_id.get(&case.name) {
            Some(kept) if kept.status >= status => {}
            _ => {
                by_id.insert(case.name.clone(), LogEntry { status, case });
            }
        }
    }
    by_id.into_values().collect()
}

/// The filters of `offload logs`, combined with AND.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogFilter {
    /// Keep failed tests (with `errors`: failed or errored).
    pub(crate) failures: bool,
    /// Keep errored tests, including those not run (with `failures`: either).
    pub(crate) errors: bool,
    /// Keep only these exact IDs (none: no restriction).
    pub(crate) tests: Vec<String>,
    /// Keep only IDs in which this regex matches somewhere.
    pub(crate) regex: Option<Regex>,
}

impl LogFilter {
    /// Whether `entry` passes every filter.
    pub(crate) fn matches(&self, entry: &LogEntry) -> bool {
        let status_ok = match (self.failures, self.errors) {
            (false, false) => true,
            (true, false) => entry.status == LogStatus::Failed,
            (false, true) => entry.status == LogStatus::Error,
            (true, true) => matches!(entry.status, LogStatus::Failed | LogStatus::Error),
        };
        let id = &entry.case.name;
        status_ok
            && (self.tests.is_empty() || self.tests.iter().any(|t| t == id))
            && self.regex.as_ref().is_none_or(|re| re.is_match(id))
    }
}

/// Appends the text of one test to `out`: the banner, the final message and body, the
/// earlier failed attempts, the captured output, and an empty line.
pub(crate) fn render_entry(entry: &LogEntry, out: &mut String) {
    let case = &entry.case;
    let _ = writeln!(out, "=== {} [{}] ===", case.name, entry.status.label());
    if let Some(detail) = case.outcome.detail() {
        push_detail(out, detail);
    }
    for (i, rerun) in case.reruns.iter().enumerate() {
        let n = i + 1;
        let _ = writeln!(out, "--- attempt {n} ---");
        push_detail(out, &rerun.detail);
        push_output(
            out,
            &format!("attempt {n} stdout"),
            rerun.system_out.as_deref(),
        );
        push_output(
            out,
            &format!("attempt {n} stderr"),
            rerun.system_err.as_deref(),
        );
    }
    push_output(out, "stdout", case.system_out.as_deref());
    push_output(out, "stderr", case.system_err.as_deref());
    out.push('\n');
}

fn push_detail(out: &mut String, detail: &Detail) {
    if let Some(message) = detail.message.as_deref().filter(|m| !m.is_empty()) {
        push_block(out, message);
    }
    if !detail.body.trim().is_empty() {
        push_block(out, &detail.body);
    }
}

fn push_output(out: &mut String, label: &str, text: Option<&str>) {
    if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
        let _ = writeln!(out, "--- {label} ---");
        push_block(out, text);
    }
}

/// `text` verbatim, ending with exactly one newline of its own or ours.
fn push_block(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::{Rerun, RerunKind, parse};

    fn case(name: &str, outcome: CaseOutcome) -> TestCase {
        TestCase {
            name: name.into(),
            outcome,
            ..TestCase::default()
        }
    }

    fn failed(message: &str, body: &str) -> CaseOutcome {
        CaseOutcome::Failed(Detail {
            message: Some(message.into()),
            kind: None,
            body: body.into(),
        })
    }

    fn error(message: &str) -> CaseOutcome {
        CaseOutcome::Error(Detail {
            message: Some(message.into()),
            ..Detail::default()
        })
    }

    fn rerun(kind: RerunKind, message: &str) -> Rerun {
        Rerun {
            kind,
            detail: Detail {
                message: Some(message.into()),
                ..Detail::default()
            },
            ..Rerun::default()
        }
    }

    fn suite(cases: Vec<TestCase>) -> TestSuite {
        TestSuite {
            name: "s".into(),
            cases,
            ..TestSuite::default()
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(
            LogStatus::of(&case("a", CaseOutcome::Passed)),
            LogStatus::Passed
        );
        assert_eq!(
            LogStatus::of(&case("a", failed("m", ""))),
            LogStatus::Failed
        );
        assert_eq!(LogStatus::of(&case("a", error("m"))), LogStatus::Error);
        assert_eq!(
            LogStatus::of(&case("a", CaseOutcome::Skipped(Detail::default()))),
            LogStatus::Skipped
        );
        let mut flaky = case("a", CaseOutcome::Passed);
        flaky.reruns.push(rerun(RerunKind::FlakyFailure, "m"));
        assert_eq!(LogStatus::of(&flaky), LogStatus::Flaky);
        // A rerunFailure on a passing case is not a flaky marker.
        flaky.reruns[0].kind = RerunKind::RerunFailure;
        assert_eq!(LogStatus::of(&flaky), LogStatus::Passed);
    }

    #[test]
    fn entries_are_sorted_and_keep_the_worst() {
        let list = entries(vec![
            suite(vec![
                case("b", CaseOutcome::Passed),
                case("a", failed("first", "")),
                case("c", error("gone")),
            ]),
            suite(vec![
                case("b", failed("late failure", "")),
                case("a", failed("second", "")),
                case("c", CaseOutcome::Passed),
                case("B", CaseOutcome::Passed),
            ]),
        ]);
        let summary: Vec<_> = list
            .iter()
            .map(|e| (e.case.name.as_str(), e.status))
            .collect();
        assert_eq!(
            summary,
            [
                ("B", LogStatus::Passed),
                ("a", LogStatus::Failed),
                ("b", LogStatus::Failed),
                ("c", LogStatus::Error)
            ]
        );
        assert_eq!(list[1].case.outcome, failed("first", ""));
        assert_eq!(list[2].case.outcome, failed("late failure", ""));
    }

    #[test]
    fn filters_combine_with_and() {
        let list = entries(vec![suite(vec![
            case("math::add", CaseOutcome::Passed),
            case("math::div", failed("m", "")),
            case("db::conn", error("not run: sandbox died")),
            case("db::query", failed("m", "")),
        ])]);
        let ids = |f: &LogFilter| -> Vec<String> {
            list.iter()
                .filter(|e| f.matches(e))
                .map(|e| e.case.name.clone())
                .collect()
        };
        let all = LogFilter::default();
        assert_eq!(ids(&all).len(), 4);
        let failures = LogFilter {
            failures: true,
            ..LogFilter::default()
        };
        assert_eq!(ids(&failures), ["db::query", "math::div"]);
        let errors = LogFilter {
            errors: true,
            ..LogFilter::default()
        };
        assert_eq!(ids(&errors), ["db::conn"]);
        let both = LogFilter {
            failures: true,
            errors: true,
            ..LogFilter::default()
        };
        assert_eq!(ids(&both), ["db::conn", "db::query", "math::div"]);
        let regex = LogFilter {
            failures: true,
            regex: Some(Regex::new("db").unwrap()),
            ..LogFilter::default()
        };
        assert_eq!(ids(&regex), ["db::query"]);
        let exact = LogFilter {
            tests: vec!["math::add".into(), "math::div".into(), "math".into()],
            regex: Some(Regex::new("d+$").unwrap()),
            ..LogFilter::default()
        };
        assert_eq!(ids(&exact), ["math::add"]);
    }

    #[test]
    fn renders_a_failed_test_with_attempts_and_output() {
        let mut c = case(
            "t::div",
            failed(
                "AssertionError: 2 != 3\nsecond line",
                "tb line 1\ntb line 2\n",
            ),
        );
        let mut first = rerun(RerunKind::RerunFailure, "first failure");
        first.detail.body = "first tb".into();
        first.system_out = Some("first out\n".into());
        c.reruns.push(first);
        c.system_out = Some("out".into());
        c.system_err = Some("err\n".into());
        let mut out = String::new();
        render_entry(
            &LogEntry {
                status: LogStatus::of(&c),
                case: c,
            },
            &mut out,
        );
        assert_eq!(
            out,
            "=== t::div [FAILED] ===\nAssertionError: 2 != 3\nsecond line\ntb line 1\ntb line 2\n\
             --- attempt 1 ---\nfirst failure\nfirst tb\n--- attempt 1 stdout ---\nfirst out\n\
             --- stdout ---\nout\n--- stderr ---\nerr\n\n"
        );
    }

    #[test]
    fn renders_plain_statuses() {
        let render = |c: TestCase| {
            let mut out = String::new();
            render_entry(
                &LogEntry {
                    status: LogStatus::of(&c),
                    case: c,
                },
                &mut out,
            );
            out
        };
        assert_eq!(
            render(case("a", CaseOutcome::Passed)),
            "=== a [PASSED] ===\n\n"
        );
        assert_eq!(
            render(case(
                "s",
                CaseOutcome::Skipped(Detail {
                    message: Some("no db".into()),
                    ..Detail::default()
                })
            )),
            "=== s [SKIPPED] ===\nno db\n\n"
        );
        let mut flaky = case("f", CaseOutcome::Passed);
        flaky.reruns.push(rerun(RerunKind::FlakyFailure, "boom"));
        flaky.reruns.push(rerun(RerunKind::FlakyError, "bang"));
        assert_eq!(
            render(flaky),
            "=== f [FLAKY] ===\n--- attempt 1 ---\nboom\n--- attempt 2 ---\nbang\n\n"
        );
    }

    #[test]
    fn reads_our_own_report() {
        let xml = r#"<testsuites name="offload"><testsuite name="g">
    <testcase name="x" classname="g" time="0.100">
      <error message="not run: sandbox died" type="offload.NotRun"/>
    </testcase>
  </testsuite></testsuites>"#;
        let list = entries(parse(xml).unwrap());
        let mut out = String::new();
        render_entry(&list[0], &mut out);
        assert_eq!(out, "=== x [ERROR] ===\nnot run: sandbox died\n\n");
    }
}
