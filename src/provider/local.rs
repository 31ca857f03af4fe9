//! The local provider: each sandbox is a child process in its own process group.
//!
//! [`LocalProvider`] runs every command on this machine as
//! `<shell> -c 'exec <program> <args>...'` in its own process group (so a timeout,
//! a cancel or [`Sandbox::destroy`] kills the whole tree), in the command's directory or
//! else the configured working directory, with the inherited environment plus the
//! provider's plus the command's (later wins). Result files and a batch's input files
//! go to a private temporary directory the provider owns and removes when dropped. Sandboxes here share the
//! machine: nothing is copied or isolated, and `--copy-dir` does not apply.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use serde::Deserialize;
use async_trait::async_trait;
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::running::SandboxCommands;
use super::{OutputLine, Provider, ProviderInfo, ProviderSection, Sandbox, Setup};
use crate::config::Described;
use crate::framework::InputFile;
use crate::process::{CommandSpec, ExitOutcome};

/// `[provider] type = "local"`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LocalProviderConfig {
    /// Working directory of spawned processes (default: the current directory).
    #[serde(default)]
    pub(crate) working_dir: Option<PathBuf>,
    /// Environment variables for test processes.
    #[serde(default)]
    pub(crate) env: IndexMap<String, String>,
    /// Shell used to run commands.
    #[serde(default = "default_shell")]
    pub(crate) shell: String,
}

fn default_shell() -> String {
    "/bin/sh".to_owned()
}

impl Described for LocalProviderConfig {
    type Info = ProviderInfo;
    const INFO: ProviderInfo = ProviderInfo {
        name: "local",
        aliases: &[],
        summary: "Local child processes",
        template: TEMPLATE,
        local: true,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# Where batches run: `local` runs each batch as a child process on this machine, in
# `working_dir` (default: the current directory), through `shell`.
[provider]
type = \"local\"
# working_dir = \".\"
# shell = \"/bin/sh\"
";

impl ProviderSection for LocalProviderConfig {
    fn check(&self) -> Result<()> {
        if self.shell.trim().is_empty() {
            bail!(
                "`provider.shell` is empty; remove it to use `/bin/sh`, or name a shell, \
                 e.g. `shell = \"/bin/bash\"`"
            );
        }
        Ok(())
    }

    fn no_image(&self) -> Option<&'static str> {
        Some("the local provider builds no image")
    }

    fn env_mut(&mut self) -> &mut IndexMap<String, String> {
        &mut self.env
    }

    fn add_copy_dirs(&mut self, dirs: &[String]) {
        if !dirs.is_empty() {
            tracing::warn!(
                "--copy-dir has no effect with the local provider: its sandboxes run in the \
                 working directory itself"
            );
        }
    }

    fn setup(&self) -> Result<Setup<'_>> {
        Ok(Setup::Local(self))
    }
}

/// The variable that gives local commands the pid of the Offload process that runs
/// them: what they leave running (a resident pytest worker) ends with it.
const OWNER_VARIABLE: &str = "OFFLOAD_OWNER_PID";

/// What every local sandbox of a run shares.
#[derive(Debug, Clone)]
pub(crate) struct LocalSandboxSettings {
    /// Where commands run unless they name their own directory (relative command
    /// directories and download paths resolve against it).
    pub(crate) working_dir: PathBuf,
    /// The shell that runs each command (`<shell> -c ...`), `/bin/sh` by default.
    pub(super) shell: String,
    /// Variables added to the inherited environment: the provider's `env` and
    /// `OFFLOAD_ROOT`, in order, as the caller assembled them.
    pub(crate) env: Vec<(String, String)>,
}

/// Creates [`LocalSandbox`]es; owns the run's private directory for result files.
#[derive(Debug)]
pub(super) struct LocalProvider {
    settings: Arc<LocalSandboxSettings>,
    results: TempDir,
}

impl LocalProvider {
    /// A provider with these settings and a fresh private temporary directory.
    pub(super) fn new(settings: LocalSandboxSettings) -> Result<Self> {
        let results = tempfile::Builder::new()
            .prefix("offload-")
            .tempdir()
            .context("failed to create a private temporary directory for result files (hint: check that `TMPDIR` is writable)")?;
        Ok(Self {
            settings: Arc::new(settings),
            results,
        })
    }

