//! The `offload.toml` schema, with the defaults of the user manual.
//!
//! These types describe the file as written. They do no I/O and read no environment;
//! [`super::load`] expands `${VAR}` references and [`super::validate`] checks the
//! rules that span fields. Deserializing a [`Config`] directly (through the derived,
//! internally tagged enums) works, but skips unknown-key warnings, expansion and
//! validation: read configs with [`super::load`].

use std::borrow::Cow;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct Config {
    /// `[offload]`: core settings.
    pub(crate) offload: OffloadConfig,
    /// `[provider]`: where batches run.
    pub(crate) provider: ProviderConfig,
    /// `[framework]`: how tests are discovered and run.
    pub(crate) framework: FrameworkConfig,
    /// `[groups.NAME]`: at least one; kept in file order.
    pub(crate) groups: IndexMap<String, GroupConfig>,
    /// `[report]`: output files. The defaults apply when the table is absent.
    #[serde(default)]
    pub(crate) report: ReportConfig,
    /// `[checkpoint]`: its presence turns on checkpoint mode for image caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checkpoint: Option<CheckpointConfig>,
    /// `[history]`: timing history (parsed; durations also come from the last report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) history: Option<HistoryConfig>,
}

/// `[offload]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct OffloadConfig {
    /// Maximum number of sandboxes running at once.
    #[serde(default = "default_max_parallel")]
    pub(crate) max_parallel: usize,
    /// Timeout of one batch, in seconds.
    #[serde(default = "default_test_timeout_secs")]
    pub(crate) test_timeout_secs: u64,
    /// Working directory of test processes (local provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) working_dir: Option<PathBuf>,
    /// Test working directory inside the sandbox, exported as `OFFLOAD_ROOT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox_project_root: Option<String>,
    /// Repository root inside the sandbox (root of thin-diff patches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox_repo_root: Option<String>,
    /// Command run during the image build, after the tree and copy dirs are in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox_init_cmd: Option<String>,
    /// Command run after a thin-diff patch is applied (`OFFLOAD_PATCH_FILE` set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) post_patch_cmd: Option<String>,
    /// Accepted for compatibility; Offload never runs speculative duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    impatiently_requeue_batches: Option<bool>,
    /// How many groups are discovered at once (0: one per CPU).
    #[serde(default)]
    pub(crate) max_parallel_collection: usize,
}

fn default_max_parallel() -> usize {
    10
}
fn default_test_timeout_secs() -> u64 {
    900
}

/// `[provider]`, selected by `type`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ProviderConfig {
    /// Local child processes.
    Local(LocalProviderConfig),
    /// User shell commands drive the sandbox lifecycle.
    Default(DefaultProviderConfig),
    /// Modal cloud sandboxes.
    Modal(ModalProviderConfig),
}

/// The kinds of provider: the one list of valid `[provider] type` values. Adding a
/// provider adds a variant here; the compiler then names every match that must decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProviderKind {
    /// `local`.
    Local,
    /// `default`.
    Default,
    /// `modal`.
    Modal,
}

impl ProviderKind {
    /// Every kind, in the order messages list them.
    pub(super) const ALL: [Self; 3] = [Self::Local, Self::Default, Self::Modal];

    /// The `type` value.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Default => "default",
            Self::Modal => "modal",
        }
    }

    /// Other spellings of the `type` value.
    pub(super) fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Local | Self::Default | Self::Modal => &[],
        }
    }
}

impl ProviderConfig {
    /// Its kind.
    fn kind(&self) -> ProviderKind {
        match self {
            Self::Local(_) => ProviderKind::Local,
            Self::Default(_) => ProviderKind::Default,
            Self::Modal(_) => ProviderKind::Modal,
        }
    }

    /// The `type` string as written in the file.
    pub(crate) fn type_name(&self) -> &'static str {
        self.kind().name()
    }

    /// Mutable access to the environment table (for `--env`).
    pub(crate) fn env_mut(&mut self) -> &mut IndexMap<String, String> {
        match self {
            Self::Local(p) => &mut p.env,
            Self::Default(p) => &mut p.env,
            Self::Modal(p) => &mut p.env,
        }
    }
}

