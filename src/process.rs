//! Child processes: command specs, shell quoting, capture and streaming with timeouts.
//!
//! Every child runs in its own process group with stdin closed, so a timeout or an
//! interrupt kills the whole tree (grandchildren included), and stdout/stderr are read
//! while the child runs so a full pipe can never block it. Used by discovery, by the
//! local provider and by the shell-command providers.
//!
//! The life of a child (`capture`, `stream`, `stream_until`):
//!
//! 1. It is spawned with stdin null, piped stdout/stderr, and `setpgid(0, 0)`, and its
//!    group is recorded in a process-wide registry (`kill_all_process_groups` is what
//!    a second Ctrl-C uses).
//! 2. On timeout or cancel the group gets SIGTERM, output keeps draining for
//!    `TERMINATE_GRACE_PERIOD`, then the group gets SIGKILL. The outcome is
//!    [`ExitOutcome::TimedOut`] or [`ExitOutcome::Cancelled`], whatever the exit status.
//! 3. Once the direct child is reaped, a grandchild still holding the pipes gets
//!    `LEAK_TIMEOUT` to close them; then the group is killed and we return.
//! 4. At the end, and whenever the future is dropped early, the group gets SIGKILL, so
//!    nothing the command started outlives it (short of a `setsid` escape).
//!
//! This module does not decide what a timeout means for tests; callers map outcomes
//! to verdicts.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a process group may take to exit after SIGTERM before it gets SIGKILL.
pub(crate) const TERMINATE_GRACE_PERIOD: Duration = Duration::from_secs(2);

/// How long, after the direct child exited, a leftover process may keep the output
/// pipes open before its group is killed and the call returns.
const LEAK_TIMEOUT: Duration = Duration::from_millis(500);

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

impl CommandSpec {
    /// A spec that runs `program` with no arguments, in the caller's directory.
    pub(crate) fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    /// `sh -c <script>`: runs a shell script written by the user.
    pub(crate) fn shell(script: &str) -> Self {
        Self::new("sh").arg("-c").arg(script)
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the working directory.
    pub(crate) fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Adds an environment variable (later additions win).
    pub(crate) fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The program and its arguments, shell-quoted, for messages (`pytest -k 'a b'`).
    pub(crate) fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|word| quote(word))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One POSIX shell command that reproduces this spec exactly:
    /// `cd <dir> && K=<v> ... exec <program> <args>...`.
    ///
    /// Every word is quoted only when needed (an empty argument stays `''`). Remote
    /// providers put this string inside their `{command}`. When a variable name is not
    /// a shell name, or the program starts with `-`, it falls back to
    /// `exec env -- K=v ... <program> <args>...` (then a program containing `=` would be
    /// misread by `env`; no real program is named so).
    pub(crate) fn to_shell_string(&self) -> String {
        let mut out = String::new();
        if let Some(cwd) = &self.cwd {
            let dir = cwd.to_string_lossy();
            // `cd -x` would read the directory as an option, `cd -` as "previous dir".
            let dir = if dir.starts_with('-') {
                Cow::Owned(format!("./{dir}"))
            } else {
                dir
            };
            out.push_str("cd ");
            out.push_str(&quote(&dir));
            out.push_str(" && ");
        }
        let plain =
            self.env.iter().all(|(name, _)| is_shell_name(name)) && !self.program.starts_with('-');
        if plain {
            // Assignments before the special built-in `exec` are exported to the program.
            for (name, value) in &self.env {
                out.push_str(name);
                out.push('=');
                out.push_str(&quote(value));
                out.push(' ');
            }
            out.push_str("exec ");
        } else {
            // bash's `exec` takes options and dash's rejects `--`; `env --` handles both.
            out.push_str("exec env -- ");
            for (name, value) in &self.env {
                out.push_str(&quote(&format!("{name}={value}")));
                out.push(' ');
            }
        }
        out.push_str(&quote(&self.program));
        for arg in &self.args {
            out.push(' ');
            out.push_str(&quote(arg));
        }
        out
    }
}

