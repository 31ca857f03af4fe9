//! Executing one batch in one sandbox: build the command, stream its output to the
//! batch log, fetch and read the result file, and map every result back to a test.
//!
//! This module decides nothing about retries or verdicts; it reports, for each test of
//! the batch, what this one attempt produced (or why it produced nothing).

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::framework::live::{self, LiveEvent};
use crate::framework::{BatchPaths, Framework, ResultSource};
use crate::process::{CommandSpec, ExitOutcome, Stream};
use crate::provider::{InputFilesNotWritten, OutputLine, Sandbox, SandboxLost};
use crate::report::junit::{self, CaseOutcome, Detail, TestCase};
use crate::report::verdict::Attempt;

/// What every batch of a run shares.
pub(crate) struct BatchContext {
    /// The framework that builds commands and maps results.
    pub(crate) framework: Arc<dyn Framework>,
    /// The canonical IDs of the run's tests (a batch holds indices into this).
    pub(crate) ids: Arc<Vec<String>>,
    /// Timeout of one batch.
    pub(crate) timeout: Duration,
    /// Pass the framework's stop flag.
    pub(crate) fail_fast: bool,
    /// Echo output lines to Offload's own stdout and stderr too (`--no-capture`).
    pub(crate) no_capture: bool,
    /// `{output_dir}/logs`.
    pub(crate) logs_dir: PathBuf,
    /// `{output_dir}/junit-parts`.
    pub(crate) parts_dir: PathBuf,
}

/// One batch handed to a sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The run-wide batch number (log file names use it).
    pub(crate) number: usize,
    /// Indices of its tests.
    pub(crate) tests: Vec<usize>,
}

/// How a batch ended, as the suffix of its log file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchKind {
    /// Every test passed or was skipped.
    Success,
    /// Some test failed or timed out.
    Failure,
    /// The infrastructure failed: no results, or the sandbox could not run it.
    Error,
    /// Cancelled (fail-fast or interrupt) before it finished.
    Cancelled,
}

