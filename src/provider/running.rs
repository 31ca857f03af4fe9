//! The life of a sandbox's commands: run them until they end, time out, are cancelled
//! or the sandbox is destroyed, and let destroying wait for them.
//!
//! [`SandboxCommands`] is what the local and the command-driven sandboxes share: an
//! exec streams its output, is refused once the sandbox is being destroyed, and is
//! counted (with [`RunningCommands`]) so that destroying can wait for it to die.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::OutputLine;
use crate::process::{self, CommandSpec, ExitOutcome, TERMINATE_GRACE_PERIOD};

/// Runs a sandbox's commands and ends them when the sandbox is destroyed.
#[derive(Debug, Default)]
pub(super) struct SandboxCommands {
    destroyed: CancellationToken,
    running: RunningCommands,
}

impl SandboxCommands {
    /// Runs `spec` (the local process that executes `what` in `sandbox`), sending each
    /// output line to `output`; killed on `timeout`, on `cancel` and on destroy.
    pub(super) async fn run(
        &self,
        sandbox: &str,
        what: &CommandSpec,
        spec: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
        output: &UnboundedSender<OutputLine>,
    ) -> Result<ExitOutcome> {
        if self.destroyed.is_cancelled() {
            bail!(
                "cannot run `{}`: sandbox `{sandbox}` was already destroyed",
                what.display()
            );
        }
        if cancel.is_cancelled() {
            return Ok(ExitOutcome::Cancelled);
        }
        let _running = self.running.start();
        let stop = async {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = self.destroyed.cancelled() => {}
            }
        };
        process::stream_until(spec, Some(timeout), stop, |stream, text| {
            // A closed receiver means nobody wants the output any more; the command
            // still runs to its outcome.
            let _ = output.send(OutputLine { stream, text });
        })
        .await
        .with_context(|| format!("failed to run `{}` in sandbox `{sandbox}`", what.display()))
    }

    /// Refuses new commands, ends the running ones and waits (bounded) until they are
    /// gone.
    pub(super) async fn shut_down(&self, sandbox: &str) {
        self.destroyed.cancel();
        self.running.wait_until_idle(sandbox).await;
    }
}

/// The number of commands a sandbox is running; cloning shares the count.
#[derive(Debug, Clone, Default)]
struct RunningCommands(Arc<AtomicUsize>);

/// Counts one running command for as long as it lives.
#[derive(Debug)]
struct RunningGuard(Arc<AtomicUsize>);

impl RunningCommands {
    /// Counts a command until the returned guard drops.
    fn start(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        RunningGuard(Arc::clone(&self.0))
    }

    /// Waits until no command runs, at most the kill grace period plus a second: once
    /// a sandbox is being destroyed its commands get SIGTERM, then SIGKILL after the
    /// grace period, as long as their callers keep polling them (a dropped one is
    /// killed at once).
    async fn wait_until_idle(&self, sandbox: &str) {
        let deadline =
            tokio::time::Instant::now() + TERMINATE_GRACE_PERIOD + Duration::from_secs(1);
        while self.0.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    sandbox,
                    "commands still running while the sandbox is destroyed"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the waiter's polls and deadline follow the test's sleeps exactly,
    // however busy the machine is.
    #[tokio::test(start_paused = true)]
    async fn waits_for_guards_to_drop() {
        let running = RunningCommands::default();
        let guard = running.start();
        let waiter = tokio::spawn({
            let running = running.clone();
            async move { running.wait_until_idle("sb").await }
        });
        tokio::time::sleep(TERMINATE_GRACE_PERIOD).await;
        assert!(!waiter.is_finished());
        drop(guard);
        // The next poll, 20 ms on, sees the count at zero.
        tokio::time::timeout(Duration::from_millis(100), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_waiting_a_second_after_the_grace_period() {
        let running = RunningCommands::default();
        let _guard = running.start();
        let started = tokio::time::Instant::now();
        running.wait_until_idle("sb").await;
        let waited = started.elapsed();
        let limit = TERMINATE_GRACE_PERIOD + Duration::from_secs(1);
        assert!(waited >= limit, "{waited:?}");
        assert!(waited < limit + Duration::from_millis(100), "{waited:?}");
    }
}
