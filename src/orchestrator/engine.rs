//! The coordinator: owns the run state, hands batches to sandbox workers, re-queues
//! failures, decides verdicts and ends the run.
//!
//! One task (the [`Coordinator`]) owns every test's attempts and the queue of batches;
//! the [`Pool`] it drives owns the workers and knows which are idle. Workers own one
//! sandbox each and only execute what they are handed, reporting back through one
//! channel. The coordinator tells its [`Subscriber`] what happens (batches started,
//! attempts, verdicts). The run ends when nothing is queued and nothing runs, when every
//! sandbox is gone, or when it is stopped (fail-fast, interrupt); every test without a
//! verdict then gets "not run" with the reason, so a run always ends.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::{self, AttemptReport, BatchContext, BatchReport, Job, LiveSink, LiveUpdate};
use super::events::{RunEvent, Subscriber};
use crate::framework::{Framework, TestRecord};
use crate::provider::{Provider, Sandbox};
use crate::report::junit::{CaseOutcome, Detail, TestCase};
use crate::report::verdict::{Attempt, TestResult, Verdict};
use crate::scheduler::{self, Cpus, Item};

/// How often subscribers hear [`RunEvent::Tick`].
const TICK: Duration = Duration::from_secs(1);

/// How long destroying one sandbox may take before it is abandoned.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `type` of the skip of a test the runner lists but does not run unless asked.
/// How many times a test goes to another sandbox, without counting as an attempt,
/// because the sandbox running it was lost. A test that keeps taking its sandbox down
/// with it then ends like any test without a result.
const MAX_SANDBOX_LOSSES: u8 = 2;

const IGNORED_KIND: &str = "offload.Ignored";

/// Settings of one run of the engine.
#[derive(Debug, Clone)]
pub(crate) struct EngineSettings {
    /// Maximum number of sandboxes.
    pub(crate) parallel: usize,
    /// Timeout of one batch.
    pub(crate) timeout: Duration,
    /// Stop at the first failure.
    pub(crate) fail_fast: bool,
    /// `{output_dir}`: `logs/` and `junit-parts/` go there.
    pub(crate) output_dir: PathBuf,
    /// Known test durations in seconds, by ID.
    pub(crate) durations: rustc_hash::FxHashMap<String, f64>,
    /// Echo every batch's output to the terminal as it comes (`--no-capture`).
    pub(crate) no_capture: bool,
}

/// What a run produced.
#[derive(Debug)]
pub(crate) struct EngineOutcome {
    /// One result per test: those that ran in the order of their records, then the
    /// ignored ones.
    pub(crate) results: Vec<TestResult>,
    /// Wall-clock time from the first sandbox request to the last destroy.
    pub(crate) elapsed: Duration,
    /// Sum over sandboxes of the seconds each existed (for cost estimates).
    pub(crate) sandbox_seconds: f64,
}

/// Runs `records` (unique IDs) through `framework` in sandboxes of `provider`, telling
/// `subscriber` what happens. The ignored ones (see [`TestRecord::ignored`]) are
/// skipped at once and never reach a sandbox.
///
/// `interrupt` stops the run from outside (a signal); fail-fast stops it from inside.
/// Either way running batches are killed, sandboxes destroyed and every test gets a
/// verdict.
pub(crate) async fn run(
    records: Vec<TestRecord>,
    framework: Arc<dyn Framework>,
    provider: Arc<dyn Provider>,
    settings: &EngineSettings,
    interrupt: &CancellationToken,
    subscriber: &mut dyn Subscriber,
) -> EngineOutcome {
    let started = Instant::now();
    let (ignored, runnable): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| r.ignored);
    let mut coordinator = Coordinator::new(
        runnable,
        framework.as_ref(),
        provider.shares_local_cpus(),
        settings,
        interrupt.child_token(),
        subscriber,
    );
    let cx = Arc::new(BatchContext {
        framework,
        ids: Arc::clone(&coordinator.ids),
        timeout: settings.timeout,
        fail_fast: settings.fail_fast,
        no_capture: settings.no_capture,
        logs_dir: settings.output_dir.join("logs"),
        parts_dir: settings.output_dir.join("junit-parts"),
    });
    // Never more sandboxes than batches.
    let workers = settings.parallel.max(1).min(coordinator.queue.len());
    provider.sandboxes_needed(workers);
    let mut pool = Pool::start(workers, &provider, cx, &coordinator.stop);
    coordinator.drive(&mut pool).await;
    coordinator.stop.cancel();
    let sandbox_seconds = pool.shut_down().await + provider.seconds_outside_the_run().await;
    let mut results = coordinator.into_results(pool.last_error.as_deref());
    results.extend(skip_ignored(ignored, subscriber));
    EngineOutcome {
        results,
        elapsed: started.elapsed(),
        sandbox_seconds,
    }
}

/// What a worker tells the pool.
enum Event {
    Ready(usize),
    SandboxFailed(usize, anyhow::Error),
    /// A test of a running batch started or finished.
    Live(LiveUpdate),
    Finished(usize, Job, BatchReport),
    /// A sandbox was replaced; it existed this many seconds.
    Replaced(f64),
    /// A worker ended; its last sandbox existed this many seconds.
    Gone(f64),
}