/// Quotes one shell word, only when needed (`shell_words::quote`, plus braces, which
/// bash would brace-expand).
pub(crate) fn quote(word: &str) -> Cow<'_, str> {
    let quoted = shell_words::quote(word);
    if matches!(quoted, Cow::Borrowed(_)) && word.contains(['{', '}']) {
        return Cow::Owned(format!("'{word}'"));
    }
    quoted
}

/// `[A-Za-z_][A-Za-z0-9_]*`: a name the shell accepts in `NAME=value`.
fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
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

impl std::fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(signo) => write!(f, "killed by signal {signo}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
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

/// Runs `spec` to the end and returns all it wrote. With a `timeout`, the process group
/// is killed when it passes and the outcome is [`ExitOutcome::TimedOut`].
pub(crate) async fn capture(
    spec: &CommandSpec,
    timeout: Option<Duration>,
) -> Result<CapturedOutput> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let outcome = supervise(
        spec,
        ReadMode::Chunks,
        timeout,
        std::future::pending(),
        |stream, bytes| match stream {
            Stream::Stdout => stdout.extend_from_slice(&bytes),
            Stream::Stderr => stderr.extend_from_slice(&bytes),
        },
    )
    .await?;
    Ok(CapturedOutput {
        outcome,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Runs `spec`, calling `on_line` for each line of stdout and stderr as it arrives (in
/// arrival order across the two streams; without the newline or a trailing `\r`; a
/// last line without newline included; invalid UTF-8 replaced).
///
/// The process group is killed when `timeout` passes ([`ExitOutcome::TimedOut`]) or
/// `cancel` fires ([`ExitOutcome::Cancelled`]; an already cancelled token spawns
/// nothing).
pub(crate) async fn stream(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    on_line: impl FnMut(Stream, String) + Send,
) -> Result<ExitOutcome> {
    if cancel.is_cancelled() {
        return Ok(ExitOutcome::Cancelled);
    }
    stream_until(spec, timeout, cancel.cancelled(), on_line).await
}

/// Like [`stream`], but cancelled when the future `stop` completes (so a caller can
/// combine several reasons to stop).
pub(crate) async fn stream_until(
    spec: &CommandSpec,
    timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
    mut on_line: impl FnMut(Stream, String) + Send,
) -> Result<ExitOutcome> {
    supervise(spec, ReadMode::Lines, timeout, stop, |stream, mut bytes| {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        on_line(stream, text);
    })
    .await
}

/// How the pipe readers cut the output.
#[derive(Debug, Clone, Copy)]
enum ReadMode {
    /// One message per line, newline included.
    Lines,
    /// Whatever each read returns (cheaper when lines do not matter).
    Chunks,
}

/// Spawns `spec` and drives it to an outcome (see the module docs for the steps).
async fn supervise(
    spec: &CommandSpec,
    mode: ReadMode,
    timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
    mut on_chunk: impl FnMut(Stream, Vec<u8>),
) -> Result<ExitOutcome> {
    let mut child = Supervised::spawn(spec)?;
    let (tx, mut rx) = mpsc::channel(256);
    let _readers = AbortOnDrop(vec![
        spawn_reader(child.child.stdout.take(), Stream::Stdout, mode, tx.clone()),
        spawn_reader(child.child.stderr.take(), Stream::Stderr, mode, tx),
    ]);
    let outcome = child
        .run_to_end(spec, timeout, stop, &mut rx, &mut on_chunk)
        .await?;
    // Drain what the readers already queued; they are aborted when `_readers` drops.
    while let Ok((stream, bytes)) = rx.try_recv() {
        on_chunk(stream, bytes);
    }
    // Kills leftovers (background jobs) of a child that exited on its own, too.
    drop(child);
    Ok(outcome)
}

/// A spawned child and its process group (killed when this drops).
struct Supervised {
    child: tokio::process::Child,
    pid: u32,
    group: ProcessGroup,
}

impl Supervised {
    /// Step 1 of the module docs: spawns `spec` in a process group of its own, with
    /// stdin null and piped output, and registers the group.
    fn spawn(spec: &CommandSpec) -> Result<Self> {
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let child = command.spawn().map_err(|err| spawn_error(spec, err))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("`{}` exited before its pid was read", spec.program))?;
        Ok(Self {
            child,
            pid,
            group: ProcessGroup::register(pid),
        })
    }

    /// Steps 2 and 3 of the module docs: passes output on until the child is reaped and
    /// its pipes are closed (or the leak timeout passes), terminating the group on
    /// timeout or `stop`.
    async fn run_to_end(
        &mut self,
        spec: &CommandSpec,
        timeout: Option<Duration>,
        stop: impl Future<Output = ()>,
        rx: &mut mpsc::Receiver<(Stream, Vec<u8>)>,
        on_chunk: &mut impl FnMut(Stream, Vec<u8>),
    ) -> Result<ExitOutcome> {
        let (group, pid) = (&self.group, self.pid);
        // Deadlines far in the future stand for "not armed"; each branch is also gated.
        // Checked: a timeout too large for the clock (validation bounds the configured
        // ones) is no timeout rather than a panic.
        let now = Instant::now();
        let never = now
            .checked_add(Duration::from_secs(100 * 365 * 24 * 3600))
            .unwrap_or(now);
        let timeout_at = timeout.and_then(|t| now.checked_add(t));
        let mut timeout_sleep = pin!(tokio::time::sleep_until(timeout_at.unwrap_or(never)));
        let mut kill_sleep = pin!(tokio::time::sleep_until(never));
        let mut leak_sleep = pin!(tokio::time::sleep_until(never));
        let mut stop = pin!(stop);

        let mut stopped: Option<ExitOutcome> = None;
        let mut kill_armed = false;
        let mut status: Option<ExitStatus> = None;
        let mut pipes_open = true;

        while status.is_none() || pipes_open {
            tokio::select! {
                chunk = rx.recv(), if pipes_open => match chunk {
                    Some((stream, bytes)) => on_chunk(stream, bytes),
                    None => pipes_open = false,
                },
                waited = self.child.wait(), if status.is_none() => {
                    let waited = waited.with_context(|| {
                        format!("failed to wait for `{}` (pid {pid})", spec.program)
                    })?;
                    status = Some(waited);
                    leak_sleep.as_mut().reset(Instant::now() + LEAK_TIMEOUT);
                }
                () = &mut timeout_sleep, if timeout_at.is_some() && stopped.is_none() && status.is_none() => {
                    tracing::debug!(command = %spec.display(), "timed out; terminating its process group");
                    stopped = Some(ExitOutcome::TimedOut);
                    group.terminate(&mut kill_sleep);
                    kill_armed = true;
                }
                () = &mut stop, if stopped.is_none() && status.is_none() => {
                    tracing::debug!(command = %spec.display(), "cancelled; terminating its process group");
                    stopped = Some(ExitOutcome::Cancelled);
                    group.terminate(&mut kill_sleep);
                    kill_armed = true;
                }
                () = &mut kill_sleep, if kill_armed && status.is_none() => {
                    tracing::debug!(command = %spec.display(), "grace period over; killing its process group");
                    group.signal(libc::SIGKILL);
                    kill_armed = false;
                }
                () = &mut leak_sleep, if status.is_some() => {
                    tracing::debug!(
                        command = %spec.display(),
                        "a leftover process kept the output pipes open; killing its process group"
                    );
                    break;
                }
            }
        }
        Ok(match (stopped, status) {
            (Some(outcome), _) => outcome,
            (None, Some(status)) => exit_outcome(status),
            (None, None) => unreachable!("the loop only ends once the child was reaped"),
        })
    }
}

/// Maps a wait status to an outcome.
fn exit_outcome(status: ExitStatus) -> ExitOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitOutcome::Exited(code),
        (None, Some(signo)) => ExitOutcome::Signaled(signo),
        // Stopped/continued statuses are not reported by `wait`; keep a sane fallback.
        (None, None) => ExitOutcome::Exited(-1),
    }
}

/// A child that could not be started at all (missing program or working directory,
/// an argument list over the kernel's limits, ...). Callers tell it apart from a child
/// that ran and failed: for a batch it is that batch's error, not the sandbox's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SpawnError(String);

/// Whether `err` (or anything it wraps) is a [`SpawnError`].
pub(crate) fn is_spawn_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<SpawnError>())
}

