//! The `default` provider: sandboxes driven by the user's shell commands.
//!
//! Five commands from `[provider]` make up the lifecycle, each run as `sh -c` in the
//! provider's `working_dir`, with `@name.ext` references expanded first
//! ([`crate::bundled`]):
//!
//! 1. [`run_prepare`] runs `prepare_command` (as written, its inputs in environment
//!    variables: [`super::default_image`]); its last non-empty stdout line is the image
//!    id, the rest is progress.
//! 2. [`DefaultProvider::create_sandbox`] runs `create_command` (`{image_id}`,
//!    `{cpu_cores}`); its last non-empty stdout line is the sandbox id. Retried.
//! 3. [`DefaultSandbox::exec`] runs `exec_command` (`{sandbox_id}`, `{command}`), where
//!    `{command}` is one shell word holding `cd <root> && K=v... exec <program> <args>`.
//!    Its exit code is the test command's. A batch's input files
//!    ([`DefaultSandbox::write_files`]) travel the same way, as `printf` commands in
//!    bounded pieces, so no command line grows with the batch: the last piece in the
//!    batch's own `{command}`, before its command (one connection to a remote sandbox
//!    per batch), earlier pieces of large files in execs of their own.
//! 4. [`DefaultSandbox::download`] runs `download_command` (`{sandbox_id}`, `{paths}`).
//!    Retried.
//! 5. [`DefaultSandbox::destroy`] runs `destroy_command` (`{sandbox_id}`).
//!
//! Placeholders are substituted in one pass, so a substituted value is never scanned
//! again, and ids are shell-quoted when needed. `{cpu_cores}` and `{image_id}` are
//! available in every command; `{image_id}` without a `prepare_command` is a config
//! error. Lifecycle commands are bounded by `timeout_secs`, exec by the batch timeout;
//! a command that outlives its timeout is killed with its process group. This module
//! does not decide what a failure means for the run: the orchestrator does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use serde::Deserialize;
use async_trait::async_trait;
use rustc_hash::FxHashSet;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::running::SandboxCommands;
use super::{
    OutputLine, Provider, ProviderInfo, ProviderSection, SANDBOX_LOST_EXIT_CODE, Sandbox,
    InputFilesNotWritten, SandboxLost, Setup,
};
use crate::config::{Described, check_copy_dirs, check_cpu_cores, check_timeout, shown};
use crate::framework::InputFile;
use crate::process::{self, CommandSpec, ExitOutcome, Stream, quote};
use crate::template::substitute;

/// `[provider] type = "default"`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DefaultProviderConfig {
    /// Runs once before sandboxes are created; its last stdout line is the image id.
    #[serde(default)]
    pub(crate) prepare_command: Option<String>,
    /// `prepare_command` builds incrementally from `OFFLOAD_BASE_IMAGE` and
    /// `OFFLOAD_PATCH_FILE` (thin diffs). Naming `{base_image}` or `{patch_file}` in the
    /// command opts in too.
    #[serde(default)]
    pub(crate) thin_diff: bool,
    /// Creates a sandbox and prints its id (`{image_id}`).
    pub(crate) create_command: String,
    /// Runs a command in a sandbox (`{sandbox_id}`, `{command}`).
    pub(crate) exec_command: String,
    /// Destroys a sandbox (`{sandbox_id}`).
    pub(crate) destroy_command: String,
    /// Downloads files from a sandbox (`{sandbox_id}`, `{paths}`).
    #[serde(default)]
    pub(crate) download_command: Option<String>,
    /// Working directory of the lifecycle commands.
    #[serde(default)]
    pub(crate) working_dir: Option<PathBuf>,
    /// Timeout of lifecycle commands, in seconds.
    #[serde(default = "default_remote_timeout_secs")]
    pub(crate) timeout_secs: u64,
    /// Directories copied into the image, as `"local:remote"`.
    #[serde(default)]
    pub(crate) copy_dirs: Vec<String>,
    /// Environment variables for test processes.
    #[serde(default)]
    pub(crate) env: IndexMap<String, String>,
    /// CPU cores per sandbox (`{cpu_cores}` and the cost estimate).
    #[serde(default = "default_cpu_cores")]
    pub(crate) cpu_cores: f64,
}

fn default_remote_timeout_secs() -> u64 {
    3600
}
fn default_cpu_cores() -> f64 {
    1.0
}

impl Described for DefaultProviderConfig {
    type Info = ProviderInfo;
    const INFO: ProviderInfo = ProviderInfo {
        name: "default",
        aliases: &[],
        summary: "Your own shell commands drive the sandboxes",
        template: TEMPLATE,
        local: false,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# Where batches run: sandboxes driven by your own shell commands (each run with `sh -c`).
# Placeholders: {image_id} is the last line prepare_command printed, {sandbox_id} the ID
# create_command printed, {command} the shell-quoted test command to run in the sandbox,
# {paths} space-separated 'remote':'local' pairs to copy out, {cpu_cores} the value below.
# The scripts below are placeholders for your own. With the bundled Modal script the
# lifecycle reads:
#   prepare_command = \"uv run @modal_sandbox.py prepare --include-cwd Dockerfile\"
#   thin_diff = true
#   create_command = \"uv run @modal_sandbox.py create {image_id}\"
#   exec_command = \"uv run @modal_sandbox.py exec {sandbox_id} {command}\"
#   destroy_command = \"uv run @modal_sandbox.py destroy {sandbox_id}\"
#   download_command = \"uv run @modal_sandbox.py download {sandbox_id} {paths}\"
[provider]
type = \"default\"
# Builds the sandbox image once per run, run exactly as written; its last line of
# stdout is the image ID. It builds from $OFFLOAD_CONTEXT_DIR (the working tree), e.g.
# prepare_command = \"docker build -q {context_dir}\"
# prepare_command = \"./scripts/build-image.sh\"
# true when prepare_command can also build from $OFFLOAD_BASE_IMAGE plus the patch in
# $OFFLOAD_PATCH_FILE: base images are then cached and only thin diffs are built.
# thin_diff = false
# Creates a sandbox and prints its ID.
create_command = \"./scripts/create-sandbox.sh\"
# Runs {command} inside the sandbox.
exec_command = \"./scripts/exec-in-sandbox.sh {sandbox_id} {command}\"
# Destroys the sandbox.
destroy_command = \"./scripts/destroy-sandbox.sh {sandbox_id}\"
# Copies files (the JUnit results) out of the sandbox.
download_command = \"./scripts/download-from-sandbox.sh {sandbox_id} {paths}\"
# Time limit of each command above, in seconds (test batches use test_timeout_secs).
timeout_secs = 3600
# Directories copied into the image, as \"local:remote\".
copy_dirs = []
# CPU cores per sandbox: the {cpu_cores} placeholder and the cost estimate.
cpu_cores = 1.0
";

/// Why image settings do nothing without a `prepare_command`.
const NO_PREPARE: &str = "no image is built without a `prepare_command`";

impl ProviderSection for DefaultProviderConfig {
    fn check(&self) -> Result<()> {
        let p = self;
        for (field, command, example) in [
            (
                "create_command",
                &p.create_command,
                "./create-sandbox.sh {image_id}",
            ),
            (
                "exec_command",
                &p.exec_command,
                "./exec-sandbox.sh {sandbox_id} {command}",
            ),
            (
                "destroy_command",
                &p.destroy_command,
                "./destroy-sandbox.sh {sandbox_id}",
            ),
        ] {
            if command.trim().is_empty() {
                bail!(
                    "`provider.{field}` is empty; the `default` provider needs it, e.g. `{field} = \"{example}\"`"
                );
            }
        }
        if !p.exec_command.contains("{command}") {
            bail!(
                "`provider.exec_command` must contain `{{command}}`, where the test command goes; \
                 got `{}`; e.g. `exec_command = \"./exec-sandbox.sh {{sandbox_id}} {{command}}\"`",
                shown(&p.exec_command)
            );
        }
        for (field, command) in [
            ("prepare_command", &p.prepare_command),
            ("download_command", &p.download_command),
        ] {
            if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
                bail!("`provider.{field}` is empty; remove it or give a command");
            }
        }
        check_timeout(
            "provider.timeout_secs",
            p.timeout_secs,
            "the time a lifecycle command may take",
            3600,
        )?;
        check_copy_dirs(&p.copy_dirs)?;
        check_cpu_cores(p.cpu_cores)
    }

    fn no_image(&self) -> Option<&'static str> {
        self.prepare_command.is_none().then_some(NO_PREPARE)
    }