/// What the pool passes on to the coordinator.
enum News {
    /// A test of a running batch started or finished.
    Live(LiveUpdate),
    /// A batch ended.
    Finished(Job, BatchReport),
}

/// One test's attempts so far, and its verdict once decided.
struct TestState {
    failures: u32,
    attempts: Vec<Attempt>,
    verdict: Option<Verdict>,
    /// The batch whose runner last told that this test finished.
    announced_in: Option<usize>,
    /// How many sandboxes were lost while they ran this test.
    sandboxes_lost: u8,
}

/// What recording one attempt means for the run.
struct AttemptEffect {
    /// The attempt failed (a result, not a missing one): fail-fast stops the run.
    failed: bool,
    /// The test has retries left and goes again.
    retry: bool,
}

/// The run's state and its decisions: which batch goes next, what an attempt means,
/// when the run is over.
struct Coordinator<'a> {
    records: Vec<TestRecord>,
    /// The records' IDs, shared with the batches (which hold indices into it).
    ids: Arc<Vec<String>>,
    tests: Vec<TestState>,
    queue: VecDeque<Vec<usize>>,
    /// Every test's expected duration, for splitting retries.
    durations: Vec<Duration>,
    fail_fast: bool,
    stop: CancellationToken,
    stop_reason: Option<&'static str>,
    next_batch: usize,
    subscriber: &'a mut dyn Subscriber,
}

impl<'a> Coordinator<'a> {
    /// The state of a run of `records`, planned into batches (LPT over the known
    /// durations, round-robin without).
    fn new(
        mut records: Vec<TestRecord>,
        framework: &dyn Framework,
        shares_local_cpus: bool,
        settings: &EngineSettings,
        stop: CancellationToken,
        subscriber: &'a mut dyn Subscriber,
    ) -> Self {
        // The IDs move into what the batches share and come back for the results:
        // copying and freeing tens of thousands of them shows in the run's time.
        let ids: Arc<Vec<String>> = Arc::new(
            records
                .iter_mut()
                .map(|r| std::mem::take(&mut r.id))
                .collect(),
        );
        let items: Vec<Item<'_>> = records
            .iter()
            .zip(ids.iter())
            .map(|(r, id)| Item {
                id,
                group: &r.group,
                individual: r.schedule_individual,
                locality: framework.locality(id),
            })
            .collect();
        let estimates = scheduler::estimate(&items, &settings.durations);
        let cpus = if shares_local_cpus {
            Cpus::Shared(std::thread::available_parallelism().map_or(1, |n| n.get()))
        } else {
            Cpus::Own
        };
        let planned = scheduler::plan(&items, &estimates, settings.parallel, cpus);
        drop(items);
        let expected = estimates
            .any_known
            .then(|| expected_makespan(&planned, settings.parallel));
        let queue: VecDeque<Vec<usize>> = planned.into_iter().map(|b| b.items).collect();
        tracing::info!(
            "scheduled {} tests into {} batches",
            records.len(),
            queue.len()
        );
        subscriber.notify(&RunEvent::Planned { expected });
        let tests = records
            .iter()
            .map(|_| TestState {
                failures: 0,
                attempts: Vec::new(),
                verdict: None,
                announced_in: None,
                sandboxes_lost: 0,
            })
            .collect();
        Self {
            records,
            ids,
            tests,
            queue,
            durations: estimates.durations,
            fail_fast: settings.fail_fast,
            stop,
            stop_reason: None,
            next_batch: 0,
            subscriber,
        }
    }

