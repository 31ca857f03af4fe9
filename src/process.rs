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

// minimal version for discovery; superseded by the process module
impl CommandSpec {
    /// The program and its arguments, shell-quoted and joined by spaces (for messages).
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(|word| shell_words::quote(word).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

// minimal version for discovery; superseded by the process module
/// Runs `spec` to completion (stdin null, own process group) and captures its output.
///
/// On timeout the whole process group is killed and the outcome is
/// [`ExitOutcome::TimedOut`]. A spawn failure is an error naming the program.
pub async fn capture(
    spec: &CommandSpec,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<CapturedOutput> {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let child = command.spawn().map_err(|err| {
        let hint = if err.kind() == std::io::ErrorKind::NotFound {
            format!(
                "\n(hint: is `{}` installed and on PATH, and does the working directory exist?)",
                spec.program
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot run `{}`: {err}{hint}", spec.program)
    })?;
    let pid = child.id();
    let wait = child.wait_with_output();
    let output = match timeout {
        None => wait.await,
        Some(limit) => match tokio::time::timeout(limit, wait).await {
            Ok(output) => output,
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: kill(2) with a negative pid signals the child's own group.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                return Ok(CapturedOutput {
                    outcome: ExitOutcome::TimedOut,
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
        },
    }
    .map_err(|err| anyhow::anyhow!("cannot read the output of `{}`: {err}", spec.program))?;
    let outcome = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => ExitOutcome::Exited(code),
        (None, Some(signal)) => ExitOutcome::Signaled(signal),
        (None, None) => ExitOutcome::Exited(-1),
    };
    Ok(CapturedOutput {
        outcome,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
