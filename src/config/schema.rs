//! The `offload.toml` schema, with the defaults of the user manual.
//!
//! These types describe the file as written. They do no I/O and read no environment;
//! [`super::load`] expands `${VAR}` references and [`super::validate`] checks the
//! rules that span fields. The `[provider]` and `[framework]` sections are declared by
//! the providers and frameworks themselves ([`crate::provider`], [`crate::framework`]);
//! [`super::load`] reads `type` first and then the section type it names.

use std::borrow::Cow;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

pub(crate) use crate::framework::FrameworkConfig;
pub(crate) use crate::provider::ProviderConfig;

/// The whole configuration file.
#[derive(Debug, Clone)]
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
    pub(crate) report: ReportConfig,
    /// `[checkpoint]`: its presence turns on checkpoint mode for image caching.
    pub(crate) checkpoint: Option<CheckpointConfig>,
    /// `[history]`: the durations history file (its defaults when the table is absent).
    pub(crate) history: HistoryConfig,
}

/// `[offload]`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OffloadConfig {
    /// Maximum number of sandboxes running at once.
    #[serde(default = "default_max_parallel")]
    pub(crate) max_parallel: usize,
    /// Timeout of one batch, in seconds.
    #[serde(default = "default_test_timeout_secs")]
    pub(crate) test_timeout_secs: u64,
    /// Working directory of test processes (local provider).
    #[serde(default)]
    pub(crate) working_dir: Option<PathBuf>,
    /// Test working directory inside the sandbox, exported as `OFFLOAD_ROOT`.
    #[serde(default)]
    pub(crate) sandbox_project_root: Option<String>,
    /// Repository root inside the sandbox (root of thin-diff patches).
    #[serde(default)]
    pub(crate) sandbox_repo_root: Option<String>,
    /// Command run during the image build, after the tree and copy dirs are in place.
    #[serde(default)]
    pub(crate) sandbox_init_cmd: Option<String>,
    /// Command run after a thin-diff patch is applied (`OFFLOAD_PATCH_FILE` set).
    #[serde(default)]
    pub(crate) post_patch_cmd: Option<String>,
    /// Accepted for compatibility; Offload never runs speculative duplicates.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted so that it is not an unknown key; `load` warns that it is ignored"
    )]
    impatiently_requeue_batches: Option<bool>,
    /// How many groups are discovered at once (0: one per CPU).
    #[serde(default)]
    pub(crate) max_parallel_collection: usize,
}

impl OffloadConfig {
    /// Where test commands run inside a command-driven sandbox: `sandbox_project_root`,
    /// else `sandbox_repo_root`, else the sandbox's own directory.
    pub(crate) fn sandbox_root(&self) -> &str {
        self.sandbox_project_root
            .as_deref()
            .or(self.sandbox_repo_root.as_deref())
            .unwrap_or(".")
    }
}

fn default_max_parallel() -> usize {
    10
}
fn default_test_timeout_secs() -> u64 {
    900
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted so that it is not an unknown key; `load` warns that it is ignored"
    )]
    pub(super) download_globs: Vec<String>,
    /// Fetch `download_globs` only for batches with failures.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted so that it is not an unknown key; `load` warns that it is ignored"
    )]
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
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckpointConfig {
    /// Repo-relative files whose changes start a new base image.
    #[serde(default)]
    pub(crate) build_inputs: Vec<String>,
}

/// When history is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordHistory {
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

/// `[history]`: the durations history (see [`crate::history`]).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct HistoryConfig {
    /// When to record: after every run, or only with `--record-history`.
    #[serde(default = "default_record_history")]
    pub(crate) record_history: RecordHistory,
    /// The history file, relative to where `offload` runs.
    #[serde(default = "default_history_path")]
    pub(crate) path: PathBuf,
    /// Accepted for compatibility: the history keeps one smoothed duration per test.
    #[serde(default = "default_reservoir_size")]
    #[allow(
        dead_code,
        reason = "accepted so that it is not an unknown key; `load` warns that it is ignored"
    )]
    pub(super) reservoir_size: usize,
    /// Accepted for compatibility: tests of unknown duration take their group's mean.
    #[serde(default = "default_duration_secs")]
    pub(super) default_duration_secs: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            record_history: default_record_history(),
            path: default_history_path(),
            reservoir_size: default_reservoir_size(),
            default_duration_secs: default_duration_secs(),
        }
    }
}

fn default_record_history() -> RecordHistory {
    RecordHistory::Flag
}
fn default_history_path() -> PathBuf {
    PathBuf::from(crate::history::DEFAULT_PATH)
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
pub(crate) fn shown(value: &str) -> Cow<'_, str> {
    crate::output::ellipsize(value, QUOTED_CHARS)
}