    /// Hands out batches and takes back what the workers report until the run is
    /// over.
    async fn drive(&mut self, pool: &mut Pool) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.stop.is_cancelled() {
                self.dispatch(pool).await;
            }
            let nothing_to_run = self.queue.is_empty() || pool.exhausted();
            if pool.running == 0 && (self.stop.is_cancelled() || nothing_to_run) {
                return;
            }
            let event = tokio::select! {
                event = pool.events.recv() => event,
                () = self.stop.cancelled(), if !self.stop.is_cancelled() => {
                    self.stopping("the run was interrupted");
                    continue;
                }
                _ = tick.tick() => {
                    self.subscriber.notify(&RunEvent::Tick);
                    continue;
                }
            };
            let Some(event) = event else { return };
            match pool.on_event(event) {
                Some(News::Live(update)) => self.live(update),
                Some(News::Finished(job, report)) => self.batch_finished(pool, job, report),
                None => {}
            }
        }
    }

    /// Gives the front of the queue to every idle worker.
    async fn dispatch(&mut self, pool: &mut Pool) {
        while pool.has_idle() {
            let Some(tests) = self.queue.pop_front() else {
                return;
            };
            let job = Job {
                number: self.next_batch,
                tests,
            };
            let (number, size) = (job.number, job.tests.len());
            match pool.hand_out(job).await {
                Ok(()) => {
                    self.next_batch += 1;
                    self.subscriber.notify(&RunEvent::BatchStarted {
                        number,
                        tests: size,
                    });
                }
                Err(job) => self.queue.push_front(job.tests),
            }
        }
    }

    /// Tells the subscriber that a test of a running batch started or finished; under
    /// fail-fast, a failure stops the run at once (the finished tests of the cancelled
    /// batches keep their results).
    fn live(&mut self, update: LiveUpdate) {
        let test = update.test;
        let id = self.ids[test].as_str();
        let Some((outcome, time)) = &update.finished else {
            self.subscriber.notify(&RunEvent::TestStarted { id });
            return;
        };
        let state = &mut self.tests[test];
        state.announced_in = Some(update.batch);
        self.subscriber.notify(&RunEvent::TestFinished {
            id,
            outcome,
            time: *time,
            number: state.attempts.len() + 1,
            retries_left: state.failures < self.records[test].retry_count,
        });
        let failed = matches!(outcome, CaseOutcome::Failed(_) | CaseOutcome::Error(_));
        if failed && self.fail_fast && !self.stop.is_cancelled() {
            tracing::info!("fail-fast: `{id}` failed, cancelling the rest of the run");
            self.stopping("cancelled by --fail-fast after the first failure");
            self.stop.cancel();
        }
    }

    /// Records what batch `job` produced; queues retries ahead of new work, and stops
    /// the run on a failure under fail-fast.
    fn batch_finished(&mut self, pool: &Pool, job: Job, report: BatchReport) {
        let mut retry = Vec::new();
        let mut failed = false;
        let lost = report.sandbox_failure.is_some();
        for attempt in report.attempts {
            let test = attempt.test;
            let state = &mut self.tests[test];
            if lost && attempt.is_not_run() && state.sandboxes_lost < MAX_SANDBOX_LOSSES {
                // Not the test's attempt: it goes again elsewhere, its retries intact.
                state.sandboxes_lost += 1;
                retry.push(test);
                continue;
            }
            if let Some(effect) = self.record_attempt(attempt, job.number) {
                failed |= effect.failed;
                if effect.retry {
                    retry.push(test);
                }
            }
        }
        self.subscriber
            .notify(&RunEvent::BatchFinished { number: job.number });
        if failed && self.fail_fast && !self.stop.is_cancelled() {
            tracing::info!(
                "fail-fast: batch {} had a failure, cancelling the rest of the run",
                job.number
            );
            self.stopping("cancelled by --fail-fast after the first failure");
            self.stop.cancel();
        }
        if !retry.is_empty() && !self.stop.is_cancelled() {
            // Retries go ahead of new work, spread over the sandboxes that are free.
            let parts = pool.free().max(1);
            for b in scheduler::split_retries(&retry, &self.durations, parts)
                .into_iter()
                .rev()
            {
                self.queue.push_front(b.items);
            }
        }
    }

    /// Records one attempt and decides whether the test is done or goes again; `None`
    /// when the test already has its verdict.
    fn record_attempt(&mut self, attempt: AttemptReport, batch: usize) -> Option<AttemptEffect> {
        let test = attempt.test;
        let (state, record) = (&mut self.tests[test], &self.records[test]);
        if state.verdict.is_some() {
            return None;
        }
        let not_run = attempt.is_not_run();
        let is_failure = matches!(
            attempt.case.outcome,
            CaseOutcome::Failed(_) | CaseOutcome::Error(_)
        );
        let verdict = match attempt.case.outcome {
            CaseOutcome::Passed if state.failures > 0 => Some(Verdict::Flaky),
            CaseOutcome::Passed => Some(Verdict::Passed),
            CaseOutcome::Skipped(_) => Some(Verdict::Skipped),
            CaseOutcome::Failed(_) | CaseOutcome::Error(_) => {
                state.failures += 1;
                (state.failures > record.retry_count).then_some(Verdict::Failed)
            }
        };
        // Most tests have exactly one attempt: grow by one, not by the default four.
        state.attempts.reserve_exact(1);
        state.attempts.push(Attempt {
            case: attempt.case,
            batch,
        });
        // A failure stays apart from an error: the attempts decide which it is.
        let verdict = verdict.map(|v| match v {
            Verdict::Failed => Verdict::of_failed_attempts(&state.attempts),
            v => v,
        });
        let id = self.ids[test].as_str();
        if let Some(attempt) = state.attempts.last() {
            self.subscriber.notify(&RunEvent::AttemptFinished {
                id,
                attempt,
                number: state.attempts.len(),
                retried: verdict.is_none(),
                announced: state.announced_in == Some(batch),
            });
        }
        if let Some(verdict) = verdict {
            state.verdict = Some(verdict);
            self.subscriber
                .notify(&RunEvent::TestDecided { id, verdict });
        }
        Some(AttemptEffect {
            failed: is_failure && !not_run,
            retry: verdict.is_none(),
        })
    }

    /// Notes the first reason the run stops early and tells the subscriber.
    fn stopping(&mut self, reason: &'static str) {
        if self.stop_reason.is_none() {
            self.stop_reason = Some(reason);
            self.subscriber.notify(&RunEvent::Stopping { reason });
        }
    }

    /// Why a test without a verdict did not run: the run stopped, no sandbox was left
    /// (with `sandbox_error`, the last creation failure), or it was never scheduled.
    fn not_run_reason(&self, sandbox_error: Option<&str>) -> String {
        match (self.stop_reason, sandbox_error) {
            (Some(reason), _) => reason.to_owned(),
            (None, Some(err)) if !self.queue.is_empty() => {
                format!("no sandbox was available to run it (last error: {err})")
            }
            _ => "it was never scheduled".to_owned(),
        }
    }

    /// Turns the per-test state into results, in the order of the records; a test
    /// without a verdict is "not run", or failed when it failed with retries left.
    /// Call once the workers are gone: they share the IDs until then.
    fn into_results(self, sandbox_error: Option<&str>) -> Vec<TestResult> {
        let reason = self.not_run_reason(sandbox_error);
        // A worker that was abandoned still holds its share; then the IDs are copied.
        let ids = Arc::try_unwrap(self.ids).unwrap_or_else(|shared| shared.as_ref().clone());
        let subscriber = self.subscriber;
        self.records
            .into_iter()
            .zip(ids)
            .zip(self.tests)
            .map(|((record, id), mut state)| {
                let verdict = state.verdict.unwrap_or_else(|| {
                    // Failed attempts with retries left, then stopped: the failures stand.
                    let verdict = if state.attempts.iter().any(|a| !a.is_not_run()) {
                        Verdict::of_failed_attempts(&state.attempts)
                    } else {
                        let batch = state.attempts.last().map_or(usize::MAX, |a| a.batch);
                        state.attempts.push(Attempt::not_run(&id, &reason, batch));
                        Verdict::NotRun
                    };
                    subscriber.notify(&RunEvent::TestDecided { id: &id, verdict });
                    verdict
                });
                TestResult {
                    id,
                    group: record.group,
                    verdict,
                    attempts: state.attempts,
                }
            })
            .collect()
    }
}

