//! The coordinator: owns the run state, hands batches to sandbox workers, re-queues
//! failures, decides verdicts and ends the run.
//!
//! One task (the coordinator) owns every piece of mutable state: the queue, each test's
//! attempts, which workers are idle. Workers own one sandbox each and only execute
//! what they are handed, reporting back through one event channel. The run ends when
//! nothing is queued and nothing runs, when every sandbox is gone, or when it is
//! stopped (fail-fast, interrupt); every test without a verdict then gets "not run"
//! with the reason, so a run always ends.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{self, AttemptReport, BatchContext, BatchReport, Job};
use super::progress::Progress;
use crate::framework::{Framework, TestRecord};
use crate::provider::{Provider, Sandbox};
use crate::report::junit::CaseOutcome;
use crate::report::verdict::{Attempt, TestResult, Verdict};
use crate::scheduler::{self, Item};

/// How long destroying one sandbox may take before it is abandoned.
pub const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of one run of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Maximum number of sandboxes.
    pub parallel: usize,
    /// Timeout of one batch.
    pub timeout: Duration,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// `{output_dir}`: `logs/` and `junit-parts/` go there.
    pub output_dir: PathBuf,
    /// Known test durations in seconds, by ID.
    pub durations: std::collections::HashMap<String, f64>,
}

/// What a run produced.
#[derive(Debug)]
pub struct EngineOutcome {
    /// One result per test, in the order of the records.
    pub results: Vec<TestResult>,
    /// Wall-clock time from the first sandbox request to the last destroy.
    pub elapsed: Duration,
    /// Sum over sandboxes of the seconds each existed (for cost estimates).
    pub sandbox_seconds: f64,
}

enum Event {
    Ready(usize),
    SandboxFailed(usize, anyhow::Error),
    Finished(usize, Job, BatchReport),
    Gone(f64),
}

struct TestState {
    failures: u32,
    attempts: Vec<Attempt>,
    verdict: Option<Verdict>,
}

