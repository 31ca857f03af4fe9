//! The cargo framework (`type = "cargo"` or `"nextest"`): tests listed and run by
//! cargo-nextest.
//!
//! A test ID is `"{binary_id} {test_name}"` (`mycrate tests::adds`,
//! `mycrate::integ it_works`, `mycrate::bin/tool parses`). A batch runs exactly its
//! tests through a filterset and writes JUnit XML where Offload asks, via a *tool*
//! config file (`--tool-config-file offload:<path>`) that defines the profile
//! `offload-junit`. Tool config has lower priority than the project's own
//! `.config/nextest.toml`, which therefore still applies (timeouts, retries, ...);
//! the profile inherits from the project's `default` profile. The batch command writes
//! that config file itself, so it works unchanged inside remote sandboxes.
//!
//! Batches build through cargo unless the run hands the framework a build made once:
//! binaries listed on this machine for local sandboxes ([`Cargo::reuse_build`]), or a
//! nextest archive shipped in the image for remote ones ([`Cargo::run_from_archive`]).
//! Making those builds is the provider side's job (`provider::reused_build`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::live::{self, LiveEvent, LiveOutcome};
use super::{
    ARGS_BUDGET, FrameworkInfo, FrameworkSection, BatchCommand, BatchPaths, Discovered, Framework, command_failed, failure_output,
    shell_batch, shell_split,
};
use crate::config::Described;
use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};

/// `[framework] type = "cargo"` (or `"nextest"`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CargoConfig {
    /// Only this package (`-p`).
    #[serde(default)]
    pub(crate) package: Option<String>,
    /// Cargo features to enable.
    #[serde(default)]
    pub(crate) features: Vec<String>,
    /// Only this binary (`--bin`).
    #[serde(default)]
    pub(crate) bin: Option<String>,
    /// Also run `#[ignore]` tests.
    #[serde(default)]
    pub(crate) include_ignored: bool,
    /// Accepted for compatibility; nextest results are matched as `{classname} {name}`.
    #[serde(default)]
    pub(crate) test_id_format: Option<String>,
}

impl Described for CargoConfig {
    type Info = FrameworkInfo;
    const INFO: FrameworkInfo = FrameworkInfo {
        name: "cargo",
        aliases: &["nextest"],
        summary: "cargo-nextest",
        template: TEMPLATE,
        starter_files: &[],
        splits_filters: true,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# How tests are found and run: cargo-nextest (`cargo install cargo-nextest`) lists and
# runs the tests of the workspace.
[framework]
type = \"cargo\"
# Only this package (-p), with these features.
# package = \"my-crate\"
# features = [\"feature-a\"]
";

impl FrameworkSection for CargoConfig {
    fn no_effect(&self, _written: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.test_id_format.is_some() {
            out.push(
                "`test_id_format` in `[framework]` is ignored for cargo: test IDs are \
                 `{binary_id} {test_name}` as nextest lists them"
                    .to_owned(),
            );
        }
        out
    }

    fn build(&self) -> Result<Box<dyn Framework>> {
        Ok(Box::new(Cargo::new(self)))
    }
}

/// The nextest profile the batch command defines and selects.
const PROFILE: &str = "offload-junit";

/// The cargo-nextest framework, built from `[framework] type = "cargo"`.
#[derive(Debug, Clone)]
pub(crate) struct Cargo {
    config: CargoConfig,
    /// What batches run: a build of their own, or one made once for the run.
    build: BatchBuild,
    /// `--no-capture` in batches.
    no_capture: bool,
}

/// Where a batch's test binaries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchBuild {
    /// `cargo nextest run` builds (or checks) them.
    Cargo,
    /// Listed once on this machine (see [`Cargo::reuse_build`]).
    Reused(ReusedBuild),
    /// Archived once and shipped to the sandbox (see [`Cargo::run_from_archive`]).
    Archived(ArchivedBuild),
}

/// A build made once for a whole run (see [`Cargo::reuse_build`]): the files nextest's
/// `--binaries-metadata` and `--cargo-metadata` read instead of invoking cargo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReusedBuild {
    /// Output of `cargo nextest list --list-type binaries-only --message-format json`.
    pub(crate) binaries_metadata: String,
    /// Output of `cargo metadata --format-version 1 --all-features --no-deps`.
    pub(crate) cargo_metadata: String,
}

/// A build archived once for a whole run with `cargo nextest archive` (see
/// [`Cargo::run_from_archive`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchivedBuild {
    /// The archive's path inside the sandbox, relative to the directory batches run in
    /// (the sandbox project root).
    pub(crate) archive_file: String,
    /// `uname -sm` of the machine that built it (`Linux x86_64`), when known: batches
    /// in a sandbox of another kind build with cargo instead.
    pub(crate) platform: Option<String>,
}

impl Cargo {
    /// Builds the framework (nothing in its configuration can be malformed).
    pub(crate) fn new(config: &CargoConfig) -> Self {
        Self {
            config: config.clone(),
            build: BatchBuild::Cargo,
            no_capture: false,
        }
    }