/// How long `batches` (longest first, as planned) take on `parallel` sandboxes, each
/// taking the next batch when it is free.
fn expected_makespan(batches: &[scheduler::PlannedBatch], parallel: usize) -> Duration {
    let mut free_at = vec![Duration::ZERO; parallel.clamp(1, batches.len().max(1))];
    for batch in batches {
        if let Some(first) = free_at.iter_mut().min() {
            *first += batch.load;
        }
    }
    free_at.into_iter().max().unwrap_or_default()
}

/// The results of tests the runner lists but does not run unless asked: skipped, with
/// type [`IGNORED_KIND`] and how to run them.
fn skip_ignored(ignored: Vec<TestRecord>, subscriber: &mut dyn Subscriber) -> Vec<TestResult> {
    ignored
        .into_iter()
        .map(|record| {
            subscriber.notify(&RunEvent::TestDecided {
                id: &record.id,
                verdict: Verdict::Skipped,
            });
            let case = TestCase {
                name: record.id.clone(),
                outcome: CaseOutcome::Skipped(Detail {
                    message: Some(
                        "ignored (`#[ignore]`); `include_ignored = true` in `[framework]` runs it"
                            .to_owned(),
                    ),
                    kind: Some(IGNORED_KIND.to_owned()),
                    body: String::new(),
                }),
                ..TestCase::default()
            };
            TestResult {
                id: record.id,
                group: record.group,
                verdict: Verdict::Skipped,
                attempts: vec![Attempt { case, batch: 0 }],
            }
        })
        .collect()
}

/// The workers and their sandboxes: which are being created, idle or running, and
/// how long each sandbox existed.
struct Pool {
    /// Each worker's job channel; `None` once the worker is retired.
    senders: Vec<Option<mpsc::Sender<Job>>>,
    handles: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedReceiver<Event>,
    idle: Vec<usize>,
    creating: usize,
    running: usize,
    /// Workers that ended (sandbox destroyed or never created).
    gone: usize,
    sandbox_seconds: f64,
    /// The last sandbox creation failure, for the reason of tests that never ran.
    last_error: Option<String>,
}

