//! The live display of a run on stderr, a [`Subscriber`] of the run's events: a bar on a
//! terminal, plain lines otherwise (CI).
//!
//! Both show status lines as tests end, like nextest's (`FAIL [  1.234s] ID`), at the
//! chosen [`StatusLevel`]. The bar advances per test (when the runner reports tests as
//! they finish, see [`crate::framework::live`]; otherwise per batch) and shows the
//! counts, the tests running now and, when durations are known, the time left. Plain
//! output adds a count line at most every two seconds as tests end, and a heartbeat
//! naming what still runs when nothing was printed for [`HEARTBEAT`].

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustc_hash::FxHashSet;

use super::events::{RunEvent, Subscriber};
use crate::framework::test_name;
use crate::report::junit::CaseOutcome;
use crate::report::verdict::Verdict;

/// How often plain count lines may be printed.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// The longest silence of plain output while tests run.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// A test running this long gets a `SLOW` line.
const SLOW_AFTER: Duration = Duration::from_secs(60);

/// Which status lines are shown while the run goes on; each level shows the ones
/// before it too. Names as nextest's `--status-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum StatusLevel {
    /// No status lines.
    None,
    /// Failures and errors (also tests that end not run).
    Fail,
    /// Failed attempts that are retried, and flaky tests.
    Retry,
    /// Tests running longer than a minute.
    Slow,
    /// Passes.
    Pass,
    /// Skips.
    Skip,
    /// Everything.
    All,
}

/// Where the display goes.
enum Display {
    Bar(ProgressBar),
    Plain,
    Hidden,
}

/// The state of the display.
pub(crate) struct Progress {
    display: Display,
    level: StatusLevel,
    total: usize,
    /// Tests that finished or were decided, each counted once.
    done: usize,
    failed: usize,
    not_run: usize,
    flaky: usize,
    /// Tests counted in `done` when they finished, before their verdict.
    counted: FxHashSet<String>,
    /// Tests running now (as their runner said), with when they started and whether
    /// they were called slow.
    running: IndexMap<String, (Instant, bool)>,
    /// Batches running now, with their number of tests.
    batches: IndexMap<usize, usize>,
    expected: Option<Duration>,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// A display for `total` tests: a bar when stderr is a terminal and `plain` is
    /// false, plain lines otherwise (CI), nothing when `hidden`. Status lines at
    /// `level`.
    pub(crate) fn new(total: usize, plain: bool, hidden: bool, level: StatusLevel) -> Self {
        let display = if hidden {
            Display::Hidden
        } else if !plain && std::io::stderr().is_terminal() {
            Display::Bar(new_bar(total))
        } else {
            Display::Plain
        };
        if let Display::Bar(bar) = &display {
            crate::output::set_active_bar(Some(bar.clone()));
        }
        Self {
            display,
            level,
            total,
            done: 0,
            failed: 0,
            not_run: 0,
            flaky: 0,
            counted: FxHashSet::default(),
            running: IndexMap::new(),
            batches: IndexMap::new(),
            expected: None,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// Clears the bar (the summary follows); plain output ends with its count line.
    pub(crate) fn finish(&mut self) {
        match std::mem::replace(&mut self.display, Display::Hidden) {
            Display::Bar(bar) => {
                crate::output::set_active_bar(None);
                bar.finish_and_clear();
            }
            Display::Plain if self.done != self.total || self.last_line.is_none() => {
                self.display = Display::Plain;
                self.count_line();
                self.display = Display::Hidden;
            }
            _ => {}
        }
    }

    /// A test finished or was decided without having been counted.
    fn advance(&mut self) {
        self.done += 1;
        match &self.display {
            Display::Bar(bar) => bar.set_position(self.done as u64),
            Display::Plain => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL);
                if due || self.done == self.total {
                    self.count_line();
                }
            }
            Display::Hidden => {}
        }
        self.refresh();
    }