/// `[provider] type = "local"`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct LocalProviderConfig {
    /// Working directory of spawned processes (default: the current directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// `[provider] type = "default"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct DefaultProviderConfig {
    /// Runs once before sandboxes are created; its last stdout line is the image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) download_command: Option<String>,
    /// Working directory of the lifecycle commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// `[provider] type = "modal"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ModalProviderConfig {
    /// Dockerfile the sandbox image is built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dockerfile: Option<PathBuf>,
    /// Copy the working tree into the image.
    #[serde(default)]
    pub(crate) include_cwd: bool,
    /// Directories copied into the image, as `"local:remote"`.
    #[serde(default)]
    pub(crate) copy_dirs: Vec<String>,
    /// Environment variables for test processes.
    #[serde(default)]
    pub(crate) env: IndexMap<String, String>,
    /// CPU cores per sandbox.
    #[serde(default = "default_modal_cpu_cores")]
    pub(crate) cpu_cores: f64,
    /// Memory per sandbox, in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory_gb: Option<f64>,
    /// Extra options passed to Modal as JSON.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub(crate) experimental_options: toml::Table,
}

fn default_modal_cpu_cores() -> f64 {
    0.125
}

/// `[framework]`, selected by `type` (`cargo` is also spelled `nextest`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FrameworkConfig {
    /// pytest.
    Pytest(PytestConfig),
    /// cargo-nextest.
    #[serde(alias = "nextest")]
    Cargo(CargoConfig),
    /// User discovery and run commands.
    Default(DefaultFrameworkConfig),
}

/// The kinds of framework: the one list of valid `[framework] type` values (see
/// [`ProviderKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameworkKind {
    /// `pytest`.
    Pytest,
    /// `cargo`, also spelled `nextest`.
    Cargo,
    /// `default`.
    Default,
}

impl FrameworkKind {
    /// Every kind, in the order messages list them.
    pub(super) const ALL: [Self; 3] = [Self::Pytest, Self::Cargo, Self::Default];

    /// The `type` value (canonical spelling).
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Pytest => "pytest",
            Self::Cargo => "cargo",
            Self::Default => "default",
        }
    }

    /// Other spellings of the `type` value.
    pub(super) fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Cargo => &["nextest"],
            Self::Pytest | Self::Default => &[],
        }
    }
}

impl FrameworkConfig {
    /// Its kind.
    fn kind(&self) -> FrameworkKind {
        match self {
            Self::Pytest(_) => FrameworkKind::Pytest,
            Self::Cargo(_) => FrameworkKind::Cargo,
            Self::Default(_) => FrameworkKind::Default,
        }
    }

    /// The `type` string (canonical spelling).
    pub(crate) fn type_name(&self) -> &'static str {
        self.kind().name()
    }
}

/// `[framework] type = "pytest"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PytestConfig {
    /// Directories (or files) to collect tests from.
    #[serde(default = "default_pytest_paths")]
    pub paths: Vec<PathBuf>,
    /// Full command prefix (e.g. `"uv run pytest"`); replaces `python`/`extra_args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Extra arguments for execution only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_args: Option<String>,
    /// (Legacy) extra pytest arguments, used when `command` is not set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// (Legacy) Python interpreter, used when `command` is not set.
    #[serde(default = "default_python")]
    pub python: String,
    /// (Legacy) marker expression, accepted and ignored (use group `filters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<String>,
    /// Accepted for compatibility; pytest results are matched by node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id_format: Option<String>,
}

fn default_pytest_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("tests")]
}
fn default_python() -> String {
    "python".to_owned()
}

/// `[framework] type = "cargo"` (or `"nextest"`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CargoConfig {
    /// Only this package (`-p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) package: Option<String>,
    /// Cargo features to enable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) features: Vec<String>,
    /// Only this binary (`--bin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bin: Option<String>,
    /// Also run `#[ignore]` tests.
    #[serde(default)]
    pub(crate) include_ignored: bool,
    /// Accepted for compatibility; nextest results are matched as `{classname} {name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) test_id_format: Option<String>,
}