impl BatchKind {
    /// The log file suffix.
    fn suffix(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What one attempt of one test produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttemptReport {
    /// Index of the test.
    pub(crate) test: usize,
    /// The result, `name` set to the canonical ID. For a test without a result, a
    /// synthesized not-run case carrying the reason (see [`Attempt::not_run`]).
    pub(crate) case: TestCase,
}

impl AttemptReport {
    /// Whether this attempt produced no result at all.
    pub(crate) fn is_not_run(&self) -> bool {
        self.case.outcome.is_not_run()
    }
}

/// What a batch produced.
#[derive(Debug, Clone)]
pub(crate) struct BatchReport {
    /// How it ended.
    kind: BatchKind,
    /// One report per test that got an attempt (none when cancelled).
    pub(crate) attempts: Vec<AttemptReport>,
    /// Why the sandbox itself failed, if it did: the worker retires it, and the tests
    /// that got no result go to another sandbox.
    pub(crate) sandbox_failure: Option<String>,
    /// Whether the batch outlived its timeout and was killed.
    pub(crate) timed_out: bool,
}

impl BatchReport {
    /// A report of `kind` with `attempts`, the sandbox fine and no timeout.
    fn new(kind: BatchKind, attempts: Vec<AttemptReport>) -> Self {
        Self {
            kind,
            attempts,
            sandbox_failure: None,
            timed_out: false,
        }
    }
}

/// Runs `job` in `sandbox`, telling `sink` about each test as the runner reports it.
/// Never fails: every problem becomes attempts with reasons.
pub(crate) async fn execute(
    sandbox: &dyn Sandbox,
    job: &Job,
    cx: &BatchContext,
    cancel: &CancellationToken,
    sink: LiveSink,
) -> BatchReport {
    let ids: Vec<String> = job.tests.iter().map(|&t| cx.ids[t].clone()).collect();
    let log_base = cx.logs_dir.join(format!("batch-{}", job.number));
    let running_log = log_base.with_extension("running");
    let started = Instant::now();

    let (paths, remote_result) = batch_paths(sandbox, job.number, cx.framework.result_source());
    let (exec, live) = match prepare(sandbox, cx, &ids, &paths, cancel).await {
        Ok(command) => {
            tracing::debug!(
                batch = job.number,
                sandbox = sandbox.id(),
                "running {}",
                command.display()
            );
            let reader = LiveReader::new(cx, job, sink);
            let echo = cx.no_capture;
            run_logged(
                sandbox,
                &command,
                cx.timeout,
                cancel,
                &running_log,
                reader,
                echo,
            )
            .await
        }
        Err(err) => (Err(err), Live::default()),
    };
    let elapsed = started.elapsed();

    let timed_out = matches!(exec, Ok(ExitOutcome::TimedOut));
    let mut report = match exec {
        // Cut short by the cancel (the input files, or the command): the tests that
        // finished keep their results.
        Err(_) if cancel.is_cancelled() => {
            BatchReport::new(BatchKind::Cancelled, live.finished_attempts(job))
        }
        Ok(ExitOutcome::Cancelled) => {
            BatchReport::new(BatchKind::Cancelled, live.finished_attempts(job))
        }
        Err(err) => could_not_run(sandbox, job, &ids, &err, &running_log, live),
        Ok(outcome) => {
            let ran = Ran {
                outcome,
                elapsed,
                status: describe(outcome, cx.timeout),
            };
            let remote = remote_result.as_deref();
            collect_results(sandbox, job, &ids, cx, &ran, remote, live).await
        }
    };
    report.timed_out = timed_out;
    let final_log = log_base.with_extension(report.kind.suffix());
    if let Err(err) = std::fs::rename(&running_log, &final_log) {
        tracing::debug!("cannot rename `{}`: {err}", running_log.display());
    }
    report
}

/// The files of batch `number` in `sandbox`, and the result file to fetch (none when
/// the exit code decides).
fn batch_paths(
    sandbox: &dyn Sandbox,
    number: usize,
    source: ResultSource,
) -> (BatchPaths, Option<String>) {
    let remote_result = match source {
        ResultSource::JunitPerBatch => Some(sandbox.result_path(number, "xml")),
        ResultSource::JunitFixed(path) => Some(path),
        ResultSource::ExitCode => None,
    };
    let paths = BatchPaths {
        result: remote_result.clone().unwrap_or_default(),
        tests_file: sandbox.result_path(number, "tests"),
        script_file: sandbox.result_path(number, "sh"),
        support_dir: sandbox.support_dir(),
        shared_dir: sandbox.shared_dir(),
    };
    (paths, remote_result)
}

/// The report of a batch whose command did not run to an outcome. A command that could
/// not start (or whose input files could not be written) is this batch's problem, and
/// the sandbox runs the next one; any other exec failure (and a sandbox that says it
/// was lost, see [`SandboxLost`]) means the sandbox itself is in trouble, and it is
/// retired. The reason goes into the batch's log too.
fn could_not_run(
    sandbox: &dyn Sandbox,
    job: &Job,
    ids: &[String],
    err: &anyhow::Error,
    running_log: &Path,
    mut live: Live,
) -> BatchReport {
    let sandbox_failed = is_sandbox_lost(err)
        || !(err.is::<PrepareError>()
            || err.is::<InputFilesNotWritten>()
            || crate::process::is_spawn_error(err));
    let reason = if is_sandbox_lost(err) {
        format!("{err:#}")
    } else if sandbox_failed {
        format!(
            "sandbox `{}` could not run the batch: {err:#}",
            sandbox.id()
        )
    } else {
        format!(
            "the batch could not start in sandbox `{}`: {err:#}",
            sandbox.id()
        )
    };
    tracing::error!("batch {}: {reason}", job.number);
    // Without a log the reason is still in the report, so a write error is ignored.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(running_log)
        .and_then(|mut log| writeln!(log, "[offload] {reason}"));
    let attempts = ids
        .iter()
        .zip(&job.tests)
        .enumerate()
        .map(|(pos, (id, &test))| AttemptReport {
            test,
            case: live.stand_in(pos, id, None, &|| reason.clone()),
        })
        .collect();
    BatchReport {
        sandbox_failure: sandbox_failed.then_some(reason),
        ..BatchReport::new(BatchKind::Error, attempts)
    }
}

/// Whether `err` says the sandbox was lost, also while the batch's input files were
/// being written.
fn is_sandbox_lost(err: &anyhow::Error) -> bool {
    let inner = err.downcast_ref::<PrepareError>().map_or(err, |p| &p.0);
    inner.chain().any(|e| e.is::<SandboxLost>())
}

/// A batch that could not be set up: its command could not be built or its input files
/// could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct PrepareError(anyhow::Error);

/// Builds the batch's command and writes its input files into the sandbox.
async fn prepare(
    sandbox: &dyn Sandbox,
    cx: &BatchContext,
    ids: &[String],
    paths: &BatchPaths,
    cancel: &CancellationToken,
) -> anyhow::Result<CommandSpec> {
    let batch = cx
        .framework
        .batch_command(ids, paths, cx.fail_fast)
        .map_err(|err| PrepareError(err.context("cannot build the batch command")))?;
    if !batch.inputs.is_empty() {
        sandbox
            .write_files(&batch.inputs, cancel)
            .await
            .map_err(|err| PrepareError(err.context("cannot write the batch's input files")))?;
    }
    Ok(batch.command)
}

/// Runs the command, writing stdout lines as they are and stderr lines prefixed
/// `[stderr] ` to `log`, and reading the per-test events of its lines (see
/// [`crate::framework::live`]): each goes to `live.sink` as it comes, Offload's own
/// event lines stay out of the log. With `echo`, each other line also goes to
/// Offload's own stdout or stderr as it comes. A log that cannot be written is a
/// warning: the batch runs. Returns the outcome and what the events said.
async fn run_logged(
    sandbox: &dyn Sandbox,
    command: &CommandSpec,
    timeout: Duration,
    cancel: &CancellationToken,
    log: &Path,
    live: LiveReader,
    echo: bool,
) -> (anyhow::Result<ExitOutcome>, Live) {
    let (tx, mut rx) = mpsc::unbounded_channel::<OutputLine>();
    let file = std::fs::File::create(log);
    let writer = tokio::task::spawn_blocking({
        let mut file = file.map(std::io::BufWriter::new);
        let mut live = live;
        move || -> (anyhow::Result<()>, Live) {
            let mut result = Ok(());
            while let Some(line) = rx.blocking_recv() {
                if live.read(&line.text) {
                    continue;
                }
                if echo {
                    echo_line(&line);
                }
                if let Ok(f) = file.as_mut() {
                    let written = match line.stream {
                        Stream::Stdout => writeln!(f, "{}", line.text),
                        Stream::Stderr => writeln!(f, "[stderr] {}", line.text),
                    };
                    if let Err(e) = written {
                        result = Err(e.into());
                    }
                }
            }
            let result = match file {
                Ok(mut f) => f.flush().map_err(Into::into).and(result),
                Err(e) => Err(e.into()),
            };
            (result, live.said)
        }
    });
    let outcome = sandbox.exec(command, timeout, cancel, &tx).await;
    drop(tx);
    let (log_error, said) = match writer.await {
        Ok((result, said)) => (result.err(), said),
        Err(e) => (Some(e.into()), Live::default()),
    };
    if let Some(err) = log_error {
        tracing::warn!("cannot write the batch log `{}`: {err:#}", log.display());
    }
    (outcome, said)
}

/// A test of a running batch started or finished, as its runner said.
#[derive(Debug, Clone)]
pub(crate) struct LiveUpdate {
    /// The batch's number.
    pub(crate) batch: usize,
    /// Index of the test in the run.
    pub(crate) test: usize,
    /// `None` when it started; its outcome and duration (seconds) when it finished.
    pub(crate) finished: Option<(CaseOutcome, f64)>,
}

/// Where a batch's live updates go as they come.
pub(crate) type LiveSink = Arc<dyn Fn(LiveUpdate) + Send + Sync>;

/// What a batch's runner said about its tests while it ran.
#[derive(Debug, Default)]
struct Live {
    /// By position in the batch: whether the test started.
    started: Vec<bool>,
    /// By position in the batch: the case of a test that finished.
    finished: Vec<Option<TestCase>>,
    /// The runner says when a test starts: a test it never started did not run.
    reports_starts: bool,
}

impl Live {
    /// The case of the test at `pos` (ID `id`) for which the result file has none: what
    /// the runner said when it finished; else, when the batch `timed_out`, a timeout
    /// (unless the runner, which says when tests start, never started it: not run),
    /// and otherwise "not run" with `reason`.
    fn stand_in(
        &mut self,
        pos: usize,
        id: &str,
        timed_out: Option<Duration>,
        reason: &dyn Fn() -> String,
    ) -> TestCase {
        if let Some(case) = self.finished.get_mut(pos).and_then(Option::take) {
            return case;
        }
        let started = self.started.get(pos).copied().unwrap_or(false);
        match timed_out {
            Some(timeout) if started || !self.reports_starts => timed_out_case(id, timeout),
            Some(timeout) => not_run_case(
                id,
                &format!(
                    "the batch timed out after {} s before the test started",
                    timeout.as_secs()
                ),
            ),
            None => not_run_case(id, &reason()),
        }
    }

    /// The attempts of the tests that finished, for a batch cut short before its
    /// result file: a test that finished keeps its result.
    fn finished_attempts(self, job: &Job) -> Vec<AttemptReport> {
        self.finished
            .into_iter()
            .zip(&job.tests)
            .filter_map(|(case, &test)| case.map(|case| AttemptReport { test, case }))
            .collect()
    }
}

/// Reads the event lines of one running batch (on the thread that writes its log).
struct LiveReader {
    framework: Arc<dyn Framework>,
    ids: Arc<Vec<String>>,
    job: Job,
    sink: LiveSink,
    /// Each key of the batch's tests to its position, made at the first event.
    keys: Option<FxHashMap<String, usize>>,
    said: Live,
}

impl LiveReader {
    fn new(cx: &BatchContext, job: &Job, sink: LiveSink) -> Self {
        Self {
            framework: Arc::clone(&cx.framework),
            ids: Arc::clone(&cx.ids),
            job: job.clone(),
            sink,
            keys: None,
            said: Live {
                started: vec![false; job.tests.len()],
                finished: vec![None; job.tests.len()],
                reports_starts: false,
            },
        }
    }

    /// Takes in the event `line` carries, if any; whether the line stays out of the log.
    fn read(&mut self, line: &str) -> bool {
        let Some(event) = self.framework.live_event(line) else {
            return false;
        };
        let (key, finished) = match event {
            LiveEvent::Started { key } => (key, None),
            LiveEvent::Finished {
                key,
                outcome,
                time,
                message,
            } => (key, Some((live::case_outcome(outcome, message), time))),
            LiveEvent::Fallback { reason } => {
                live::say_fallback_once(&reason);
                return live::is_marked(line);
            }
        };
        let (framework, ids, tests) = (&self.framework, &self.ids, &self.job.tests);
        let keys = self.keys.get_or_insert_with(|| {
            let mut keys = FxHashMap::default();
            for (pos, &test) in tests.iter().enumerate() {
                for key in framework.id_keys(&ids[test]) {
                    keys.entry(key.into_owned()).or_insert(pos);
                }
            }
            keys
        });
        let Some(&pos) = keys.get(&key) else {
            tracing::debug!(
                "batch {}: an event for `{key}`, not a test of the batch",
                self.job.number
            );
            return live::is_marked(line);
        };
        let test = self.job.tests[pos];
        match &finished {
            None => {
                self.said.reports_starts = true;
                self.said.started[pos] = true;
            }
            // The first word on a test stands: runners may repeat themselves at the end.
            Some(_) if self.said.finished[pos].is_some() => return live::is_marked(line),
            Some((outcome, time)) => {
                self.said.finished[pos] = Some(TestCase {
                    name: self.ids[test].clone(),
                    time: *time,
                    outcome: outcome.clone(),
                    ..TestCase::default()
                });
            }
        }
        (self.sink)(LiveUpdate {
            batch: self.job.number,
            test,
            finished,
        });
        live::is_marked(line)
    }
}

/// Writes `line` to Offload's stdout or stderr, the stream it came from, at once. A
/// closed terminal or pipe is ignored: the log file still gets the line.
fn echo_line(line: &OutputLine) {
    let _ = match line.stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", line.text).and_then(|()| out.flush())
        }
        Stream::Stderr => writeln!(std::io::stderr().lock(), "{}", line.text),
    };
}