/// The error for a child that could not be started.
fn spawn_error(spec: &CommandSpec, err: io::Error) -> anyhow::Error {
    if let Some(cwd) = &spec.cwd {
        if !cwd.is_dir() {
            return SpawnError(format!(
                "failed to start `{}`: working directory `{}` does not exist or is not a directory",
                spec.program,
                cwd.display()
            ))
            .into();
        }
    }
    let hint = match err.kind() {
        io::ErrorKind::NotFound => " (hint: is it installed and on PATH?)",
        io::ErrorKind::PermissionDenied => " (hint: is it executable?)",
        io::ErrorKind::ArgumentListTooLong => {
            " (hint: the command line is over the kernel's limits; this is a bug in Offload, please report it)"
        }
        _ => "",
    };
    SpawnError(format!("failed to start `{}`: {err}{hint}", spec.program)).into()
}

/// Reads one pipe to EOF, sending what it reads; ends early if the receiver is gone.
fn spawn_reader<R>(
    pipe: Option<R>,
    stream: Stream,
    mode: ReadMode,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) -> Option<JoinHandle<()>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let pipe = pipe?;
    Some(tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        loop {
            let mut buf = Vec::new();
            let read = match mode {
                ReadMode::Lines => reader.read_until(b'\n', &mut buf).await,
                ReadMode::Chunks => {
                    buf.resize(64 * 1024, 0);
                    let read = reader.read(&mut buf).await;
                    buf.truncate(*read.as_ref().unwrap_or(&0));
                    read
                }
            };
            match read {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send((stream, buf)).await.is_err() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::debug!(?stream, "reading child output failed: {err}");
                    break;
                }
            }
        }
    }))
}