/// `[framework] type = "default"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DefaultFrameworkConfig {
    /// Prints one test id per line; must contain `{filters}`.
    pub(crate) discover_command: String,
    /// Runs a batch: `{tests}` and `{result_file}` are substituted.
    pub(crate) run_command: String,
    /// JUnit XML file the run command writes (none: pass/fail from the exit code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result_file: Option<String>,
    /// Working directory of the discover and run commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) working_dir: Option<PathBuf>,
    /// How JUnit `name`/`classname` form a test id (`{name}`, `{classname}`).
    pub(crate) test_id_format: String,
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct GroupConfig {
    /// How many times a failed test is retried.
    #[serde(default)]
    pub(crate) retry_count: u32,
    /// Passed to the framework during discovery.
    #[serde(default)]
    pub(crate) filters: String,
    /// Run each test of the group in a batch of its own.
    #[serde(default)]
    pub(crate) schedule_individual: bool,
}

/// `[report]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ReportConfig {
    /// Directory for logs and the JUnit report.
    #[serde(default = "default_output_dir")]
    pub(crate) output_dir: PathBuf,
    /// Write the merged JUnit report.
    #[serde(default = "default_true")]
    pub(crate) junit: bool,
    /// File name of the merged JUnit report inside `output_dir`.
    #[serde(default = "default_junit_file")]
    pub(crate) junit_file: String,
    /// Files to fetch from sandboxes after each batch (`find -path` patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) download_globs: Vec<String>,
    /// Fetch `download_globs` only for batches with failures.
    #[serde(default)]
    download_globs_failure_only: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            output_dir: default_output_dir(),
            junit: true,
            junit_file: default_junit_file(),
            download_globs: Vec::new(),
            download_globs_failure_only: false,
        }
    }
}

impl ReportConfig {
    /// `{output_dir}/{junit_file}`.
    pub(crate) fn junit_path(&self) -> PathBuf {
        self.output_dir.join(&self.junit_file)
    }
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("test-results")
}
fn default_junit_file() -> String {
    "junit.xml".to_owned()
}
fn default_true() -> bool {
    true
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct CheckpointConfig {
    /// Repo-relative files whose changes start a new base image.
    #[serde(default)]
    pub(crate) build_inputs: Vec<String>,
}

/// When history is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RecordHistory {
    /// After every run.
    Always,
    /// Only with `--record-history`.
    Flag,
}

impl RecordHistory {
    /// The spellings in a config file.
    const NAMES: &'static [&'static str] = &["always", "flag"];
}

/// By hand so that any wrong value (`record_history = true` too, where the derived
/// impl said only "wanted string or table") is answered with the valid values.
impl<'de> Deserialize<'de> for RecordHistory {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl serde::de::Visitor<'_> for Names {
            type Value = RecordHistory;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of `\"always\"`, `\"flag\"`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecordHistory, E> {
                match v {
                    "always" => Ok(RecordHistory::Always),
                    "flag" => Ok(RecordHistory::Flag),
                    other => Err(E::unknown_variant(&shown(other), RecordHistory::NAMES)),
                }
            }
        }
        deserializer.deserialize_str(Names)
    }
}

/// `[history]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(super) struct HistoryConfig {
    /// When to record.
    #[serde(default = "default_record_history")]
    pub(super) record_history: RecordHistory,
    /// JSONL history file.
    #[serde(default = "default_history_path")]
    pub(super) path: PathBuf,
    /// Samples kept per outcome per test.
    #[serde(default = "default_reservoir_size")]
    pub(super) reservoir_size: usize,
    /// Duration assumed for a test with no history, in seconds.
    #[serde(default = "default_duration_secs")]
    pub(super) default_duration_secs: f64,
}

fn default_record_history() -> RecordHistory {
    RecordHistory::Flag
}
fn default_history_path() -> PathBuf {
    PathBuf::from("offload-history.jsonl")
}
fn default_reservoir_size() -> usize {
    20
}
fn default_duration_secs() -> f64 {
    1.0
}

/// How many characters of a value an error message quotes.
const QUOTED_CHARS: usize = 120;

/// `value` as an error message about the file quotes it: cut with an ellipsis when
/// long. Every stage of loading quotes values this way: the deserializers here, the
/// loader and [`super::validate`].
pub(super) fn shown(value: &str) -> Cow<'_, str> {
    crate::output::ellipsize(value, QUOTED_CHARS)
}
