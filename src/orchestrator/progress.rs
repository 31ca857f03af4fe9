//! The live progress display on stderr: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{RunEvent, Subscriber};
use crate::report::verdict::Verdict;

/// How often plain progress lines may be printed.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Progress of a run: tests decided out of the total, failures (errors included), tests
/// not run, flaky tests.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: usize,
    done: usize,
    failed: usize,
    not_run: usize,
    flaky: usize,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// A display for `total` tests: a bar when stderr is a terminal and `plain` is
    /// false, plain lines otherwise (CI), nothing when `hidden`.
    pub fn new(total: usize, plain: bool, hidden: bool) -> Self {
        let use_bar = !hidden && !plain && std::io::stderr().is_terminal();
        let bar = use_bar.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            bar,
            plain: !hidden && !use_bar,
            total,
            done: 0,
            failed: 0,
            not_run: 0,
            flaky: 0,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// A test reached its verdict.
    fn test_decided(&mut self, verdict: Verdict) {
        self.done += 1;
        match verdict {
            Verdict::Failed | Verdict::Errored => self.failed += 1,
            Verdict::NotRun => self.not_run += 1,
            Verdict::Flaky => self.flaky += 1,
            Verdict::Passed | Verdict::Skipped => {}
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
            bar.set_message(self.counts());
        } else if self.plain {
            let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL);
            if due || self.done == self.total {
                self.last_line = Some(Instant::now());
                self.print_line();
            }
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

    fn print_line(&self) {
        crate::statusln!(
            "[offload] {}/{} tests done, {} ({:.1}s)",
            self.done,
            self.total,
            self.counts(),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Clears the bar (the summary follows).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        } else if self.plain && self.last_line.is_some() && self.done != self.total {
            self.print_line();
        }
    }
}

impl Subscriber for Progress {
    fn notify(&mut self, event: &RunEvent<'_>) {
        if let RunEvent::TestDecided { verdict, .. } = event {
            self.test_decided(*verdict);
        }
    }
}
