//! SIGINT and SIGTERM, turned into a cancellation that the run can clean up after.
//!
//! [`Signals`] installs the handlers. The first signal cancels [`Signals::token`]: the
//! orchestrator stops scheduling, its running commands get SIGTERM and their grace
//! period, sandboxes are destroyed, the partial report is written, and the process
//! exits with [`ShutdownSignal::exit_code`] (130 or 143) of the signal recorded by
//! [`Signals::received`]. A second signal means "now": every live child process group
//! (see [`crate::process::kill_all_process_groups`]) gets SIGKILL and the process exits
//! at once with the first signal's code, skipping the cleanup.
//!
//! This module does not clean up by itself on the first signal; it only reports it.
//! `Signals::for_tests` (in tests only) builds the same object without touching the
//! process's signal dispositions, with `Signals::trigger` standing in for a signal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit;

/// A signal asking Offload to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ShutdownSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl ShutdownSignal {
    /// The exit code of a run this signal stopped: 130 for SIGINT, 143 for SIGTERM.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Self::Interrupt => exit::INTERRUPTED,
            Self::Terminate => exit::TERMINATED,
        }
    }

    /// The signal's name (`SIGINT`, `SIGTERM`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }
}

impl std::fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the handlers have seen so far.
#[derive(Debug, Default)]
struct SignalState {
    first: OnceLock<ShutdownSignal>,
    count: AtomicUsize,
}

impl SignalState {
    /// Records `signal` and cancels `token`; returns how many signals came so far.
    fn record(&self, signal: ShutdownSignal, token: &CancellationToken) -> usize {
        // Only the first signal is kept: it decides the exit code.
        let _ = self.first.set(signal);
        token.cancel();
        self.count.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The process's shutdown signals: a token cancelled on the first one, and which came.
#[derive(Debug)]
pub(crate) struct Signals {
    token: CancellationToken,
    state: Arc<SignalState>,
    /// The task listening for signals; `None` for `Signals::for_tests`.
    listener: Option<JoinHandle<()>>,
}

impl Signals {
    /// Installs the SIGINT and SIGTERM handlers. Must be called inside the tokio
    /// runtime. From then on these signals no longer kill the process by default: the
    /// first cancels [`Self::token`], the second kills every child group and exits.
    pub(crate) fn install() -> Result<Self> {
        let mut interrupt =
            signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
        let token = CancellationToken::new();
        let state = Arc::new(SignalState::default());
        let listener = {
            let token = token.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let received = tokio::select! {
                        Some(()) = interrupt.recv() => ShutdownSignal::Interrupt,
                        Some(()) = terminate.recv() => ShutdownSignal::Terminate,
                        else => break,
                    };
                    let count = state.record(received, &token);
                    if count == 1 {
                        tracing::warn!(
                            "received {received}: stopping, killing running batches and cleaning up \
                             (send it again to kill everything and exit at once)"
                        );
                        continue;
                    }
                    let first = state.first.get().copied().unwrap_or(received);
                    tracing::error!(
                        "received {received} again: killing every child process and exiting without cleanup"
                    );
                    crate::process::kill_all_process_groups();
                    std::process::exit(first.exit_code());
                }
            })
        };
        Ok(Self {
            token,
            state,
            listener: Some(listener),
        })
    }

    /// The same object without any handler installed; [`Self::trigger`] plays the
    /// signal, and a second trigger never exits the process.
    #[cfg(test)]
    fn for_tests() -> Self {
        Self {
            token: CancellationToken::new(),
            state: Arc::new(SignalState::default()),
            listener: None,
        }
    }

    /// Acts as if `signal` had been received (records it and cancels the token), except
    /// that repeating it never kills or exits.
    #[cfg(test)]
    fn trigger(&self, signal: ShutdownSignal) {
        self.state.record(signal, &self.token);
    }

    /// A token cancelled when the first shutdown signal arrives.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The first shutdown signal received, if any.
    pub(crate) fn received(&self) -> Option<ShutdownSignal> {
        self.state.first.get().copied()
    }

    /// How many shutdown signals were received.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // The handlers stay installed process-wide (tokio cannot uninstall them); only
        // the reaction stops. Offload drops `Signals` right before it exits.
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(ShutdownSignal::Interrupt.exit_code(), 130);
        assert_eq!(ShutdownSignal::Terminate.exit_code(), 143);
        assert_eq!(ShutdownSignal::Terminate.to_string(), "SIGTERM");
    }

    #[test]
    fn trigger_cancels_the_token_and_keeps_the_first_signal() {
        let signals = Signals::for_tests();
        let token = signals.token();
        assert!(!token.is_cancelled());
        assert_eq!(signals.received(), None);

        signals.trigger(ShutdownSignal::Terminate);
        assert!(token.is_cancelled());
        assert_eq!(signals.received(), Some(ShutdownSignal::Terminate));

        // A second one (which would kill and exit for real) only counts here.
        signals.trigger(ShutdownSignal::Interrupt);
        assert_eq!(signals.received(), Some(ShutdownSignal::Terminate));
        assert_eq!(signals.count(), 2);
    }

    #[tokio::test]
    async fn a_real_sigterm_cancels_the_token() {
        let signals = Signals::install().unwrap();
        let token = signals.token();
        // SAFETY: the handler is installed, so the signal cannot kill the test process.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        // Generous for a loaded machine; without the handler the token never fires.
        tokio::time::timeout(Duration::from_secs(60), token.cancelled())
            .await
            .expect("the token was not cancelled");
        assert_eq!(signals.received(), Some(ShutdownSignal::Terminate));
        assert_eq!(signals.count(), 1);
        drop(signals);
        // Give the test binary its default dispositions back (Ctrl-C must still work).
        // SAFETY: resetting to SIG_DFL has no memory-safety preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
}
