//! Test frameworks: how tests are discovered, how a batch is run, how results map back.
//!
//! A framework is pure: it builds commands and parses output; it never spawns anything
//! itself. [`discovery`] runs the discovery commands (one per group, concurrently) and
//! the orchestrator runs batch commands in sandboxes. Adding a framework means one file
//! implementing [`Framework`] and one line in [`from_config`].

pub mod cargo;
pub mod default;
pub mod discovery;
pub mod pytest;

use anyhow::Result;

use crate::config::FrameworkConfig;
use crate::process::{CapturedOutput, CommandSpec};

/// One discovered test: its canonical ID and the group that selected it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestRecord {
    /// The canonical ID, exactly as discovery printed it.
    pub id: String,
    /// The group that discovered it.
    pub group: String,
    /// The group's retry count.
    pub retry_count: u32,
    /// The group's `schedule_individual`.
    pub schedule_individual: bool,
}

/// What one group's discovery produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Test IDs in discovery order.
    pub ids: Vec<String>,
    /// Why the list is empty or partial, when it is (shown as a warning).
    pub warning: Option<String>,
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

/// A test framework.
pub trait Framework: Send + Sync {
    /// The framework's name as in `[framework] type`.
    fn name(&self) -> &'static str;

    /// The command that lists the tests of a group with these `filters`.
    fn discover_command(&self, filters: &str) -> Result<CommandSpec>;

    /// Turns the discovery command's output into test IDs, or an error that carries
    /// the tool's own message.
    fn parse_discovery(&self, command: &CommandSpec, output: &CapturedOutput)
    -> Result<Discovered>;

    /// Where results of a batch are read from.
    fn result_source(&self) -> ResultSource {
        ResultSource::JunitPerBatch
    }

    /// The command that runs `tests`, writing JUnit XML to `result_path` when the
    /// result source is [`ResultSource::JunitPerBatch`].
    fn batch_command(
        &self,
        tests: &[String],
        result_path: &str,
        fail_fast: bool,
    ) -> Result<CommandSpec>;

    /// The key a JUnit `<testcase>` is filed under.
    fn junit_key(&self, name: &str, classname: Option<&str>) -> String;

    /// The keys under which a result for test `id` may appear (see [`Self::junit_key`]).
    fn id_keys(&self, id: &str) -> Vec<String> {
        vec![id.to_owned()]
    }

    /// Whether the runner itself can stop at the first failure (`--fail-fast`).
    fn has_stop_flag(&self) -> bool {
        true
    }
}

/// Builds the framework the configuration selects.
pub fn from_config(config: &FrameworkConfig) -> Result<Box<dyn Framework>> {
    let _ = config;
    anyhow::bail!("frameworks are not implemented yet")
}
