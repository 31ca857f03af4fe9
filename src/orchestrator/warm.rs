//! Warm-ups: a runner's resident worker started while the tests are discovered.
//!
//! On a run whose discovery has to run (a first run, a changed suite), the discovery
//! command and the first batches each pay the runner's start-up: for pytest, starting
//! Python and pytest and importing every test module, twice over. The framework's
//! [`warm_command`](crate::framework::Framework::warm_command) starts the worker and
//! has it import the test modules, beside discovery, so that the batches fork from a
//! worker that is ready:
//!
//! - Local sandboxes share one resident worker on this machine, so it can start before
//!   the batches exist: when discovery starts, [`WarmUp`] runs the warm command in a
//!   sandbox of its own.
//! - A remote sandbox has a worker of its own, so the warm-up runs in the sandboxes the
//!   batches will use: [`HeadStart`] creates them as soon as their image is ready,
//!   while discovery still runs, and starts each one's worker (the warm command's form
//!   that ends once the worker has it, so that the sandbox's exec channel is free for
//!   its first batch). The engine takes them through its [`Provider`] side; those the
//!   plan does not need are destroyed as soon as the engine knows.
//!
//! Nothing here decides a test's outcome: a warm-up that fails only leaves the batches
//! to start the worker themselves.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::framework::{BatchCommand, BatchPaths, Framework, live};
use crate::provider::{OutputLine, Provider, Sandbox};

/// The warm-up of a run: waits for [`WarmUp::begin`], then runs; ended by
/// [`WarmUp::finish`] (or when dropped).
#[derive(Debug)]
pub(crate) struct WarmUp {
    begin: Arc<Notify>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl WarmUp {
    /// A warm-up in `provider`'s sandbox number `index` (one the run's batches never
    /// use), for batches of `framework` run with `fail_fast`, bounded by `timeout`. It
    /// does nothing until [`Self::begin`].
    pub(crate) fn new(
        provider: Arc<dyn Provider>,
        framework: Arc<dyn Framework>,
        index: usize,
        fail_fast: bool,
        timeout: Duration,
    ) -> Self {
        let begin = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let begin = Arc::clone(&begin);
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    () = begin.notified() => {}
                    () = cancel.cancelled() => return,
                }
                let warm = Warm {
                    provider: provider.as_ref(),
                    framework: framework.as_ref(),
                    index,
                    fail_fast,
                    timeout,
                };
                warm.run(&cancel).await;
            }
        });
        Self {
            begin,
            cancel,
            task: Some(task),
        }
    }

    /// Starts the warm-up (again: nothing).
    pub(crate) fn begin(&self) {
        self.begin.notify_one();
    }

    /// Ends the warm-up: stops its command if it still runs (the worker it started
    /// stays, for the batches) and waits until its sandbox is gone.
    pub(crate) async fn finish(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What one warm-up needs.
struct Warm<'a> {
    provider: &'a dyn Provider,
    framework: &'a dyn Framework,
    index: usize,
    fail_fast: bool,
    timeout: Duration,
}

impl Warm<'_> {
    async fn run(&self, cancel: &CancellationToken) {
        let sandbox = match self.provider.create_sandbox(self.index).await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                tracing::debug!("no warm-up: {err:#}");
                return;
            }
        };
        let paths = paths_in(sandbox.as_ref());
        if let Some(warm) = self.framework.warm_command(&paths, self.fail_fast, true) {
            warm_up(
                sandbox.as_ref(),
                self.framework,
                &warm,
                self.timeout,
                cancel,
            )
            .await;
        }
        if let Err(err) = sandbox.destroy().await {
            tracing::debug!("cannot destroy the warm-up sandbox: {err:#}");
        }
    }
}

