//! The warm-up: a runner's resident worker started while the tests are discovered.
//!
//! On a run whose discovery has to run (a first run, a changed suite), the discovery
//! command and the first batches each pay the runner's start-up: for pytest, starting
//! Python and pytest and importing every test module, twice over. Local sandboxes share
//! one resident worker on this machine, so the worker can start before the batches
//! exist: when discovery starts, [`WarmUp`] runs the framework's
//! [`warm_command`](crate::framework::Framework::warm_command) in a sandbox of its own,
//! which starts the worker and has it import the test modules beside discovery. The
//! batches then fork from a worker that is ready. Nothing here decides a test's
//! outcome: a warm-up that fails only leaves the batches to start the worker themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::framework::{BatchPaths, Framework, live};
use crate::provider::{OutputLine, Provider};

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
        let paths = BatchPaths {
            result: sandbox.result_path(0, "xml"),
            tests_file: sandbox.result_path(0, "tests"),
            script_file: sandbox.result_path(0, "sh"),
            support_dir: sandbox.support_dir(),
            shared_dir: sandbox.shared_dir(),
        };
        if let Some(warm) = self.framework.warm_command(&paths, self.fail_fast) {
            tracing::debug!("warming up the resident worker in sandbox {}", sandbox.id());
            let ran = match sandbox.write_files(&warm.inputs, cancel).await {
                Ok(()) => self.exec(sandbox.as_ref(), &warm.command, cancel).await,
                Err(err) => Err(err),
            };
            match ran {
                Ok(outcome) => tracing::debug!("warm-up ended: {outcome:?}"),
                Err(err) => tracing::debug!("warm-up failed: {err:#}"),
            }
        }
        if let Err(err) = sandbox.destroy().await {
            tracing::debug!("cannot destroy the warm-up sandbox: {err:#}");
        }
    }

    /// Runs the warm-up command; what it says of the worker (why batches will run the
    /// plain way) is said as a batch's would be, the rest goes to the debug log.
    async fn exec(
        &self,
        sandbox: &dyn crate::provider::Sandbox,
        command: &crate::process::CommandSpec,
        cancel: &CancellationToken,
    ) -> anyhow::Result<crate::process::ExitOutcome> {
        let (tx, mut rx) = mpsc::unbounded_channel::<OutputLine>();
        let read = async {
            while let Some(line) = rx.recv().await {
                match self.framework.live_event(&line.text) {
                    Some(live::LiveEvent::Fallback { reason }) => live::say_fallback_once(&reason),
                    _ => tracing::debug!("warm-up: {}", line.text),
                }
            }
        };
        let exec = async {
            let outcome = sandbox.exec(command, self.timeout, cancel, &tx).await;
            drop(tx);
            outcome
        };
        let (outcome, ()) = tokio::join!(exec, read);
        outcome
    }
}
