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

use crate::framework::{BatchPaths, Framework, ResultSource};
use crate::process::{CommandSpec, ExitOutcome, Stream};
use crate::provider::{OutputLine, Sandbox};
use crate::report::junit::{self, CaseOutcome, Detail, TestCase};
use crate::report::verdict::Attempt;

/// What every batch of a run shares.
pub struct BatchContext {
    /// The framework that builds commands and maps results.
    pub framework: Arc<dyn Framework>,
    /// The canonical IDs of the run's tests (a batch holds indices into this).
    pub ids: Arc<Vec<String>>,
    /// Timeout of one batch.
    pub timeout: Duration,
    /// Pass the framework's stop flag.
    pub fail_fast: bool,
    /// `{output_dir}/logs`.
    pub logs_dir: PathBuf,
    /// `{output_dir}/junit-parts`.
    pub parts_dir: PathBuf,
}

/// One batch handed to a sandbox.
#[derive(Debug, Clone)]
pub struct Job {
    /// The run-wide batch number (log file names use it).
    pub number: usize,
    /// Indices of its tests.
    pub tests: Vec<usize>,
}

/// How a batch ended, as the suffix of its log file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
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
    pub fn suffix(self) -> &'static str {
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
pub struct AttemptReport {
    /// Index of the test.
    pub test: usize,
    /// The result, `name` set to the canonical ID. For a test without a result, a
    /// synthesized not-run case carrying the reason (see [`Attempt::not_run`]).
    pub case: TestCase,
}

impl AttemptReport {
    /// Whether this attempt produced no result at all.
    pub fn is_not_run(&self) -> bool {
        self.case.outcome.is_not_run()
    }
}

/// What a batch produced.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// How it ended.
    pub kind: BatchKind,
    /// One report per test that got an attempt (none when cancelled).
    pub attempts: Vec<AttemptReport>,
    /// Whether the sandbox itself failed (the worker retires it).
    pub sandbox_failed: bool,
    /// Whether the batch outlived its timeout and was killed.
    pub timed_out: bool,
}

