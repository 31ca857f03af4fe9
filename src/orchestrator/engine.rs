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
    pub durations: rustc_hash::FxHashMap<String, f64>,
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
    /// A sandbox was replaced; it existed this many seconds.
    Replaced(f64),
    /// A worker ended; its last sandbox existed this many seconds.
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
    mut records: Vec<TestRecord>,
    framework: Arc<dyn Framework>,
    provider: Arc<dyn Provider>,
    settings: &EngineSettings,
    interrupt: &CancellationToken,
    progress: &mut Progress,
) -> EngineOutcome {
    let started = Instant::now();
    // The IDs move into what the batches share and come back for the results: copying
    // and freeing tens of thousands of them shows in the run's time.
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
    let planned = scheduler::plan(
        &items,
        &estimates,
        settings.parallel,
        !provider.shares_local_cpus(),
    );
    let durations = estimates.durations;
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
            Event::Replaced(secs) => sandbox_seconds += secs,
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
                    for b in scheduler::split_retries(&retry, &durations, parts)
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
                Some(Event::Replaced(secs)) => sandbox_seconds += secs,
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
    drop(items);
    // Workers drop their share before they report `Gone`; one that was abandoned
    // still holds it, and then the IDs are copied.
    drop(cx);
    let ids = Arc::try_unwrap(ids).unwrap_or_else(|shared| shared.as_ref().clone());
    let results = finish(records, ids, tests, &default_reason);
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
    // Most tests have exactly one attempt: grow by one, not by the default four.
    state.attempts.reserve_exact(1);
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
            } else {
                Some(Verdict::of_failed_attempts(&state.attempts))
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
fn finish(
    records: Vec<TestRecord>,
    ids: Vec<String>,
    tests: Vec<TestState>,
    reason: &str,
) -> Vec<TestResult> {
    records
        .into_iter()
        .zip(ids)
        .zip(tests)
        .map(|((record, id), mut state)| {
            let verdict = match state.verdict {
                Some(v) => v,
                None => {
                    // Failed attempts with retries left, then stopped: the failures stand.
                    if state.attempts.iter().any(|a| !a.is_not_run()) {
                        Verdict::of_failed_attempts(&state.attempts)
                    } else {
                        let batch = state.attempts.last().map_or(usize::MAX, |a| a.batch);
                        state.attempts.push(Attempt::not_run(&id, reason, batch));
                        Verdict::NotRun
                    }
                }
            };
            TestResult {
                id,
                group: record.group,
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
    let mut sandbox = sandbox;
    let mut created = created;
    while let Some(job) = jobs.recv().await {
        if stop.is_cancelled() {
            break;
        }
        let mut report = batch::execute(sandbox.as_ref(), &job, &cx, &stop).await;
        if report.timed_out && !report.sandbox_failed && !sandbox.is_clean_after_timeout() {
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
                    tracing::warn!("cannot replace sandbox {index} after a timeout: {err:#}");
                    report.sandbox_failed = true;
                    let _ = events.send(Event::Finished(index, job, report));
                    let _ = events.send(Event::Gone(0.0));
                    return;
                }
            }
        }
        let failed = report.sandbox_failed;
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
async fn destroy(sandbox: &dyn Sandbox) {
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
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use anyhow::{Result, bail};
    use async_trait::async_trait;
    use tokio::sync::mpsc::UnboundedSender;

    use super::*;
    use crate::framework::{BatchCommand, BatchPaths, Discovered, Framework, InputFile};
    use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};
    use crate::provider::OutputLine;

    /// What one attempt of a test does, by attempt number.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        Pass,
        Fail,
        NoResult,
        Hang,
    }

    struct FakeFramework;

    impl Framework for FakeFramework {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn discover_command(&self, _: &str) -> Result<CommandSpec> {
            bail!("not used")
        }
        fn parse_discovery(&self, _: &CommandSpec, _: &CapturedOutput) -> Result<Discovered> {
            bail!("not used")
        }
        fn batch_command(
            &self,
            tests: &[String],
            paths: &BatchPaths,
            _: bool,
        ) -> Result<BatchCommand> {
            Ok(CommandSpec::new("fake")
                .args(tests)
                .env("RESULT", &paths.result)
                .into())
        }
        fn junit_key<'a>(&self, name: &'a str, _: Option<&'a str>) -> std::borrow::Cow<'a, str> {
            std::borrow::Cow::Borrowed(name)
        }
    }

    #[derive(Default)]
    struct World {
        script: HashMap<String, Vec<Act>>,
        attempts: Mutex<HashMap<String, usize>>,
        files: Mutex<HashMap<String, String>>,
        failing_creates: Vec<usize>,
        dirty_after_timeout: bool,
        created: AtomicUsize,
        destroyed: AtomicUsize,
    }

    struct FakeProvider(Arc<World>);
    struct FakeSandbox(Arc<World>, String);

    #[async_trait]
    impl Provider for FakeProvider {
        async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>> {
            if self.0.failing_creates.contains(&index) {
                bail!("quota exceeded for sandbox {index}");
            }
            self.0.created.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FakeSandbox(
                Arc::clone(&self.0),
                format!("fake-{index}"),
            )))
        }
    }

    #[async_trait]
    impl Sandbox for FakeSandbox {
        fn id(&self) -> &str {
            &self.1
        }
        fn result_path(&self, batch: usize, ext: &str) -> String {
            format!("{}/batch-{batch}.{ext}", self.1)
        }
        fn support_dir(&self) -> String {
            format!("{}/support", self.1)
        }
        async fn write_files(&self, _: &[InputFile], _: &CancellationToken) -> Result<()> {
            bail!("not used")
        }
        async fn exec(
            &self,
            command: &CommandSpec,
            timeout: Duration,
            cancel: &CancellationToken,
            _: &UnboundedSender<OutputLine>,
        ) -> Result<ExitOutcome> {
            let mut cases = String::new();
            let mut hang = false;
            for id in &command.args {
                let n = {
                    let mut attempts = self.0.attempts.lock().unwrap();
                    let n = attempts.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                let acts = &self.0.script[id];
                match acts[(n - 1).min(acts.len() - 1)] {
                    Act::Pass => cases.push_str(&format!("<testcase name=\"{id}\"/>")),
                    Act::Fail => cases.push_str(&format!(
                        "<testcase name=\"{id}\"><failure message=\"boom\"/></testcase>"
                    )),
                    Act::NoResult => {}
                    Act::Hang => hang = true,
                }
            }
            if hang {
                return Ok(tokio::select! {
                    () = tokio::time::sleep(timeout) => ExitOutcome::TimedOut,
                    () = cancel.cancelled() => ExitOutcome::Cancelled,
                });
            }
            let result = command.env[0].1.clone();
            let xml = format!("<testsuite name=\"s\">{cases}</testsuite>");
            self.0.files.lock().unwrap().insert(result, xml);
            Ok(ExitOutcome::Exited(0))
        }
        async fn download(&self, remote: &str, local: &Path) -> Result<()> {
            let Some(xml) = self.0.files.lock().unwrap().get(remote).cloned() else {
                bail!("no such file `{remote}`");
            };
            std::fs::create_dir_all(local.parent().unwrap())?;
            std::fs::write(local, xml)?;
            Ok(())
        }
        async fn destroy(&self) -> Result<()> {
            self.0.destroyed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn is_clean_after_timeout(&self) -> bool {
            !self.0.dirty_after_timeout
        }
    }

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
        let dir = tempfile::tempdir().unwrap();
        let world = Arc::new(world);
        let settings = EngineSettings {
            parallel,
            timeout,
            fail_fast,
            output_dir: dir.path().to_owned(),
            durations: Default::default(),
        };
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let mut progress = Progress::new(records.len(), false, true);
        let outcome = run(
            records.to_vec(),
            Arc::new(FakeFramework),
            Arc::new(FakeProvider(Arc::clone(&world))),
            &settings,
            &CancellationToken::new(),
            &mut progress,
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
}