/// Sandboxes of a provider driven by commands, created while the tests are discovered,
/// each with its resident worker started (see the module's docs). As the run's
/// [`Provider`], it hands sandbox `index` over when the engine asks for it (waiting for
/// its creation if need be), and creates the others through the provider it wraps.
pub(crate) struct HeadStart {
    provider: Arc<dyn Provider>,
    /// The sandboxes being made, by index; `None` once handed over or let go.
    early: Mutex<Vec<Option<Early>>>,
    /// When they started to be made.
    made: Instant,
    /// Seconds the sandboxes handed over existed before the engine asked for them.
    before_asked: Mutex<f64>,
    /// The destruction of those the engine did not need; each gives the seconds its
    /// sandbox existed.
    released: Mutex<Vec<JoinHandle<f64>>>,
    cancel: CancellationToken,
}

/// A sandbox being created and warmed up.
type Early = JoinHandle<Result<Box<dyn Sandbox>>>;

impl HeadStart {
    /// Starts creating `count` sandboxes of `provider` (indexes 0 to `count - 1`), and
    /// warms up each once it exists, for batches of `framework` run with `fail_fast`,
    /// bounded by `timeout`; `interrupt` stops the warm-ups.
    pub(crate) fn start(
        provider: Arc<dyn Provider>,
        framework: Arc<dyn Framework>,
        count: usize,
        fail_fast: bool,
        timeout: Duration,
        interrupt: &CancellationToken,
    ) -> Arc<Self> {
        let cancel = interrupt.child_token();
        let early = (0..count)
            .map(|index| {
                let provider = Arc::clone(&provider);
                let framework = Arc::clone(&framework);
                let cancel = cancel.clone();
                Some(tokio::spawn(async move {
                    let sandbox = provider.create_sandbox(index).await?;
                    let paths = paths_in(sandbox.as_ref());
                    if let Some(warm) = framework.warm_command(&paths, fail_fast, false) {
                        warm_up(
                            sandbox.as_ref(),
                            framework.as_ref(),
                            &warm,
                            timeout,
                            &cancel,
                        )
                        .await;
                    }
                    Ok(sandbox)
                }))
            })
            .collect();
        tracing::debug!("creating {count} sandbox(es) while the tests are discovered");
        Arc::new(Self {
            provider,
            early: Mutex::new(early),
            made: Instant::now(),
            before_asked: Mutex::default(),
            released: Mutex::default(),
            cancel,
        })
    }

    /// Destroys the sandboxes the run did not take (once they exist; also when the run
    /// ended before its engine started) and waits for those let go before.
    pub(crate) async fn finish(&self) {
        self.cancel.cancel();
        let left: Vec<Early> = lock(&self.early).drain(..).flatten().collect();
        let mut destroying: Vec<JoinHandle<f64>> =
            left.into_iter().map(|early| self.let_go(early)).collect();
        destroying.append(&mut lock(&self.released));
        for task in destroying {
            let _ = task.await;
        }
    }

    /// Destroys the sandbox `early` makes, once it exists; the seconds it existed.
    fn let_go(&self, early: Early) -> JoinHandle<f64> {
        let made = self.made;
        tokio::spawn(async move {
            let Ok(Ok(sandbox)) = early.await else {
                return 0.0;
            };
            super::engine::destroy(sandbox.as_ref()).await;
            made.elapsed().as_secs_f64()
        })
    }
}

#[async_trait]
impl Provider for HeadStart {
    async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>> {
        let early = lock(&self.early).get_mut(index).and_then(Option::take);
        let Some(task) = early else {
            return self.provider.create_sandbox(index).await;
        };
        let asked = Instant::now();
        let sandbox = task
            .await
            .map_err(|err| anyhow!("creating sandbox {index} stopped: {err}"))??;
        *lock(&self.before_asked) += asked.duration_since(self.made).as_secs_f64();
        Ok(sandbox)
    }

    fn shares_local_cpus(&self) -> bool {
        self.provider.shares_local_cpus()
    }

    fn sandboxes_needed(&self, count: usize) {
        let extra: Vec<Early> = lock(&self.early)
            .iter_mut()
            .skip(count)
            .filter_map(Option::take)
            .collect();
        if !extra.is_empty() {
            tracing::debug!("{} sandbox(es) made ahead are not needed", extra.len());
        }
        let destroying: Vec<JoinHandle<f64>> =
            extra.into_iter().map(|early| self.let_go(early)).collect();
        lock(&self.released).extend(destroying);
    }