/// Runs `job` in `sandbox`. Never fails: every problem becomes attempts with reasons.
pub async fn execute(
    sandbox: &dyn Sandbox,
    job: &Job,
    cx: &BatchContext,
    cancel: &CancellationToken,
) -> BatchReport {
    let ids: Vec<String> = job.tests.iter().map(|&t| cx.ids[t].clone()).collect();
    let log_base = cx.logs_dir.join(format!("batch-{}", job.number));
    let running_log = log_base.with_extension("running");
    let started = Instant::now();

    let source = cx.framework.result_source();
    let remote_result = match &source {
        ResultSource::JunitPerBatch => Some(sandbox.result_path(job.number, "xml")),
        ResultSource::JunitFixed(path) => Some(path.clone()),
        ResultSource::ExitCode => None,
    };
    let paths = BatchPaths {
        result: remote_result.clone().unwrap_or_default(),
        tests_file: sandbox.result_path(job.number, "tests"),
        script_file: sandbox.result_path(job.number, "sh"),
        support_dir: sandbox.support_dir(),
    };
    let (exec, log_error) = match prepare(sandbox, cx, &ids, &paths, cancel).await {
        Ok(command) => {
            tracing::debug!(
                batch = job.number,
                sandbox = sandbox.id(),
                "running {}",
                command.display()
            );
            run_logged(sandbox, &command, cx.timeout, cancel, &running_log).await
        }
        Err(err) => (Err(err), None),
    };
    if let Some(err) = log_error {
        tracing::warn!(
            "batch {}: cannot write its log `{}`: {err:#}",
            job.number,
            running_log.display()
        );
    }
    let elapsed = started.elapsed();

    let timed_out = matches!(exec, Ok(ExitOutcome::TimedOut));
    let report = match exec {
        // Writing the input files was cut short by the cancel.
        Err(_) if cancel.is_cancelled() => BatchReport {
            kind: BatchKind::Cancelled,
            attempts: Vec::new(),
            sandbox_failed: false,
            timed_out: false,
        },
        Err(err) => {
            // A command that could not start (or whose input files could not be
            // written) is this batch's problem; the sandbox runs the next one. Any other
            // exec failure means the sandbox itself is in trouble.
            let sandbox_failed =
                !(err.is::<PrepareError>() || crate::process::is_spawn_error(&err));
            let reason = if sandbox_failed {
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
            // The reason belongs in the batch's log too; without a log it is still in the
            // report, so a write error is ignored.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&running_log)
                .and_then(|mut log| writeln!(log, "[offload] {reason}"));
            BatchReport {
                kind: BatchKind::Error,
                attempts: not_run_all(job, &ids, &reason),
                sandbox_failed,
                timed_out: false,
            }
        }
        Ok(ExitOutcome::Cancelled) => BatchReport {
            kind: BatchKind::Cancelled,
            attempts: Vec::new(),
            sandbox_failed: false,
            timed_out: false,
        },
        Ok(outcome) => {
            collect_results(
                sandbox,
                job,
                &ids,
                cx,
                outcome,
                remote_result.as_deref(),
                elapsed,
            )
            .await
        }
    };

    let mut report = report;
    report.timed_out = timed_out;
    let final_log = log_base.with_extension(report.kind.suffix());
    if let Err(err) = std::fs::rename(&running_log, &final_log) {
        tracing::debug!("cannot rename `{}`: {err}", running_log.display());
    }
    report
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
/// `[stderr] ` to `log`. Returns the outcome and any error writing the log.
async fn run_logged(
    sandbox: &dyn Sandbox,
    command: &CommandSpec,
    timeout: Duration,
    cancel: &CancellationToken,
    log: &Path,
) -> (anyhow::Result<ExitOutcome>, Option<anyhow::Error>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<OutputLine>();
    let file = std::fs::File::create(log);
    let writer = tokio::task::spawn_blocking({
        let mut file = file.map(std::io::BufWriter::new);
        move || -> anyhow::Result<()> {
            let mut result = Ok(());
            while let Some(line) = rx.blocking_recv() {
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
            match file {
                Ok(mut f) => {
                    f.flush()?;
                    result
                }
                Err(e) => Err(e.into()),
            }
        }
    });
    let outcome = sandbox.exec(command, timeout, cancel, &tx).await;
    drop(tx);
    let log_error = match writer.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(e.into()),
    };
    (outcome, log_error)
}

async fn collect_results(
    sandbox: &dyn Sandbox,
    job: &Job,
    ids: &[String],
    cx: &BatchContext,
    outcome: ExitOutcome,
    remote_result: Option<&str>,
    elapsed: Duration,
) -> BatchReport {
    let status = describe(outcome, cx.timeout);
    let Some(remote) = remote_result else {
        return exit_code_fallback(job, ids, outcome, &status, elapsed);
    };

    let local = cx.parts_dir.join(format!("batch-{}.xml", job.number));
    let parsed = match sandbox.download(remote, &local).await {
        Err(err) => Err(format!(
            "no result file: `{remote}` could not be fetched ({err:#}); the batch {status}"
        )),
        Ok(()) => match std::fs::read(&local) {
            Err(err) => Err(format!(
                "no result file: cannot read `{}`: {err}; the batch {status}",
                local.display()
            )),
            Ok(bytes) => junit::parse(&String::from_utf8_lossy(&bytes)).map_err(|err| {
                format!("unreadable result file `{remote}`: {err:#}; the batch {status}")
            }),
        },
    };

    let timed_out = outcome == ExitOutcome::TimedOut;
    let suites = match parsed {
        Ok(suites) => suites,
        Err(reason) if timed_out => {
            tracing::warn!(
                "batch {}: timed out after {} s",
                job.number,
                cx.timeout.as_secs()
            );
            // A killed runner rarely writes its report; the timeout is the news.
            tracing::debug!("batch {}: {reason}", job.number);
            return BatchReport {
                kind: BatchKind::Failure,
                attempts: timed_out_all(job, ids, cx.timeout),
                sandbox_failed: false,
                timed_out: false,
            };
        }
        Err(reason) => {
            tracing::warn!("batch {}: {reason}", job.number);
            return BatchReport {
                kind: BatchKind::Error,
                attempts: not_run_all(job, ids, &reason),
                sandbox_failed: false,
                timed_out: false,
            };
        }
    };

    // Map each test case to a test of the batch through the framework's keys.
    let mut by_key: FxHashMap<Cow<'_, str>, usize> = FxHashMap::default();
    by_key.reserve(ids.len());
    for (pos, id) in ids.iter().enumerate() {
        for key in cx.framework.id_keys(id) {
            by_key.entry(key).or_insert(pos);
        }
    }
    let mut found: Vec<Option<TestCase>> = vec![None; ids.len()];
    let mut unmatched: Vec<String> = Vec::new();
    for case in suites.into_iter().flat_map(|s| s.cases) {
        let key = cx
            .framework
            .junit_key(&case.name, case.classname.as_deref());
        match by_key.get(key.as_ref()) {
            Some(&pos) => {
                let mut case = case;
                if case.name != ids[pos] {
                    case.name.clone_from(&ids[pos]);
                }
                found[pos] = Some(match found[pos].take() {
                    Some(prev) if severity(&prev.outcome) >= severity(&case.outcome) => prev,
                    _ => case,
                });
            }
            None => unmatched.push(key.into_owned()),
        }
    }
    if !unmatched.is_empty() {
        tracing::warn!(
            "batch {}: {} result(s) match no test of the batch and were ignored (first: `{}`)",
            job.number,
            unmatched.len(),
            unmatched[0].replace('\u{1f}', "::")
        );
    }

    let mut kind = BatchKind::Success;
    let mut attempts = Vec::with_capacity(ids.len());
    for (pos, case) in found.into_iter().enumerate() {
        let case = match case {
            Some(case) => case,
            None if timed_out => timed_out_case(&ids[pos], cx.timeout),
            None => {
                kind = BatchKind::Error.max_with(kind);
                not_run_case(
                    &ids[pos],
                    &format!("the test runner reported no result for it; the batch {status}"),
                )
            }
        };
        if matches!(case.outcome, CaseOutcome::Failed(_) | CaseOutcome::Error(_))
            && kind == BatchKind::Success
        {
            kind = BatchKind::Failure;
        }
        attempts.push(AttemptReport {
            test: job.tests[pos],
            case,
        });
    }
    if timed_out {
        kind = BatchKind::Failure;
    }
    BatchReport {
        kind,
        attempts,
        sandbox_failed: false,
        timed_out: false,
    }
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
fn exit_code_fallback(
    job: &Job,
    ids: &[String],
    outcome: ExitOutcome,
    status: &str,
    elapsed: Duration,
) -> BatchReport {
    let passed = outcome == ExitOutcome::Exited(0);
    let time = elapsed.as_secs_f64() / ids.len().max(1) as f64;
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
    BatchReport {
        kind: if passed {
            BatchKind::Success
        } else {
            BatchKind::Failure
        },
        attempts,
        sandbox_failed: false,
        timed_out: false,
    }
}

/// A synthesized case for a test that produced no result.
pub fn not_run_case(id: &str, reason: &str) -> TestCase {
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

fn not_run_all(job: &Job, ids: &[String], reason: &str) -> Vec<AttemptReport> {
    ids.iter()
        .zip(&job.tests)
        .map(|(id, &test)| AttemptReport {
            test,
            case: not_run_case(id, reason),
        })
        .collect()
}

fn timed_out_all(job: &Job, ids: &[String], timeout: Duration) -> Vec<AttemptReport> {
    ids.iter()
        .zip(&job.tests)
        .map(|(id, &test)| AttemptReport {
            test,
            case: timed_out_case(id, timeout),
        })
        .collect()
}