    /// The same framework, with batches that run the binaries of `build` instead of
    /// invoking cargo. Every `cargo nextest run` checks the build first, and
    /// concurrent ones queue on cargo's build lock: with eight batches that check cost
    /// a third of a suite of 0.2 s tests. Only for batches that run on this machine,
    /// in the directory and environment the build was listed in.
    pub(crate) fn reuse_build(&self, build: ReusedBuild) -> Self {
        Self {
            config: self.config.clone(),
            build: BatchBuild::Reused(build),
            no_capture: self.no_capture,
        }
    }

    /// The same framework, with batches that run the tests of a nextest archive instead
    /// of invoking cargo: `cargo-nextest nextest run --archive-file`, with the archive's
    /// workspace remapped to the batch's directory. For remote sandboxes, where every
    /// `cargo nextest run` would check the build again (and build everything in a fresh
    /// sandbox). A batch that does not find the archive in its sandbox (an image made
    /// without the copy dirs) says so on stderr and builds with cargo as before.
    pub(crate) fn run_from_archive(&self, build: ArchivedBuild) -> Self {
        Self {
            config: self.config.clone(),
            build: BatchBuild::Archived(build),
            no_capture: self.no_capture,
        }
    }

    /// `cargo nextest archive` into `archive_file`, building what is stale.
    pub(crate) fn archive_command(&self, archive_file: &str) -> CommandSpec {
        let mut args: Vec<String> = ["nextest", "archive", "--archive-file", archive_file]
            .map(str::to_owned)
            .into();
        args.extend(self.build_args());
        CommandSpec {
            program: "cargo".to_owned(),
            args,
            cwd: None,
            env: Vec::new(),
        }
    }

    /// The two commands whose stdout makes a [`ReusedBuild`] (building what is stale).
    pub(crate) fn reuse_build_commands(&self) -> [CommandSpec; 2] {
        let cargo = |args: Vec<String>| CommandSpec {
            program: "cargo".to_owned(),
            args,
            cwd: None,
            env: Vec::new(),
        };
        let mut list: Vec<String> = [
            "nextest",
            "list",
            "--list-type",
            "binaries-only",
            "--message-format",
            "json",
        ]
        .map(str::to_owned)
        .into();
        list.extend(self.build_args());
        let metadata = [
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--no-deps",
        ]
        .map(str::to_owned)
        .into();
        [cargo(list), cargo(metadata)]
    }

    /// The command that prints the path of the workspace's `Cargo.toml`, whose
    /// directory nextest remaps to the batch's directory when it runs an archive.
    pub(crate) fn workspace_manifest_command(&self) -> CommandSpec {
        CommandSpec {
            program: "cargo".to_owned(),
            args: ["locate-project", "--workspace", "--message-format", "plain"]
                .map(str::to_owned)
                .into(),
            cwd: None,
            env: Vec::new(),
        }
    }

    /// `-p`, `--features`, `--bin`: what cargo builds.
    fn build_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(package) = &self.config.package {
            args.extend(["-p".to_owned(), package.clone()]);
        }
        if !self.config.features.is_empty() {
            args.extend(["--features".to_owned(), self.config.features.join(",")]);
        }
        if let Some(bin) = &self.config.bin {
            args.extend(["--bin".to_owned(), bin.clone()]);
        }
        args
    }

    /// `--run-ignored`: which of the built tests nextest runs.
    fn ignored_args(&self) -> Vec<String> {
        if self.config.include_ignored {
            // `all`: ignored tests in addition to the others (`only` would drop the rest).
            vec!["--run-ignored".to_owned(), "all".to_owned()]
        } else {
            Vec::new()
        }
    }

    /// The build and ignored selection, shared by list and run.
    fn selection_args(&self) -> Vec<String> {
        let mut args = self.build_args();
        args.extend(self.ignored_args());
        args
    }
}