    fn test_finished(&mut self, id: &str, outcome: &CaseOutcome, time: f64, retry: Retry) {
        self.running.shift_remove(id);
        if self.counted.insert(id.to_owned()) {
            self.advance();
        }
        if let Some((level, word)) = status_of(outcome, retry) {
            self.status(level, &word, Some(time), id);
        }
    }

    fn test_decided(&mut self, id: &str, verdict: Verdict) {
        match verdict {
            Verdict::Failed | Verdict::Errored => self.failed += 1,
            Verdict::NotRun => {
                self.not_run += 1;
                self.status(StatusLevel::Fail, "NOT RUN", None, id);
            }
            Verdict::Flaky => {
                self.flaky += 1;
                self.status(StatusLevel::Retry, "FLAKY", None, id);
            }
            Verdict::Passed | Verdict::Skipped => {}
        }
        if self.counted.remove(id) {
            self.refresh();
        } else {
            self.advance();
        }
    }

    /// Calls slow tests slow once, refreshes the time left and, in plain output, beats.
    fn tick(&mut self) {
        let slow: Vec<String> = self
            .running
            .iter_mut()
            .filter(|(_, (since, called))| !*called && since.elapsed() >= SLOW_AFTER)
            .map(|(id, (_, called))| {
                *called = true;
                id.clone()
            })
            .collect();
        for id in slow {
            let word = format!("SLOW [> {:.3}s]", SLOW_AFTER.as_secs_f64());
            self.line(StatusLevel::Slow, &format!("{word:>24} {id}"));
        }
        let quiet_since = self.last_line.unwrap_or(self.started);
        if matches!(self.display, Display::Plain) && quiet_since.elapsed() >= HEARTBEAT {
            self.count_line();
        }
        self.refresh();
    }

    /// A status line `WORD [ TIME s] ID`, when `level` is shown.
    fn status(&mut self, level: StatusLevel, word: &str, time: Option<f64>, id: &str) {
        // Tens of thousands of quick tests pass through here: no line to build for a
        // level that is not shown.
        if level > self.level {
            return;
        }
        let time = time.map_or_else(|| " ".repeat(11), |t| format!("[{t:>8.3}s]"));
        self.line(level, &format!("{word:>12} {time} {id}"));
    }

    fn line(&mut self, level: StatusLevel, text: &str) {
        if level > self.level {
            return;
        }
        match &self.display {
            Display::Bar(bar) => bar.println(text),
            Display::Plain => {
                crate::statusln!("{text}");
                self.last_line = Some(Instant::now());
            }
            Display::Hidden => {}
        }
    }

    /// `3 failed, 0 flaky`, with `, 2 not run` when some were not run: a test that was
    /// not run is not counted as failed (the summary keeps them apart too).
    fn counts(&self) -> String {
        let mut text = format!("{} failed, {} flaky", self.failed, self.flaky);
        if self.not_run > 0 {
            text.push_str(&format!(", {} not run", self.not_run));
        }
        text
    }

    /// What runs now: the tests the runner said started, else the batches.
    fn now_running(&self, max_chars: usize) -> Option<String> {
        let names: Vec<String> = if self.running.is_empty() {
            self.batches
                .iter()
                .map(|(number, tests)| format!("batch {number} ({tests})"))
                .collect()
        } else {
            self.running
                .keys()
                .map(|id| test_name(id).to_owned())
                .collect()
        };
        let mut text = String::new();
        for (shown, name) in names.iter().enumerate() {
            if !text.is_empty() && text.len() + name.len() + 2 > max_chars {
                text.push_str(&format!(" +{}", names.len() - shown));
                break;
            }
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(name);
        }
        (!text.is_empty()).then_some(text)
    }

    /// The time left from the known durations, while the run is within them.
    fn time_left(&self) -> Option<Duration> {
        self.expected?.checked_sub(self.started.elapsed())
    }