    fn no_effect(&self) -> Vec<String> {
        if self.prepare_command.is_none() && !self.copy_dirs.is_empty() {
            vec![format!("`copy_dirs` in `[provider]` has no effect: {NO_PREPARE}")]
        } else {
            Vec::new()
        }
    }

    fn env_mut(&mut self) -> &mut IndexMap<String, String> {
        &mut self.env
    }

    fn add_copy_dirs(&mut self, dirs: &[String]) {
        if !dirs.is_empty() && self.prepare_command.is_none() {
            tracing::warn!("--copy-dir has no effect: {NO_PREPARE}");
        }
        self.copy_dirs.extend(dirs.iter().cloned());
    }

    fn setup(&self) -> Result<Setup<'_>> {
        Ok(Setup::Commands(Box::new(self.clone())))
    }
}

/// Pauses between attempts of a create or a download (so three attempts in all).
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];

/// How many stderr lines of a failed command its error message quotes.
const STDERR_TAIL_LINES: usize = 20;

/// What every sandbox of a `default` provider shares.
#[derive(Debug)]
struct Settings {
    /// Templates, with `@name.ext` already expanded.
    create: String,
    exec: String,
    destroy: String,
    download: Option<String>,
    /// cwd of the lifecycle commands.
    working_dir: PathBuf,
    /// Offload's own directory: relative local download paths resolve against it.
    cwd: PathBuf,
    /// Bound of every lifecycle command but exec.
    timeout: Duration,
    /// The provider env followed by `OFFLOAD_ROOT`.
    env: Vec<(String, String)>,
    /// `sandbox_project_root`: where test commands run inside the sandbox.
    project_root: PathBuf,
    /// `{cpu_cores}`, already formatted.
    cpu_cores: String,
}

impl Settings {
    /// Substitutes the placeholders every command may use (`{image_id}` is `image`,
    /// quoted) plus `extra`.
    fn fill(&self, template: &str, image: Option<&str>, extra: &[(&str, &str)]) -> String {
        let mut values: Vec<(&str, &str)> = vec![("cpu_cores", &self.cpu_cores)];
        let quoted = image.map(quote);
        if let Some(image) = &quoted {
            values.push(("image_id", image));
        }
        values.extend_from_slice(extra);
        substitute(template, &values)
    }

    /// Runs a lifecycle command to the end within `timeout_secs`; returns its stdout.
    async fn run(&self, what: &str, command: &str) -> Result<String> {
        let spec = CommandSpec::shell(command).cwd(&self.working_dir);
        let output = process::capture(&spec, Some(self.timeout))
            .await
            .with_context(|| format!("cannot run the {what} command `{command}`"))?;
        match output.outcome {
            ExitOutcome::Exited(0) => Ok(output.stdout),
            ExitOutcome::TimedOut => bail!(
                "the {what} command `{command}` timed out after {} s and was killed (hint: raise `timeout_secs` in `[provider]`){}",
                self.timeout.as_secs(),
                stderr_suffix(&output.stderr)
            ),
            ExitOutcome::Exited(code) => match script_exit_hint(command, code) {
                Some(hint) => Err(anyhow::Error::new(PermanentFailure(format!(
                    "the {what} command `{command}` failed (exit code {code}): {hint}{}",
                    stderr_suffix(&output.stderr)
                )))),
                None => bail!(
                    "the {what} command `{command}` failed (exit code {code}){}",
                    stderr_suffix(&output.stderr)
                ),
            },
            outcome => bail!(
                "the {what} command `{command}` failed ({outcome}){}",
                stderr_suffix(&output.stderr)
            ),
        }
    }
}

/// A lifecycle command failure that retrying cannot fix (bad arguments, missing
/// credentials); [`with_retry`] gives up on it at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PermanentFailure(String);

/// What an exit code of the bundled `modal_sandbox.py` means, for the codes where a
/// retry cannot help. Applies to any command that calls the script, so a `default`
/// provider written with `@modal_sandbox.py` commands reads failures as `modal` does.
fn script_exit_hint(command: &str, code: i32) -> Option<&'static str> {
    if !command.contains("modal_sandbox.py") {
        return None;
    }
    match code {
        2 => Some(
            "the Modal script rejected its arguments or a local input is missing; retrying cannot help \
             (hint: check `[provider]`, e.g. the `dockerfile` path and `copy_dirs`)",
        ),
        3 => Some(
            "Modal credentials are missing or were rejected (hint: run `modal token new`, or set \
             `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`)",
        ),
        _ => None,
    }
}

/// `: <last stderr lines>`, or nothing when stderr is empty.
fn stderr_suffix(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return " with no output on stderr".to_owned();
    }
    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    format!(", stderr:\n{}", tail.join("\n"))
}

/// The last non-empty line of `stdout`, trimmed.
fn last_line(stdout: &str) -> Option<&str> {
    stdout.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// How much file content one exec of [`DefaultSandbox::write_files`] carries, counting
/// each `'` as 64 bytes: the `{command}` word is quoted again by the exec command line
/// and maybe by the sandbox's own shell, and each quoting turns a `'` into `'\''`.
/// With the batch's own command (its file arguments are at most 32 KiB), this keeps
/// every argument under the kernel's 128 KiB, and the pytest plugin and the resident
/// worker (about 45 KiB) ride in the first batch's exec: over a slow link each more
/// exec is a round trip more before the first test.
const WRITE_CHUNK: usize = 64 * 1024;

/// The longest prefix of `text` (in bytes, at a char boundary) whose cost fits `room`.
fn fitting_prefix(text: &str, room: usize) -> usize {
    let mut cost = 0;
    for (at, c) in text.char_indices() {
        cost += if c == '\'' { 64 } else { c.len_utf8() };
        if cost > room {
            return at;
        }
    }
    text.len()
}

/// Shell scripts that write `files` (creating parent directories), each carrying at
/// most `chunk` of content (see [`WRITE_CHUNK`]); a large file is written in pieces by
/// successive scripts, which must run in order.
fn write_scripts(files: &[&InputFile], chunk: usize) -> Vec<String> {
    let mut scripts = Vec::new();
    let mut script = String::new();
    let mut room = chunk;
    let add = |script: &mut String, command: &str| {
        if !script.is_empty() {
            script.push_str(" && ");
        }
        script.push_str(command);
    };
    for file in files {
        let path = quote(&file.path).into_owned();
        if let Some(parent) = Path::new(&file.path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            add(
                &mut script,
                &format!("mkdir -p {}", quote(&parent.to_string_lossy())),
            );
        }
        let mut rest = file.contents.as_str();
        let mut redirect = ">";
        loop {
            let end = fitting_prefix(rest, room);
            if end == 0 && !rest.is_empty() && room < chunk {
                scripts.push(std::mem::take(&mut script));
                room = chunk;
                continue;
            }
            // At least one char per piece, so a tiny `chunk` still ends.
            let end = end.max(rest.chars().next().map_or(0, char::len_utf8));
            let (piece, after) = rest.split_at(end);
            add(
                &mut script,
                &format!("printf %s {} {redirect} {path}", quote(piece)),
            );
            room = room.saturating_sub(fitting_cost(piece) + path.len() + 20);
            redirect = ">>";
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
    }
    if !script.is_empty() {
        scripts.push(script);
    }
    scripts
}

/// The cost of `text` as [`WRITE_CHUNK`] counts it.
fn fitting_cost(text: &str) -> usize {
    text.len() + 63 * text.bytes().filter(|&b| b == b'\'').count()
}

/// `{cpu_cores}` as written: the shortest form (`1`, `2.5`, `0.125`).
fn format_cores(cores: f64) -> String {
    format!("{cores}")
}

/// Runs `attempt` up to `1 + delays.len()` times, sleeping `delays[i]` after failure
/// `i` and logging each retry as a warning; returns the first success or the last error.
async fn with_retry<T, F, Fut>(what: &str, delays: &[Duration], mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delays = delays.iter();
    let mut number = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if is_permanent(&err) => return Err(err.context(format!("{what} failed"))),
            Err(err) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(
                        "{what} failed (attempt {number}), retrying in {delay:?}: {err:#}"
                    );
                    tokio::time::sleep(*delay).await;
                    number += 1;
                }
                None => return Err(err.context(format!("{what} failed {number} times"))),
            },
        }
    }
}