impl Framework for Cargo {
    fn name(&self) -> &'static str {
        "cargo"
    }

    fn discover_command(&self, filters: &str) -> Result<CommandSpec> {
        let mut args: Vec<String> = ["nextest", "list", "--message-format", "json"]
            .map(str::to_owned)
            .into();
        // Every test, ignored ones too: those are reported as skipped (as nextest itself
        // does) unless `include_ignored` runs them.
        args.extend(self.build_args());
        args.extend(["--run-ignored".to_owned(), "all".to_owned()]);
        args.extend(shell_split("filters", filters)?);
        Ok(CommandSpec {
            program: "cargo".to_owned(),
            args,
            cwd: None,
            env: Vec::new(),
        })
    }

    fn parse_discovery(
        &self,
        command: &CommandSpec,
        output: &CapturedOutput,
    ) -> Result<Discovered> {
        if output.outcome != ExitOutcome::Exited(0) {
            return Err(command_failed(
                command,
                output.outcome,
                &failure_output(output),
            ));
        }
        let list = parse_test_list(&output.stdout).with_context(|| {
            format!(
                "`{}` printed output that is not nextest's JSON test list; it starts with:\n{}",
                command.display(),
                snippet(&output.stdout, 300)
            )
        })?;
        let (ids, ignored): (Vec<String>, Vec<String>) = if self.config.include_ignored {
            (list.into_iter().map(|(id, _)| id).collect(), Vec::new())
        } else {
            let (ignored, ids): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|(_, ignored)| *ignored);
            (
                ids.into_iter().map(|(id, _)| id).collect(),
                ignored.into_iter().map(|(id, _)| id).collect(),
            )
        };
        let warning = (ids.is_empty() && ignored.is_empty())
            .then(|| "cargo nextest list matched no tests".to_owned());
        Ok(Discovered {
            ids,
            ignored,
            warning,
        })
    }

    fn batch_command(
        &self,
        tests: &[String],
        paths: &BatchPaths,
        fail_fast: bool,
    ) -> Result<BatchCommand> {
        let result_path = paths.result.as_str();
        let q = |s: &str| crate::process::quote(s).into_owned();
        // nextest wants an absolute tool config path and resolves a relative JUnit path
        // against its store directory, so a relative result path is anchored at `$PWD`.
        let anchor = if result_path.starts_with('/') {
            ""
        } else {
            "\"$PWD\"/"
        };
        let config_file = format!("{result_path}.nextest.toml");
        let toml_path = toml_escape(result_path);
        let path_line = if anchor.is_empty() {
            q(&format!("path = \"{toml_path}\""))
        } else {
            format!("\"path = \\\"$PWD/\"{}", q(&format!("{toml_path}\"")))
        };
        let mut run = vec![
            "--profile".to_owned(),
            PROFILE.to_owned(),
            if fail_fast {
                "--fail-fast"
            } else {
                "--no-fail-fast"
            }
            .to_owned(),
            // A batch whose tests no longer exist still writes an (empty) JUnit file.
            "--no-tests=warn".to_owned(),
            // A status line per finished test, whatever the project's nextest config
            // says: Offload reads them as the tests finish (see `live_event`).
            "--status-level=pass".to_owned(),
        ];
        if self.no_capture {
            run.push("--no-capture".to_owned());
        }
        // nextest refuses cargo's build options next to a reused build or an archive.
        match &self.build {
            BatchBuild::Reused(build) => {
                run.extend([
                    "--binaries-metadata".to_owned(),
                    build.binaries_metadata.clone(),
                    "--cargo-metadata".to_owned(),
                    build.cargo_metadata.clone(),
                ]);
                run.extend(self.ignored_args());
            }
            BatchBuild::Archived(_) => {}
            BatchBuild::Cargo => run.extend(self.selection_args()),
        }
        // nextest runs the tests that match any of several `-E`; each stays well under
        // the kernel's limit for one argument.
        for filter in filtersets(tests, ARGS_BUDGET) {
            run.extend(["-E".to_owned(), filter]);
        }
        let join = |args: &[String]| args.iter().map(|a| q(a)).collect::<Vec<_>>().join(" ");
        let run = join(&run);
        let config = q(&config_file);
        let write_config = format!(
            "printf '%s\\n' {header} {path_line} > {anchor}{config}",
            header = q(&format!("[profile.{PROFILE}.junit]")),
        );
        let tool_config = format!("--tool-config-file offload:{anchor}{config}");
        let script = match &self.build {
            BatchBuild::Archived(build) => archived_script(
                &write_config,
                &format!("{tool_config} {run}"),
                build,
                &join(&self.ignored_args()),
                &join(&self.selection_args()),
            ),
            _ => format!("{write_config} && exec cargo nextest run {tool_config} {run}"),
        };
        Ok(shell_batch(script, &paths.script_file, None, Vec::new()))
    }

    fn junit_key<'a>(&self, name: &'a str, classname: Option<&'a str>) -> Cow<'a, str> {
        Cow::Owned(format!("{} {name}", classname.unwrap_or("")))
    }

    /// nextest's status line of a finished test (`PASS [   0.069s] (1/3) crate
    /// tests::a`), besides Offload's own lines.
    fn live_event(&self, line: &str) -> Option<LiveEvent> {
        live::parse_marked(line).or_else(|| parse_status_line(line))
    }

    /// nextest's `--no-capture` (which also runs the batch's tests one at a time).
    fn set_no_capture(&mut self) {
        self.no_capture = true;
    }

    /// The binary ID, the part of `<binary-id> <test name>` nextest writes as `classname`.
    fn junit_classname(&self, id: &str) -> Option<String> {
        id.split_once(' ')
            .map(|(binary, _)| binary.to_owned())
            .filter(|binary| !binary.is_empty())
    }

    /// The test list follows from the sources, manifests and cargo/rustc settings, all
    /// part of the fingerprint; when the cache answers, the first batch builds.
    fn discovery_is_cacheable(&self) -> bool {
        true
    }
}