impl Pool {
    /// Starts `workers` workers, each creating its sandbox at once.
    fn start(
        workers: usize,
        provider: &Arc<dyn Provider>,
        cx: Arc<BatchContext>,
        stop: &CancellationToken,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel::<Event>();
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            let (tx, rx) = mpsc::channel::<Job>(1);
            senders.push(Some(tx));
            handles.push(tokio::spawn(worker(
                index,
                Arc::clone(provider),
                rx,
                events_tx.clone(),
                Arc::clone(&cx),
                stop.clone(),
            )));
        }
        Self {
            senders,
            handles,
            events,
            idle: Vec::new(),
            creating: workers,
            running: 0,
            gone: 0,
            sandbox_seconds: 0.0,
            last_error: None,
        }
    }

    fn has_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    /// Workers that can take a batch now or soon.
    fn free(&self) -> usize {
        self.idle.len() + self.creating
    }

    /// No sandbox is left to run anything.
    fn exhausted(&self) -> bool {
        self.creating == 0 && self.idle.is_empty() && self.running == 0
    }

    /// Hands `job` to an idle worker; gives the job back when the worker is gone.
    async fn hand_out(&mut self, job: Job) -> Result<(), Job> {
        let Some(w) = self.idle.pop() else {
            return Err(job);
        };
        let sent = match &self.senders[w] {
            Some(tx) => tx.send(job).await.map_err(|e| e.0),
            None => Err(job),
        };
        sent.map(|()| self.running += 1)
    }

    /// Updates the pool for `event`; what concerns the tests is returned for the
    /// coordinator.
    fn on_event(&mut self, event: Event) -> Option<News> {
        match event {
            Event::Ready(w) => {
                self.creating -= 1;
                self.idle.push(w);
            }
            Event::SandboxFailed(w, err) => {
                self.creating -= 1;
                self.gone += 1;
                self.senders[w] = None;
                tracing::warn!(
                    "sandbox {w} could not be created, continuing with fewer sandboxes: {err:#}"
                );
                self.last_error = Some(format!("{err:#}"));
            }
            Event::Replaced(secs) => self.sandbox_seconds += secs,
            Event::Gone(secs) => {
                self.sandbox_seconds += secs;
                self.gone += 1;
            }
            Event::Live(update) => return Some(News::Live(update)),
            Event::Finished(w, job, report) => {
                self.running -= 1;
                if let Some(failure) = &report.sandbox_failure {
                    self.senders[w] = None;
                    self.last_error = Some(failure.clone());
                } else {
                    self.idle.push(w);
                }
                return Some(News::Finished(job, report));
            }
        }
        None
    }

    /// Lets every worker destroy its sandbox (the run's stop token is cancelled
    /// first), waiting a bounded time; returns the sandboxes' total lifetime in
    /// seconds.
    async fn shut_down(&mut self) -> f64 {
        self.senders.clear();
        let deadline = tokio::time::sleep(DESTROY_TIMEOUT + Duration::from_secs(5));
        tokio::pin!(deadline);
        while self.gone < self.handles.len() {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Event::Gone(secs)) => { self.sandbox_seconds += secs; self.gone += 1; }
                    Some(Event::Replaced(secs)) => self.sandbox_seconds += secs,
                    // Created too late to matter, or not at all: nothing to say now.
                    Some(Event::SandboxFailed(..)) => self.gone += 1,
                    // Nothing runs any more: a late report has no batch to go back to.
                    Some(Event::Ready(_) | Event::Live(_) | Event::Finished(..)) => {}
                    None => break,
                },
                () = &mut deadline => {
                    tracing::warn!(
                        "{} sandbox(es) did not shut down in time; abandoning them",
                        self.handles.len() - self.gone
                    );
                    for h in &self.handles { h.abort(); }
                    break;
                }
            }
        }
        // A worker that said it is gone still holds the provider until its task ends:
        // the provider's own clean-up (the local provider's temporary directory) runs
        // when the last one lets go, before the process exits.
        for handle in self.handles.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        self.sandbox_seconds
    }
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
    let mut sandbox = sandbox;
    let mut created = created;
    let sink: LiveSink = {
        let events = events.clone();
        Arc::new(move |update| {
            let _ = events.send(Event::Live(update));
        })
    };
    while let Some(job) = jobs.recv().await {
        if stop.is_cancelled() {
            break;
        }
        let mut report =
            batch::execute(sandbox.as_ref(), &job, &cx, &stop, Arc::clone(&sink)).await;
        if report.timed_out && report.sandbox_failure.is_none() && !sandbox.is_clean_after_timeout()
        {
            // The killed command may still run remotely: start the next batch afresh.
            tracing::info!("replacing sandbox `{}` after a timeout", sandbox.id());
            destroy(sandbox.as_ref()).await;
            let _ = events.send(Event::Replaced(created.elapsed().as_secs_f64()));
            match provider.create_sandbox(index).await {
                Ok(fresh) => {
                    sandbox = fresh;
                    created = Instant::now();
                }
                Err(err) => {
                    let failure =
                        format!("cannot replace sandbox {index} after a timeout: {err:#}");
                    tracing::warn!("{failure}");
                    report.sandbox_failure = Some(failure);
                    let _ = events.send(Event::Finished(index, job, report));
                    let _ = events.send(Event::Gone(0.0));
                    return;
                }
            }
        }
        let failed = report.sandbox_failure.is_some();
        let _ = events.send(Event::Finished(index, job, report));
        if failed {
            break;
        }
    }
    drop(cx);
    destroy(sandbox.as_ref()).await;
    let _ = events.send(Event::Gone(created.elapsed().as_secs_f64()));
}

