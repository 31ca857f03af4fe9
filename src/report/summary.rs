//! The end of `offload run` on stdout: the final status lines and the `Test Results:`
//! summary.
//!
//! [`final_lines`] names the tests worth a look (by default every failed, errored,
//! not-run and flaky test, each with its one-line reason); [`Counts`] tallies the final
//! verdicts and maps them to the exit code; [`render`] turns them into the text block. Whether to colour it is the caller's decision (stdout is a
//! terminal and `NO_COLOR` is unset); nothing here looks at the environment.

use std::fmt::Write as _;
use std::time::Duration;

use super::verdict::{TestResult, Verdict};
use crate::exit;

/// Which tests the final status lines name; each level names the ones before it too.
/// Names as nextest's `--final-status-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, clap::ValueEnum)]
pub(crate) enum FinalStatusLevel {
    /// None.
    None,
    /// Failed and errored tests, and tests that were not run.
    Fail,
    /// Flaky tests.
    #[default]
    Flaky,
    /// Tests whose last attempt took over a minute.
    Slow,
    /// Skipped tests.
    Skip,
    /// Passed tests.
    Pass,
    /// Every test.
    All,
}

/// A test's last attempt slower than this is `SLOW` in the final lines.
const SLOW_SECS: f64 = 60.0;

/// One line per test `level` names, worst first (failed, errored and not run; flaky;
/// slow; skipped; passed), each in report order: the word, the ID and, when it did not
/// pass, ` - ` and the first line of its reason. Empty when no test is named; else
/// starts with an empty line.
pub(crate) fn final_lines(results: &[TestResult], level: FinalStatusLevel, color: bool) -> String {
    let mut lines: Vec<(u8, String)> = Vec::new();
    for result in results {
        let last = result.attempts.last().map(|a| &a.case);
        let reason = last
            .and_then(|case| case.outcome.detail())
            .and_then(|d| d.message.as_deref())
            .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
            .map(|m| crate::output::ellipsize(m.trim(), 200).into_owned());
        let slow = last.is_some_and(|case| case.time > SLOW_SECS);
        let (rank, needed, word, style) = match result.verdict {
            Verdict::Failed => (0, FinalStatusLevel::Fail, "FAIL", RED),
            Verdict::Errored => (0, FinalStatusLevel::Fail, "ERROR", RED),
            Verdict::NotRun => (0, FinalStatusLevel::Fail, "NOT RUN", BOLD_RED),
            Verdict::Flaky => (1, FinalStatusLevel::Flaky, "FLAKY", YELLOW),
            Verdict::Passed if slow => (2, FinalStatusLevel::Slow, "SLOW", YELLOW),
            Verdict::Skipped => (3, FinalStatusLevel::Skip, "SKIP", ""),
            Verdict::Passed => (4, FinalStatusLevel::Pass, "PASS", GREEN),
        };
        if needed > level {
            continue;
        }
        let word = format!("{word:>7}");
        let word = if color && !style.is_empty() {
            format!("{style}{word}{RESET}")
        } else {
            word
        };
        let mut line = format!("  {word}  {}", result.id);
        match (result.verdict, reason) {
            (Verdict::Flaky, _) => {
                let failed = result.attempts.len().saturating_sub(1);
                let _ = write!(
                    line,
                    " - passed on attempt {} after {failed} failed",
                    result.attempts.len()
                );
            }
            (Verdict::Passed, _) | (_, None) => {}
            (_, Some(reason)) => {
                let _ = write!(line, " - {reason}");
            }
        }
        lines.push((rank, line));
    }
    if lines.is_empty() {
        return String::new();
    }
    // Stable: report order within a rank.
    lines.sort_by_key(|(rank, _)| *rank);
    let mut out = String::from("\n");
    for (_, line) in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// How many tests ended with each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Every test.
    total: usize,
    /// Passed on the first attempt (flaky tests are counted in `flaky` only).
    passed: usize,
    /// Failed on every attempt, the deciding attempt a failure.
    failed: usize,
    /// Failed on every attempt, the deciding attempt an error (setup, teardown, ...).
    errors: usize,
    /// Failed, then passed on a retry.
    flaky: usize,
    /// Skipped by the test runner.
    skipped: usize,
    /// Never produced a result.
    not_run: usize,
}