/// How a batch's command ended.
struct Ran {
    outcome: ExitOutcome,
    elapsed: Duration,
    /// The outcome in words (`exited with code 1`), for reasons.
    status: String,
}

/// Reads what the batch's tests produced: the result file, mapped back to the tests,
/// or the exit code when there is no result file. A test the result file lacks gets
/// what the runner said while it ran (see [`Live::stand_in`]).
async fn collect_results(
    sandbox: &dyn Sandbox,
    job: &Job,
    ids: &[String],
    cx: &BatchContext,
    ran: &Ran,
    remote_result: Option<&str>,
    mut live: Live,
) -> BatchReport {
    let Some(remote) = remote_result else {
        return exit_code_fallback(job, ids, ran);
    };
    let local = cx.parts_dir.join(format!("batch-{}.xml", job.number));
    let timed_out = (ran.outcome == ExitOutcome::TimedOut).then_some(cx.timeout);
    let (found, reason) = match fetch_result(sandbox, remote, &local, &ran.status).await {
        Ok(suites) => {
            let found = match_cases(cx.framework.as_ref(), ids, suites, job.number);
            let reason = format!(
                "the test runner reported no result for it; the batch {}",
                ran.status
            );
            (found, reason)
        }
        Err(reason) => {
            if timed_out.is_some() {
                tracing::warn!(
                    "batch {}: timed out after {} s",
                    job.number,
                    cx.timeout.as_secs()
                );
                // A killed runner rarely writes its report; the timeout is the news.
                tracing::debug!("batch {}: {reason}", job.number);
            } else {
                tracing::warn!("batch {}: {reason}", job.number);
            }
            (vec![None; ids.len()], reason)
        }
    };

    let mut kind = BatchKind::Success;
    let mut attempts = Vec::with_capacity(ids.len());
    for (pos, case) in found.into_iter().enumerate() {
        let case =
            case.unwrap_or_else(|| live.stand_in(pos, &ids[pos], timed_out, &|| reason.clone()));
        if case.outcome.is_not_run() {
            kind = BatchKind::Error.max_with(kind);
        } else if matches!(case.outcome, CaseOutcome::Failed(_) | CaseOutcome::Error(_))
            && kind == BatchKind::Success
        {
            kind = BatchKind::Failure;
        }
        attempts.push(AttemptReport {
            test: job.tests[pos],
            case,
        });
    }
    if timed_out.is_some() {
        kind = BatchKind::Failure;
    }
    BatchReport::new(kind, attempts)
}