    async fn seconds_outside_the_run(&self) -> f64 {
        let released: Vec<JoinHandle<f64>> = lock(&self.released).drain(..).collect();
        let mut seconds = *lock(&self.before_asked);
        for task in released {
            seconds += task.await.unwrap_or(0.0);
        }
        seconds
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a batch numbered 0 in `sandbox` would keep its files.
fn paths_in(sandbox: &dyn Sandbox) -> BatchPaths {
    BatchPaths {
        result: sandbox.result_path(0, "xml"),
        tests_file: sandbox.result_path(0, "tests"),
        script_file: sandbox.result_path(0, "sh"),
        support_dir: sandbox.support_dir(),
        shared_dir: sandbox.shared_dir(),
    }
}

/// Runs the warm command `warm` in `sandbox`, its input files first; what it says of
/// the worker (why batches will run the plain way) is said as a batch's would be, the
/// rest goes to the debug log.
async fn warm_up(
    sandbox: &dyn Sandbox,
    framework: &dyn Framework,
    warm: &BatchCommand,
    timeout: Duration,
    cancel: &CancellationToken,
) {
    tracing::debug!("warming up the resident worker in sandbox {}", sandbox.id());
    let ran = match sandbox.write_files(&warm.inputs, cancel).await {
        Ok(()) => exec(sandbox, framework, &warm.command, timeout, cancel).await,
        Err(err) => Err(err),
    };
    match ran {
        Ok(outcome) => tracing::debug!("warm-up ended: {outcome:?}"),
        Err(err) => tracing::debug!("warm-up failed: {err:#}"),
    }
}

async fn exec(
    sandbox: &dyn Sandbox,
    framework: &dyn Framework,
    command: &crate::process::CommandSpec,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<crate::process::ExitOutcome> {
    let (tx, mut rx) = mpsc::unbounded_channel::<OutputLine>();
    let read = async {
        while let Some(line) = rx.recv().await {
            match framework.live_event(&line.text) {
                Some(live::LiveEvent::Fallback { reason }) => live::say_fallback_once(&reason),
                _ => tracing::debug!("warm-up: {}", line.text),
            }
        }
    };
    let exec = async {
        let outcome = sandbox.exec(command, timeout, cancel, &tx).await;
        drop(tx);
        outcome
    };
    let (outcome, ()) = tokio::join!(exec, read);
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::orchestrator::fakes::{FakeFramework, FakeProvider, World};

    fn head_start(world: &Arc<World>, count: usize) -> Arc<HeadStart> {
        HeadStart::start(
            Arc::new(FakeProvider(Arc::clone(world))),
            Arc::new(FakeFramework),
            count,
            false,
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn sandboxes_made_ahead_are_handed_over_let_go_and_counted() {
        let world = Arc::new(World::default());
        let head = head_start(&world, 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = head.create_sandbox(0).await.unwrap();
        assert_eq!(first.id(), "fake-0");
        assert_eq!(world.created.load(Ordering::SeqCst), 3, "made once, ahead");
        head.sandboxes_needed(1);
        // Sandbox 0 lived 0.2 s before the engine asked; 1 and 2 at least that, and are gone.
        let unseen = head.seconds_outside_the_run().await;
        assert!(unseen >= 0.6, "{unseen}");
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 2);
        // Asked again (a replacement after a timeout): a new sandbox.
        let again = head.create_sandbox(0).await.unwrap();
        assert_eq!(again.id(), "fake-0");
        assert_eq!(world.created.load(Ordering::SeqCst), 4);
        // Those handed over are the engine's to destroy.
        head.finish().await;
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_run_that_takes_none_of_them_destroys_them_all() {
        let world = Arc::new(World::default());
        head_start(&world, 2).finish().await;
        assert_eq!(world.created.load(Ordering::SeqCst), 2);
        assert_eq!(world.destroyed.load(Ordering::SeqCst), 2);
    }
}