/// Whether `err` (or anything it wraps) is a [`PermanentFailure`].
fn is_permanent(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<PermanentFailure>())
}

/// Where prepare progress goes: held back while discovery prints, then on stderr.
#[derive(Debug, Default)]
pub(crate) struct PrepareLog {
    held: Mutex<Option<Vec<String>>>,
}

impl PrepareLog {
    /// A log that holds lines until [`Self::release`].
    pub(crate) fn held() -> Self {
        Self {
            held: Mutex::new(Some(Vec::new())),
        }
    }

    /// Shows `line` as `[prepare] <line>` now, or later if held.
    pub(super) fn line(&self, line: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(lines) => lines.push(line.to_owned()),
            None => crate::statusln!("[prepare] {line}"),
        }
    }

    /// Prints what was held and shows later lines at once.
    pub(crate) fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for line in held.take().unwrap_or_default() {
            crate::statusln!("[prepare] {line}");
        }
    }
}

/// Without a `prepare_command` there is no image: names the settings that only apply
/// to one (copy dirs, `thin_diff`) when they are set.
pub(crate) fn warn_image_settings_without_image(config: &DefaultProviderConfig) {
    if config.prepare_command.is_some() {
        return;
    }
    if !config.copy_dirs.is_empty() {
        tracing::warn!(
            "copy dirs ({}) cannot apply: they are copied into the image that `prepare_command` builds, and there is none (hint: add a `prepare_command`)",
            config.copy_dirs.join(", ")
        );
    }
    if config.thin_diff {
        tracing::warn!(
            "`[provider] thin_diff` has no effect: there is no `prepare_command` to build images"
        );
    }
}

/// Runs one prepare `command` (placeholders already filled) in the provider's working
/// directory and returns the image id it printed (its last non-empty stdout line);
/// other output goes to `log`. Each variable of `env` with a value is set, and each
/// without one is removed from the inherited environment, so the command never sees a
/// stale value from the caller's shell.
pub(super) async fn run_prepare(
    config: &DefaultProviderConfig,
    command: &str,
    env: &[(&str, Option<String>)],
    cwd: &Path,
    log: &PrepareLog,
    cancel: &CancellationToken,
) -> Result<String> {
    let working_dir = config
        .working_dir
        .as_ref()
        .map_or_else(|| cwd.to_path_buf(), |d| cwd.join(d));
    let timeout = Duration::from_secs(config.timeout_secs);
    // `env -u NAME... sh -c COMMAND`: the command itself runs exactly as written.
    let mut spec = CommandSpec::new("env").cwd(&working_dir);
    for (name, value) in env {
        match value {
            Some(value) => spec = spec.env(*name, value),
            None => spec = spec.args(["-u", name]),
        }
    }
    let spec = spec.args(["sh", "-c", command]);

    // The last non-empty stdout line is the id; any earlier one is progress.
    let mut id_candidate: Option<String> = None;
    let mut stderr: Vec<String> = Vec::new();
    let outcome = process::stream(&spec, Some(timeout), cancel, |stream, text| match stream {
        Stream::Stdout if text.trim().is_empty() => {}
        Stream::Stdout => {
            if let Some(previous) = id_candidate.replace(text) {
                log.line(&previous);
            }
        }
        Stream::Stderr => {
            if !text.trim().is_empty() {
                log.line(&text);
            }
            stderr.push(text);
        }
    })
    .await
    .with_context(|| format!("cannot run the prepare command `{command}`"))?;
    let stderr = stderr.join("\n");
    match outcome {
        ExitOutcome::Exited(0) => {}
        ExitOutcome::Cancelled => bail!("the prepare command `{command}` was interrupted"),
        ExitOutcome::TimedOut => bail!(
            "the prepare command `{command}` timed out after {} s and was killed (hint: raise `timeout_secs` in `[provider]`){}",
            timeout.as_secs(),
            stderr_suffix(&stderr)
        ),
        outcome => {
            if let Some(line) = id_candidate {
                log.line(&line);
            }
            let hint = match outcome {
                ExitOutcome::Exited(code) => script_exit_hint(command, code)
                    .map(|h| format!(": {h}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            bail!(
                "the prepare command `{command}` failed ({outcome}){hint}{}",
                stderr_suffix(&stderr)
            )
        }
    }
    match id_candidate {
        Some(id) => {
            let id = id.trim().to_owned();
            tracing::info!("prepared image `{id}`");
            Ok(id)
        }
        None => bail!(
            "the prepare command `{command}` printed no image id (hint: its last stdout line must be the id){}",
            stderr_suffix(&stderr)
        ),
    }
}

/// Rebuilds the run's image when the one sandboxes are created from turns out to be
/// gone (the image pipeline with [`crate::image::PrepareOptions::refresh_cache`]).
#[async_trait]
pub(super) trait ImageRebuild: Send + Sync {
    /// Builds the image again, bypassing the cache, and returns its id.
    async fn rebuild(&self) -> Result<String>;
}

/// The self-healing of a cached image: at most one rebuild per run.
struct Healing {
    rebuild: Arc<dyn ImageRebuild>,
    /// Held while a rebuild runs, so concurrent creations wait for it.
    state: tokio::sync::Mutex<HealState>,
}

/// Where the one rebuild stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HealState {
    Untried,
    /// Rebuilt as this image.
    Rebuilt(String),
    /// The rebuild failed; creations fail as they are.
    Failed,
}

/// Creates sandboxes with the user's `create_command`.
pub(super) struct DefaultProvider {
    settings: Arc<Settings>,
    /// `{image_id}`: what `prepare` produced (replaced by a rebuild).
    image: Mutex<Option<String>>,
    /// Set when the image came from the cache.
    healing: Option<Healing>,
}

impl std::fmt::Debug for DefaultProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultProvider")
            .field("settings", &self.settings)
            .field("image", &self.current_image())
            .field("healing", &self.healing.is_some())
            .finish()
    }
}