/// Runs `records` (unique IDs) through `framework` in sandboxes of `provider`.
///
/// `interrupt` stops the run from outside (a signal); fail-fast stops it from inside.
/// Either way running batches are killed, sandboxes destroyed and every test gets a
/// verdict.
pub async fn run(
    records: &[TestRecord],
    framework: Arc<dyn Framework>,
    provider: Arc<dyn Provider>,
    settings: &EngineSettings,
    interrupt: &CancellationToken,
    progress: &mut Progress,
) -> EngineOutcome {
    let started = Instant::now();
    let ids: Arc<Vec<String>> = Arc::new(records.iter().map(|r| r.id.clone()).collect());
    let items: Vec<Item<'_>> = records
        .iter()
        .map(|r| Item {
            id: &r.id,
            group: &r.group,
            individual: r.schedule_individual,
        })
        .collect();
    let durations = scheduler::expected_durations(&items, &settings.durations);
    let planned = scheduler::plan(&items, &durations, settings.parallel);
    let mut queue: VecDeque<Vec<usize>> = planned.into_iter().map(|b| b.items).collect();
    tracing::info!(
        "scheduled {} tests into {} batches",
        records.len(),
        queue.len()
    );

    let cx = Arc::new(BatchContext {
        framework: Arc::clone(&framework),
        ids: Arc::clone(&ids),
        timeout: settings.timeout,
        fail_fast: settings.fail_fast,
        logs_dir: settings.output_dir.join("logs"),
        parts_dir: settings.output_dir.join("junit-parts"),
    });
    let stop = interrupt.child_token();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();

    // Never more sandboxes than batches.
    let workers = settings.parallel.max(1).min(queue.len());
    let mut senders: Vec<Option<mpsc::Sender<Job>>> = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let (tx, rx) = mpsc::channel::<Job>(1);
        senders.push(Some(tx));
        handles.push(tokio::spawn(worker(
            index,
            Arc::clone(&provider),
            rx,
            events_tx.clone(),
            Arc::clone(&cx),
            stop.clone(),
        )));
    }
    drop(events_tx);

    let mut tests: Vec<TestState> = records
        .iter()
        .map(|_| TestState {
            failures: 0,
            attempts: Vec::new(),
            verdict: None,
        })
        .collect();
    let mut idle: Vec<usize> = Vec::new();
    let mut creating = workers;
    let mut workers_done = 0usize;
    let mut running = 0usize;
    let mut next_batch = 0usize;
    let mut sandbox_seconds = 0.0;
    let mut last_sandbox_error: Option<String> = None;
    let mut stop_reason: Option<&'static str> = None;

    loop {
        if !stop.is_cancelled() {
            while let Some(&w) = idle.last() {
                let Some(tests_of_batch) = queue.pop_front() else {
                    break;
                };
                idle.pop();
                let job = Job {
                    number: next_batch,
                    tests: tests_of_batch,
                };
                next_batch += 1;
                let sent = match &senders[w] {
                    Some(tx) => tx.send(job).await.map_err(|e| e.0),
                    None => Err(job),
                };
                match sent {
                    Ok(()) => running += 1,
                    Err(job) => queue.push_front(job.tests),
                }
            }
        }
        let no_sandbox_left = creating == 0 && idle.is_empty() && running == 0;
        if running == 0 && (stop.is_cancelled() || queue.is_empty() || no_sandbox_left) {
            break;
        }

        let event = tokio::select! {
            event = events.recv() => event,
            () = stop.cancelled(), if !stop.is_cancelled() => {
                stop_reason.get_or_insert("the run was interrupted");
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Ready(w) => {
                creating -= 1;
                idle.push(w);
            }
            Event::SandboxFailed(w, err) => {
                creating -= 1;
                workers_done += 1;
                senders[w] = None;
                tracing::warn!(
                    "sandbox {w} could not be created, continuing with fewer sandboxes: {err:#}"
                );
                last_sandbox_error = Some(format!("{err:#}"));
            }
            Event::Gone(secs) => {
                sandbox_seconds += secs;
                workers_done += 1;
            }
            Event::Finished(w, job, report) => {
                running -= 1;
                if report.sandbox_failed {
                    senders[w] = None;
                } else {
                    idle.push(w);
                }
                let mut retry = Vec::new();
                let mut failed_now = false;
                for attempt in report.attempts {
                    let test = attempt.test;
                    let record = &records[test];
                    if let Some(again) =
                        record_attempt(&mut tests[test], record, attempt, job.number, progress)
                    {
                        failed_now |= again.failed;
                        if again.retry {
                            retry.push(test);
                        }
                    }
                }
                if failed_now && settings.fail_fast && !stop.is_cancelled() {
                    tracing::info!(
                        "fail-fast: batch {} had a failure, cancelling the rest of the run",
                        job.number
                    );
                    stop_reason = Some("cancelled by --fail-fast after the first failure");
                    stop.cancel();
                }
                if !retry.is_empty() && !stop.is_cancelled() {
                    // Retries go ahead of new work, spread over the sandboxes that are free.
                    let parts = (idle.len() + creating).max(1);
                    for b in scheduler::split_retries(&retry, &items, &durations, parts)
                        .into_iter()
                        .rev()
                    {
                        queue.push_front(b.items);
                    }
                }
            }
        }
    }

    // Let every worker destroy its sandbox; bound the wait.
    senders.clear();
    stop.cancel();
    let deadline = tokio::time::sleep(DESTROY_TIMEOUT + Duration::from_secs(5));
    tokio::pin!(deadline);
    let mut remaining = handles.len() - workers_done;
    while remaining > 0 {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Gone(secs)) => { sandbox_seconds += secs; remaining -= 1; }
                Some(Event::SandboxFailed(..)) => remaining -= 1,
                Some(_) => {}
                None => break,
            },
            () = &mut deadline => {
                tracing::warn!("{remaining} sandbox(es) did not shut down in time; abandoning them");
                for h in &handles { h.abort(); }
                break;
            }
        }
    }

    let default_reason = match (stop_reason, &last_sandbox_error) {
        (Some(reason), _) => reason.to_owned(),
        (None, Some(err)) if !queue.is_empty() => {
            format!("no sandbox was available to run it (last error: {err})")
        }
        _ => "it was never scheduled".to_owned(),
    };
    let results = finish(records, tests, &default_reason);
    progress.finish();
    EngineOutcome {
        results,
        elapsed: started.elapsed(),
        sandbox_seconds,
    }
}

struct AttemptEffect {
    failed: bool,
    retry: bool,
}

