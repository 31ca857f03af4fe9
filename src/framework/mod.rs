//! Test frameworks: how tests are discovered, how a batch is run, how results map back.
//!
//! A framework is pure: it builds commands and parses output; it never spawns anything
//! itself. `discovery` runs the discovery commands (one per group, concurrently) and
//! the orchestrator runs batch commands in sandboxes.
//!
//! Adding a framework is one file and one line: the file implements [`Framework`] and
//! holds the framework's `[framework]` section type, which implements
//! [`FrameworkSection`] (its checks, its no-effect warnings, how it builds the
//! framework) and declares its `type` name and `offload init` text in a
//! [`FrameworkInfo`]; the line names both in the list below.
//!
//! Result mapping is exact: the orchestrator files every JUnit `<testcase>` under
//! [`Framework::junit_key`] and looks each scheduled test up under the keys of
//! [`Framework::id_keys`]. There is no fuzzy or suffix matching anywhere.

pub(crate) mod cache;
pub(crate) mod discovery;
pub mod live;

use std::borrow::Cow;
use std::path::Path;

use anyhow::Result;

use crate::config::section_kinds;
use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};

section_kinds! {
    /// `[framework]`, selected by `type`: how tests are discovered and run.
    pub enum FrameworkConfig: FrameworkSection, info FrameworkInfo;
    /// The kinds of framework: the one list of valid `[framework] type` values.
    pub(crate) enum FrameworkKind, visited by FrameworkVisitor;
    mod pytest::PytestConfig as Pytest;
    pub(crate) mod cargo::CargoConfig as Cargo;
    mod default::DefaultFrameworkConfig as Default;
}

pub use cargo::CargoConfig;
#[cfg(test)]
pub(crate) use default::DefaultFrameworkConfig;
pub use pytest::PytestConfig;

/// What a framework's `[framework]` section decides for itself.
pub(crate) trait FrameworkSection: std::fmt::Debug + Send + Sync {
    /// Checks the rules across its fields that its types cannot say, with a message
    /// that names the field and the fix.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Warnings for fields that are accepted but have no effect as configured, each
    /// naming the field and why. `written(key)` says whether `key` is written in
    /// `[framework]` (rather than left to its default).
    fn no_effect(&self, written: &dyn Fn(&str) -> bool) -> Vec<String> {
        let _ = written;
        Vec::new()
    }

    /// Builds the framework. Fails when a command or argument string cannot be split
    /// like a shell would (an unbalanced quote), naming the field.
    fn build(&self) -> Result<Box<dyn Framework>>;
}

/// What a framework kind declares with no section at hand.
#[derive(Debug)]
pub(crate) struct FrameworkInfo {
    /// The `type` value, canonical spelling.
    pub(crate) name: &'static str,
    /// Other spellings of the `type` value.
    pub(crate) aliases: &'static [&'static str],
    /// One line for `offload init --help`.
    pub(crate) summary: &'static str,
    /// The commented `[framework]` section `offload init` writes.
    pub(crate) template: &'static str,
    /// Files `offload init` writes beside the configuration so that the template runs
    /// as written (path relative to where `offload` runs, contents).
    pub(crate) starter_files: &'static [(&'static str, &'static str)],
    /// Whether group `filters` are split into arguments like a shell would (so an
    /// unbalanced quote is rejected when the configuration is loaded).
    pub(crate) splits_filters: bool,
}

/// One discovered test: its canonical ID and the group that selected it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TestRecord {
    /// The canonical ID, exactly as discovery printed it.
    pub(crate) id: String,
    /// The group that discovered it.
    pub(crate) group: String,
    /// The group's retry count.
    pub(crate) retry_count: u32,
    /// The group's `schedule_individual`.
    pub(crate) schedule_individual: bool,
    /// Listed by the runner but not run unless asked (see [`Discovered::ignored`]): the
    /// test is reported as skipped without running.
    pub(crate) ignored: bool,
}

impl TestRecord {
    /// The short name of the test (see [`test_name`]).
    pub(crate) fn name(&self) -> &str {
        test_name(&self.id)
    }

    /// A record of `id` in `group` with the defaults of a group that says nothing more
    /// (no retries, batched, not ignored), for tests.
    #[cfg(test)]
    pub(crate) fn of(id: &str, group: &str) -> Self {
        Self {
            id: id.to_owned(),
            group: group.to_owned(),
            retry_count: 0,
            schedule_individual: false,
            ignored: false,
        }
    }
}