impl DefaultProvider {
    /// A provider for `config`, with the image `prepare` produced (if any), test
    /// commands running in `project_root` inside each sandbox, and `cwd` as Offload's
    /// directory. Expands `@name.ext` references; fails on an unknown script, on
    /// `{image_id}` without a prepare command and on an `exec_command` without
    /// `{command}`.
    pub(super) fn new(
        config: &DefaultProviderConfig,
        image_id: Option<String>,
        project_root: &str,
        cwd: &Path,
    ) -> Result<Self> {
        let mut fields = vec![
            ("create_command", config.create_command.as_str()),
            ("exec_command", config.exec_command.as_str()),
            ("destroy_command", config.destroy_command.as_str()),
        ];
        if let Some(download) = &config.download_command {
            fields.push(("download_command", download));
        }
        if image_id.is_none() {
            for (field, template) in &fields {
                if template.contains("{image_id}") {
                    bail!(
                        "`[provider] {field}` uses `{{image_id}}`, but there is no image: it comes from `prepare_command`, which is not set (hint: add a `prepare_command` that prints an image id, or remove `{{image_id}}`)"
                    );
                }
            }
        }
        if !config.exec_command.contains("{command}") {
            bail!(
                "`[provider] exec_command` has no `{{command}}` placeholder, so tests could never run (hint: e.g. `exec_command = \"my-sandbox exec {{sandbox_id}} {{command}}\"`)"
            );
        }
        let expand = |field: &str, template: &str| {
            crate::bundled::expand(template).with_context(|| format!("in `[provider] {field}`"))
        };
        let working_dir = config
            .working_dir
            .as_ref()
            .map_or_else(|| cwd.to_path_buf(), |d| cwd.join(d));
        let mut env: Vec<(String, String)> = config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("OFFLOAD_ROOT".to_owned(), project_root.to_owned()));
        let settings = Settings {
            create: expand("create_command", &config.create_command)?,
            exec: expand("exec_command", &config.exec_command)?,
            destroy: expand("destroy_command", &config.destroy_command)?,
            download: config
                .download_command
                .as_deref()
                .map(|t| expand("download_command", t))
                .transpose()?,
            working_dir,
            cwd: cwd.to_path_buf(),
            timeout: Duration::from_secs(config.timeout_secs),
            env,
            project_root: PathBuf::from(project_root),
            cpu_cores: format_cores(config.cpu_cores),
        };
        Ok(Self {
            settings: Arc::new(settings),
            image: Mutex::new(image_id),
            healing: None,
        })
    }

    /// Treats the image as a cached one: if creating a sandbox from it fails (after
    /// the usual retries), `rebuild` runs once for the whole run, every later creation
    /// uses the new image, and the failed creation is tried once more on it. A failure
    /// after the rebuild is an ordinary create failure.
    #[must_use]
    pub(super) fn with_rebuild(mut self, rebuild: Arc<dyn ImageRebuild>) -> Self {
        self.healing = Some(Healing {
            rebuild,
            state: tokio::sync::Mutex::new(HealState::Untried),
        });
        self
    }

    /// The image sandboxes are created from now.
    fn current_image(&self) -> Option<String> {
        self.image.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `create_command` for `image` (with retries) and wraps the sandbox.
    async fn create_from(&self, index: usize, image: Option<&str>) -> Result<Box<dyn Sandbox>> {
        let settings = &self.settings;
        let command = settings.fill(&settings.create, image, &[]);
        let id = with_retry(&format!("creating sandbox {index}"), &RETRY_DELAYS, || async {
            let stdout = settings.run("create", &command).await?;
            match last_line(&stdout) {
                Some(id) => Ok(id.to_owned()),
                None => bail!(
                    "the create command `{command}` printed no sandbox id (hint: its last stdout line must be the id)"
                ),
            }
        })
        .await?;
        tracing::debug!("created sandbox `{id}`");
        Ok(Box::new(DefaultSandbox {
            quoted_id: quote(&id).into_owned(),
            id,
            image: image.map(str::to_owned),
            settings: Arc::clone(&self.settings),
            commands: SandboxCommands::default(),
            destroy_started: AtomicBool::new(false),
            written: Mutex::default(),
            pending: Mutex::default(),
        }))
    }

    /// After a failed creation from `failed_image`: the image to try once more, if
    /// the (single) rebuild produced one. Runs the rebuild if nobody has yet.
    async fn heal(
        &self,
        failed_image: Option<&str>,
        err: &anyhow::Error,
    ) -> Result<Option<String>> {
        let Some(healing) = &self.healing else {
            return Ok(None);
        };
        let mut state = healing.state.lock().await;
        match &*state {
            HealState::Rebuilt(new) if Some(new.as_str()) != failed_image => {
                return Ok(Some(new.clone()));
            }
            HealState::Rebuilt(_) | HealState::Failed => return Ok(None),
            HealState::Untried => {}
        }
        tracing::warn!(
            "cannot create a sandbox from the cached image `{}`; it may be gone, so it is rebuilt once and its cache entry replaced: {err:#}",
            failed_image.unwrap_or_default()
        );
        match healing.rebuild.rebuild().await {
            Ok(new) => {
                tracing::warn!("rebuilt the image as `{new}`");
                *self.image.lock().unwrap_or_else(|p| p.into_inner()) = Some(new.clone());
                *state = HealState::Rebuilt(new.clone());
                Ok(Some(new))
            }
            Err(rebuild_err) => {
                *state = HealState::Failed;
                Err(rebuild_err.context("rebuilding the image failed"))
            }
        }
    }
}

#[async_trait]
impl Provider for DefaultProvider {
    async fn create_sandbox(&self, index: usize) -> Result<Box<dyn Sandbox>> {
        let image = self.current_image();
        let err = match self.create_from(index, image.as_deref()).await {
            Ok(sandbox) => return Ok(sandbox),
            // Credentials or arguments: not a sign of a gone image.
            Err(err) if is_permanent(&err) => return Err(err),
            Err(err) => err,
        };
        match self.heal(image.as_deref(), &err).await {
            Ok(Some(new)) => self.create_from(index, Some(&new)).await,
            Ok(None) => Err(err),
            Err(heal_err) => Err(err.context(format!("{heal_err:#}"))),
        }
    }
}

/// A sandbox of the `default` provider, known by the id its create command printed.
#[derive(Debug)]
struct DefaultSandbox {
    id: String,
    /// The id as substituted into commands.
    quoted_id: String,
    /// The image it was created from (`{image_id}`).
    image: Option<String>,
    settings: Arc<Settings>,
    /// Runs its execs; destroying stops them and refuses new ones.
    commands: SandboxCommands,
    destroy_started: AtomicBool,
    /// Files [`Sandbox::write_files`] already wrote, by path and content hash, so the
    /// same support file is sent once per sandbox.
    written: Mutex<FxHashSet<(String, u64)>>,
    /// The last piece of the input files [`Sandbox::write_files`] was given, which the
    /// next exec writes before its command starts: a remote sandbox is then reached
    /// once per batch, not twice.
    pending: Mutex<Option<PendingWrite>>,
}

/// Input files that the next exec of a sandbox writes first.
#[derive(Debug)]
struct PendingWrite {
    /// A [`write_scripts`] script.
    script: String,
    /// The files it completes, for [`DefaultSandbox::written`] once it worked.
    files: Vec<(String, u64)>,
}

/// The stderr line of an exec whose input files could not be written (its command did
/// not start then).
const WRITE_FAILED: &str = "offload: cannot write the input files of the batch; the command did not start";