/// Records one attempt and decides whether the test is done or goes again.
fn record_attempt(
    state: &mut TestState,
    record: &TestRecord,
    attempt: AttemptReport,
    batch: usize,
    progress: &mut Progress,
) -> Option<AttemptEffect> {
    if state.verdict.is_some() {
        return None;
    }
    let not_run = attempt.is_not_run();
    let outcome = attempt.case.outcome.clone();
    state.attempts.push(Attempt {
        case: attempt.case,
        batch,
    });
    let is_failure = matches!(outcome, CaseOutcome::Failed(_) | CaseOutcome::Error(_));
    let verdict = match outcome {
        CaseOutcome::Passed if state.failures > 0 => Some(Verdict::Flaky),
        CaseOutcome::Passed => Some(Verdict::Passed),
        CaseOutcome::Skipped(_) => Some(Verdict::Skipped),
        CaseOutcome::Failed(_) | CaseOutcome::Error(_) => {
            state.failures += 1;
            if state.failures <= record.retry_count {
                None
            } else if state.attempts.iter().all(Attempt::is_not_run) {
                Some(Verdict::NotRun)
            } else {
                Some(Verdict::Failed)
            }
        }
    };
    if let Some(v) = verdict {
        state.verdict = Some(v);
        progress.test_decided(v);
    }
    Some(AttemptEffect {
        failed: is_failure && !not_run,
        retry: verdict.is_none(),
    })
}

/// Turns the per-test state into results; a test without a verdict is "not run".
fn finish(records: &[TestRecord], tests: Vec<TestState>, reason: &str) -> Vec<TestResult> {
    records
        .iter()
        .zip(tests)
        .map(|(record, mut state)| {
            let verdict = match state.verdict {
                Some(v) => v,
                None => {
                    // Failed attempts with retries left, then stopped: the failures stand.
                    if state.attempts.iter().any(|a| !a.is_not_run()) {
                        Verdict::Failed
                    } else {
                        let batch = state.attempts.last().map_or(usize::MAX, |a| a.batch);
                        state
                            .attempts
                            .push(Attempt::not_run(&record.id, reason, batch));
                        Verdict::NotRun
                    }
                }
            };
            TestResult {
                id: record.id.clone(),
                group: record.group.clone(),
                verdict,
                attempts: state.attempts,
            }
        })
        .collect()
}

/// One sandbox: create it, run what the coordinator hands over, destroy it.
async fn worker(
    index: usize,
    provider: Arc<dyn Provider>,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::UnboundedSender<Event>,
    cx: Arc<BatchContext>,
    stop: CancellationToken,
) {
    let created = Instant::now();
    // Creation is not raced against `stop`: dropping a half-finished create could leak a
    // remote sandbox. Providers bound it with their own timeout; a sandbox that arrives
    // after the run stopped is destroyed at once below (its job channel is closed).
    let sandbox: Box<dyn Sandbox> = match provider.create_sandbox(index).await {
        Ok(sandbox) => sandbox,
        Err(err) => {
            let _ = events.send(Event::SandboxFailed(index, err));
            return;
        }
    };
    tracing::debug!("sandbox {} ready", sandbox.id());
    // The coordinator may be gone if the run ended meanwhile; the sandbox is destroyed below.
    let _ = events.send(Event::Ready(index));
    while let Some(job) = jobs.recv().await {
        if stop.is_cancelled() {
            break;
        }
        let report = batch::execute(sandbox.as_ref(), &job, &cx, &stop).await;
        let failed = report.sandbox_failed;
        let _ = events.send(Event::Finished(index, job, report));
        if failed {
            break;
        }
    }
    match tokio::time::timeout(DESTROY_TIMEOUT, sandbox.destroy()).await {
        Ok(Ok(())) => tracing::debug!("sandbox {} destroyed", sandbox.id()),
        Ok(Err(err)) => tracing::warn!("cannot destroy sandbox `{}`: {err:#}", sandbox.id()),
        Err(_) => tracing::warn!(
            "destroying sandbox `{}` took over {} s; abandoned",
            sandbox.id(),
            DESTROY_TIMEOUT.as_secs()
        ),
    }
    let _ = events.send(Event::Gone(created.elapsed().as_secs_f64()));
}