    /// The private directory holding result files (removed when the provider drops).
    #[cfg(test)]
    fn results_dir(&self) -> &Path {
        self.results.path()
    }
}

/// What the sandboxes left running for each other is told to end, and given a moment
/// to, before the shared directory goes: nothing outlives the run. Such a process (a
/// resident pytest worker) writes its pid into a `*.pid` file there and removes the file
/// last when it ends.
impl Drop for LocalProvider {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.results.path().join("shared")) else {
            return;
        };
        let mut told = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".pid") {
                continue;
            }
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.trim().parse::<libc::pid_t>().ok());
            if let Some(pid) = pid.filter(|&pid| pid > 1) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
                    told.push(entry.path());
                }
            }
        }
        // A worker removes its pid file last, once its children are gone (waiting for
        // the process itself would wait for a reaper, which a container may lack).
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while told.iter().any(|file| file.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>> {
        let id = format!("local-{index}");
        // One subdirectory per sandbox, so two sandboxes never share a result path.
        let results_dir = self.results.path().join(&id);
        tokio::fs::create_dir_all(&results_dir)
            .await
            .with_context(|| {
                format!(
                    "failed to create the result directory `{}` for sandbox `{id}`",
                    results_dir.display()
                )
            })?;
        let shared_dir = self.results.path().join("shared");
        tokio::fs::create_dir_all(&shared_dir)
            .await
            .with_context(|| {
                format!(
                    "failed to create the shared directory `{}` of the local sandboxes",
                    shared_dir.display()
                )
            })?;
        Ok(Box::new(LocalSandbox {
            id,
            settings: Arc::clone(&self.settings),
            results_dir,
            shared_dir,
            commands: SandboxCommands::default(),
        }))
    }

    fn shares_local_cpus(&self) -> bool {
        true
    }
}

/// One local sandbox: runs commands one after another on this machine.
#[derive(Debug)]
struct LocalSandbox {
    id: String,
    settings: Arc<LocalSandboxSettings>,
    results_dir: PathBuf,
    /// What every sandbox of the provider sees (a resident pytest worker's socket).
    shared_dir: PathBuf,
    /// Runs its commands; destroying stops them and refuses new ones.
    commands: SandboxCommands,
}

impl LocalSandbox {
    /// The spec actually spawned for `command`: `<shell> -c 'exec ...'` with the
    /// directory and environment resolved.
    fn shell_spec(&self, command: &CommandSpec) -> CommandSpec {
        let program_only = CommandSpec {
            program: command.program.clone(),
            args: command.args.clone(),
            cwd: None,
            env: Vec::new(),
        };
        let cwd = match &command.cwd {
            // `join` keeps an absolute directory as it is.
            Some(dir) => self.settings.working_dir.join(dir),
            None => self.settings.working_dir.clone(),
        };
        CommandSpec {
            program: self.settings.shell.clone(),
            args: vec!["-c".to_owned(), program_only.to_shell_string()],
            cwd: Some(cwd),
            env: self
                .settings
                .env
                .iter()
                .chain(&command.env)
                .cloned()
                .chain([(OWNER_VARIABLE.to_owned(), std::process::id().to_string())])
                .collect(),
        }
    }
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn result_path(&self, batch: usize, extension: &str) -> String {
        self.results_dir
            .join(format!("batch-{batch}.{extension}"))
            .to_string_lossy()
            .into_owned()
    }

    async fn exec(
        &self,
        command: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
        output: &UnboundedSender<OutputLine>,
    ) -> Result<ExitOutcome> {
        let spec = self.shell_spec(command);
        self.commands
            .run(&self.id, command, &spec, timeout, cancel, output)
            .await
    }

    fn support_dir(&self) -> String {
        self.results_dir
            .join("support")
            .to_string_lossy()
            .into_owned()
    }

    /// The local sandboxes run in one directory on one machine: one resident worker
    /// serves them all.
    fn shared_dir(&self) -> String {
        self.shared_dir.to_string_lossy().into_owned()
    }