/// Fetches the batch's result file from `remote` to `local` and parses it; the error
/// is the reason its tests have no result.
async fn fetch_result(
    sandbox: &dyn Sandbox,
    remote: &str,
    local: &Path,
    status: &str,
) -> Result<Vec<junit::TestSuite>, String> {
    if let Err(err) = sandbox.download(remote, local).await {
        return Err(format!(
            "no result file: `{remote}` could not be fetched ({err:#}); the batch {status}"
        ));
    }
    let bytes = std::fs::read(local).map_err(|err| {
        format!(
            "no result file: cannot read `{}`: {err}; the batch {status}",
            local.display()
        )
    })?;
    junit::parse(&String::from_utf8_lossy(&bytes))
        .map_err(|err| format!("unreadable result file `{remote}`: {err:#}; the batch {status}"))
}

/// Each test's case among `suites`, found through the framework's keys, with `name`
/// set to the test's ID; the worst one when a test reports twice. Cases that match no
/// test of the batch are a warning.
fn match_cases(
    framework: &dyn Framework,
    ids: &[String],
    suites: Vec<junit::TestSuite>,
    batch: usize,
) -> Vec<Option<TestCase>> {
    let mut by_key: FxHashMap<Cow<'_, str>, usize> = FxHashMap::default();
    by_key.reserve(ids.len());
    for (pos, id) in ids.iter().enumerate() {
        for key in framework.id_keys(id) {
            by_key.entry(key).or_insert(pos);
        }
    }
    let mut found: Vec<Option<TestCase>> = vec![None; ids.len()];
    let mut unmatched: Vec<String> = Vec::new();
    for mut case in suites.into_iter().flat_map(|s| s.cases) {
        let key = framework.junit_key(&case.name, case.classname.as_deref());
        let Some(&pos) = by_key.get(key.as_ref()) else {
            unmatched.push(key.into_owned());
            continue;
        };
        if case.name != ids[pos] {
            case.name.clone_from(&ids[pos]);
        }
        found[pos] = Some(match found[pos].take() {
            Some(prev) if severity(&prev.outcome) >= severity(&case.outcome) => prev,
            _ => case,
        });
    }
    if let Some(first) = unmatched.first() {
        tracing::warn!(
            "batch {batch}: {} result(s) match no test of the batch and were ignored (first: `{}`)",
            unmatched.len(),
            first.replace('\u{1f}', "::")
        );
    }
    found
}