/// The script of a batch that runs from the archive `build`: `write_config`, then
/// nextest with the arguments `run` (quoted) and, for the archive, `ignored` — or, when
/// the sandbox has no archive or is not of the archive's platform, a line on stderr and
/// cargo with `selection`.
///
/// The arguments are written once, into `$@`, whichever way the batch goes. Without
/// `cargo` in front nothing checks the build: `cargo-nextest nextest run`, or `cargo
/// nextest run` when cargo-nextest is not on the `PATH` (cargo also finds it in
/// `$CARGO_HOME/bin`), which with an archive builds nothing either.
///
/// Unpacking costs a batch about a second for an archive of 90 MB, so the first batch
/// of a sandbox extracts it once (into a scratch directory, renamed when complete, so
/// a batch killed meanwhile leaves nothing half-made in use) and every batch runs the
/// extracted binaries through their metadata, as a local reused build does. Tests that
/// load Rust's own shared libraries find them in the extraction: in that mode nextest
/// points `LD_LIBRARY_PATH` at the toolchain of the machine that built the archive.
/// When extracting fails, each batch unpacks the archive for itself, which shows
/// nextest's error if that fails too.
fn archived_script(
    write_config: &str,
    run: &str,
    build: &ArchivedBuild,
    ignored: &str,
    selection: &str,
) -> String {
    let q = |s: &str| crate::process::quote(s).into_owned();
    let archive_file = &build.archive_file;
    let archive = q(archive_file);
    let dir = q(&format!("{archive_file}.d"));
    let missing = q(&format!(
        "offload: the nextest archive `{archive_file}` is not in this sandbox (the image \
         was made without the copy dirs Offload hands `prepare_command` in \
         OFFLOAD_COPY_DIRS); cargo builds this batch"
    ));
    let other_platform = build.platform.as_deref().map_or_else(String::new, |platform| {
        let message = q(&format!(
            "offload: the nextest archive was built on `{platform}` and this sandbox is \
             not (`uname -sm`); cargo builds this batch"
        ));
        format!(
            "elif [ \"$(uname -sm)\" != {} ]; then echo {message} >&2; ",
            q(platform)
        )
    });
    format!(
        "{write_config} && set -- {run} && \
         if [ ! -f {archive} ]; then echo {missing} >&2; \
         {other_platform}\
         else \
         if command -v cargo-nextest >/dev/null 2>&1; then nx=cargo-nextest; else nx=cargo; fi; \
         d={dir}; \
         if [ ! -f \"$d/extracted\" ]; then \
         rm -rf \"$d.$$\" && mkdir -p \"$d.$$\" && \
         $nx nextest run --archive-file {archive} --workspace-remap \"$PWD\" \
         --extract-to \"$d.$$\" -E 'none()' '--no-tests=pass' >/dev/null 2>&1 && \
         : > \"$d.$$/extracted\" && mv \"$d.$$\" \"$d\"; rm -rf \"$d.$$\"; fi; \
         if [ -f \"$d/extracted\" ]; then \
         LD_LIBRARY_PATH=\"$PWD/$d/target/nextest/libdirs/host${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"; \
         export LD_LIBRARY_PATH; \
         exec $nx nextest run \"$@\" --binaries-metadata \"$d/target/nextest/binaries-metadata.json\" \
         --cargo-metadata \"$d/target/nextest/cargo-metadata.json\" \
         --target-dir-remap \"$d/target\" --workspace-remap \"$PWD\" {ignored}; fi; \
         exec $nx nextest run \"$@\" --archive-file {archive} --workspace-remap \"$PWD\" {ignored}; fi; \
         exec cargo nextest run \"$@\" {selection}"
    )
}

/// The event of one of nextest's status lines: `STATUS [ TIME s] (N/M) BINARY-ID NAME`
/// (the counter is absent in older versions). `PASS` and `LEAK` are passes; `FAIL`,
/// `LEAK-FAIL`, `TIMEOUT`, `ABORT` and the `SIG*` statuses failures; other lines (`SLOW`,
/// retries, summaries) are no event.
fn parse_status_line(line: &str) -> Option<LiveEvent> {
    let line = line.trim_start();
    let (status, rest) = line.split_once(' ')?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (time, rest) = rest.split_once(']')?;
    let time: f64 = time.trim().strip_suffix('s')?.parse().ok()?;
    let mut rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('(') {
        let (counter, after) = after.split_once(") ")?;
        if !counter.contains('/') {
            return None;
        }
        rest = after;
    }
    let key = rest.trim_end();
    if key
        .split_once(' ')
        .is_none_or(|(binary, name)| binary.is_empty() || name.is_empty())
    {
        return None;
    }
    let (outcome, message) = match status {
        "PASS" | "LEAK" => (LiveOutcome::Passed, None),
        "FAIL" | "LEAK-FAIL" | "TIMEOUT" | "ABORT" => {
            (LiveOutcome::Failed, Some(format!("nextest: {status}")))
        }
        signal if signal.starts_with("SIG") => (
            LiveOutcome::Failed,
            Some(format!("nextest: killed by {signal}")),
        ),
        _ => return None,
    };
    Some(LiveEvent::Finished {
        key: key.to_owned(),
        outcome,
        time,
        message,
    })
}

/// The IDs of a `cargo nextest list --message-format json` document, each with whether
/// the test is `#[ignore]`d: suites ordered by binary id, tests by name; a test counts
/// when its `filter-match.status` is `matches` or absent.
fn parse_test_list(stdout: &str) -> Result<Vec<(String, bool)>> {
    let doc: serde_json::Value = serde_json::from_str(stdout).context("invalid JSON")?;
    let suites = doc
        .get("rust-suites")
        .and_then(|s| s.as_object())
        .context("no `rust-suites` object")?;
    let mut by_binary: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for (key, suite) in suites {
        let binary_id = suite
            .get("binary-id")
            .and_then(|b| b.as_str())
            .unwrap_or(key);
        let Some(cases) = suite.get("testcases").and_then(|t| t.as_object()) else {
            // A suite that was not listed (e.g. `status: skipped`) has no testcases.
            continue;
        };
        let names = by_binary.entry(binary_id).or_default();
        for (name, case) in cases {
            let status = case
                .get("filter-match")
                .and_then(|m| m.get("status"))
                .and_then(|s| s.as_str());
            if matches!(status, None | Some("matches")) {
                let ignored = case.get("ignored").and_then(|i| i.as_bool()) == Some(true);
                names.push((name, ignored));
            }
        }
    }
    Ok(by_binary
        .into_iter()
        .flat_map(|(binary, mut names)| {
            names.sort_unstable();
            names
                .into_iter()
                .map(move |(name, ignored)| (format!("{binary} {name}"), ignored))
        })
        .collect())
}