    fn refresh(&self) {
        let Display::Bar(bar) = &self.display else {
            return;
        };
        let mut message = self.counts();
        if let Some(left) = self.time_left() {
            message.push_str(&format!(" · ETA {}s", left.as_secs() + 1));
        }
        let room = terminal_width()
            .saturating_sub(BAR_PREFIX + usize::from(RIGHT_MARGIN) + 2)
            .max(20);
        if let Some(running) = self.now_running(room.saturating_sub(message.len() + 14)) {
            message.push_str(" · running: ");
            message.push_str(&running);
        }
        if message.chars().count() > room {
            message = message.chars().take(room - 1).collect();
            message.push('…');
        }
        bar.set_message(message);
    }

    fn count_line(&mut self) {
        let mut text = format!(
            "[offload] {}/{} tests done, {} ({:.1}s)",
            self.done,
            self.total,
            self.counts(),
            self.started.elapsed().as_secs_f64()
        );
        if self.done < self.total
            && let Some(running) = self.now_running(200)
        {
            text.push_str("; running: ");
            text.push_str(&running);
        }
        crate::statusln!("{text}");
        self.last_line = Some(Instant::now());
    }
}

/// Whether a failure is the test's last word.
#[derive(Clone, Copy)]
struct Retry {
    /// Which attempt this is (1 for the first run).
    number: usize,
    /// A failure now is retried.
    follows: bool,
}

/// The status line of one finished attempt: its level and word (`TRY 2 PASS`, ...);
/// none for an attempt that produced no result (its verdict says it).
fn status_of(outcome: &CaseOutcome, retry: Retry) -> Option<(StatusLevel, Cow<'static, str>)> {
    let failed = matches!(outcome, CaseOutcome::Failed(_) | CaseOutcome::Error(_));
    let (level, word) = match outcome {
        _ if outcome.is_not_run() => return None,
        CaseOutcome::Passed if retry.number > 1 => (StatusLevel::Retry, "PASS"),
        CaseOutcome::Passed => (StatusLevel::Pass, "PASS"),
        CaseOutcome::Skipped(_) => (StatusLevel::Skip, "SKIP"),
        CaseOutcome::Failed(_) if retry.follows => (StatusLevel::Retry, "FAIL"),
        CaseOutcome::Error(_) if retry.follows => (StatusLevel::Retry, "ERROR"),
        CaseOutcome::Failed(_) => (StatusLevel::Fail, "FAIL"),
        CaseOutcome::Error(_) => (StatusLevel::Fail, "ERROR"),
    };
    let tried = retry.number > 1 || (failed && retry.follows);
    let word = if tried {
        Cow::Owned(format!("TRY {} {word}", retry.number))
    } else {
        Cow::Borrowed(word)
    };
    Some((level, word))
}

/// The columns of the bar's line before its message, at most: spinner, time, bar and a
/// `123456/123456` count.
const BAR_PREFIX: usize = 2 + 11 + 33 + 14;

/// The size of the terminal on stderr, `(columns, rows)`; `(80, 24)` when it cannot be
/// told.
fn terminal_size() -> (u16, u16) {
    // SAFETY: TIOCGWINSZ fills the `winsize` it is given, which lives on this stack
    // frame; on failure nothing is written and the zeroes are ignored.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    if read == 0 && size.ws_col > 0 {
        (size.ws_col, size.ws_row.max(1))
    } else {
        (80, 24)
    }
}

fn terminal_width() -> usize {
    usize::from(terminal_size().0)
}

/// Columns the bar leaves free at the end of its line. The bar is padded to the width
/// it is given; a terminal that echoes `^C` at the end of a full line wraps it onto a
/// second one, and the bar, cleared as one line, would leave its first on the screen.
const RIGHT_MARGIN: u16 = 4;

/// stderr as the bar sees it: a terminal [`RIGHT_MARGIN`] columns narrower than it is.
#[derive(Debug)]
struct Stderr;

impl Stderr {
    fn write(&self, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().lock().write_all(text.as_bytes())
    }

    fn escape(&self, n: usize, code: char) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}{code}"))
    }
}

impl indicatif::TermLike for Stderr {
    fn width(&self) -> u16 {
        terminal_size().0.saturating_sub(RIGHT_MARGIN).max(20)
    }

