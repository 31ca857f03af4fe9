//! The two traits every provider implements: [`Provider`] creates [`Sandbox`]es, and a
//! sandbox runs the commands of batches ([`OutputLine`] is what their output streams
//! as). Choosing and building a provider from the config is [`super::select`]'s job.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::framework::InputFile;
use crate::process::{CommandSpec, ExitOutcome, Stream};

/// A line of output from a command running in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputLine {
    /// stdout or stderr.
    pub stream: Stream,
    /// The line, without its newline.
    pub text: String,
}

/// The exit code with which a command-driven sandbox's `exec_command` says that the
/// sandbox itself was lost (its host went down, the connection to it dropped) rather
/// than that the command failed: `EX_TEMPFAIL` of `sysexits.h`, "try again later".
pub(crate) const SANDBOX_LOST_EXIT_CODE: i32 = 75;

/// An exec that reached no outcome because the sandbox itself was lost: the sandbox is
/// retired and the unfinished tests of its batch run in another one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SandboxLost(pub(crate) String);

/// An exec whose command did not start because the input files it was to write first
/// (see [`Sandbox::write_files`]) could not be written: like a failed `write_files`, the
/// batch's problem, not the sandbox's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InputFilesNotWritten(pub(crate) String);

/// Creates sandboxes.
#[async_trait]
pub(crate) trait Provider: Send + Sync {
    /// Creates sandbox number `index` (0-based, unique within the run).
    async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>>;

    /// Whether the sandboxes run on this machine and share its CPUs, so that every
    /// batch start-up competes with the tests (the scheduler then adds fewer batches).
    fn shares_local_cpus(&self) -> bool {
        false
    }

    /// The run creates sandboxes `0..count` and no others (more would be idle): a
    /// provider that made sandboxes ahead lets the rest go.
    fn sandboxes_needed(&self, _count: usize) {}

    /// Seconds of sandbox life the engine did not see, once the sandboxes it never
    /// asked for are gone (it counts each sandbox from its request to its destruction):
    /// a provider that made sandboxes ahead adds their life before the request, and the
    /// whole life of those it let go, for the cost estimate.
    async fn seconds_outside_the_run(&self) -> f64 {
        0.0
    }
}

/// A place where batches run, one at a time, reused across batches.
#[async_trait]
pub(crate) trait Sandbox: Send + Sync {
    /// Its id (as printed by a create command, or chosen by Offload).
    fn id(&self) -> &str;

    /// A path inside the sandbox where batch `batch` may write its result file.
    fn result_path(&self, batch: usize, extension: &str) -> String;

    /// Runs `command`, sending each output line to `output`. Kills the command (and,
    /// locally, its whole process tree) when `timeout` passes or `cancel` fires.
    async fn exec(
        &self,
        command: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
        output: &UnboundedSender<OutputLine>,
    ) -> Result<ExitOutcome>;

    /// A directory inside the sandbox for Offload's files that every batch of the
    /// sandbox shares (the bundled pytest plugin).
    fn support_dir(&self) -> String;

    /// A directory that every sandbox sharing this one's machine and files sees, for
    /// processes they can share (a resident pytest worker). By default the support
    /// directory: nothing is shared.
    fn shared_dir(&self) -> String {
        self.support_dir()
    }

    /// Writes `files` into the sandbox (creating their parent directories), before a
    /// command that reads them runs. However large they are, no command line holds more
    /// than a bounded part of them. A failure is the batch's, not the sandbox's. A
    /// sandbox may leave (part of) them to the next [`Sandbox::exec`], which then fails
    /// with [`InputFilesNotWritten`] when it cannot write them.
    async fn write_files(&self, files: &[InputFile], cancel: &CancellationToken) -> Result<()>;

    /// Copies the file at `remote` (a path inside the sandbox) to `local`.
    async fn download(&self, remote: &str, local: &Path) -> Result<()>;

    /// Destroys the sandbox and everything it holds.
    async fn destroy(&self) -> Result<()>;

    /// Whether a command killed for its timeout is really gone, so the sandbox can run
    /// the next batch. Remote sandboxes usually only lose the local end of the exec
    /// while the command runs on; the orchestrator replaces such a sandbox instead.
    fn is_clean_after_timeout(&self) -> bool {
        true
    }
}