/// nextest filtersets that together select exactly `tests`:
/// `(binary_id(=B) & test(=T)) | ...`, cut so that none is longer than `max_len` (unless
/// one test alone is); an ID without a space matches by test name.
fn filtersets(tests: &[String], max_len: usize) -> Vec<String> {
    let mut sets = Vec::new();
    let mut current = String::new();
    for id in tests {
        let term = match id.split_once(' ') {
            Some((binary, test)) => format!(
                "(binary_id(={}) & test(={}))",
                filterset_escape(binary),
                filterset_escape(test)
            ),
            None => format!("test(={})", filterset_escape(id)),
        };
        if !current.is_empty() && current.len() + 3 + term.len() > max_len {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push_str(" | ");
        }
        current.push_str(&term);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// Escapes the characters that end or split a filterset string argument.
fn filterset_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ')' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` as the inside of a TOML basic string.
fn toml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn snippet(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(nothing)".to_owned();
    }
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cargo(config: CargoConfig) -> Cargo {
        Cargo::new(&config)
    }

    fn ok(stdout: &str) -> CapturedOutput {
        CapturedOutput {
            outcome: ExitOutcome::Exited(0),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    const LIST: &str = r#"{
      "rust-build-meta": {"target-directory": "/x/target"},
      "test-count": 6,
      "rust-suites": {
        "nx::integ": {"binary-id": "nx::integ", "kind": "test", "status": "listed",
          "testcases": {"b_test": {"kind": "test", "ignored": false, "filter-match": {"status": "matches"}},
                        "a_test": {"kind": "test", "ignored": false}}},
        "nx": {"binary-id": "nx", "kind": "lib", "status": "listed",
          "testcases": {"tests::z": {"filter-match": {"status": "matches"}},
                        "tests::ignored": {"ignored": true, "filter-match": {"status": "mismatch", "reason": "ignored"}},
                        "tests::filtered": {"filter-match": {"status": "mismatch", "reason": "expression"}},
                        "tests::a": {"filter-match": {"status": "matches"}}}},
        "nx::bin/tool": {"binary-id": "nx::bin/tool", "status": "skipped"}
      }
    }"#;

    #[test]
    fn parses_the_list_in_a_stable_order() {
        let fw = cargo(CargoConfig::default());
        let d = fw
            .parse_discovery(&CommandSpec::default(), &ok(LIST))
            .unwrap();
        assert_eq!(
            d.ids,
            [
                "nx tests::a",
                "nx tests::z",
                "nx::integ a_test",
                "nx::integ b_test"
            ]
        );
        assert_eq!(d.warning, None);
        let d = fw
            .parse_discovery(&CommandSpec::default(), &ok(r#"{"rust-suites": {}}"#))
            .unwrap();
        assert!(d.ids.is_empty() && d.warning.is_some());
    }

    #[test]
    fn bad_json_and_failures_are_errors() {
        let fw = cargo(CargoConfig::default());
        let spec = fw.discover_command("").unwrap();
        let err = fw
            .parse_discovery(&spec, &ok("warning: hello\n{"))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("not nextest's JSON") && msg.contains("warning: hello"),
            "{msg}"
        );
        let err = fw.parse_discovery(&spec, &ok("[1]")).unwrap_err();
        assert!(format!("{err:#}").contains("rust-suites"), "{err:#}");
        let failed = CapturedOutput {
            outcome: ExitOutcome::Exited(101),
            stdout: String::new(),
            stderr: "error: could not compile `nx`\n".to_owned(),
        };
        let msg = fw.parse_discovery(&spec, &failed).unwrap_err().to_string();
        assert!(
            msg.starts_with("`cargo nextest list --message-format json --run-ignored all` exited with code 101:\n")
                && msg.contains("could not compile"),
            "{msg}"
        );
    }

    #[test]
    fn discover_command_has_every_option() {
        let fw = cargo(CargoConfig {
            package: Some("core".into()),
            features: vec!["a".into(), "b".into()],
            bin: Some("tool".into()),
            include_ignored: true,
            test_id_format: None,
        });
        let spec = fw.discover_command("-E 'test(slow)'").unwrap();
        assert_eq!(spec.program, "cargo");
        assert_eq!(
            spec.args,
            [
                "nextest",
                "list",
                "--message-format",
                "json",
                "-p",
                "core",
                "--features",
                "a,b",
                "--bin",
                "tool",
                "--run-ignored",
                "all",
                "-E",
                "test(slow)"
            ]
        );
    }

    #[test]
    fn filterset_selects_exact_tests() {
        let ids = [
            "nx tests::a".to_owned(),
            "nx::integ it,works)".to_owned(),
            "lone".to_owned(),
        ];
        assert_eq!(
            filtersets(&ids, 1000),
            [
                "(binary_id(=nx) & test(=tests::a)) | (binary_id(=nx::integ) & test(=it\\,works\\))) \
             | test(=lone)"
            ]
        );
        // Cut where one more term would pass the bound; every test is in exactly one.
        assert_eq!(
            filtersets(&ids, 55),
            [
                "(binary_id(=nx) & test(=tests::a))",
                "(binary_id(=nx::integ) & test(=it\\,works\\)))",
                "test(=lone)"
            ]
        );
        assert_eq!(
            filtersets(&ids[1..], 61),
            ["(binary_id(=nx::integ) & test(=it\\,works\\))) | test(=lone)"]
        );
    }

    #[test]
    fn batch_script_writes_a_tool_config() {
        let fw = cargo(CargoConfig {
            package: Some("nx".into()),
            ..CargoConfig::default()
        });
        let spec = fw
            .batch_command(
                &["nx tests::a".to_owned()],
                &crate::framework::test_paths("/tmp/sb 1-0.xml"),
                false,
            )
            .unwrap()
            .command;
        assert_eq!(spec.program, "sh");
        assert_eq!(spec.args[0], "-c");
        assert_eq!(
            spec.args[1],
            "printf '%s\\n' '[profile.offload-junit.junit]' 'path = \"/tmp/sb 1-0.xml\"' \
             > '/tmp/sb 1-0.xml.nextest.toml' && exec cargo nextest run --tool-config-file \
             offload:'/tmp/sb 1-0.xml.nextest.toml' --profile offload-junit --no-fail-fast \
             '--no-tests=warn' '--status-level=pass' -p nx -E '(binary_id(=nx) & test(=tests::a))'"
        );
        let spec = fw
            .batch_command(
                &["nx t".to_owned()],
                &crate::framework::test_paths("/r.xml"),
                true,
            )
            .unwrap()
            .command;
        assert!(spec.args[1].contains(" --fail-fast "), "{}", spec.args[1]);
        assert!(!spec.args[1].contains("--config-file"), "{}", spec.args[1]);
    }

    #[test]
    fn no_capture_reaches_the_batch_and_a_reused_build() {
        let script = |fw: &Cargo| {
            fw.batch_command(
                &["nx t".to_owned()],
                &crate::framework::test_paths("/r.xml"),
                false,
            )
            .unwrap()
            .command
            .args[1]
                .clone()
        };
        let mut fw = cargo(CargoConfig::default());
        assert!(!script(&fw).contains("--no-capture"));
        fw.set_no_capture();
        assert!(script(&fw).contains(" --no-capture "), "{}", script(&fw));
        let reused = fw.reuse_build(ReusedBuild {
            binaries_metadata: "/b.json".into(),
            cargo_metadata: "/m.json".into(),
        });
        assert!(script(&reused).contains(" --no-capture "));
    }

    #[test]
    fn a_reused_build_replaces_cargo_build_options() {
        let fw = cargo(CargoConfig {
            package: Some("core".into()),
            features: vec!["a".into()],
            bin: Some("tool".into()),
            include_ignored: true,
            test_id_format: None,
        });
        let [list, metadata] = fw.reuse_build_commands();
        assert_eq!(
            list.args,
            [
                "nextest",
                "list",
                "--list-type",
                "binaries-only",
                "--message-format",
                "json",
                "-p",
                "core",
                "--features",
                "a",
                "--bin",
                "tool"
            ]
        );
        assert_eq!(metadata.args[0], "metadata");
        let fw = fw.reuse_build(ReusedBuild {
            binaries_metadata: "/o/bin s.json".into(),
            cargo_metadata: "/o/meta.json".into(),
        });
        let script = fw
            .batch_command(
                &["core t".to_owned()],
                &crate::framework::test_paths("/r.xml"),
                false,
            )
            .unwrap()
            .command
            .args[1]
            .clone();
        assert!(
            script.contains(
                "--binaries-metadata '/o/bin s.json' --cargo-metadata /o/meta.json \
                 --run-ignored all -E"
            ),
            "{script}"
        );
        for build_option in [" -p ", "--features", "--bin "] {
            assert!(!script.contains(build_option), "{script}");
        }
    }

    #[test]
    fn the_archive_is_built_with_cargo_build_options() {
        let fw = cargo(CargoConfig {
            package: Some("core".into()),
            features: vec!["a".into()],
            include_ignored: true,
            ..CargoConfig::default()
        });
        let spec = fw.archive_command("/o/tests 1.tar.zst");
        assert_eq!(spec.program, "cargo");
        assert_eq!(
            spec.args,
            [
                "nextest",
                "archive",
                "--archive-file",
                "/o/tests 1.tar.zst",
                "-p",
                "core",
                "--features",
                "a"
            ]
        );
    }

    /// The batch script of an archived build made on `platform`, for `tests`.
    fn archived_script(fw: &Cargo, tests: &[&str], platform: Option<&str>) -> String {
        let fw = fw.run_from_archive(ArchivedBuild {
            archive_file: ".offload-archive/t 1.tar.zst".into(),
            platform: platform.map(str::to_owned),
        });
        let tests: Vec<String> = tests.iter().map(|&t| t.to_owned()).collect();
        let spec = fw
            .batch_command(&tests, &crate::framework::test_paths("r.xml"), false)
            .unwrap()
            .command;
        assert_eq!(spec.args[0], "-c");
        spec.args[1].clone()
    }

    #[test]
    fn only_the_fallback_of_an_archived_batch_has_build_options() {
        let fw = cargo(CargoConfig {
            package: Some("nx".into()),
            include_ignored: true,
            ..CargoConfig::default()
        });
        let script = archived_script(&fw, &["nx t"], None);
        let fallback = "exec cargo nextest run \"$@\" -p nx --run-ignored all";
        assert!(script.ends_with(fallback), "{script}");
        assert_eq!(script.matches("-p nx").count(), 1, "{script}");
        assert_eq!(script.matches("exec cargo ").count(), 1, "{script}");
        // Every nextest run of the archive, extraction aside, runs the ignored tests.
        assert_eq!(script.matches("exec $nx nextest run").count(), 2, "{script}");
        assert_eq!(script.matches("--run-ignored all").count(), 3, "{script}");
        assert!(!script.contains("uname"), "{script}");
    }

    /// Runs `script` with `sh` in `dir`, with only `bin` on the `PATH` (the script needs
    /// shell built-ins, `rm`, `mkdir`, `mv`, `uname` and what it runs); returns what
    /// the stubs in `bin` recorded (see [`stub`]) and its stderr.
    #[cfg(unix)]
    fn run_script(script: &str, dir: &std::path::Path, bin: &std::path::Path) -> (String, String) {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .current_dir(dir)
            .env("PATH", bin)
            .env("STUB_LOG", bin.join("log"))
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let log = std::fs::read_to_string(bin.join("log")).unwrap_or_default();
        let _ = std::fs::remove_file(bin.join("log"));
        (log, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Writes an executable `name` into `bin` that appends its name, `LD_LIBRARY_PATH` and
    /// its arguments, one a line, then `.`, to `$STUB_LOG` (stdout may be thrown away);
    /// it fails when it is asked to extract and `fail_extract`.
    #[cfg(unix)]
    fn stub(bin: &std::path::Path, name: &str, fail_extract: bool) {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.join(name);
        let fail = if fail_extract {
            "case \"$*\" in *--extract-to*) exit 1;; esac\n"
        } else {
            ""
        };
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n{fail}{{ echo {name}; echo \"LD=${{LD_LIBRARY_PATH:-}}\"; \
                 printf '%s\\n' \"$@\" .; }} >> \"$STUB_LOG\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The programs a script ran, each with its lines (see [`stub`]).
    fn invocations(out: &str) -> Vec<Vec<String>> {
        out.split_terminator(".\n")
            .map(|inv| inv.lines().map(str::to_owned).collect())
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn an_archived_batch_extracts_once_per_sandbox_and_never_runs_cargo() {
        let bin = tempfile::tempdir().unwrap();
        let bin = bin.path();
        for tool in ["rm", "mkdir", "mv", "uname"] {
            let found = ["/bin", "/usr/bin"]
                .iter()
                .map(|dir| std::path::Path::new(dir).join(tool))
                .find(|path| path.is_file())
                .unwrap();
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
        let fw = cargo(CargoConfig {
            features: vec!["f".into()],
            ..CargoConfig::default()
        });
        let uname = std::process::Command::new("uname").arg("-sm").output().unwrap();
        let here = String::from_utf8(uname.stdout).unwrap();
        let script = archived_script(&fw, &["nx it's"], Some(here.trim()));
        let sandbox = || {
            let dir = tempfile::tempdir().unwrap();
            let pwd = dir.path().canonicalize().unwrap();
            let pwd = pwd.to_str().unwrap().to_owned();
            (dir, pwd)
        };
        let common = |program: &str, pwd: &str| -> Vec<String> {
            [
                program,
                "LD=",
                "nextest",
                "run",
                "--tool-config-file",
                &format!("offload:{pwd}/r.xml.nextest.toml"),
                "--profile",
                "offload-junit",
                "--no-fail-fast",
                "--no-tests=warn",
                "--status-level=pass",
                "-E",
                "(binary_id(=nx) & test(=it's))",
            ]
            .map(str::to_owned)
            .into()
        };
        let archive = ".offload-archive/t 1.tar.zst";
        let extracted = ".offload-archive/t 1.tar.zst.d";
        let with_archive = |dir: &std::path::Path| {
            std::fs::create_dir(dir.join(".offload-archive")).unwrap();
            std::fs::write(dir.join(archive), "").unwrap();
        };

        // No archive in the sandbox: cargo builds, with the build options, and says why.
        let (dir, pwd) = sandbox();
        stub(bin, "cargo", false);
        let (out, err) = run_script(&script, dir.path(), bin);
        let mut want = common("cargo", &pwd);
        want.extend(["--features", "f"].map(str::to_owned));
        assert_eq!(invocations(&out), [want]);
        assert!(err.contains("is not in this sandbox"), "{err}");
        let config = std::fs::read_to_string(dir.path().join("r.xml.nextest.toml")).unwrap();
        assert_eq!(
            config,
            format!("[profile.offload-junit.junit]\npath = \"{pwd}/r.xml\"\n")
        );

        // The archive: the first batch extracts it (with cargo dispatching to nextest
        // when cargo-nextest is not on the PATH), then runs the extracted binaries.
        with_archive(dir.path());
        let from_extraction = |program: &str| {
            let mut want = common(program, &pwd);
            want[1] = format!("LD={pwd}/{extracted}/target/nextest/libdirs/host");
            want.extend(
                [
                    "--binaries-metadata",
                    &format!("{extracted}/target/nextest/binaries-metadata.json"),
                    "--cargo-metadata",
                    &format!("{extracted}/target/nextest/cargo-metadata.json"),
                    "--target-dir-remap",
                    &format!("{extracted}/target"),
                    "--workspace-remap",
                    &pwd,
                ]
                .map(str::to_owned),
            );
            want
        };
        let (out, err) = run_script(&script, dir.path(), bin);
        let runs = invocations(&out);
        assert_eq!(runs.len(), 2, "{out}");
        assert_eq!(runs[0][..4], ["cargo", "LD=", "nextest", "run"]);
        assert!(runs[0].contains(&"--extract-to".to_owned()), "{out}");
        assert_eq!(runs[1], from_extraction("cargo"));
        assert_eq!(err, "");
        assert!(dir.path().join(extracted).join("extracted").is_file());
        // The next batch of the sandbox: no second extraction.
        stub(bin, "cargo-nextest", false);
        let (out, _) = run_script(&script, dir.path(), bin);
        assert_eq!(invocations(&out), [from_extraction("cargo-nextest")]);

        // A sandbox where extracting fails: each batch runs the archive itself.
        let (dir, pwd) = sandbox();
        with_archive(dir.path());
        stub(bin, "cargo-nextest", true);
        let (out, err) = run_script(&script, dir.path(), bin);
        let mut want = common("cargo-nextest", &pwd);
        want.extend(["--archive-file", archive, "--workspace-remap", &pwd].map(str::to_owned));
        assert_eq!(invocations(&out), [want]);
        assert_eq!(err, "");
        let left: Vec<_> = std::fs::read_dir(dir.path().join(".offload-archive"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["t 1.tar.zst"], "no scratch directory is left behind");

        // An archive built on another kind of machine: cargo builds, and says why.
        let script = archived_script(&fw, &["nx it's"], Some("Plan9 mips"));
        let (out, err) = run_script(&script, dir.path(), bin);
        let mut want = common("cargo", &pwd);
        want.extend(["--features", "f"].map(str::to_owned));
        assert_eq!(invocations(&out), [want]);
        assert!(err.contains("built on `Plan9 mips`"), "{err}");
    }

    #[test]
    fn relative_result_paths_are_anchored_at_pwd() {
        let fw = cargo(CargoConfig::default());
        let spec = fw
            .batch_command(
                &["nx t".to_owned()],
                &crate::framework::test_paths("out/r.xml"),
                false,
            )
            .unwrap()
            .command;
        let script = &spec.args[1];
        assert!(
            script.contains("\"path = \\\"$PWD/\"'out/r.xml\"'"),
            "{script}"
        );
        assert!(
            script.contains("> \"$PWD\"/out/r.xml.nextest.toml"),
            "{script}"
        );
        assert!(
            script.contains("offload:\"$PWD\"/out/r.xml.nextest.toml"),
            "{script}"
        );
    }

    #[test]
    fn junit_key_is_classname_space_name() {
        let fw = cargo(CargoConfig::default());
        assert_eq!(fw.junit_key("tests::a", Some("nx")), "nx tests::a");
        assert_eq!(fw.id_keys("nx tests::a"), ["nx tests::a"]);
        assert_eq!(fw.junit_classname("nx tests::a").as_deref(), Some("nx"));
        assert_eq!(
            fw.junit_classname("my-crate::bin/tool it works").as_deref(),
            Some("my-crate::bin/tool")
        );
        assert_eq!(fw.junit_classname("no-space"), None);
        assert_eq!(fw.source_file("nx tests::a"), None);
        assert!(fw.has_stop_flag());
        assert_eq!(toml_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000A");
    }

    #[test]
    fn nextest_status_lines_are_finish_events() {
        let event = |line| match parse_status_line(line) {
            Some(LiveEvent::Finished {
                key, outcome, time, ..
            }) => Some((key, outcome == LiveOutcome::Passed, time)),
            _ => None,
        };
        assert_eq!(
            event("        PASS [   0.069s] (1/3) nx tests::passes"),
            Some(("nx tests::passes".to_owned(), true, 0.069))
        );
        assert_eq!(
            event("        FAIL [   1.408s] nx::integ tests::fails"),
            Some(("nx::integ tests::fails".to_owned(), false, 1.408))
        );
        assert_eq!(
            event("     SIGSEGV [   0.100s] (2/9) nx crash"),
            Some(("nx crash".to_owned(), false, 0.1))
        );
        for line in [
            "        SLOW [> 60.000s] nx tests::slow",
            "     Summary [   1.427s] 3 tests run: 2 passed, 1 failed, 1 skipped",
            "    Starting 4 tests across 1 binary",
            "        PASS [   0.069s] (1/3)",
            "thread 'tests::fails' panicked at src/lib.rs:4:26:",
        ] {
            assert_eq!(event(line), None, "{line}");
        }
    }
}