/// The short name of a test ID: the part after the last `::` that is not inside a
/// pytest `[params]` suffix, or the whole ID when there is none.
pub(crate) fn test_name(id: &str) -> &str {
    let head = id.find('[').map_or(id, |open| &id[..open]);
    head.rfind("::").map_or(id, |at| &id[at + 2..])
}

/// What one group's discovery produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Test IDs in discovery order.
    pub ids: Vec<String>,
    /// Tests the runner lists but does not run unless asked (cargo's `#[ignore]`d
    /// tests): reported as skipped, never scheduled.
    ignored: Vec<String>,
    /// Why the list is empty or partial, when it is (shown as a warning).
    warning: Option<String>,
}

/// Where a batch's results come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultSource {
    /// JUnit XML at a path Offload chooses per batch and passes to `batch_command`.
    JunitPerBatch,
    /// JUnit XML at this fixed path, relative to the sandbox working directory.
    JunitFixed(String),
    /// No result file: the batch's exit code decides for each of its tests.
    ExitCode,
}

/// Where a batch's files live inside the sandbox it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchPaths {
    /// Where the runner writes its JUnit XML, when the result source is
    /// [`ResultSource::JunitPerBatch`]. Should be absolute (a relative one is taken
    /// relative to the command's working directory).
    pub result: String,
    /// A path for the batch's list of test IDs, one per line.
    pub tests_file: String,
    /// A path for a shell script the batch runs.
    pub script_file: String,
    /// A directory for files every batch of the sandbox shares (the pytest plugin).
    pub support_dir: String,
    /// A directory that every sandbox sharing this one's machine and files sees (for
    /// the local provider, all of them; elsewhere the support directory): where a
    /// resident worker they can share listens.
    pub shared_dir: String,
}

/// A text file a batch reads, written into the sandbox before its command starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Its path inside the sandbox (parent directories are created).
    pub path: String,
    /// Its content.
    pub contents: String,
}

/// What runs one batch: a short command line and the files it reads.
///
/// The selection of a batch can be any size, and a command line cannot (one argument
/// of at most 128 KiB on Linux, all of them together at most `ARG_MAX`): frameworks put
/// the test IDs and any long script into [`Self::inputs`], which the sandbox writes
/// before it runs [`Self::command`], and keep the command line itself short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCommand {
    /// The command, whose arguments stay short whatever the batch's size.
    pub command: CommandSpec,
    /// Files to write into the sandbox first.
    pub inputs: Vec<InputFile>,
}

impl From<CommandSpec> for BatchCommand {
    fn from(command: CommandSpec) -> Self {
        Self {
            command,
            inputs: Vec::new(),
        }
    }
}

/// The longest command line (in bytes) a framework builds from a batch's tests before
/// it falls back to a file: well under the kernel's 128 KiB for one argument, since a
/// provider may quote the line again inside its own shell command.
const ARGS_BUDGET: usize = 32 * 1024;

/// The content of a tests file: the IDs, one per line.
fn tests_file_contents(tests: &[String]) -> String {
    let mut out = String::with_capacity(tests.iter().map(|t| t.len() + 1).sum());
    for test in tests {
        out.push_str(test);
        out.push('\n');
    }
    out
}

/// `sh -c <script>` in `cwd`, or, when the script is longer than [`ARGS_BUDGET`],
/// `sh <script_file>` with the script written there first (with `inputs`).
fn shell_batch(
    script: String,
    script_file: &str,
    cwd: Option<std::path::PathBuf>,
    mut inputs: Vec<InputFile>,
) -> BatchCommand {
    let mut command = if script.len() <= ARGS_BUDGET {
        CommandSpec::shell(&script)
    } else {
        inputs.push(InputFile {
            path: script_file.to_owned(),
            contents: script,
        });
        CommandSpec::new("sh").arg(script_file)
    };
    command.cwd = cwd;
    BatchCommand { command, inputs }
}

/// A test framework (pytest, cargo-nextest, or shell commands the configuration gives):
/// the commands that discover tests and run a batch of them, and how their output and
/// JUnit results map back to test IDs.
///
/// It only builds commands and parses output; running them is up to the caller
/// (discovery runs them locally, the orchestrator in sandboxes). [`from_config`] builds
/// the one the configuration selects.
pub trait Framework: Send + Sync {
    /// The framework's name as in `[framework] type`.
    fn name(&self) -> &'static str;