/// A file's key in [`DefaultSandbox::written`].
fn fingerprint(file: &InputFile) -> (String, u64) {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&file.contents, &mut hasher);
    (file.path.clone(), std::hash::Hasher::finish(&hasher))
}

impl DefaultSandbox {
    /// The `{command}` word for `command`: it runs in the project root (or the
    /// command's directory, relative to the root) with the provider env,
    /// `OFFLOAD_ROOT` and the command's own env, in that order.
    fn command_word(&self, command: &CommandSpec) -> String {
        quote(&self.command_line(command)).into_owned()
    }

    /// [`Self::command_word`] before its quoting.
    fn command_line(&self, command: &CommandSpec) -> String {
        let root = &self.settings.project_root;
        let full = CommandSpec {
            program: command.program.clone(),
            args: command.args.clone(),
            // `join` keeps an absolute directory as it is.
            cwd: Some(
                command
                    .cwd
                    .as_ref()
                    .map_or_else(|| root.clone(), |d| root.join(d)),
            ),
            env: self
                .settings
                .env
                .iter()
                .chain(&command.env)
                .cloned()
                .collect(),
        };
        full.to_shell_string()
    }

    /// The `{command}` word that first runs `script` (a [`write_scripts`] script) in
    /// the project root, then `command` as [`Self::command_word`] does, unless the
    /// script failed: then it says [`WRITE_FAILED`] on stderr and exits with 1.
    fn command_word_after(&self, script: &str, command: &CommandSpec) -> String {
        let write = CommandSpec::shell(script)
            .cwd(&self.settings.project_root)
            .to_shell_string();
        let line = format!(
            "({write}) || {{ echo {} >&2; exit 1; }}; {}",
            quote(WRITE_FAILED),
            self.command_line(command)
        );
        quote(&line).into_owned()
    }

    /// The exec command line for `command`.
    fn exec_line(&self, word: &str) -> String {
        self.settings.fill(
            &self.settings.exec,
            self.image.as_deref(),
            &[("sandbox_id", &self.quoted_id), ("command", word)],
        )
    }

    /// Runs the exec command line `line` for `command`; a sandbox that says it was
    /// lost is an error.
    async fn run_exec(
        &self,
        line: &str,
        command: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
        output: &UnboundedSender<OutputLine>,
    ) -> Result<ExitOutcome> {
        let spec = CommandSpec::shell(line).cwd(&self.settings.working_dir);
        let outcome = self
            .commands
            .run(&self.id, command, &spec, timeout, cancel, output)
            .await?;
        if outcome == ExitOutcome::Exited(SANDBOX_LOST_EXIT_CODE) {
            return Err(SandboxLost(format!(
                "sandbox `{}` was lost: `exec_command` exited with {SANDBOX_LOST_EXIT_CODE}, which says the sandbox itself failed (its host or the connection to it went down), not the tests",
                self.id
            ))
            .into());
        }
        Ok(outcome)
    }

    /// Runs `command` after writing `pending`, in one exec: fails when the writing did
    /// (the command did not start then), and records the files as written otherwise.
    async fn exec_after_write(
        &self,
        pending: PendingWrite,
        command: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
        output: &UnboundedSender<OutputLine>,
    ) -> Result<ExitOutcome> {
        let line = self.exec_line(&self.command_word_after(&pending.script, command));
        // The output goes on as it comes; the stderr before the marker is kept for the
        // message.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputLine>();
        let run = async move {
            let outcome = self.run_exec(&line, command, timeout, cancel, &tx).await;
            drop(tx);
            outcome
        };
        let forward = async {
            let mut stderr = String::new();
            let mut failed = false;
            while let Some(line) = rx.recv().await {
                if line.stream == Stream::Stderr && !failed {
                    if line.text.trim_end() == WRITE_FAILED {
                        failed = true;
                        continue;
                    }
                    // Only the writing's own errors matter, and they come first.
                    if stderr.len() < 4096 {
                        stderr.push_str(&line.text);
                        stderr.push('\n');
                    }
                }
                // A receiver that is gone wants no more output.
                let _ = output.send(line);
            }
            (failed, stderr)
        };
        let (outcome, (failed, stderr)) = tokio::join!(run, forward);
        let outcome = outcome?;
        if failed {
            return Err(InputFilesNotWritten(format!(
                "cannot write the batch's input files into sandbox `{}` through `exec_command` ({outcome}){}",
                self.id,
                stderr_suffix(&stderr)
            ))
            .into());
        }
        if matches!(outcome, ExitOutcome::Exited(_)) {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            written.extend(pending.files);
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Sandbox for DefaultSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn result_path(&self, batch: usize, extension: &str) -> String {
        self.settings
            .project_root
            .join(format!(".offload-batch-{batch}.{extension}"))
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
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match pending {
            Some(pending) => {
                self.exec_after_write(pending, command, timeout, cancel, output)
                    .await
            }
            None => {
                let line = self.exec_line(&self.command_word(command));
                self.run_exec(&line, command, timeout, cancel, output).await
            }
        }
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<()> {
        let Some(template) = &self.settings.download else {
            bail!(
                "cannot fetch `{remote}` from sandbox `{}`: `[provider] download_command` is not set (hint: add one, e.g. `download_command = \"my-sandbox download {{sandbox_id}} {{paths}}\"`)",
                self.id
            );
        };
        // Relative paths: remote ones against the project root, where the test command
        // ran; local ones against Offload's directory (the command runs elsewhere).
        let remote = self.settings.project_root.join(remote);
        let local = self.settings.cwd.join(local);
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.with_context(|| {
                format!("failed to create the directory `{}`", parent.display())
            })?;
        }
        let paths = format!(
            "{}:{}",
            quote(&remote.to_string_lossy()),
            quote(&local.to_string_lossy())
        );
        let command = self.settings.fill(
            template,
            self.image.as_deref(),
            &[("sandbox_id", &self.quoted_id), ("paths", &paths)],
        );
        with_retry(
            &format!(
                "downloading `{}` from sandbox `{}`",
                remote.display(),
                self.id
            ),
            &RETRY_DELAYS,
            || async { self.settings.run("download", &command).await.map(|_| ()) },
        )
        .await
    }

    fn support_dir(&self) -> String {
        self.settings
            .project_root
            .join(".offload-support")
            .to_string_lossy()
            .into_owned()
    }

    /// Writes the files through `exec_command`, as `printf` commands run in the
    /// project root, cut so that no command line holds more than [`WRITE_CHUNK`] of
    /// them: the last piece goes with the next exec (the batch's command), which
    /// writes it before its command starts; earlier pieces (large files) take an exec
    /// each, now.
    async fn write_files(&self, files: &[InputFile], cancel: &CancellationToken) -> Result<()> {
        let new: Vec<&InputFile> = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            files
                .iter()
                .filter(|f| !written.contains(&fingerprint(f)))
                .collect()
        };
        let mut scripts = write_scripts(&new, WRITE_CHUNK);
        let Some(last) = scripts.pop() else {
            return Ok(());
        };
        for script in scripts {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let command = CommandSpec::shell(&script);
            let line = self.exec_line(&self.command_word(&command));
            let outcome = self
                .run_exec(&line, &command, self.settings.timeout, cancel, &tx)
                .await?;
            drop(tx);
            if outcome != ExitOutcome::Exited(0) {
                let mut stderr = String::new();
                while let Ok(line) = rx.try_recv() {
                    if line.stream == Stream::Stderr {
                        stderr.push_str(&line.text);
                        stderr.push('\n');
                    }
                }
                bail!(
                    "cannot write the batch's input files into sandbox `{}` through `exec_command` ({outcome}){}",
                    self.id,
                    stderr_suffix(&stderr)
                );
            }
        }
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingWrite {
            script: last,
            files: new.into_iter().map(fingerprint).collect(),
        });
        Ok(())
    }