impl BatchKind {
    /// `Error` outranks `Failure`, which outranks `Success`.
    fn max_with(self, other: Self) -> Self {
        let rank = |k: Self| match k {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Error => 2,
            Self::Cancelled => 3,
        };
        if rank(self) >= rank(other) {
            self
        } else {
            other
        }
    }
}

/// How bad an outcome is, to keep the worst when a test reports twice (a failing test
/// whose teardown also errors, say).
fn severity(outcome: &CaseOutcome) -> u8 {
    match outcome {
        CaseOutcome::Passed => 0,
        CaseOutcome::Skipped(_) => 1,
        CaseOutcome::Failed(_) => 2,
        CaseOutcome::Error(_) => 3,
    }
}

fn describe(outcome: ExitOutcome, timeout: Duration) -> String {
    match outcome {
        ExitOutcome::Exited(code) => format!("exited with code {code}"),
        ExitOutcome::Signaled(sig) => format!("was killed by signal {sig}"),
        ExitOutcome::TimedOut => format!("timed out after {} s", timeout.as_secs()),
        ExitOutcome::Cancelled => "was cancelled".to_owned(),
    }
}

/// No result file configured: the exit code decides for every test of the batch.
fn exit_code_fallback(job: &Job, ids: &[String], ran: &Ran) -> BatchReport {
    let passed = ran.outcome == ExitOutcome::Exited(0);
    let time = ran.elapsed.as_secs_f64() / ids.len().max(1) as f64;
    let status = &ran.status;
    let attempts = ids
        .iter()
        .zip(&job.tests)
        .map(|(id, &test)| {
            let outcome = if passed {
                CaseOutcome::Passed
            } else {
                CaseOutcome::Failed(Detail {
                    message: Some(format!("the batch {status} (no result file: the exit code decides for every test of the batch)")),
                    kind: Some("offload.ExitCode".to_owned()),
                    body: String::new(),
                })
            };
            AttemptReport { test, case: TestCase { name: id.clone(), time, outcome, ..TestCase::default() } }
        })
        .collect();
    let kind = if passed {
        BatchKind::Success
    } else {
        BatchKind::Failure
    };
    BatchReport::new(kind, attempts)
}

/// A synthesized case for a test that produced no result.
fn not_run_case(id: &str, reason: &str) -> TestCase {
    Attempt::not_run(id, reason, 0).case
}

fn timed_out_case(id: &str, timeout: Duration) -> TestCase {
    TestCase {
        name: id.to_owned(),
        time: timeout.as_secs_f64(),
        outcome: CaseOutcome::Failed(Detail {
            message: Some(format!(
                "timed out after {} s (test_timeout_secs): the batch was killed",
                timeout.as_secs()
            )),
            kind: Some("offload.Timeout".to_owned()),
            body: String::new(),
        }),
        ..TestCase::default()
    }
}