impl Counts {
    /// Tallies the verdicts of `results`.
    pub(crate) fn from_results(results: &[TestResult]) -> Self {
        let mut counts = Self {
            total: results.len(),
            ..Self::default()
        };
        for result in results {
            match result.verdict {
                Verdict::Passed => counts.passed += 1,
                Verdict::Failed => counts.failed += 1,
                Verdict::Errored => counts.errors += 1,
                Verdict::Flaky => counts.flaky += 1,
                Verdict::Skipped => counts.skipped += 1,
                Verdict::NotRun => counts.not_run += 1,
            }
        }
        counts
    }

    /// The exit code of the run: [`exit::FAILURE`] when a test failed, errored or was not
    /// run, else [`exit::FLAKY`] when a test was flaky, else [`exit::SUCCESS`].
    pub(crate) fn exit_code(&self) -> i32 {
        if self.failed > 0 || self.errors > 0 || self.not_run > 0 {
            exit::FAILURE
        } else if self.flaky > 0 {
            exit::FLAKY
        } else {
            exit::SUCCESS
        }
    }
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const BOLD_GREEN: &str = "\x1b[1;32m";
const BOLD_RED: &str = "\x1b[1;31m";
const BOLD_YELLOW: &str = "\x1b[1;33m";
const RESET: &str = "\x1b[0m";

/// The summary block, starting with an empty line and ending with a newline:
///
/// ```text
///
/// Test Results:
///   Total:   12
///   Passed:  10
///   Failed:  1
///   Errors:  1
///   Not Run: 1
///   Duration: 6.01s
///
/// Some tests failed.
/// ```
///
/// `Passed:` counts flaky tests too; `Errors:`, `Skipped:`, `Not Run:` and `Flaky:` appear only when
/// non-zero; `Estimated cost:` only when `cost` (USD, CPU-seconds) is given. With `color`,
/// numbers and the final line carry ANSI colours.
pub(crate) fn render(
    counts: Counts,
    duration: Duration,
    cost: Option<(f64, f64)>,
    color: bool,
) -> String {
    let paint = |style: &str, text: String| {
        if color {
            format!("{style}{text}{RESET}")
        } else {
            text
        }
    };
    let mut out = String::from("\nTest Results:\n");
    let _ = writeln!(out, "  Total:   {}", counts.total);
    let _ = writeln!(
        out,
        "  Passed:  {}",
        paint(GREEN, (counts.passed + counts.flaky).to_string())
    );
    let failed_style = if counts.failed > 0 { RED } else { "" };
    let _ = writeln!(
        out,
        "  Failed:  {}",
        paint(failed_style, counts.failed.to_string())
    );
    if counts.errors > 0 {
        let _ = writeln!(out, "  Errors:  {}", paint(RED, counts.errors.to_string()));
    }
    if counts.skipped > 0 {
        let _ = writeln!(out, "  Skipped: {}", counts.skipped);
    }
    if counts.not_run > 0 {
        let _ = writeln!(
            out,
            "  Not Run: {}",
            paint(BOLD_RED, counts.not_run.to_string())
        );
    }
    if counts.flaky > 0 {
        let _ = writeln!(
            out,
            "  Flaky:   {}",
            paint(YELLOW, counts.flaky.to_string())
        );
    }
    let _ = writeln!(out, "  Duration: {}", format_duration(duration));
    if let Some((usd, cpu_secs)) = cost {
        let _ = writeln!(
            out,
            "  Estimated cost: ${usd:.4} ({cpu_secs:.1} CPU-seconds)"
        );
    }
    out.push('\n');
    let broken = counts.failed > 0 || counts.errors > 0;
    let (style, verdict) = if broken || counts.not_run > 0 {
        let verdict = if broken {
            "Some tests failed."
        } else {
            "Some tests were not run."
        };
        (if broken { BOLD_RED } else { BOLD }, verdict.to_owned())
    } else if counts.flaky > 0 {
        (
            BOLD_YELLOW,
            format!(
                "All tests passed, {} (exit {}).",
                crate::output::plural(counts.flaky, "flaky test"),
                exit::FLAKY
            ),
        )
    } else {
        (BOLD_GREEN, "All tests passed!".to_owned())
    };
    out.push_str(&paint(style, verdict));
    if broken || counts.not_run > 0 {
        let flag = if broken { "--failures" } else { "--errors" };
        let _ = write!(out, "\nWhy: offload logs {flag}");
    }
    out.push('\n');
    out
}

/// A duration for people: `0.40s`, `6.01s`, `2m 03.12s`, `1h 02m 03.12s`.
fn format_duration(duration: Duration) -> String {
    // Round once, to hundredths, so 59.996 s reads `1m 00.00s`, never `60.00s`.
    let centis = (duration.as_millis() + 5) / 10;
    let (secs, centis) = (centis / 100, centis % 100);
    let (hours, minutes, secs) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {secs:02}.{centis:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {secs:02}.{centis:02}s")
    } else {
        format!("{secs}.{centis:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::verdict::Attempt;

    fn counts(
        passed: usize,
        failed: usize,
        flaky: usize,
        skipped: usize,
        not_run: usize,
    ) -> Counts {
        Counts {
            total: passed + failed + flaky + skipped + not_run,
            passed,
            failed,
            flaky,
            skipped,
            not_run,
            errors: 0,
        }
    }

    #[test]
    fn counts_tally_verdicts() {
        let verdicts = [
            Verdict::Passed,
            Verdict::Passed,
            Verdict::Failed,
            Verdict::Errored,
            Verdict::Flaky,
            Verdict::Skipped,
            Verdict::NotRun,
            Verdict::NotRun,
        ];
        let results: Vec<TestResult> = verdicts
            .iter()
            .enumerate()
            .map(|(i, &verdict)| TestResult {
                id: format!("t{i}"),
                group: "g".into(),
                verdict,
                attempts: vec![Attempt::not_run("t", "x", 0)],
            })
            .collect();
        let expected = Counts {
            total: 8,
            errors: 1,
            ..counts(2, 1, 1, 1, 2)
        };
        assert_eq!(Counts::from_results(&results), expected);
        assert_eq!(Counts::from_results(&[]), Counts::default());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(counts(3, 0, 0, 0, 0).exit_code(), exit::SUCCESS);
        assert_eq!(counts(3, 0, 0, 2, 0).exit_code(), exit::SUCCESS);
        assert_eq!(counts(0, 0, 0, 0, 0).exit_code(), exit::SUCCESS);
        assert_eq!(counts(3, 0, 1, 0, 0).exit_code(), exit::FLAKY);
        assert_eq!(counts(3, 1, 1, 0, 0).exit_code(), exit::FAILURE);
        assert_eq!(counts(3, 0, 1, 0, 1).exit_code(), exit::FAILURE);
        assert_eq!(counts(0, 0, 0, 0, 1).exit_code(), exit::FAILURE);
        let errored = Counts {
            total: 1,
            errors: 1,
            ..Counts::default()
        };
        assert_eq!(errored.exit_code(), exit::FAILURE);
        let text = render(errored, Duration::ZERO, None, false);
        assert!(text.contains("\n  Errors:  1\n"), "{text}");
        assert!(
            text.ends_with("\n\nSome tests failed.\nWhy: offload logs --failures\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_a_failed_run() {
        let text = render(
            counts(9, 1, 1, 1, 0),
            Duration::from_millis(6010),
            Some((0.000437, 11.08)),
            false,
        );
        assert_eq!(
            text,
            "\nTest Results:\n  Total:   12\n  Passed:  10\n  Failed:  1\n  Skipped: 1\n  \
             Flaky:   1\n  Duration: 6.01s\n  Estimated cost: $0.0004 (11.1 CPU-seconds)\n\n\
             Some tests failed.\nWhy: offload logs --failures\n"
        );
    }

    #[test]
    fn renders_a_passing_run() {
        let text = render(
            counts(2, 0, 0, 0, 0),
            Duration::from_millis(400),
            None,
            false,
        );
        assert_eq!(
            text,
            "\nTest Results:\n  Total:   2\n  Passed:  2\n  Failed:  0\n  Duration: 0.40s\n\n\
             All tests passed!\n"
        );
        // Flaky tests pass, but not green: the exit code is 2.
        let text = render(counts(1, 0, 1, 0, 0), Duration::ZERO, None, false);
        assert!(
            text.ends_with(
                "  Flaky:   1\n  Duration: 0.00s\n\nAll tests passed, 1 flaky test (exit 2).\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn renders_tests_not_run() {
        let text = render(counts(1, 0, 0, 0, 2), Duration::from_secs(1), None, false);
        assert_eq!(
            text,
            "\nTest Results:\n  Total:   3\n  Passed:  1\n  Failed:  0\n  Not Run: 2\n  \
             Duration: 1.00s\n\nSome tests were not run.\nWhy: offload logs --errors\n"
        );
        // Failures take precedence in the final line.
        let text = render(counts(0, 1, 0, 0, 2), Duration::ZERO, None, false);
        assert!(
            text.ends_with("\n\nSome tests failed.\nWhy: offload logs --failures\n"),
            "{text}"
        );
    }

    #[test]
    fn colours_only_when_asked() {
        let plain = render(counts(1, 1, 1, 0, 1), Duration::ZERO, None, false);
        assert!(!plain.contains('\x1b'));
        let coloured = render(counts(1, 1, 1, 0, 1), Duration::ZERO, None, true);
        assert!(
            coloured.contains("  Passed:  \x1b[32m2\x1b[0m\n"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("  Failed:  \x1b[31m1\x1b[0m\n"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("  Flaky:   \x1b[33m1\x1b[0m\n"),
            "{coloured:?}"
        );
        assert!(
            coloured
                .ends_with("\x1b[1;31mSome tests failed.\x1b[0m\nWhy: offload logs --failures\n"),
            "{coloured:?}"
        );
        let ok = render(counts(1, 0, 0, 0, 0), Duration::ZERO, None, true);
        assert!(
            ok.ends_with("\x1b[1;32mAll tests passed!\x1b[0m\n"),
            "{ok:?}"
        );
    }

    #[test]
    fn durations_read_well() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(0)), "0.00s");
        assert_eq!(format_duration(ms(4)), "0.00s");
        assert_eq!(format_duration(ms(5)), "0.01s");
        assert_eq!(format_duration(ms(399)), "0.40s");
        assert_eq!(format_duration(ms(6010)), "6.01s");
        assert_eq!(format_duration(ms(59_994)), "59.99s");
        assert_eq!(format_duration(ms(59_996)), "1m 00.00s");
        assert_eq!(format_duration(ms(123_120)), "2m 03.12s");
        assert_eq!(format_duration(ms(3_723_120)), "1h 02m 03.12s");
    }

    fn result(id: &str, verdict: Verdict, messages: &[Option<&str>]) -> TestResult {
        use crate::report::junit::{CaseOutcome, Detail, TestCase};
        let attempts = messages
            .iter()
            .map(|message| {
                let detail = Detail {
                    message: message.map(str::to_owned),
                    ..Detail::default()
                };
                let outcome = match (verdict, message) {
                    (Verdict::Errored, Some(_)) => CaseOutcome::Error(detail),
                    (Verdict::Skipped, _) => CaseOutcome::Skipped(detail),
                    (_, Some(_)) => CaseOutcome::Failed(detail),
                    (_, None) => CaseOutcome::Passed,
                };
                Attempt {
                    case: TestCase {
                        name: id.to_owned(),
                        outcome,
                        ..TestCase::default()
                    },
                    batch: 0,
                }
            })
            .collect();
        TestResult {
            id: id.to_owned(),
            group: "g".to_owned(),
            verdict,
            attempts,
        }
    }

    #[test]
    fn final_lines_name_the_tests_worth_a_look_worst_first_with_reasons() {
        let results = [
            result("t::ok", Verdict::Passed, &[None]),
            result("t::wobbly", Verdict::Flaky, &[Some("first"), None]),
            result(
                "t::bad",
                Verdict::Failed,
                &[Some("\nAssertionError: 1 != 2\nmore")],
            ),
            result("t::skip", Verdict::Skipped, &[Some("not today")]),
            result("t::setup", Verdict::Errored, &[Some("fixture exploded")]),
        ];
        assert_eq!(
            final_lines(&results, FinalStatusLevel::Flaky, false),
            "\n     FAIL  t::bad - AssertionError: 1 != 2\n    ERROR  t::setup - fixture exploded\n\
             \x20   FLAKY  t::wobbly - passed on attempt 2 after 1 failed\n"
        );
        assert_eq!(final_lines(&results, FinalStatusLevel::None, false), "");
        let all = final_lines(&results, FinalStatusLevel::All, false);
        assert!(
            all.ends_with("     SKIP  t::skip - not today\n     PASS  t::ok\n"),
            "{all}"
        );
        assert_eq!(
            final_lines(&results[..1], FinalStatusLevel::Flaky, false),
            ""
        );
    }
}