    /// Writes the files directly: this machine is the sandbox.
    async fn write_files(&self, files: &[InputFile], _cancel: &CancellationToken) -> Result<()> {
        for file in files {
            let path = self.settings.working_dir.join(&file.path);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.with_context(|| {
                    format!("failed to create the directory `{}`", parent.display())
                })?;
            }
            tokio::fs::write(&path, &file.contents)
                .await
                .with_context(|| format!("failed to write `{}`", path.display()))?;
        }
        Ok(())
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<()> {
        // `join` keeps an absolute path as it is.
        let source = self.settings.working_dir.join(remote);
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            bail!(
                "cannot download `{}` from sandbox `{}`: the file does not exist (hint: the command did not write it; see the batch log)",
                source.display(),
                self.id
            );
        }
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.with_context(|| {
                format!("failed to create the directory `{}`", parent.display())
            })?;
        }
        tokio::fs::copy(&source, local).await.with_context(|| {
            format!(
                "failed to copy `{}` from sandbox `{}` to `{}`",
                source.display(),
                self.id,
                local.display()
            )
        })?;
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        self.commands.shut_down(&self.id).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Stream;
    use tokio::sync::mpsc;

    fn provider(dir: &Path) -> LocalProvider {
        LocalProvider::new(LocalSandboxSettings {
            working_dir: dir.to_path_buf(),
            shell: "/bin/sh".to_owned(),
            env: vec![
                ("FROM_PROVIDER".to_owned(), "p v".to_owned()),
                ("OVERRIDDEN".to_owned(), "provider".to_owned()),
                (
                    "OFFLOAD_ROOT".to_owned(),
                    dir.to_string_lossy().into_owned(),
                ),
            ],
        })
        .unwrap()
    }

    async fn run(sandbox: &dyn Sandbox, command: &CommandSpec) -> (ExitOutcome, Vec<OutputLine>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outcome = sandbox
            .exec(
                command,
                // Only a bound for a command that hangs; these take milliseconds.
                Duration::from_secs(60),
                &CancellationToken::new(),
                &tx,
            )
            .await
            .unwrap();
        drop(tx);
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        (outcome, lines)
    }

    fn stdout(lines: &[OutputLine]) -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.text.as_str())
            .collect()
    }

    #[tokio::test]
    async fn exec_applies_directory_environment_and_quoting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let provider = provider(dir.path());
        let sandbox = provider.create_sandbox(3).await.unwrap();
        assert_eq!(sandbox.id(), "local-3");

        let command = CommandSpec::new("sh")
            .arg("-c")
            .arg("pwd -P; echo \"$FROM_PROVIDER|$OVERRIDDEN|$OFFLOAD_ROOT|$1\"; echo oops >&2; exit 4")
            .arg("sh")
            .arg("it's $x")
            .env("OVERRIDDEN", "command");
        let (outcome, lines) = run(sandbox.as_ref(), &command).await;
        assert_eq!(outcome, ExitOutcome::Exited(4));
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            stdout(&lines),
            [
                root.to_string_lossy().into_owned(),
                format!("p v|command|{}|it's $x", dir.path().display()),
            ]
        );
        assert!(lines.contains(&OutputLine {
            stream: Stream::Stderr,
            text: "oops".to_owned()
        }));

        let (_, lines) = run(sandbox.as_ref(), &CommandSpec::new("pwd").cwd("sub")).await;
        assert_eq!(
            stdout(&lines),
            [root.join("sub").to_string_lossy().into_owned()]
        );
    }

    #[tokio::test]
    async fn exec_honours_the_configured_shell() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("shell.log");
        let shell = dir.path().join("myshell");
        std::fs::write(
            &shell,
            format!(
                "#!/bin/sh\necho \"$@\" > '{}'\nexec /bin/sh \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let provider = LocalProvider::new(LocalSandboxSettings {
            working_dir: dir.path().to_path_buf(),
            shell: shell.to_string_lossy().into_owned(),
            env: Vec::new(),
        })
        .unwrap();
        let sandbox = provider.create_sandbox(0).await.unwrap();
        let (outcome, lines) = run(sandbox.as_ref(), &CommandSpec::new("echo").arg("a b")).await;
        assert_eq!(outcome, ExitOutcome::Exited(0));
        assert_eq!(stdout(&lines), ["a b"]);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "-c exec echo 'a b'\n"
        );
    }

    #[tokio::test]
    async fn result_path_and_download_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(dir.path());
        let results_dir = provider.results_dir().to_path_buf();
        let a = provider.create_sandbox(0).await.unwrap();
        let b = provider.create_sandbox(1).await.unwrap();
        let path = a.result_path(7, "xml");
        assert!(path.starts_with(&*results_dir.to_string_lossy()));
        assert!(path.ends_with("batch-7.xml"), "{path}");
        assert_eq!(path, a.result_path(7, "xml"));
        assert_ne!(path, b.result_path(7, "xml"));

        let command = CommandSpec::new("sh")
            .arg("-c")
            .arg("printf '<x/>' > \"$1\"")
            .arg("sh")
            .arg(&path);
        assert_eq!(run(a.as_ref(), &command).await.0, ExitOutcome::Exited(0));
        let local = dir.path().join("out/nested/batch-7.xml");
        a.download(&path, &local).await.unwrap();
        assert_eq!(std::fs::read_to_string(&local).unwrap(), "<x/>");

        // Relative paths resolve against the working directory.
        std::fs::write(dir.path().join("rel.txt"), "rel").unwrap();
        let local = dir.path().join("rel-copy.txt");
        a.download("rel.txt", &local).await.unwrap();
        assert_eq!(std::fs::read_to_string(&local).unwrap(), "rel");

        let err = a
            .download("missing.xml", &dir.path().join("m.xml"))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("missing.xml"), "{msg}");
        assert!(msg.contains("`local-0`"), "{msg}");

        drop((a, b));
        drop(provider);
        assert!(
            !results_dir.exists(),
            "the private directory outlived the provider"
        );
    }

    #[tokio::test]
    async fn timeout_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(dir.path());
        let sandbox = provider.create_sandbox(0).await.unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let outcome = sandbox
            .exec(
                &CommandSpec::new("sleep").arg("30"),
                Duration::from_millis(100),
                &CancellationToken::new(),
                &tx,
            )
            .await
            .unwrap();
        assert_eq!(outcome, ExitOutcome::TimedOut);
    }

    #[tokio::test]
    async fn destroy_kills_a_running_command_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(dir.path());
        let sandbox: Arc<dyn Sandbox> = provider.create_sandbox(0).await.unwrap().into();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = {
            let sandbox = Arc::clone(&sandbox);
            tokio::spawn(async move {
                let command = CommandSpec::new("sh").arg("-c").arg("echo up; sleep 300");
                sandbox
                    .exec(
                        &command,
                        Duration::from_secs(300),
                        &CancellationToken::new(),
                        &tx,
                    )
                    .await
            })
        };
        // Wait until the command really runs.
        assert_eq!(rx.recv().await.unwrap().text, "up");
        let started = std::time::Instant::now();
        sandbox.destroy().await.unwrap();
        let outcome = running.await.unwrap().unwrap();
        assert_eq!(outcome, ExitOutcome::Cancelled);
        // Killed by the destroy, not left to sleep its 300 s (generous for a loaded
        // machine).
        assert!(started.elapsed() < Duration::from_secs(30));

        let (tx, _rx) = mpsc::unbounded_channel();
        let err = sandbox
            .exec(
                &CommandSpec::new("true"),
                Duration::from_secs(5),
                &CancellationToken::new(),
                &tx,
            )
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("destroyed"), "{err:#}");
    }

    #[tokio::test]
    async fn a_missing_program_fails_in_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider(dir.path());
        let sandbox = provider.create_sandbox(0).await.unwrap();
        let (outcome, lines) = run(
            sandbox.as_ref(),
            &CommandSpec::new("offload-no-such-program"),
        )
        .await;
        assert_eq!(outcome, ExitOutcome::Exited(127));
        assert!(
            lines
                .iter()
                .any(|l| l.stream == Stream::Stderr && l.text.contains("offload-no-such-program")),
            "{lines:?}"
        );
    }
}