/// Destroys `sandbox`, bounded by [`DESTROY_TIMEOUT`]; failures are warnings.
pub(super) async fn destroy(sandbox: &dyn Sandbox) {
    match tokio::time::timeout(DESTROY_TIMEOUT, sandbox.destroy()).await {
        Ok(Ok(())) => tracing::debug!("sandbox {} destroyed", sandbox.id()),
        Ok(Err(err)) => tracing::warn!("cannot destroy sandbox `{}`: {err:#}", sandbox.id()),
        Err(_) => tracing::warn!(
            "destroying sandbox `{}` took over {} s; abandoned",
            sandbox.id(),
            DESTROY_TIMEOUT.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::orchestrator::fakes::{Act, FakeFramework, FakeProvider, World};

    fn record(id: &str, retry_count: u32) -> TestRecord {
        TestRecord {
            id: id.to_owned(),
            group: "g".to_owned(),
            retry_count,
            schedule_individual: false,
            ignored: false,
        }
    }

    async fn run_world(
        world: World,
        records: &[TestRecord],
        parallel: usize,
        fail_fast: bool,
        timeout: Duration,
    ) -> (EngineOutcome, Arc<World>) {
        run_observed(world, records, parallel, fail_fast, timeout, &mut ()).await
    }

    /// The events of a run, one line each.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Subscriber for Recorder {
        fn notify(&mut self, event: &RunEvent<'_>) {
            self.0.push(match event {
                RunEvent::Planned { .. } | RunEvent::BatchFinished { .. } | RunEvent::Tick => {
                    return;
                }
                RunEvent::BatchStarted { number, tests, .. } => {
                    format!("batch {number} started with {tests}")
                }
                RunEvent::AttemptFinished { id, attempt, .. } => {
                    let kind = kind_of(&attempt.case.outcome);
                    format!("{id} {kind} in batch {}", attempt.batch)
                }
                RunEvent::TestDecided { id, verdict, .. } => format!("{id} is {verdict:?}"),
                RunEvent::TestStarted { id } => format!("{id} started"),
                RunEvent::TestFinished { id, outcome, .. } => {
                    format!("{id} finished: {}", kind_of(outcome))
                }
                RunEvent::Stopping { reason } => format!("stopping: {reason}"),
            });
        }
    }

    fn kind_of(outcome: &CaseOutcome) -> &'static str {
        match outcome {
            _ if outcome.is_not_run() => "not run",
            CaseOutcome::Passed => "passed",
            CaseOutcome::Failed(_) => "failed",
            CaseOutcome::Error(_) => "error",
            CaseOutcome::Skipped(_) => "skipped",
        }
    }

    async fn run_observed(
        world: World,
        records: &[TestRecord],
        parallel: usize,
        fail_fast: bool,
        timeout: Duration,
        subscriber: &mut dyn Subscriber,
    ) -> (EngineOutcome, Arc<World>) {
        let dir = tempfile::tempdir().unwrap();
        let world = Arc::new(world);
        let settings = EngineSettings {
            parallel,
            timeout,
            fail_fast,
            output_dir: dir.path().to_owned(),
            durations: Default::default(),
            no_capture: false,
        };
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let outcome = run(
            records.to_vec(),
            Arc::new(FakeFramework),
            Arc::new(FakeProvider(Arc::clone(&world))),
            &settings,
            &CancellationToken::new(),
            subscriber,
        )
        .await;
        (outcome, world)
    }

    fn script(entries: &[(&str, &[Act])]) -> World {
        World {
            script: entries
                .iter()
                .map(|(id, acts)| (id.to_string(), acts.to_vec()))
                .collect(),
            ..World::default()
        }
    }

    fn verdicts(outcome: &EngineOutcome) -> Vec<(String, Verdict, usize)> {
        outcome
            .results
            .iter()
            .map(|r| (r.id.clone(), r.verdict, r.attempts.len()))
            .collect()
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn retries_are_reactive_and_a_pass_after_a_failure_is_flaky() {
        let world = script(&[
            ("ok", &[Act::Pass]),
            ("wobbly", &[Act::Fail, Act::Pass]),
            ("bad", &[Act::Fail]),
        ]);
        let records = [record("ok", 3), record("wobbly", 3), record("bad", 2)];
        let (outcome, world) = run_world(world, &records, 2, false, T).await;
        assert_eq!(
            verdicts(&outcome),
            vec![
                ("ok".into(), Verdict::Passed, 1),
                ("wobbly".into(), Verdict::Flaky, 2),
                ("bad".into(), Verdict::Failed, 3),
            ]
        );
        assert_eq!(
            world.created.load(Ordering::SeqCst),
            world.destroyed.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn without_retries_a_test_is_never_flaky() {
        let world = script(&[("wobbly", &[Act::Fail, Act::Pass])]);
        let (outcome, _) = run_world(world, &[record("wobbly", 0)], 4, false, T).await;
        assert_eq!(
            verdicts(&outcome),
            vec![("wobbly".into(), Verdict::Failed, 1)]
        );
    }

    #[tokio::test]
    async fn never_more_sandboxes_than_batches() {
        let world = script(&[("only", &[Act::Pass])]);
        let (_, world) = run_world(world, &[record("only", 0)], 8, false, T).await;
        assert_eq!(world.created.load(Ordering::SeqCst), 1);
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_missing_result_is_not_run_after_its_retries() {
        let world = script(&[("ghost", &[Act::NoResult]), ("ok", &[Act::Pass])]);
        let (outcome, _) =
            run_world(world, &[record("ghost", 2), record("ok", 0)], 1, false, T).await;
        assert_eq!(
            verdicts(&outcome),
            vec![
                ("ghost".into(), Verdict::NotRun, 3),
                ("ok".into(), Verdict::Passed, 1)
            ]
        );
        let reason = outcome.results[0].attempts[0]
            .case
            .outcome
            .detail()
            .unwrap()
            .message
            .clone();
        assert!(reason.unwrap().contains("reported no result"));
    }

    #[tokio::test]
    async fn a_sandbox_that_cannot_be_created_only_reduces_parallelism() {
        let mut world = script(&[
            ("a", &[Act::Pass]),
            ("b", &[Act::Pass]),
            ("c", &[Act::Pass]),
        ]);
        world.failing_creates = vec![0, 2];
        let records = [record("a", 0), record("b", 0), record("c", 0)];
        let (outcome, world) = run_world(world, &records, 3, false, T).await;
        assert!(outcome.results.iter().all(|r| r.verdict == Verdict::Passed));
        assert_eq!(world.created.load(Ordering::SeqCst), 1);
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn when_no_sandbox_can_be_created_every_test_is_not_run_with_the_reason() {
        let mut world = script(&[("a", &[Act::Pass]), ("b", &[Act::Pass])]);
        world.failing_creates = vec![0, 1];
        let (outcome, _) = run_world(world, &[record("a", 0), record("b", 0)], 2, false, T).await;
        for r in &outcome.results {
            assert_eq!(r.verdict, Verdict::NotRun);
            let message = r.attempts[0]
                .case
                .outcome
                .detail()
                .unwrap()
                .message
                .clone()
                .unwrap();
            assert!(message.contains("quota exceeded"), "{message}");
        }
    }

    #[tokio::test]
    async fn fail_fast_cancels_running_batches() {
        let world = script(&[("bad", &[Act::Fail]), ("slow", &[Act::Hang])]);
        let started = Instant::now();
        let (outcome, world) = run_world(
            world,
            &[record("bad", 0), record("slow", 0)],
            2,
            true,
            Duration::from_secs(600),
        )
        .await;
        // Cancelled, not left hanging to its 600 s timeout (generous for a loaded
        // machine; the verdict below tells the two apart as well).
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(
            verdicts(&outcome),
            vec![
                ("bad".into(), Verdict::Failed, 1),
                ("slow".into(), Verdict::NotRun, 1)
            ]
        );
        assert_eq!(
            world.created.load(Ordering::SeqCst),
            world.destroyed.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_timed_out_batch_fails_its_tests_and_they_may_be_retried() {
        let world = script(&[("stuck", &[Act::Hang, Act::Pass])]);
        let (outcome, _) = run_world(
            world,
            &[record("stuck", 1)],
            1,
            false,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(
            verdicts(&outcome),
            vec![("stuck".into(), Verdict::Flaky, 2)]
        );
        let first = outcome.results[0].attempts[0]
            .case
            .outcome
            .detail()
            .unwrap()
            .message
            .clone();
        assert!(first.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn a_sandbox_that_may_still_run_a_killed_command_is_replaced() {
        let mut world = script(&[("stuck", &[Act::Hang, Act::Pass])]);
        world.dirty_after_timeout = true;
        let (outcome, world) = run_world(
            world,
            &[record("stuck", 1)],
            1,
            false,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(
            verdicts(&outcome),
            vec![("stuck".into(), Verdict::Flaky, 2)]
        );
        assert_eq!(world.created.load(Ordering::SeqCst), 2);
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_lost_sandbox_sends_its_unfinished_tests_elsewhere_without_using_a_retry() {
        let mut world = script(&[
            ("a", &[Act::Pass]),
            ("b", &[Act::Pass]),
            ("doomed", &[Act::Lose, Act::Pass]),
            ("c", &[Act::Pass]),
            ("d", &[Act::Pass]),
        ]);
        world.live = true;
        let records: Vec<_> = ["a", "b", "doomed", "c", "d"]
            .iter()
            .map(|id| record(id, 0))
            .collect();
        let (outcome, world) = run_world(world, &records, 2, false, T).await;
        // No retries, yet every test passed: being on a lost sandbox is no attempt.
        for result in &outcome.results {
            assert_eq!(result.verdict, Verdict::Passed, "{}", result.id);
            assert_eq!(result.attempts.len(), 1, "{}", result.id);
        }
        assert_eq!(world.attempts.lock().unwrap()["doomed"], 2);
        // The lost sandbox was retired (and still destroyed), none created in its place.
        assert_eq!(world.created.load(Ordering::SeqCst), 2);
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_test_that_keeps_losing_its_sandbox_ends_not_run_with_the_reason() {
        let fine = ["f1", "f2", "f3", "f4"];
        let mut entries: Vec<(&str, &[Act])> = vec![("killer", &[Act::Lose])];
        entries.extend(fine.iter().map(|id| (*id, &[Act::Pass][..])));
        let mut records = vec![record("killer", 5)];
        records.extend(fine.iter().map(|id| record(id, 0)));
        let (outcome, world) = run_world(script(&entries), &records, 5, false, T).await;
        let killer = &outcome.results[0];
        assert_eq!(killer.verdict, Verdict::NotRun);
        // Two losses moved it on; the third was its attempt, then its retries (one more
        // loss each) until no sandbox was left: it took every sandbox down once.
        assert_eq!(world.created.load(Ordering::SeqCst), 5);
        assert_eq!(world.attempts.lock().unwrap()["killer"], 5);
        assert_eq!(
            killer.attempts.len(),
            4,
            "3 lost attempts and the final not run"
        );
        let reasons: Vec<String> = killer
            .attempts
            .iter()
            .map(|a| format!("{:?}", a.case.outcome))
            .collect();
        assert!(
            reasons.iter().all(|r| r.contains("was lost")),
            "{reasons:?}"
        );
        for result in &outcome.results[1..] {
            assert_eq!(result.verdict, Verdict::Passed, "{}", result.id);
        }
    }

    #[tokio::test]
    async fn subscribers_see_batches_attempts_and_one_verdict_per_test_in_order() {
        let world = script(&[("wobbly", &[Act::Fail, Act::Pass]), ("skipped", &[])]);
        let mut ignored = record("skipped", 0);
        ignored.ignored = true;
        let mut recorder = Recorder::default();
        let records = [record("wobbly", 1), ignored];
        let (outcome, _) = run_observed(world, &records, 1, false, T, &mut recorder).await;
        assert_eq!(
            recorder.0,
            [
                "batch 0 started with 1",
                "wobbly failed in batch 0",
                "batch 1 started with 1",
                "wobbly passed in batch 1",
                "wobbly is Flaky",
                "skipped is Skipped",
            ]
        );
        assert_eq!(outcome.results.len(), 2);
    }

    #[tokio::test]
    async fn a_stopped_run_says_why_and_decides_every_test() {
        let world = script(&[("bad", &[Act::Fail]), ("slow", &[Act::Hang])]);
        let mut recorder = Recorder::default();
        let records = [record("bad", 0), record("slow", 0)];
        run_observed(world, &records, 2, true, T * 12, &mut recorder).await;
        let events = recorder.0;
        let stop = events
            .iter()
            .position(|e| e.starts_with("stopping: cancelled by --fail-fast"))
            .unwrap_or_else(|| panic!("no stop event in {events:?}"));
        let bad = events.iter().position(|e| e == "bad is Failed").unwrap();
        let slow = events.iter().position(|e| e == "slow is NotRun").unwrap();
        assert!(bad < stop && stop < slow, "{events:?}");
        assert_eq!(events.iter().filter(|e| e.contains(" is ")).count(), 2);
    }

    #[tokio::test]
    async fn a_test_that_finished_before_its_batch_timed_out_keeps_its_result() {
        let mut world = script(&[
            ("quick", &[Act::Pass]),
            ("stuck", &[Act::Hang]),
            ("later", &[Act::Pass]),
        ]);
        world.live = true;
        let mut recorder = Recorder::default();
        let records = [record("quick", 0), record("stuck", 0), record("later", 0)];
        let timeout = Duration::from_millis(200);
        let (outcome, _) = run_observed(world, &records, 1, false, timeout, &mut recorder).await;
        assert_eq!(
            verdicts(&outcome),
            vec![
                ("quick".into(), Verdict::Passed, 1),
                ("stuck".into(), Verdict::Failed, 1),
                ("later".into(), Verdict::NotRun, 1),
            ]
        );
        let message = |i: usize| {
            let detail = outcome.results[i].attempts[0].case.outcome.detail();
            detail.and_then(|d| d.message.clone()).unwrap_or_default()
        };
        assert!(message(1).contains("timed out"), "{}", message(1));
        assert!(
            message(2).contains("before the test started"),
            "{}",
            message(2)
        );
        // Live events come before the batch ends, the attempts after.
        let events = &recorder.0;
        let live = events.iter().position(|e| e == "quick finished: passed");
        let recorded = events.iter().position(|e| e == "quick passed in batch 0");
        assert!(live.is_some() && live < recorded, "{events:?}");
    }

    #[tokio::test]
    async fn fail_fast_stops_at_a_failure_inside_a_batch_and_keeps_what_finished() {
        let mut world = script(&[
            ("ok", &[Act::Pass]),
            ("bad", &[Act::Fail]),
            ("slow", &[Act::Hang]),
        ]);
        world.live = true;
        let records = [record("ok", 0), record("bad", 0), record("slow", 0)];
        let mut recorder = Recorder::default();
        let started = Instant::now();
        // One batch: the failure is only known from its live event.
        let (outcome, _) = run_observed(world, &records, 1, true, T * 12, &mut recorder).await;
        assert!(started.elapsed() < T * 6, "the run waited for the hang");
        assert_eq!(
            verdicts(&outcome),
            vec![
                ("ok".into(), Verdict::Passed, 1),
                ("bad".into(), Verdict::Failed, 1),
                ("slow".into(), Verdict::NotRun, 1),
            ]
        );
    }
}
