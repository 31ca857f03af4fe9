//! Child processes: command specs, shell quoting, capture and streaming with timeouts.
//!
//! Every child runs in its own process group with stdin closed, so a timeout or an
//! interrupt kills the whole tree (grandchildren included), and stdout/stderr are read
//! while the child runs so a full pipe can never block it. Used by discovery, by the
//! local provider and by the shell-command providers.

use std::path::PathBuf;

/// A program with its arguments, working directory and extra environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program (looked up on `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory; `None` inherits the caller's.
    pub cwd: Option<PathBuf>,
    /// Variables added to the inherited environment, in order.
    pub env: Vec<(String, String)>,
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It outlived its timeout and its process group was killed.
    TimedOut,
    /// It was cancelled (interrupt, fail-fast) and its process group was killed.
    Cancelled,
}

/// The full output of a finished child.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    /// How it ended.
    pub outcome: ExitOutcome,
    /// Everything it wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything it wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

// LEAD-STUB: replaced by the process branch.
impl CommandSpec {
    /// Shell-quoted form for messages.
    pub fn display(&self) -> String {
        format!("{self:?}")
    }
}