/// Aborts the reader tasks when the run ends or its future is dropped, so a pipe held
/// open by an escaped process cannot keep a task alive.
struct AbortOnDrop(Vec<Option<JoinHandle<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in self.0.iter().flatten() {
            handle.abort();
        }
    }
}

/// Process groups of live children, for [`kill_all_process_groups`].
static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn live_groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    // A panic while holding the lock leaves a valid set; keep using it.
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends SIGKILL to the process group of every child still running (best effort), as
/// the last thing before the process exits (on a second interrupt, or with work left
/// behind by a first one).
pub(crate) fn kill_all_process_groups() {
    for &pgid in live_groups().iter() {
        // SAFETY: killpg has no memory-safety preconditions.
        let _ = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
}

/// The number of process groups currently registered (live children).
#[cfg(test)]
fn live_process_group_count() -> usize {
    live_groups().len()
}

/// A child's process group: registered while the run lasts, killed when dropped.
///
/// Children spawned outside this module (git) register theirs too, when started with
/// `process_group(0)`, so that [`kill_all_process_groups`] reaches them; their guard
/// drops right after the child is reaped.
///
/// Dropping it sends SIGKILL to the group, whether the child was reaped or not: that is
/// what kills leftovers and what makes an aborted run leave no orphan. After the leader
/// is reaped its pid stays reserved while any group member lives, and the drop comes at
/// most [`LEAK_TIMEOUT`] later, so the signal cannot reach an unrelated process.
pub(crate) struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    /// Registers the group that the child `pid` leads.
    pub(crate) fn register(pid: u32) -> Self {
        // Pids fit in i32 on every Unix (pid_t).
        let pgid = pid as i32;
        live_groups().insert(pgid);
        Self { pgid }
    }

    /// Sends `signo` to the whole group; a group that is already gone is fine.
    fn signal(&self, signo: i32) {
        // SAFETY: killpg has no memory-safety preconditions.
        let rc = unsafe { libc::killpg(self.pgid, signo) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::debug!(pgid = self.pgid, signo, "killpg failed: {err}");
            }
        }
    }

    /// SIGTERM now, and arms `kill_sleep` for SIGKILL after the grace period.
    fn terminate(&self, kill_sleep: &mut std::pin::Pin<&mut tokio::time::Sleep>) {
        self.signal(libc::SIGTERM);
        kill_sleep
            .as_mut()
            .reset(Instant::now() + TERMINATE_GRACE_PERIOD);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        live_groups().remove(&self.pgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant as StdInstant;

    /// How long a test waits for something that takes milliseconds on an idle machine
    /// (a killed process to go, a shell to write a file). Far above what a loaded
    /// machine needs, far below the minutes the processes these tests kill would run.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Waits (bounded) until `pid` is gone: no `/proc/<pid>`, or a zombie (dead, only
    /// waiting for its new parent to reap it).
    fn wait_gone(pid: i32) -> bool {
        let deadline = StdInstant::now() + PATIENCE;
        while StdInstant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            match stat {
                Err(_) => return true,
                // Field 3 (after the parenthesised name) is the state; Z is a zombie.
                Ok(stat) => {
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    if state.starts_with('Z') || state.starts_with('X') {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn read_pid(path: &Path) -> i32 {
        let deadline = StdInstant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            assert!(StdInstant::now() < deadline, "no pid in {}", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn capture_collects_both_streams_and_the_exit_code() {
        let spec = CommandSpec::shell("echo out; echo err >&2; printf tail; exit 3");
        let out = capture(&spec, None).await.unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(3));
        assert_eq!(out.stdout, "out\ntail");
        assert_eq!(out.stderr, "err\n");
    }

    #[tokio::test]
    async fn capture_reports_a_signal() {
        let out = capture(&CommandSpec::shell("kill -9 $$"), None)
            .await
            .unwrap();
        assert_eq!(out.outcome, ExitOutcome::Signaled(libc::SIGKILL));
    }

    #[tokio::test]
    async fn a_timeout_beyond_the_clock_is_no_timeout() {
        // Before: `Instant + Duration::MAX` panicked in the worker.
        let out = capture(&CommandSpec::shell("echo ok"), Some(Duration::MAX))
            .await
            .unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(0));
        assert_eq!(out.stdout, "ok\n");
    }

    #[tokio::test]
    async fn capture_of_megabytes_on_both_streams_does_not_deadlock() {
        let script = "head -c 5000000 /dev/zero | tr '\\0' x; \
                      head -c 5000000 /dev/zero | tr '\\0' y >&2";
        // A deadlock (the child blocked on a full pipe nobody reads) ends in the
        // timeout, which the outcome shows.
        let out = capture(&CommandSpec::shell(script), Some(PATIENCE))
            .await
            .unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(0));
        assert_eq!(out.stdout.len(), 5_000_000);
        assert_eq!(out.stderr.len(), 5_000_000);
        assert!(out.stdout.bytes().all(|b| b == b'x'));
    }

    #[tokio::test]
    async fn capture_is_lossy_on_invalid_utf8() {
        let out = capture(&CommandSpec::shell("printf 'a\\377b'"), None)
            .await
            .unwrap();
        assert_eq!(out.stdout, "a\u{FFFD}b");
    }

    #[tokio::test]
    async fn stream_delivers_lines_in_order_with_the_last_partial_line() {
        // The two pipes are read concurrently, so the order across them is only defined
        // when the child waits for each line to arrive before it writes the next: it
        // waits for a file the callback creates on seeing `one`, then `two`.
        let dir = tempfile::tempdir().unwrap();
        let seen = |line: &str| dir.path().join(format!("seen-{line}"));
        let wait = |line: &str| {
            format!(
                "while [ ! -e {} ]; do sleep 0.01; done",
                quote(&seen(line).to_string_lossy())
            )
        };
        let spec = CommandSpec::shell(&format!(
            "echo one; {}; echo two >&2; {}; printf 'three\\r\\n'; \
             printf '\\377x\\n'; printf last",
            wait("one"),
            wait("two")
        ));
        let mut lines = Vec::new();
        let outcome = stream(&spec, Some(PATIENCE), &CancellationToken::new(), |s, l| {
            std::fs::write(seen(&l), "").unwrap();
            lines.push((s, l))
        })
        .await
        .unwrap();
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(
            lines,
            vec![
                (Stream::Stdout, "one".to_owned()),
                (Stream::Stderr, "two".to_owned()),
                (Stream::Stdout, "three".to_owned()),
                (Stream::Stdout, "\u{FFFD}x".to_owned()),
                (Stream::Stdout, "last".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn stream_handles_a_very_long_line() {
        let spec = CommandSpec::shell("head -c 3000000 /dev/zero | tr '\\0' z; echo; echo end");
        let mut lines = Vec::new();
        stream(&spec, None, &CancellationToken::new(), |_, l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 3_000_000);
        assert_eq!(lines[1], "end");
    }

    #[tokio::test]
    async fn stream_delivers_lines_while_the_child_runs() {
        // The child waits for a file we only create after seeing its first line.
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("go");
        let script = format!(
            "echo ready; while [ ! -e {f} ]; do sleep 0.02; done; echo done",
            f = quote(&flag.to_string_lossy())
        );
        let mut lines = Vec::new();
        let outcome = stream(
            &CommandSpec::shell(&script),
            Some(PATIENCE),
            &CancellationToken::new(),
            |_, l| {
                if l == "ready" {
                    std::fs::write(&flag, "").unwrap();
                }
                lines.push(l);
            },
        )
        .await
        .unwrap();
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(lines, ["ready", "done"]);
    }

    /// A shell that starts a background `sleep 300`, records its pid, and hangs.
    fn hanging_tree(pid_file: &Path) -> CommandSpec {
        CommandSpec::shell(&format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            quote(&pid_file.to_string_lossy())
        ))
    }

    /// A timeout the shells of these tests reach their `wait` well within, loaded
    /// machine or not.
    const SHORT_TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn timeout_kills_the_whole_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let started = StdInstant::now();
        let out = capture(&hanging_tree(&pid_file), Some(SHORT_TIMEOUT))
            .await
            .unwrap();
        assert_eq!(out.outcome, ExitOutcome::TimedOut);
        assert_eq!(out.stdout, "started\n");
        // The tree would sleep 300 s.
        assert!(started.elapsed() < SHORT_TIMEOUT + PATIENCE);
        assert!(wait_gone(read_pid(&pid_file)), "the grandchild survived");
    }

    #[tokio::test]
    async fn timeout_escalates_to_sigkill_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "trap '' TERM; sh -c \"trap '' TERM; sleep 300\" & echo $! > {}; wait",
            quote(&pid_file.to_string_lossy())
        );
        let started = StdInstant::now();
        let out = capture(&CommandSpec::shell(&script), Some(SHORT_TIMEOUT))
            .await
            .unwrap();
        assert_eq!(out.outcome, ExitOutcome::TimedOut);
        // SIGKILL comes after the grace period, never before (timers do not fire early),
        // and long before the 300 s sleep would end.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= SHORT_TIMEOUT + TERMINATE_GRACE_PERIOD,
            "{elapsed:?}"
        );
        assert!(
            elapsed < SHORT_TIMEOUT + TERMINATE_GRACE_PERIOD + PATIENCE,
            "{elapsed:?}"
        );
        assert!(wait_gone(read_pid(&pid_file)));
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let cancel = CancellationToken::new();
        let started = StdInstant::now();
        let outcome = stream(&hanging_tree(&pid_file), None, &cancel, |_, line| {
            if line == "started" {
                cancel.cancel();
            }
        })
        .await
        .unwrap();
        assert_eq!(outcome, ExitOutcome::Cancelled);
        // The tree would sleep 300 s.
        assert!(started.elapsed() < PATIENCE);
        assert!(wait_gone(read_pid(&pid_file)), "the grandchild survived");
    }

    #[tokio::test]
    async fn an_already_cancelled_token_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let spec = CommandSpec::new("touch").arg(marker.to_string_lossy());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = stream(&spec, None, &cancel, |_, _| {}).await.unwrap();
        assert_eq!(outcome, ExitOutcome::Cancelled);
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let spec = hanging_tree(&pid_file);
        let cancel = CancellationToken::new();
        let run = stream(&spec, None, &cancel, |_, _| {});
        // Stop polling as soon as the grandchild's pid is known; `select!` drops `run`.
        let pid = tokio::select! {
            _ = run => panic!("the hanging command finished"),
            pid = async {
                loop {
                    if let Ok(text) = std::fs::read_to_string(&pid_file) {
                        if let Ok(pid) = text.trim().parse::<i32>() {
                            break pid;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => pid,
        };
        assert!(wait_gone(pid), "the grandchild survived the dropped future");
    }

    #[tokio::test]
    async fn a_grandchild_holding_the_pipes_does_not_hang_us() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell exits at once; its background sleep inherits stdout and stderr.
        let script = format!(
            "sleep 300 & echo $! > {}; echo bye",
            quote(&pid_file.to_string_lossy())
        );
        let started = StdInstant::now();
        let out = capture(&CommandSpec::shell(&script), None).await.unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(0));
        assert_eq!(out.stdout, "bye\n");
        // Held pipes end the capture after LEAK_TIMEOUT, not after the 300 s sleep.
        assert!(started.elapsed() < LEAK_TIMEOUT + PATIENCE);
        assert!(
            wait_gone(read_pid(&pid_file)),
            "the leaked grandchild survived"
        );
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_after_a_normal_exit() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}",
            quote(&pid_file.to_string_lossy())
        );
        let started = StdInstant::now();
        let out = capture(&CommandSpec::shell(&script), None).await.unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(0));
        // Nothing holds the pipes: the capture ends with the shell, not the 300 s sleep.
        assert!(started.elapsed() < PATIENCE);
        let pid = read_pid(&pid_file);
        assert!(wait_gone(pid), "the background sleep survived");
    }

    #[tokio::test]
    async fn the_registry_forgets_finished_children() {
        // Other tests run concurrently, so only check that ours is gone afterwards.
        let out = capture(&CommandSpec::shell("echo $$"), None).await.unwrap();
        let pid: i32 = out.stdout.trim().parse().unwrap();
        assert!(!live_groups().contains(&pid));
        let _ = live_process_group_count();
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let err = capture(&CommandSpec::new("offload-no-such-program-xyz"), None)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("`offload-no-such-program-xyz`"), "{msg}");
        assert!(msg.contains("is it installed and on PATH?"), "{msg}");
        assert!(is_spawn_error(&err));
    }

    #[tokio::test]
    async fn spawn_failure_names_a_missing_working_directory() {
        let spec = CommandSpec::new("true").cwd("/definitely/not/here");
        let msg = format!("{:#}", capture(&spec, None).await.unwrap_err());
        assert!(msg.contains("`/definitely/not/here`"), "{msg}");
        assert!(msg.contains("working directory"), "{msg}");
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied_and_stdin_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CommandSpec::shell("pwd; echo \"$A|$B\"; cat; echo eof")
            .cwd(dir.path())
            .env("A", "first")
            .env("B", "x y")
            .env("A", "second");
        let out = capture(&spec, Some(PATIENCE)).await.unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(out.stdout, format!("{}\nsecond|x y\neof\n", real.display()));
    }

    #[tokio::test]
    async fn the_child_runs_in_its_own_process_group() {
        let out = capture(&CommandSpec::shell("echo $$; ps -o pgid= -p $$"), None)
            .await
            .unwrap();
        let mut words = out.stdout.split_whitespace();
        let pid = words.next().unwrap();
        if let Some(pgid) = words.next() {
            assert_eq!(pid, pgid);
        }
        // SAFETY: getpgrp has no preconditions.
        let ours = unsafe { libc::getpgrp() };
        assert_ne!(pid, ours.to_string());
    }

    /// The orchestrator spawns these futures on the multi-threaded runtime.
    #[test]
    fn the_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let spec = CommandSpec::new("true");
        let cancel = CancellationToken::new();
        assert_send(&capture(&spec, None));
        assert_send(&stream(&spec, None, &cancel, |_, _| {}));
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        let spec = CommandSpec::new("pytest").args(["-k", "a b", "", "x=1", "{a,b}"]);
        assert_eq!(spec.display(), "pytest -k 'a b' '' 'x=1' '{a,b}'");
    }

    #[test]
    fn to_shell_string_has_the_documented_shape() {
        let spec = CommandSpec::new("pytest")
            .args(["-q", "t.py::a b"])
            .cwd("/r oot")
            .env("FOO", "bar baz")
            .env("EMPTY", "");
        assert_eq!(
            spec.to_shell_string(),
            "cd '/r oot' && FOO='bar baz' EMPTY='' exec pytest -q 't.py::a b'"
        );
        assert_eq!(CommandSpec::new("true").to_shell_string(), "exec true");
    }

    /// Runs `sh -c <to_shell_string>` of a spec whose program prints its cwd, its
    /// arguments and three variables (NUL-separated), and returns what it saw.
    async fn round_trip(spec_args: &[&str], env: &[(&str, &str)], cwd: &Path) -> String {
        let mut spec = CommandSpec::new("python3")
            .arg("-c")
            .arg(
                "import os,sys\n\
                 out = [os.getcwd()] + sys.argv[1:] + \
                 [os.environ.get(k, '<unset>') for k in ('K1', 'K2', 'K-3')]\n\
                 sys.stdout.write('\\0'.join(out))",
            )
            .args(spec_args.iter().copied())
            .cwd(cwd);
        for (k, v) in env {
            spec = spec.env(*k, *v);
        }
        let shell = CommandSpec::new("sh").arg("-c").arg(spec.to_shell_string());
        let out = capture(&shell, Some(PATIENCE)).await.unwrap();
        assert_eq!(out.outcome, ExitOutcome::Exited(0), "{}", out.stderr);
        out.stdout
    }

    #[tokio::test]
    async fn to_shell_string_round_trips_awkward_words() {
        let base = tempfile::tempdir().unwrap();
        let cwd = base.path().join("dir with 'quote' $HOME ü");
        std::fs::create_dir(&cwd).unwrap();
        let args = [
            "plain",
            "",
            "with space",
            "it's",
            "\"double\"",
            "$HOME",
            "`id`",
            "multi\nline",
            "tab\there",
            "ünïcödé ✓",
            "*",
            "[x]",
            "{a,b}",
            "~",
            "#hash",
            "a=b",
            "-n",
            "\\back",
            "semi;colon|pipe&amp",
            "",
        ];
        let env = [("K1", "v 1 $X 'q'"), ("K2", "")];
        let seen = round_trip(&args, &env, &cwd).await;
        let mut expected = vec![cwd.canonicalize().unwrap().to_string_lossy().into_owned()];
        expected.extend(args.iter().map(|s| s.to_string()));
        expected.extend(["v 1 $X 'q'".to_owned(), String::new(), "<unset>".to_owned()]);
        assert_eq!(seen.split('\0').collect::<Vec<_>>(), expected);
    }

    #[tokio::test]
    async fn to_shell_string_round_trips_non_shell_variable_names() {
        let base = tempfile::tempdir().unwrap();
        let seen = round_trip(&["x"], &[("K1", "a b"), ("K-3", "dash")], base.path()).await;
        let real = base
            .path()
            .canonicalize()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            seen.split('\0').collect::<Vec<_>>(),
            [real.as_str(), "x", "a b", "<unset>", "dash"]
        );
    }

    #[test]
    fn to_shell_string_protects_a_leading_dash() {
        let spec = CommandSpec::new("-weird").cwd("-dir");
        assert_eq!(spec.to_shell_string(), "cd ./-dir && exec env -- -weird");
    }
}