    /// The command that lists the tests of a group with these `filters`.
    fn discover_command(&self, filters: &str) -> Result<CommandSpec>;

    /// Turns the discovery command's output into test IDs, or an error that carries
    /// the tool's own message. The error reads well after
    /// `discovery failed for group `NAME`: `.
    fn parse_discovery(&self, command: &CommandSpec, output: &CapturedOutput)
    -> Result<Discovered>;

    /// Where results of a batch are read from.
    fn result_source(&self) -> ResultSource {
        ResultSource::JunitPerBatch
    }

    /// The command that runs exactly `tests`, writing JUnit XML to `paths.result` when
    /// the result source is [`ResultSource::JunitPerBatch`], with the files it reads.
    /// Its command line stays short whatever the number of tests (see [`BatchCommand`]).
    fn batch_command(
        &self,
        tests: &[String],
        paths: &BatchPaths,
        fail_fast: bool,
    ) -> Result<BatchCommand>;

    /// A command (built like a batch's, in a sandbox's paths) that starts the runner's
    /// resident worker there and has it load what the batches will need, run while the
    /// tests are still being discovered, so that the first batches do not pay for it:
    /// the pytest worker imports the test modules. With `until_loaded` the command ends
    /// when that is done; without, as soon as the worker has started on it (the
    /// batches then wait in the worker). `None` when the runner has no such worker.
    fn warm_command(
        &self,
        _paths: &BatchPaths,
        _fail_fast: bool,
        _until_loaded: bool,
    ) -> Option<BatchCommand> {
        None
    }

    /// The key a JUnit `<testcase>` is filed under.
    fn junit_key<'a>(&self, name: &'a str, classname: Option<&'a str>) -> Cow<'a, str>;

    /// The keys under which a result for test `id` may appear (see [`Self::junit_key`]),
    /// the ID itself first. A result filed under any of them belongs to `id`.
    fn id_keys<'a>(&self, id: &'a str) -> Vec<Cow<'a, str>> {
        vec![Cow::Borrowed(id)]
    }

    /// The JUnit `classname` the runner writes for test `id`, as far as the ID tells. The
    /// merged report gives it to a test whose result carries none: one that produced no
    /// result, timed out, or was decided by the exit code. `None`: the ID does not tell.
    fn junit_classname(&self, _id: &str) -> Option<String> {
        None
    }

    /// The source file of test `id` as the runner names it (relative to where it runs),
    /// when the ID tells: the merged report's `file` attribute.
    fn source_file<'a>(&self, _id: &'a str) -> Option<&'a str> {
        None
    }

    /// What a batch loads whole for any one of the tests of `id`, when the runner has
    /// such a unit: pytest imports and collects the whole file of a node ID. With no
    /// durations known, the scheduler keeps neighbours of one locality together in
    /// stretches rather than dealing them out one by one (see `crate::scheduler`).
    fn locality<'a>(&self, _id: &'a str) -> Option<&'a str> {
        None
    }

    /// Makes discovery select the tests that match `expression` in the runner's own
    /// expression language (`offload run -k`), when it has one: pytest's `-k`. `false`
    /// when it has none; Offload then matches `expression` as a regular expression
    /// against the discovered IDs.
    fn select_by_expression(&mut self, _expression: &str) -> bool {
        false
    }

    /// Makes batches let the tests' output through as it is printed instead of
    /// capturing it (`offload run --no-capture`): pytest's `-s`, nextest's
    /// `--no-capture`. Nothing changes for a runner Offload does not know.
    fn set_no_capture(&mut self) {}

    /// Whether the runner itself can stop at the first failure (`--fail-fast`).
    fn has_stop_flag(&self) -> bool {
        true
    }

    /// Whether discovery's result may be reused while its inputs are unchanged (see
    /// `cache`): the project's files and the environment, plus, for a framework that
    /// traces its discovery, every file the discovery read.
    fn discovery_is_cacheable(&self) -> bool {
        false
    }

    /// Makes `command` (a [`Self::discover_command`]) record the paths it reads into the
    /// file `trace` (one absolute path a line): a cached result is then only reused while
    /// those paths are unchanged too. `Ok(false)`: the framework does not trace, its
    /// discovery depends on nothing outside the project's files and the environment. An
    /// error: it would trace but cannot, so the result is not cached.
    fn trace_discovery(&self, _command: &mut CommandSpec, _trace: &Path) -> Result<bool> {
        Ok(false)
    }

    /// The per-test event one line of a batch's output carries, if any (see [`live`]).
    /// Every framework reads Offload's own marked lines, which any runner may print; a
    /// framework may read its runner's own lines as well.
    fn live_event(&self, line: &str) -> Option<live::LiveEvent> {
        live::parse_marked(line)
    }
}