    fn height(&self) -> u16 {
        terminal_size().1
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.escape(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

fn new_bar(total: usize) -> ProgressBar {
    let target = ProgressDrawTarget::term_like_with_hz(Box::new(Stderr), 20);
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

impl Subscriber for Progress {
    fn notify(&mut self, event: &RunEvent<'_>) {
        match *event {
            RunEvent::Planned { expected, .. } => self.expected = expected,
            RunEvent::BatchStarted { number, tests, .. } => {
                self.batches.insert(number, tests);
                self.refresh();
            }
            RunEvent::BatchFinished { number } => {
                self.batches.shift_remove(&number);
                self.refresh();
            }
            RunEvent::TestStarted { id, .. } => {
                self.running.insert(id.to_owned(), (Instant::now(), false));
                self.refresh();
            }
            RunEvent::TestFinished {
                id,
                outcome,
                time,
                number,
                retries_left,
                ..
            } => {
                let retry = Retry {
                    number,
                    follows: retries_left,
                };
                self.test_finished(id, outcome, time, retry);
            }
            RunEvent::AttemptFinished {
                id,
                attempt,
                number,
                retried,
                announced: false,
                ..
            } => {
                let retry = Retry {
                    number,
                    follows: retried,
                };
                if let Some((level, word)) = status_of(&attempt.case.outcome, retry) {
                    self.status(level, &word, Some(attempt.case.time), id);
                }
            }
            RunEvent::AttemptFinished { .. } => {}
            RunEvent::TestDecided { id, verdict, .. } => self.test_decided(id, verdict),
            RunEvent::Tick => self.tick(),
            RunEvent::Stopping { reason } => {
                self.line(StatusLevel::Fail, &format!("[offload] stopping: {reason}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::Detail;

    fn failure() -> CaseOutcome {
        CaseOutcome::Failed(Detail::default())
    }

    #[test]
    fn status_words_say_which_try_and_levels_order_them() {
        let first = Retry {
            number: 1,
            follows: false,
        };
        let retried = Retry {
            number: 1,
            follows: true,
        };
        let second = Retry {
            number: 2,
            follows: false,
        };
        let word = |outcome: &CaseOutcome, retry: Retry| {
            status_of(outcome, retry).map(|(level, word)| (level, word.into_owned()))
        };
        assert_eq!(
            word(&CaseOutcome::Passed, first),
            Some((StatusLevel::Pass, "PASS".to_owned()))
        );
        assert_eq!(
            word(&failure(), first),
            Some((StatusLevel::Fail, "FAIL".to_owned()))
        );
        assert_eq!(
            word(&failure(), retried),
            Some((StatusLevel::Retry, "TRY 1 FAIL".to_owned()))
        );
        assert_eq!(
            word(&CaseOutcome::Passed, second),
            Some((StatusLevel::Retry, "TRY 2 PASS".to_owned()))
        );
        let not_run = crate::report::verdict::Attempt::not_run("t", "gone", 0)
            .case
            .outcome;
        assert_eq!(word(&not_run, first), None);
        assert!(StatusLevel::Fail < StatusLevel::Retry && StatusLevel::Slow < StatusLevel::Pass);
    }

    #[test]
    fn each_test_advances_the_count_once_whether_finished_or_decided_first() {
        let mut p = Progress::new(3, true, true, StatusLevel::None);
        let retry = Retry {
            number: 1,
            follows: true,
        };
        p.test_finished("a", &failure(), 0.1, retry);
        p.test_finished("a", &CaseOutcome::Passed, 0.1, retry);
        assert_eq!(p.done, 1);
        p.test_decided("a", Verdict::Flaky);
        p.test_decided("b", Verdict::Passed);
        assert_eq!((p.done, p.flaky), (2, 1));
        p.running.insert("x::c".into(), (Instant::now(), false));
        p.running.insert("x::d".into(), (Instant::now(), false));
        assert_eq!(p.now_running(80).as_deref(), Some("c, d"));
        assert_eq!(p.now_running(2).as_deref(), Some("c +1"));
    }
}
