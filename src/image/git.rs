//! Running `git` for the image pipeline, with errors that say what failed.
//!
//! [`Git`] runs one git command at a time in a fixed directory, with an environment
//! hardened against the user's setup: messages in English (so a few stderr texts can
//! be recognised), no terminal prompts, no pager, and optionally a private index file
//! (`GIT_INDEX_FILE`) so the real index is never touched. Network commands (fetch,
//! push) get a time limit; local commands run in a process group of their own that is
//! killed if Offload exits first (see [`crate::process::kill_all_process_groups`]).
//! This module knows nothing about notes, images or diffs.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::ProcessGroup;

/// How long a network git command (fetch, push) may take before it is killed.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(120);

/// A git command runner bound to one directory.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    dir: PathBuf,
    index_file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// The outcome of a git command that was allowed to fail.
#[derive(Debug)]
pub(super) struct GitOutput {
    /// Whether git exited with status 0.
    pub(super) success: bool,
    /// Its stdout, as bytes.
    pub(super) stdout: Vec<u8>,
    /// Its stderr, trimmed, lossily decoded.
    pub(super) stderr: String,
}

impl GitOutput {
    /// Stdout decoded lossily and trimmed.
    pub(super) fn stdout_trimmed(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }
}

impl Git {
    /// A runner whose commands run in `dir`.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            index_file: None,
            env: Vec::new(),
        }
    }

    /// The directory commands run in.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of this runner that uses `index` as its index file (`GIT_INDEX_FILE`).
    pub(super) fn with_index(&self, index: &Path) -> Self {
        let mut git = self.clone();
        git.index_file = Some(index.to_owned());
        git
    }

    /// A copy of this runner with one more environment variable.
    pub(super) fn with_env(&self, name: &str, value: &str) -> Self {
        let mut git = self.clone();
        git.env.push((name.to_owned(), value.to_owned()));
        git
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.dir)
            .args(args)
            // Recognisable messages ("no note found", "couldn't find remote ref").
            .env("LC_ALL", "C")
            .env("LANGUAGE", "")
            // Never wait for a password or open a pager: this runs unattended.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PAGER", "cat")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(Stdio::null());
        if let Some(index) = &self.index_file {
            cmd.env("GIT_INDEX_FILE", index);
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        cmd
    }

    /// Runs `git <args>` and returns its outcome, failing only when git cannot start.
    pub(super) fn try_run<I, S>(&self, args: I) -> Result<GitOutput>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let (child, _group) = spawn(
            self.command(args.clone())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .with_context(|| cannot_start(args.clone()))?;
        let output = child
            .wait_with_output()
            .with_context(|| cannot_start(args))?;
        Ok(to_git_output(output))
    }

    /// Runs `git <args>` and returns its stdout; a non-zero exit is an error that shows
    /// the command, its exit status and its stderr.
    pub(super) fn run<I, S>(&self, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let out = self.try_run(args.clone())?;
        if !out.success {
            bail!("{}", failed(args, &out.stderr, &self.dir));
        }
        Ok(out.stdout)
    }

    /// Like [`Self::run`], returning stdout decoded and trimmed.
    pub(super) fn run_text<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let out = self.run(args)?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Runs `git <args>` with `input` on stdin; a non-zero exit is an error.
    pub(super) fn run_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let (mut child, _group) = spawn(
            self.command(args.clone())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .with_context(|| cannot_start(args.clone()))?;
        let mut stdin = child
            .stdin
            .take()
            .context("git's stdin was not captured (internal error)")?;
        let input = input.to_vec();
        // Write from a thread so a command that prints much before reading all of its
        // input cannot deadlock against us.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child
            .wait_with_output()
            .with_context(|| cannot_start(args.clone()))?;
        // A write error (broken pipe) only matters if git failed too; its stderr says why.
        let _ = writer.join();
        let out = to_git_output(output);
        if !out.success {
            bail!("{}", failed(args, &out.stderr, &self.dir));
        }
        Ok(out.stdout)
    }

    /// Runs a network command (`fetch`, `push`) with [`NETWORK_TIMEOUT`]; a command that
    /// runs longer is killed and reported as failed.
    pub(super) fn try_run_network<I, S>(&self, args: I) -> Result<GitOutput>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let child = self
            .command(args.clone())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| cannot_start(args.clone()))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The receiver may be gone after a timeout; nothing is left to report then.
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(NETWORK_TIMEOUT) {
            Ok(output) => Ok(to_git_output(output.with_context(|| cannot_start(args))?)),
            Err(_) => {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill(2) on the pid of a child we spawned and still own (the
                    // waiting thread has not reaped it, or it would have sent a result).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                Ok(GitOutput {
                    success: false,
                    stdout: Vec::new(),
                    stderr: format!(
                        "timed out after {} s and was killed",
                        NETWORK_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }
}

/// Starts a local git command in a process group of its own, registered while the
/// returned guard lives (keep it until the child is reaped), so that Offload stopped by
/// a signal kills git with its filters and hooks on the way out. Network commands are
/// not started this way: ssh may need the terminal for a passphrase, which a process
/// outside the foreground group cannot read.
fn spawn(cmd: &mut Command) -> std::io::Result<(Child, ProcessGroup)> {
    let child = cmd.process_group(0).spawn()?;
    let group = ProcessGroup::register(child.id());
    Ok((child, group))
}

fn to_git_output(output: Output) -> GitOutput {
    GitOutput {
        success: output.status.success(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

fn render_args<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let words: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    words
        .iter()
        .map(|w| crate::process::quote(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cannot_start<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    format!(
        "cannot run `git {}` (hint: is git installed and on `PATH`?)",
        render_args(args)
    )
}

fn failed<I, S>(args: I, stderr: &str, dir: &Path) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let stderr = if stderr.is_empty() {
        "(no output)"
    } else {
        stderr
    };
    format!(
        "`git {}` failed in `{}`: {stderr}",
        render_args(args),
        dir.display()
    )
}

/// `git init` plus an identity, for tests that need real repositories.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;
    use std::process::Command;

    /// Runs git in `dir` and panics with its stderr on failure; returns trimmed stdout.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A fresh repository in `dir` with a local identity.
    pub(crate) fn init(dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["config", "user.email", "test@example.com"]);
        git(dir, &["config", "user.name", "Test"]);
        git(dir, &["config", "commit.gpgsign", "false"]);
    }

    /// Writes `files` and commits everything with `message`; returns the new sha.
    pub(crate) fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
        for (rel, text) in files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, text).expect("write");
        }
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
        git(dir, &["rev-parse", "HEAD"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_dir_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        testing::init(dir.path());
        let err = Git::new(dir.path())
            .run(["rev-parse", "--verify", "no-such-ref"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`git rev-parse --verify no-such-ref` failed"),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("fatal"), "{err}");
    }

    #[test]
    fn stdin_reaches_git() {
        let dir = tempfile::tempdir().unwrap();
        testing::init(dir.path());
        let out = Git::new(dir.path())
            .run_with_stdin(["hash-object", "--stdin"], b"hello\n")
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