/// Builds the framework the configuration selects.
///
/// Fails when a command or argument string of the configuration cannot be split like a
/// shell would (an unbalanced quote), naming the field.
pub fn from_config(config: &FrameworkConfig) -> Result<Box<dyn Framework>> {
    config.section().build()
}

/// Splits `value` into words like a POSIX shell (quotes and backslashes), for the
/// config field `field`.
fn shell_split(field: &str, value: &str) -> Result<Vec<String>> {
    shell_words::split(value).map_err(|err| {
        anyhow::anyhow!(
            "cannot split `{field}` value `{value}` into arguments: {err}\n\
             (hint: quote with '...' or \"...\" and close every quote)"
        )
    })
}

/// How a child ended, as words after its command: `exited with code 2`.
pub(crate) fn outcome_text(outcome: ExitOutcome) -> String {
    match outcome {
        ExitOutcome::Exited(code) => format!("exited with code {code}"),
        ExitOutcome::Signaled(signal) => format!("was killed by signal {signal}"),
        ExitOutcome::TimedOut => "timed out".to_owned(),
        ExitOutcome::Cancelled => "was cancelled".to_owned(),
    }
}

/// The error for a discovery command that failed: the command, how it ended and
/// `detail` (the tool's own output).
fn command_failed(command: &CommandSpec, outcome: ExitOutcome, detail: &str) -> anyhow::Error {
    let detail = detail.trim_end();
    let detail = if detail.is_empty() {
        "(it printed nothing)"
    } else {
        detail
    };
    anyhow::anyhow!(
        "`{}` {}:\n{}",
        command.display(),
        outcome_text(outcome),
        detail
    )
}

/// The last `max_lines` lines of `text`, with a note when lines were cut.
fn tail_lines(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.len() <= max_lines {
        return lines.join("\n");
    }
    let cut = lines.len() - max_lines;
    format!("[... {cut} earlier lines ...]\n{}", lines[cut..].join("\n"))
}

/// What a failed command said: its stderr, else the tail of its stdout.
pub(crate) fn failure_output(output: &CapturedOutput) -> String {
    let stderr = output.stderr.trim();
    if !stderr.is_empty() {
        return tail_lines(stderr, 60);
    }
    tail_lines(&output.stdout, 60)
}

/// Batch paths for unit tests: `result` and fixed paths under `/sb`.
#[cfg(test)]
fn test_paths(result: &str) -> BatchPaths {
    BatchPaths {
        result: result.to_owned(),
        tests_file: "/sb/batch-1.tests".to_owned(),
        script_file: "/sb/batch-1.sh".to_owned(),
        support_dir: "/sb/support".to_owned(),
        shared_dir: "/sb/shared".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_name_is_after_the_last_double_colon() {
        assert_eq!(test_name("a/b.py::C::test_x"), "test_x");
        assert_eq!(test_name("a/b.py::test_p[x::y]"), "test_p[x::y]");
        assert_eq!(test_name("x[a::b]"), "x[a::b]");
        assert_eq!(test_name("crate tests::t"), "t");
        assert_eq!(test_name("plain id"), "plain id");
    }

    #[test]
    fn shell_split_names_the_field() {
        assert_eq!(
            shell_split("filters", "-m 'not slow'").unwrap(),
            ["-m", "not slow"]
        );
        let err = shell_split("filters", "-k 'oops").unwrap_err().to_string();
        assert!(
            err.contains("`filters`") && err.contains("`-k 'oops`"),
            "{err}"
        );
    }

    #[test]
    fn tail_lines_keeps_the_end() {
        let text = (1..=5)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(tail_lines(&text, 2), "[... 3 earlier lines ...]\n4\n5");
        assert_eq!(tail_lines("a\nb\n", 5), "a\nb");
    }
}
