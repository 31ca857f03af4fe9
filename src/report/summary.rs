//! The `Test Results:` summary printed at the end of `offload run`.
//!
//! [`Counts`] tallies the final verdicts and maps them to the exit code; [`render`] turns
//! them into the text block. Whether to colour it is the caller's decision (stdout is a
//! terminal and `NO_COLOR` is unset); nothing here looks at the environment.

use std::fmt::Write as _;
use std::time::Duration;

use super::verdict::{TestResult, Verdict};
use crate::exit;

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
    let (style, verdict) = if counts.failed == 0 && counts.errors == 0 && counts.not_run == 0 {
        (BOLD_GREEN, "All tests passed!")
    } else if counts.failed > 0 || counts.errors > 0 {
        (BOLD_RED, "Some tests failed.")
    } else {
        (
            BOLD,
            "Some tests were not run (see `offload logs --errors`).",
        )
    };
    out.push_str(&paint(style, verdict.to_owned()));
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
        assert!(text.ends_with("\n\nSome tests failed.\n"), "{text}");
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
             Some tests failed.\n"
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
        // Flaky tests still pass.
        let text = render(counts(1, 0, 1, 0, 0), Duration::ZERO, None, false);
        assert!(
            text.ends_with("  Flaky:   1\n  Duration: 0.00s\n\nAll tests passed!\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_tests_not_run() {
        let text = render(counts(1, 0, 0, 0, 2), Duration::from_secs(1), None, false);
        assert_eq!(
            text,
            "\nTest Results:\n  Total:   3\n  Passed:  1\n  Failed:  0\n  Not Run: 2\n  \
             Duration: 1.00s\n\nSome tests were not run (see `offload logs --errors`).\n"
        );
        // Failures take precedence in the final line.
        let text = render(counts(0, 1, 0, 0, 2), Duration::ZERO, None, false);
        assert!(text.ends_with("\n\nSome tests failed.\n"), "{text}");
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
            coloured.ends_with("\x1b[1;31mSome tests failed.\x1b[0m\n"),
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
}