    /// Killing the local end of `exec_command` does not stop the command inside the
    /// sandbox, so a sandbox whose batch timed out is replaced.
    fn is_clean_after_timeout(&self) -> bool {
        false
    }

    async fn destroy(&self) -> Result<()> {
        if self.destroy_started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Running execs are ended first, so the destroy command does not pull the floor
        // from under them.
        self.commands.shut_down(&self.id).await;
        let command = self.settings.fill(
            &self.settings.destroy,
            self.image.as_deref(),
            &[("sandbox_id", &self.quoted_id)],
        );
        self.settings.run("destroy", &command).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    fn config(create: &str, exec: &str, destroy: &str) -> DefaultProviderConfig {
        DefaultProviderConfig {
            prepare_command: None,
            thin_diff: false,
            create_command: create.to_owned(),
            exec_command: exec.to_owned(),
            destroy_command: destroy.to_owned(),
            download_command: None,
            working_dir: None,
            timeout_secs: 10,
            copy_dirs: Vec::new(),
            env: IndexMap::new(),
            cpu_cores: 1.0,
        }
    }

    #[tokio::test]
    async fn write_scripts_rebuild_files_of_any_size_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let big: String = (0..3000)
            .map(|i| format!("t.py::test_p[it's {i} é ☃]\n"))
            .collect();
        let files = [
            InputFile {
                path: "nested/dir/big.tests".to_owned(),
                contents: big.clone(),
            },
            InputFile {
                path: "empty".to_owned(),
                contents: String::new(),
            },
            InputFile {
                path: dir.path().join("abs 'x'").to_string_lossy().into_owned(),
                contents: "'\\$HOME %s\n".to_owned(),
            },
        ];
        let refs: Vec<&InputFile> = files.iter().collect();
        let scripts = write_scripts(&refs, WRITE_CHUNK);
        assert!(scripts.len() > 3, "{} scripts", scripts.len());
        for script in &scripts {
            // Quoted twice more, as `{command}` in an exec line, it stays far below 128 KiB.
            let twice = quote(&quote(script)).into_owned();
            assert!(twice.len() < 100 * 1024, "{}", twice.len());
            let out = process::capture(&CommandSpec::shell(script).cwd(dir.path()), None)
                .await
                .unwrap();
            assert_eq!(out.outcome, ExitOutcome::Exited(0), "{}", out.stderr);
        }
        for file in &files {
            let written = std::fs::read_to_string(dir.path().join(&file.path)).unwrap();
            assert_eq!(written, file.contents, "{}", file.path);
        }
    }

    #[test]
    fn the_pytest_plugin_worker_and_client_ride_in_the_first_batchs_exec() {
        let file = |path: &str, script: &crate::bundled::Script| InputFile {
            path: format!(".offload-support/{path}"),
            contents: String::from_utf8_lossy(script.contents).into_owned(),
        };
        let files = [
            file("offload_pytest_plugin.py", &crate::bundled::PYTEST_PLUGIN),
            file("offload_pytest_worker.py", &crate::bundled::PYTEST_WORKER),
            file("offload_pytest_client.py", &crate::bundled::PYTEST_CLIENT),
            InputFile {
                path: ".offload-batch-0.tests".to_owned(),
                contents: "tests/test_a.py::test_a\n".repeat(200),
            },
        ];
        let refs: Vec<&InputFile> = files.iter().collect();
        // One script: it goes with the batch's command, no exec of its own.
        assert_eq!(write_scripts(&refs, WRITE_CHUNK).len(), 1);
    }

    #[test]
    fn cores_are_shown_without_trailing_zeros() {
        assert_eq!(format_cores(1.0), "1");
        assert_eq!(format_cores(2.5), "2.5");
        assert_eq!(format_cores(0.125), "0.125");
    }

    #[test]
    fn last_line_skips_blank_lines_and_trims() {
        assert_eq!(last_line("progress\n  sb-1  \n\n"), Some("sb-1"));
        assert_eq!(last_line("\n \n"), None);
    }

