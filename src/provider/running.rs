//! Counting a sandbox's running commands, so that destroying it can wait for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::process::TERMINATE_GRACE_PERIOD;

/// The number of commands a sandbox is running; cloning shares the count.
#[derive(Debug, Clone, Default)]
pub struct RunningCommands(Arc<AtomicUsize>);

/// Counts one running command for as long as it lives.
#[derive(Debug)]
pub struct RunningGuard(Arc<AtomicUsize>);

impl RunningCommands {
    /// Counts a command until the returned guard drops.
    pub fn start(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        RunningGuard(Arc::clone(&self.0))
    }

    /// Waits until no command runs, at most the kill grace period plus a second: once
    /// a sandbox is being destroyed its commands get SIGTERM, then SIGKILL after the
    /// grace period, as long as their callers keep polling them (a dropped one is
    /// killed at once).
    pub async fn wait_until_idle(&self, sandbox: &str) {
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

    #[tokio::test]
    async fn waits_for_guards_to_drop() {
        let running = RunningCommands::default();
        let guard = running.start();
        let waiter = tokio::spawn({
            let running = running.clone();
            async move { running.wait_until_idle("sb").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