    fn sandbox(provider: &DefaultProvider, id: &str) -> DefaultSandbox {
        DefaultSandbox {
            id: id.to_owned(),
            quoted_id: quote(id).into_owned(),
            image: provider.current_image(),
            settings: Arc::clone(&provider.settings),
            commands: SandboxCommands::default(),
            destroy_started: AtomicBool::new(false),
            written: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    #[test]
    fn the_command_word_is_one_quoted_word_with_env_root_and_cwd() {
        let mut cfg = config("c", "run {sandbox_id} {command} {cpu_cores}", "d");
        cfg.env.insert("FOO".to_owned(), "bar baz".to_owned());
        cfg.env.insert("Q".to_owned(), "it's".to_owned());
        cfg.cpu_cores = 2.0;
        let provider = DefaultProvider::new(&cfg, None, "/app root", Path::new("/w")).unwrap();
        let sb = sandbox(&provider, "sb 1");
        let spec = CommandSpec::new("pytest")
            .arg("-k")
            .arg("a b")
            .env("X", "1");
        let word = sb.command_word(&spec);
        let inner = "cd '/app root' && FOO='bar baz' Q='it'\\''s' OFFLOAD_ROOT='/app root' X=1 exec pytest -k 'a b'";
        assert_eq!(shell_words::split(&word).unwrap(), [inner]);
        assert_eq!(
            sb.exec_line(&sb.command_word(&spec)),
            format!("run 'sb 1' {word} 2")
        );

        let in_sub = sb.command_word(&CommandSpec::new("ls").cwd("sub"));
        assert!(
            shell_words::split(&in_sub).unwrap()[0].starts_with("cd '/app root/sub' && "),
            "{in_sub}"
        );
        assert_eq!(sb.result_path(3, "xml"), "/app root/.offload-batch-3.xml");
    }

    #[test]
    fn image_id_without_prepare_is_an_error_and_is_quoted_with_one() {
        let cfg = config("make {image_id}", "x {command}", "d");
        let err = DefaultProvider::new(&cfg, None, ".", Path::new("/")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("create_command") && msg.contains("prepare_command"),
            "{msg}"
        );

        let provider =
            DefaultProvider::new(&cfg, Some("im 1".to_owned()), ".", Path::new("/")).unwrap();
        let s = &provider.settings;
        let image = provider.current_image();
        assert_eq!(s.fill(&s.create, image.as_deref(), &[]), "make 'im 1'");

        let err =
            DefaultProvider::new(&config("c", "x", "d"), None, ".", Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("{command}"), "{err:#}");
        let err = DefaultProvider::new(
            &config("@nope.sh c", "x {command}", "d"),
            None,
            ".",
            Path::new("/"),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("`@nope.sh`") && msg.contains("create_command"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn retry_succeeds_on_the_second_attempt_of_a_real_command() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        // Fails on the first call, succeeds from the second on.
        let script = format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; \
             if [ $n -lt 2 ]; then echo 'quota' >&2; exit 1; fi; echo progress; echo sb-$n",
            c = quote(&counter.to_string_lossy())
        );
        let mut cfg = config(&script, "x {command}", "true");
        cfg.working_dir = Some(dir.path().to_path_buf());
        let provider = DefaultProvider::new(&cfg, None, ".", dir.path()).unwrap();
        let started = std::time::Instant::now();
        let sandbox = provider.create_sandbox(0).await.unwrap();
        assert_eq!(sandbox.id(), "sb-2");
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "2\n");
        // The first delay came between the attempts (a timer never fires early); the
        // exact schedule is checked on paused time below.
        let waited = started.elapsed();
        assert!(waited >= RETRY_DELAYS[0], "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_the_delays_in_order_between_attempts() {
        let started = tokio::time::Instant::now();
        let attempts = Mutex::new(Vec::new());
        let result: Result<()> = with_retry("thing", &RETRY_DELAYS, || async {
            attempts.lock().unwrap().push(started.elapsed());
            bail!("broke")
        })
        .await;
        assert!(result.is_err());
        let first = RETRY_DELAYS[0];
        let second = first + RETRY_DELAYS[1];
        assert_eq!(
            *attempts.lock().unwrap(),
            [Duration::ZERO, first, second],
            "attempts at these times since the start"
        );
    }

    #[tokio::test]
    async fn retry_gives_up_after_three_attempts_with_the_last_error() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let delays = [Duration::from_millis(1), Duration::from_millis(1)];
        let result: Result<()> = with_retry("thing", &delays, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            bail!("attempt {n} broke")
        })
        .await;
        let msg = format!("{:#}", result.unwrap_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            msg.contains("thing failed 3 times") && msg.contains("attempt 3 broke"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_failing_create_reports_its_stderr() {
        let cfg = config("echo no quota left >&2; exit 3", "x {command}", "true");
        let provider = DefaultProvider::new(&cfg, None, ".", Path::new("/")).unwrap();
        let err = provider.create_sandbox(0).await.err().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("no quota left") && msg.contains("exit code 3"),
            "{msg}"
        );
        let cfg = config("echo; echo '  '", "x {command}", "true");
        let provider = DefaultProvider::new(&cfg, None, ".", Path::new("/")).unwrap();
        let err = provider.create_sandbox(0).await.err().unwrap();
        assert!(format!("{err:#}").contains("no sandbox id"), "{err:#}");
    }

    #[tokio::test]
    async fn modal_script_credentials_and_usage_failures_are_not_retried() {
        // Any command calling the script reads its exit codes the same way. Each
        // attempt adds a line to `calls`.
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let cfg = config(
            &format!(
                "echo call >> {}; echo 'not logged in' >&2; exit 3 # modal_sandbox.py",
                quote(&calls.to_string_lossy())
            ),
            "x {command}",
            "true",
        );
        let provider = DefaultProvider::new(&cfg, None, ".", Path::new("/")).unwrap();
        let err = provider.create_sandbox(0).await.err().unwrap();
        assert_eq!(
            std::fs::read_to_string(&calls).unwrap(),
            "call\n",
            "retried"
        );
        let msg = format!("{err:#}");
        assert!(
            msg.contains("`modal token new`") && msg.contains("not logged in"),
            "{msg}"
        );
        assert!(!msg.contains("3 times"), "{msg}");

        let cfg = config("exit 2 # modal_sandbox.py", "x {command}", "true");
        let provider = DefaultProvider::new(&cfg, None, ".", Path::new("/")).unwrap();
        let msg = format!("{:#}", provider.create_sandbox(0).await.err().unwrap());
        assert!(msg.contains("retrying cannot help"), "{msg}");

        // Exit 3 of another command is an ordinary, retried failure.
        assert_eq!(script_exit_hint("my-sandbox create", 3), None);
        assert_eq!(
            script_exit_hint("uv run /c/modal_sandbox.py create", 1),
            None
        );
    }

    /// Counts rebuilds and returns `new`.
    struct FakeRebuild {
        calls: AtomicUsize,
        fail: bool,
    }

    #[async_trait]
    impl ImageRebuild for FakeRebuild {
        async fn rebuild(&self) -> Result<String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.fail {
                bail!("the builder broke");
            }
            Ok("new".to_owned())
        }
    }

    #[tokio::test]
    async fn a_gone_image_is_rebuilt_once_for_concurrent_creations() {
        // Only the image `new` exists.
        let cfg = config(
            "test {image_id} = new || { echo no image {image_id} >&2; exit 1; }; echo sb",
            "x {command} {image_id}",
            "true",
        );
        let rebuild = Arc::new(FakeRebuild {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let provider = Arc::new(
            DefaultProvider::new(&cfg, Some("old".to_owned()), ".", Path::new("/"))
                .unwrap()
                .with_rebuild(rebuild.clone()),
        );
        let creations: Vec<_> = (0..4)
            .map(|i| {
                let provider = Arc::clone(&provider);
                tokio::spawn(async move { provider.create_sandbox(i).await })
            })
            .collect();
        for creation in creations {
            let sandbox = creation.await.unwrap().unwrap();
            assert_eq!(sandbox.id(), "sb");
        }
        assert_eq!(rebuild.calls.load(Ordering::SeqCst), 1);
        assert_eq!(provider.current_image().as_deref(), Some("new"));
        // Later creations use the new image directly.
        provider.create_sandbox(9).await.unwrap();
        assert_eq!(rebuild.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_second_failure_after_the_rebuild_is_an_ordinary_one() {
        let cfg = config("echo still broken >&2; exit 1", "x {command}", "true");
        let rebuild = Arc::new(FakeRebuild {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let provider = DefaultProvider::new(&cfg, Some("old".to_owned()), ".", Path::new("/"))
            .unwrap()
            .with_rebuild(rebuild.clone());
        let err = provider.create_sandbox(0).await.err().unwrap();
        assert!(format!("{err:#}").contains("still broken"), "{err:#}");
        assert!(provider.create_sandbox(1).await.is_err());
        assert_eq!(rebuild.calls.load(Ordering::SeqCst), 1);

        // A failing rebuild is reported with the create error, and not tried again.
        let failing = Arc::new(FakeRebuild {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let provider = DefaultProvider::new(&cfg, Some("old".to_owned()), ".", Path::new("/"))
            .unwrap()
            .with_rebuild(failing.clone());
        let msg = format!("{:#}", provider.create_sandbox(0).await.err().unwrap());
        assert!(
            msg.contains("the builder broke") && msg.contains("still broken"),
            "{msg}"
        );
        assert!(provider.create_sandbox(1).await.is_err());
        assert_eq!(failing.calls.load(Ordering::SeqCst), 1);

        // Without `with_rebuild` (a fresh image) nothing is rebuilt.
        let plain =
            DefaultProvider::new(&cfg, Some("old".to_owned()), ".", Path::new("/")).unwrap();
        assert!(plain.create_sandbox(0).await.is_err());
    }

    #[tokio::test]
    async fn exec_runs_through_the_template_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(
            "echo sb-x",
            "test {sandbox_id} = sb-x && sh -c {command}",
            "true",
        );
        cfg.env.insert("FOO".to_owned(), "v w".to_owned());
        let provider =
            DefaultProvider::new(&cfg, None, &dir.path().to_string_lossy(), dir.path()).unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spec = CommandSpec::new("sh")
            .arg("-c")
            .arg("echo \"$FOO|$OFFLOAD_ROOT\"; pwd -P; exit 5");
        let cancel = CancellationToken::new();
        let outcome = sb
            .exec(&spec, Duration::from_secs(60), &cancel, &tx)
            .await
            .unwrap();
        assert_eq!(outcome, ExitOutcome::Exited(5));
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(
            rx.recv().await.unwrap().text,
            format!("v w|{}", dir.path().display())
        );
        assert_eq!(rx.recv().await.unwrap().text, root.to_string_lossy());

        let started = std::time::Instant::now();
        let outcome = sb
            .exec(
                &CommandSpec::new("sleep").arg("300"),
                Duration::from_millis(200),
                &cancel,
                &tx,
            )
            .await
            .unwrap();
        assert_eq!(outcome, ExitOutcome::TimedOut);
        // Killed at the timeout, not left to sleep its 300 s (generous for a loaded
        // machine).
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    /// Output lines of `stream` sent so far.
    fn lines_of(rx: &mut mpsc::UnboundedReceiver<OutputLine>, stream: Stream) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            if line.stream == stream {
                lines.push(line.text);
            }
        }
        lines
    }

    #[tokio::test]
    async fn input_files_are_written_by_the_batch_exec_before_its_command_starts() {
        let dir = tempfile::tempdir().unwrap();
        let execs = dir.path().join("execs");
        let exec = format!(
            "echo x >> {} && sh -c {{command}}",
            quote(&execs.to_string_lossy())
        );
        let cfg = config("echo sb-x", &exec, "true");
        let provider =
            DefaultProvider::new(&cfg, None, &dir.path().to_string_lossy(), dir.path()).unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        let cancel = CancellationToken::new();
        let count = || std::fs::read_to_string(&execs).map_or(0, |s| s.lines().count());
        let files = [InputFile {
            path: "sub/ids".to_owned(),
            contents: "a\nb 'c'\n".to_owned(),
        }];
        let cat = CommandSpec::new("cat").arg("sub/ids");
        let (tx, mut rx) = mpsc::unbounded_channel();
        sb.write_files(&files, &cancel).await.unwrap();
        assert_eq!(count(), 0, "the files wait for the batch's exec");
        let outcome = sb.exec(&cat, Duration::from_secs(60), &cancel, &tx).await;
        assert_eq!(outcome.unwrap(), ExitOutcome::Exited(0));
        assert_eq!(lines_of(&mut rx, Stream::Stdout), ["a", "b 'c'"]);
        assert_eq!(count(), 1, "one exec wrote the files and ran the command");

        // Written already: the next batch's exec runs its command alone.
        sb.write_files(&files, &cancel).await.unwrap();
        let outcome = sb.exec(&cat, Duration::from_secs(60), &cancel, &tx).await;
        assert_eq!(outcome.unwrap(), ExitOutcome::Exited(0));
        assert_eq!(lines_of(&mut rx, Stream::Stdout), ["a", "b 'c'"]);
        assert_eq!(count(), 2);

        // A file that cannot be written: the command does not start, and the error
        // says why.
        std::fs::write(dir.path().join("blocked"), "").unwrap();
        let bad = [InputFile {
            path: "blocked/ids".to_owned(),
            contents: "x".to_owned(),
        }];
        sb.write_files(&bad, &cancel).await.unwrap();
        let ran = CommandSpec::new("echo").arg("ran");
        let err = sb
            .exec(&ran, Duration::from_secs(60), &cancel, &tx)
            .await
            .unwrap_err();
        assert!(err.is::<InputFilesNotWritten>(), "{err:#}");
        let err = format!("{err:#}");
        assert!(err.contains("cannot write the batch's input files"), "{err}");
        assert!(err.contains("blocked"), "{err}");
        assert_eq!(lines_of(&mut rx, Stream::Stdout), Vec::<String>::new());
        // The failed files are not taken as written: they go with the next exec again.
        sb.write_files(&bad, &cancel).await.unwrap();
        assert!(sb.exec(&ran, Duration::from_secs(60), &cancel, &tx).await.is_err());
    }

    #[tokio::test]
    async fn an_exec_that_exits_with_the_lost_code_says_the_sandbox_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config("echo sb-x", "sh -c {command}", "true");
        let provider =
            DefaultProvider::new(&cfg, None, &dir.path().to_string_lossy(), dir.path()).unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let run = |code: i32| {
            let spec = CommandSpec::new("sh").arg("-c").arg(format!("exit {code}"));
            let (sb, tx, cancel) = (&sb, &tx, &cancel);
            async move { sb.exec(&spec, Duration::from_secs(60), cancel, tx).await }
        };
        let err = run(SANDBOX_LOST_EXIT_CODE).await.unwrap_err();
        assert!(err.is::<SandboxLost>(), "{err:#}");
        assert!(format!("{err:#}").contains("sandbox `sb-x` was lost"), "{err:#}");
        // Any other code is the command's.
        assert_eq!(run(74).await.unwrap(), ExitOutcome::Exited(74));
    }

    #[tokio::test]
    async fn download_passes_quoted_pairs_and_fails_clearly_without_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("args");
        let mut cfg = config("echo sb-1", "x {command}", "true");
        cfg.download_command = Some(format!(
            "printf '%s\\n' {{sandbox_id}} {{paths}} > {}",
            quote(&log.to_string_lossy())
        ));
        let provider = DefaultProvider::new(&cfg, None, "/r", dir.path()).unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        sb.download("res 1.xml", Path::new("out/p.xml"))
            .await
            .unwrap();
        let local = dir.path().join("out/p.xml");
        assert!(dir.path().join("out").is_dir());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("sb-1\n/r/res 1.xml:{}\n", local.display())
        );

        let provider = DefaultProvider::new(
            &config("echo sb-1", "x {command}", "true"),
            None,
            "/r",
            dir.path(),
        )
        .unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        let err = sb.download("a.xml", Path::new("b.xml")).await.unwrap_err();
        assert!(format!("{err:#}").contains("download_command"), "{err:#}");
    }

    #[tokio::test]
    async fn destroy_runs_once_and_its_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("destroyed");
        let cfg = config(
            "echo \"sb 'q'\"",
            "x {command}",
            &format!(
                "echo {{sandbox_id}} >> {}; exit 4",
                quote(&log.to_string_lossy())
            ),
        );
        let provider = DefaultProvider::new(&cfg, None, ".", dir.path()).unwrap();
        let sb = provider.create_sandbox(0).await.unwrap();
        assert_eq!(sb.id(), "sb 'q'");
        assert!(sb.destroy().await.is_err());
        sb.destroy().await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "sb 'q'\n");
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = sb
            .exec(
                &CommandSpec::new("true"),
                Duration::from_secs(1),
                &CancellationToken::new(),
                &tx,
            )
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("destroyed"));
    }

    #[tokio::test]
    async fn run_prepare_returns_the_last_line_and_sets_or_removes_variables() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config("c", "x {command}", "d");
        cfg.working_dir = Some(dir.path().to_path_buf());
        let cancel = CancellationToken::new();
        let log = PrepareLog::held();
        // `HOME` is set in this process: a variable without a value must not be inherited.
        let command =
            "echo \"A=$OFFLOAD_TEST_A HOME=${HOME-removed}\" >&2; echo building; echo im-7; echo";
        let env = [("OFFLOAD_TEST_A", Some("a b".to_owned())), ("HOME", None)];
        let id = run_prepare(&cfg, command, &env, dir.path(), &log, &cancel)
            .await
            .unwrap();
        assert_eq!(id, "im-7");
        // stdout and stderr are read concurrently: their lines may come in either order.
        let mut lines = log.held.lock().unwrap().clone().unwrap();
        lines.sort();
        assert_eq!(lines, ["A=a b HOME=removed", "building"]);

        let failing = "echo half; echo broken >&2; exit 2";
        let err = run_prepare(&cfg, failing, &[], dir.path(), &PrepareLog::held(), &cancel)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("broken") && msg.contains("exit code 2"),
            "{msg}"
        );

        let silent = "echo only-stderr >&2";
        let err = run_prepare(&cfg, silent, &[], dir.path(), &PrepareLog::held(), &cancel)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no image id"), "{err:#}");
    }
}
