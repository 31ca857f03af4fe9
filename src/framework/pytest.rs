//! The pytest framework: `--collect-only -q` discovery, `--junitxml` batches, and the
//! exact mapping from JUnit testcases back to node ids.
//!
//! A test ID is whatever pytest prints as a node id (`tests/test_a.py::TestK::test_m`,
//! `tests/test_p.py::test_p[a b]`): spaces, brackets, `::` inside brackets and escapes
//! are kept whole. Results map back without any conftest hook: pytest's JUnit writer
//! derives `classname`/`name` from the node id by a fixed rule ([`mangle_node_id`]),
//! which this module rebuilds for every ID. A conftest hook that records the full node
//! id as `name` is recognised too. Nothing here spawns a process.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use regex::Regex;
use serde::Deserialize;

use super::{
    ARGS_BUDGET, FrameworkInfo, FrameworkSection, BatchCommand, BatchPaths, Discovered, Framework, InputFile, command_failed,
    shell_split, tail_lines, tests_file_contents,
};
use crate::config::{Described, shown};
use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};

/// `[framework] type = "pytest"`.
#[derive(Debug, Clone, Deserialize)]
pub struct PytestConfig {
    /// Directories (or files) to collect tests from.
    #[serde(default = "default_pytest_paths")]
    pub paths: Vec<PathBuf>,
    /// Full command prefix (e.g. `"uv run pytest"`); replaces `python`/`extra_args`.
    #[serde(default)]
    pub command: Option<String>,
    /// Extra arguments for execution only.
    #[serde(default)]
    pub run_args: Option<String>,
    /// (Legacy) extra pytest arguments, used when `command` is not set.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// (Legacy) Python interpreter, used when `command` is not set.
    #[serde(default = "default_python")]
    pub python: String,
    /// (Legacy) marker expression, accepted and ignored (use group `filters`).
    #[serde(default)]
    pub markers: Option<String>,
    /// Accepted for compatibility; pytest results are matched by node id.
    #[serde(default)]
    pub test_id_format: Option<String>,
    /// Run batches in a resident worker per sandbox: one pytest, started once, forks a
    /// child per batch at collection (see `scripts/offload_pytest_worker.py`).
    #[serde(default = "default_resident_worker")]
    pub resident_worker: bool,
}

fn default_resident_worker() -> bool {
    true
}

fn default_pytest_paths() -> Vec<PathBuf> {
    vec![PathBuf::from("tests")]
}
fn default_python() -> String {
    "python".to_owned()
}

impl Described for PytestConfig {
    type Info = FrameworkInfo;
    const INFO: FrameworkInfo = FrameworkInfo {
        name: "pytest",
        aliases: &[],
        summary: "pytest",
        template: TEMPLATE,
        starter_files: &[],
        splits_filters: true,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# How tests are found and run: pytest, started with `command`, collecting from `paths`.
[framework]
type = \"pytest\"
command = \"python -m pytest\"
paths = [\"tests\"]
# Extra pytest arguments for test runs only (not for discovery).
# run_args = \"--tb=long\"
# One pytest process per sandbox starts once and forks a child per batch;
# `false` starts a pytest per batch instead.
# resident_worker = true
";

impl FrameworkSection for PytestConfig {
    fn check(&self) -> Result<()> {
        let pytest = self;
        if let Some(command) = &pytest.command {
            match shell_words::split(command) {
                Ok(words) if words.is_empty() => bail!(
                    "`framework.command` is empty; remove it to use `python -m pytest`, or give the \
                     command, e.g. `command = \"uv run pytest\"`"
                ),
                Ok(_) => {}
                Err(err) => bail!(
                    "`framework.command` cannot be split into arguments ({err}): `{}`; close \
                     every quote",
                    shown(command)
                ),
            }
        }
        if let Some(args) = &pytest.run_args {
            if let Err(err) = shell_words::split(args) {
                bail!(
                    "`framework.run_args` cannot be split into arguments ({err}): `{}`; close \
                     every quote",
                    shown(args)
                );
            }
        }
        if pytest.python.trim().is_empty() {
            bail!("`framework.python` is empty; remove it to use `python`");
        }
        Ok(())
    }

    fn no_effect(&self, written: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.markers.is_some() {
            out.push(
                "`markers` in `[framework]` is ignored; select tests with the `filters` of a \
                 group instead, e.g. `filters = \"-m 'not slow'\"`"
                    .to_owned(),
            );
        }
        if self.command.is_some() {
            for legacy in ["python", "extra_args"] {
                if written(legacy) {
                    out.push(format!(
                        "`{legacy}` in `[framework]` is ignored because `command` is set; \
                         put everything in `command`"
                    ));
                }
            }
        }
        if self.test_id_format.is_some() {
            out.push(
                "`test_id_format` in `[framework]` is ignored for pytest: test IDs are the \
                 node IDs pytest prints"
                    .to_owned(),
            );
        }
        out
    }

    fn build(&self) -> Result<Box<dyn Framework>> {
        Ok(Box::new(Pytest::new(self)?))
    }
}

/// Separates classname from name in JUnit keys. A control character, so it can never
/// occur in a node id printed by pytest nor in a JUnit attribute.
const KEY_SEPARATOR: char = '\u{1f}';

/// The module name of the bundled plugin that selects a batch's tests (`-p` loads it).
/// Its file is [`crate::bundled::PYTEST_PLUGIN`], written into each sandbox's support
/// directory.
const PLUGIN_MODULE: &str = "offload_pytest_plugin";

/// The variable that names the batch's tests file for the plugin.
const TESTS_FILE_VARIABLE: &str = "OFFLOAD_TESTS_FILE";

/// The variable that makes a resident batch command a warm-up (see
/// [`Framework::warm_command`]).
const WARM_VARIABLE: &str = "OFFLOAD_RESIDENT_WARM";

/// The modules of the resident worker and of its client (see
/// [`crate::bundled::PYTEST_WORKER`]), written beside the plugin.
const WORKER_MODULE: &str = "offload_pytest_worker";
const CLIENT_MODULE: &str = "offload_pytest_client";

/// A batch through the resident worker: `sh -c RESIDENT_SNIPPET SUPPORT SHARED KEY N T
/// PREFIX... ARGS...` (N words of prefix; the last T arguments are the files to
/// collect). With the worker's client (run by the interpreter the worker
/// recorded, else any `python3`), or, when the worker is off for this key or there is
/// no Python to run the client, plain `PREFIX ARGS...`.
const RESIDENT_SNIPPET: &str = r#"PYTHONPATH="$0${PYTHONPATH:+:$PYTHONPATH}"; export PYTHONPATH
r="$1/resident-$2"
if [ ! -e "$r.off" ]; then
  py=; [ -f "$r.python" ] && read -r py < "$r.python"
  [ -n "$py" ] && [ -x "$py" ] || py=$(command -v python3) || py=
  [ -z "$py" ] || exec "$py" -S "$0/offload_pytest_client.py" "$@"
  m='no python3 in the sandbox to run the resident worker client'
  if (set -C; echo "$m" > "$r.off") 2>/dev/null; then
    printf '##offload-event## {"event": "resident-fallback", "id": "", "message": "%s"}
' "$m" >&2
  fi
fi
shift 4
exec "$@""#;

/// pytest's exit code when nothing was collected (filters selected nothing).
const EXIT_NO_TESTS_COLLECTED: i32 = 5;

/// The pytest framework, built from `[framework] type = "pytest"`.
#[derive(Debug, Clone)]
pub(super) struct Pytest {
    /// Program and leading arguments: `command` split, or `python [extra_args] -m pytest`.
    prefix: Vec<String>,
    /// `paths`, appended to discovery only.
    paths: Vec<String>,
    /// `run_args` split, appended to batches only.
    run_args: Vec<String>,
    /// `offload run -k`: pytest's own `-k` expression, added to discovery.
    keyword: Option<String>,
    /// `offload run --no-capture`: `-s` in batches.
    no_capture: bool,
    /// Batches go through the resident worker (`resident_worker`, and a command that
    /// starts pytest).
    resident: bool,
}

impl Pytest {
    /// Builds the framework. Fails when `command` or `run_args` cannot be split into
    /// arguments, or when `command` is empty.
    pub(super) fn new(config: &PytestConfig) -> Result<Self> {
        let prefix = match &config.command {
            Some(command) => {
                let words = shell_split("framework.command", command)?;
                if words.is_empty() {
                    anyhow::bail!(
                        "`framework.command` is empty\n\
                         (hint: set it to the command that starts pytest, e.g. \"uv run pytest\", \
                         or remove it to use `python -m pytest`)"
                    );
                }
                words
            }
            None => {
                let mut words = vec![config.python.clone()];
                words.extend(config.extra_args.iter().cloned());
                words.extend(["-m".to_owned(), "pytest".to_owned()]);
                words
            }
        };
        let run_args = match &config.run_args {
            Some(args) if config.command.is_some() => shell_split("framework.run_args", args)?,
            Some(_) => {
                // The user manual defines `run_args` as used only together with `command`.
                tracing::warn!(
                    "`framework.run_args` is ignored because `framework.command` is not set \
                     (hint: set `command = \"python -m pytest\"` to use it)"
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        let resident = config.resident_worker && starts_pytest(&prefix);
        if config.resident_worker && !resident {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "one pytest per batch: `framework.command` (`{}`) does not look like pytest, \
                     so the resident worker, which needs pytest to load Offload's plugin, is off \
                     (hint: set `resident_worker = false` in `[framework]` to say so)",
                    prefix.join(" ")
                );
            });
        }
        Ok(Self {
            resident,
            prefix,
            paths: config
                .paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            run_args,
            keyword: None,
            no_capture: false,
        })
    }

    /// Names the resident worker of this command: batches that would start the same
    /// pytest (command, `run_args`, paths) share it.
    fn resident_key(&self) -> String {
        let mut words = self.prefix.clone();
        words.push(String::new());
        words.extend(self.run_args.iter().cloned());
        words.push(String::new());
        words.extend(self.paths.iter().cloned());
        format!("{:016x}", crate::partition::stable_hash(&words.join("\0")))
    }

    fn command(&self, args: impl IntoIterator<Item = String>) -> CommandSpec {
        let mut all = self.prefix.iter().cloned();
        let program = all.next().unwrap_or_default();
        CommandSpec {
            program,
            args: all.chain(args).collect(),
            cwd: None,
            env: Vec::new(),
        }
    }

    /// The command of a batch of `tests` that collects `targets` (see
    /// [`Framework::batch_command`]).
    fn pytest_command(
        &self,
        tests: &[String],
        targets: Vec<String>,
        paths: &BatchPaths,
        fail_fast: bool,
    ) -> BatchCommand {
        // Quiet: per-test progress lines cost pytest CPU in every batch and nobody reads
        // them (outcomes come from the JUnit file); failures and the summary still show
        // in the batch log. `run_args = "-v"` brings the lines back.
        let mut args = vec![
            "-p".to_owned(),
            PLUGIN_MODULE.to_owned(),
            "-q".to_owned(),
            "--tb=short".to_owned(),
            format!("--junitxml={}", paths.result),
        ];
        if fail_fast {
            args.push("-x".to_owned());
        }
        if self.no_capture {
            args.push("-s".to_owned());
        }
        args.extend(self.run_args.iter().cloned());
        let support = |module: &str, script: &crate::bundled::Script| InputFile {
            path: format!("{}/{module}.py", paths.support_dir),
            contents: String::from_utf8_lossy(script.contents).into_owned(),
        };
        let mut inputs = vec![
            support(PLUGIN_MODULE, &crate::bundled::PYTEST_PLUGIN),
            InputFile {
                path: paths.tests_file.clone(),
                contents: tests_file_contents(tests),
            },
        ];
        // The plugin's directory goes in front of the sandbox's own PYTHONPATH, which
        // only a shell there can read.
        let command = if self.resident {
            inputs.push(support(WORKER_MODULE, &crate::bundled::PYTEST_WORKER));
            inputs.push(support(CLIENT_MODULE, &crate::bundled::PYTEST_CLIENT));
            CommandSpec::new("sh").args([
                "-c",
                RESIDENT_SNIPPET,
                &paths.support_dir,
                &paths.shared_dir,
                &self.resident_key(),
                &self.prefix.len().to_string(),
                &targets.len().to_string(),
            ])
        } else {
            CommandSpec::new("sh").args([
                "-c",
                "PYTHONPATH=\"$0${PYTHONPATH:+:$PYTHONPATH}\" exec \"$@\"",
                &paths.support_dir,
            ])
        };
        let command = command
            .args(self.prefix.iter().cloned())
            .args(args)
            .args(targets)
            .env(TESTS_FILE_VARIABLE, &paths.tests_file);
        BatchCommand { command, inputs }
    }
}

impl Framework for Pytest {
    fn name(&self) -> &'static str {
        "pytest"
    }

    fn discover_command(&self, filters: &str) -> Result<CommandSpec> {
        let mut filters = shell_split("filters", filters)?;
        if let Some(expression) = &self.keyword {
            add_keyword(&mut filters, expression);
        }
        // Without assertion rewriting: collection only needs the test modules imported,
        // and rewriting their `assert`s is most of what importing them costs (a
        // collection of toolz's tests: 0.45 s plain, 1.2 s rewritten, when no rewritten
        // module is cached). The batches, which run the tests, rewrite as configured; the
        // items collected are the same.
        let args = ["--collect-only", "-q", "--assert", "plain"]
            .into_iter()
            .map(str::to_owned)
            .chain(filters)
            .chain(self.paths.iter().cloned());
        Ok(self.command(args))
    }

    fn parse_discovery(
        &self,
        command: &CommandSpec,
        output: &CapturedOutput,
    ) -> Result<Discovered> {
        let stdout = &output.stdout;
        if has_collection_errors(stdout) {
            if output.outcome == ExitOutcome::Exited(0) {
                anyhow::bail!(
                    "`{}` reported errors while collecting tests:\n{}",
                    command.display(),
                    failure_detail(output)
                );
            }
            return Err(command_failed(
                command,
                output.outcome,
                &failure_detail(output),
            ));
        }
        match output.outcome {
            ExitOutcome::Exited(0) => {
                let ids = parse_node_ids(stdout);
                if !ids.is_empty() {
                    return Ok(Discovered {
                        ids,
                        ..Discovered::default()
                    });
                }
                match summary_line(stdout) {
                    Some(summary) => Ok(Discovered {
                        ids,
                        ignored: Vec::new(),
                        warning: Some(format!("pytest: {summary}")),
                    }),
                    None => anyhow::bail!(
                        "`{}` succeeded but printed no test IDs and no summary:\n{}\n\
                         (hint: Offload reads the node ids that `pytest --collect-only -q` prints, \
                         one per line; check `addopts` in your pytest configuration for extra \
                         `-q`/`-v` flags or plugins that change this output)",
                        command.display(),
                        failure_detail(output)
                    ),
                }
            }
            ExitOutcome::Exited(EXIT_NO_TESTS_COLLECTED) => Ok(Discovered {
                ids: Vec::new(),
                ignored: Vec::new(),
                warning: Some(format!(
                    "pytest: {}",
                    summary_line(stdout).unwrap_or_else(|| "no tests collected".to_owned())
                )),
            }),
            outcome => Err(command_failed(command, outcome, &failure_detail(output))),
        }
    }

    /// `sh -c 'PYTHONPATH=<support dir>... exec "$@"' <pytest> -p offload_pytest_plugin
    /// ... <files>`, with the batch's node IDs in `paths.tests_file` (read by the
    /// bundled plugin, see `scripts/offload_pytest_plugin.py`) and only the files of
    /// those IDs as arguments, so pytest collects just them. When even the file list is
    /// long, the discovery `paths` are passed instead (the plugin still selects exactly
    /// the batch).
    fn batch_command(
        &self,
        tests: &[String],
        paths: &BatchPaths,
        fail_fast: bool,
    ) -> Result<BatchCommand> {
        let mut files: Vec<&str> = Vec::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut length = 0;
        for test in tests {
            let file = self.locality(test).unwrap_or(test);
            if seen.insert(file) {
                length += file.len() + 3;
                files.push(file);
            }
        }
        let targets: Vec<String> = if length <= ARGS_BUDGET {
            files.into_iter().map(str::to_owned).collect()
        } else {
            self.paths.clone()
        };
        Ok(self.pytest_command(tests, targets, paths, fail_fast))
    }

    /// The batch command of no test, with the discovery `paths` as its files and
    /// `OFFLOAD_RESIDENT_WARM` set: it starts the resident worker, which imports the
    /// test modules under those paths; it ends once they are imported (`1`, with
    /// `until_loaded`) or as soon as the worker has it (`start`).
    fn warm_command(
        &self,
        paths: &BatchPaths,
        fail_fast: bool,
        until_loaded: bool,
    ) -> Option<BatchCommand> {
        if !self.resident {
            return None;
        }
        let mut warm = self.pytest_command(&[], self.paths.clone(), paths, fail_fast);
        let value = if until_loaded { "1" } else { "start" };
        warm.command = warm.command.env(WARM_VARIABLE, value);
        Some(warm)
    }

    fn junit_key<'a>(&self, name: &'a str, classname: Option<&'a str>) -> Cow<'a, str> {
        if is_node_id(name) {
            // The conftest-hook form: `name` holds the full node id.
            return Cow::Borrowed(name);
        }
        Cow::Owned(junit_pair_key(classname.unwrap_or(""), name))
    }

    fn id_keys<'a>(&self, id: &'a str) -> Vec<Cow<'a, str>> {
        let (classname, name) = mangle_node_id(id);
        vec![
            Cow::Borrowed(id),
            Cow::Owned(junit_pair_key(&classname, &name)),
        ]
    }

    /// pytest's `-k`, at discovery: the batches then run what collection selected.
    fn select_by_expression(&mut self, expression: &str) -> bool {
        self.keyword = Some(expression.to_owned());
        true
    }

    /// pytest's `-s`.
    fn set_no_capture(&mut self) {
        self.no_capture = true;
    }

    /// pytest's own classname of the node ID (see [`mangle_node_id`]).
    fn junit_classname(&self, id: &str) -> Option<String> {
        Some(mangle_node_id(id).0)
    }

    /// The file part of the node ID, as pytest's `xunit1` reports write it.
    fn source_file<'a>(&self, id: &'a str) -> Option<&'a str> {
        self.locality(id)
    }

    /// The file of a node ID: pytest imports and collects it whole for any of its tests.
    fn locality<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.split_once("::").map(|(file, _)| file)
    }

    /// Collection is traced (see [`Self::trace_discovery`]), so a cached result is only
    /// reused while nothing it read changed.
    fn discovery_is_cacheable(&self) -> bool {
        true
    }

    /// Loads the bundled plugin (`-p offload_pytest_plugin`, its directory first on
    /// `PYTHONPATH`), which writes every file and directory collection read to `trace`.
    fn trace_discovery(&self, command: &mut CommandSpec, trace: &Path) -> Result<bool> {
        let dir = crate::bundled::extracted_dir()?;
        let mut python_path = dir.as_os_str().to_owned();
        if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            python_path.push(":");
            python_path.push(existing);
        }
        let python_path = python_path
            .into_string()
            .map_err(|_| anyhow::anyhow!("PYTHONPATH is not valid UTF-8"))?;
        command.env.push(("PYTHONPATH".to_owned(), python_path));
        command.env.push((
            "OFFLOAD_DISCOVERY_TRACE".to_owned(),
            trace.to_string_lossy().into_owned(),
        ));
        let at = command.args.iter().position(|a| a == "--collect-only");
        let at = at.unwrap_or(command.args.len());
        command
            .args
            .splice(at..at, ["-p".to_owned(), PLUGIN_MODULE.to_owned()]);
        Ok(true)
    }
}

/// Adds `-k expression` to a group's `filters`. pytest keeps only the last `-k` it is
/// given, so a `-k OLD` (or `-kOLD`) already there becomes `-k '(OLD) and (expression)'`:
/// the group's selection and the command line's both apply.
/// Whether the command `prefix` starts pytest (`pytest`, `py.test`, `python -m pytest`,
/// `uv run pytest`...): only then does it load Offload's plugin, which starts the
/// resident worker.
fn starts_pytest(prefix: &[String]) -> bool {
    prefix.iter().any(|word| {
        let name = word.rsplit('/').next().unwrap_or(word);
        matches!(name, "pytest" | "py.test")
    })
}

fn add_keyword(filters: &mut Vec<String>, expression: &str) {
    // Where the value of the last `-k` is, and whether it is glued to the flag.
    let mut last: Option<(usize, bool)> = None;
    let mut i = 0;
    while i < filters.len() {
        let word = &filters[i];
        if word == "-k" && i + 1 < filters.len() {
            last = Some((i + 1, false));
            i += 1;
        } else if word.len() > 2 && word.starts_with("-k") {
            last = Some((i, true));
        }
        i += 1;
    }
    match last {
        Some((at, glued)) => {
            let old = if glued {
                &filters[at][2..]
            } else {
                &filters[at]
            };
            let both = format!("({old}) and ({expression})");
            filters[at] = if glued { format!("-k{both}") } else { both };
        }
        None => filters.extend(["-k".to_owned(), expression.to_owned()]),
    }
}

/// Whether a JUnit `name` is a full node id (`path::test[...]`) rather than pytest's
/// short name: it has `::` before any `[params]` part. (`test_p[x::y]` is a short name.)
fn is_node_id(name: &str) -> bool {
    let head = name.find('[').map_or(name, |open| &name[..open]);
    head.contains("::")
}

fn junit_pair_key(classname: &str, name: &str) -> String {
    format!("{classname}{KEY_SEPARATOR}{name}")
}

/// pytest's JUnit `classname` and `name` for a node id, as its `junitxml` plugin
/// computes them (`mangle_test_address`): the `[params]` part is split off, the rest is
/// split at `::`, the file path becomes dotted (`/` → `.`, a trailing `.py` removed),
/// classname = every part but the last joined with `.`, name = the last part + params.
fn mangle_node_id(id: &str) -> (String, String) {
    let (path, params) = id.find('[').map_or((id, ""), |open| id.split_at(open));
    let mut parts: Vec<String> = path.split("::").map(str::to_owned).collect();
    if let Some(file) = parts.first_mut() {
        let dotted = file.replace('/', ".");
        *file = dotted.strip_suffix(".py").unwrap_or(&dotted).to_owned();
    }
    let mut name = parts.pop().unwrap_or_default();
    name.push_str(params);
    (parts.join("."), name)
}

/// The node ids of `pytest --collect-only -q` output: the lines holding `::` in the
/// first block of lines (blank lines before it are skipped), which ends at a blank
/// line, a `===`/`!!!` section line or the summary. Lines are kept whole.
fn parse_node_ids(stdout: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in stdout.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if ids.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with("==") || line.starts_with("!!") || is_summary(line) {
            break;
        }
        if line.contains("::") {
            ids.push(line.to_owned());
        }
    }
    ids
}

fn summary_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[=\s]*((?:no tests|\d+(?:/\d+)? tests?) collected\b.*?)[=\s]*$")
            .unwrap_or_else(|e| unreachable!("summary regex: {e}"))
    })
}

fn is_summary(line: &str) -> bool {
    summary_regex().is_match(line)
}

/// The last summary line (`3 tests collected in 0.01s`, `no tests collected (2
/// deselected) in 0.02s`), without decoration.
fn summary_line(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .rev()
        .find_map(|line| summary_regex().captures(line.trim_end_matches('\r')))
        .map(|caps| caps[1].to_owned())
}

fn has_collection_errors(stdout: &str) -> bool {
    stdout.contains("ERROR collecting")
        || stdout
            .lines()
            .any(|l| l.contains("Interrupted:") && l.contains("during collection"))
}

/// What pytest said about a failure: its stdout from the first `===` section on (the
/// errors, without the node id list) or else its stdout tail, then its stderr.
fn failure_detail(output: &CapturedOutput) -> String {
    let stdout = output.stdout.trim_end();
    let relevant = stdout
        .match_indices('\n')
        .map(|(at, _)| at + 1)
        .chain(std::iter::once(0))
        .filter(|&at| stdout[at..].starts_with("=="))
        .min()
        .map_or(stdout, |at| &stdout[at..]);
    let mut detail = tail_lines(relevant, 80);
    let stderr = output.stderr.trim();
    if !stderr.is_empty() {
        if !detail.is_empty() {
            detail.push_str("\n--- stderr ---\n");
        }
        detail.push_str(&tail_lines(stderr, 40));
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(command: Option<&str>) -> PytestConfig {
        PytestConfig {
            paths: vec![PathBuf::from("tests"), PathBuf::from("more tests")],
            command: command.map(str::to_owned),
            run_args: None,
            extra_args: Vec::new(),
            python: "python".to_owned(),
            markers: None,
            test_id_format: None,
            resident_worker: false,
        }
    }

    fn out(code: i32, stdout: &str, stderr: &str) -> CapturedOutput {
        CapturedOutput {
            outcome: ExitOutcome::Exited(code),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }

    fn argv(spec: &CommandSpec) -> Vec<String> {
        std::iter::once(spec.program.clone())
            .chain(spec.args.iter().cloned())
            .collect()
    }

    #[test]
    fn discovery_command_with_command_filters_and_paths() {
        let fw = Pytest::new(&config(Some("uv run --with=pytest pytest"))).unwrap();
        let spec = fw
            .discover_command("-m 'not slow' -k 'not test_flaky'")
            .unwrap();
        assert_eq!(
            argv(&spec),
            [
                "uv",
                "run",
                "--with=pytest",
                "pytest",
                "--collect-only",
                "-q",
                "--assert",
                "plain",
                "-m",
                "not slow",
                "-k",
                "not test_flaky",
                "tests",
                "more tests"
            ]
        );
        assert_eq!(spec.cwd, None);
    }

    #[test]
    fn a_keyword_joins_the_groups_own_k() {
        let mut fw = Pytest::new(&config(Some("pytest"))).unwrap();
        assert!(fw.select_by_expression("not slow"));
        let tail = |filters: &str| {
            let spec = fw.discover_command(filters).unwrap();
            let at = spec.args.iter().position(|a| a == "plain").unwrap();
            spec.args[at + 1..spec.args.len() - 2].to_vec()
        };
        assert_eq!(tail(""), ["-k", "not slow"]);
        assert_eq!(tail("-m fast"), ["-m", "fast", "-k", "not slow"]);
        assert_eq!(
            tail("-k a -m m -k 'b or c'"),
            ["-k", "a", "-m", "m", "-k", "(b or c) and (not slow)"]
        );
        assert_eq!(tail("-kfoo"), ["-k(foo) and (not slow)"]);
    }

    #[test]
    fn no_capture_passes_s_to_batches_only() {
        let mut fw = Pytest::new(&config(None)).unwrap();
        let paths = crate::framework::test_paths("/r.xml");
        let ids = ["t/a.py::x".to_owned()];
        let args = |fw: &Pytest| fw.batch_command(&ids, &paths, false).unwrap().command.args;
        assert!(!args(&fw).contains(&"-s".to_owned()));
        fw.set_no_capture();
        assert!(args(&fw).contains(&"-s".to_owned()));
        assert!(
            !fw.discover_command("")
                .unwrap()
                .args
                .contains(&"-s".to_owned())
        );
    }

    #[test]
    fn legacy_prefix_is_python_extra_args_m_pytest() {
        let mut c = config(None);
        c.python = "python3".to_owned();
        c.extra_args = vec!["-X".to_owned(), "dev".to_owned()];
        let fw = Pytest::new(&c).unwrap();
        let spec = fw.discover_command("").unwrap();
        assert_eq!(
            argv(&spec),
            [
                "python3",
                "-X",
                "dev",
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "--assert",
                "plain",
                "tests",
                "more tests"
            ]
        );
    }

    #[test]
    fn bad_filters_and_commands_are_errors() {
        let fw = Pytest::new(&config(None)).unwrap();
        let err = fw.discover_command("-k 'x").unwrap_err().to_string();
        assert!(err.contains("`filters`"), "{err}");
        let err = Pytest::new(&config(Some("uv 'run")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("framework.command"), "{err}");
        let err = Pytest::new(&config(Some("  "))).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let mut c = config(Some("pytest"));
        c.run_args = Some("--maxfail 'x".to_owned());
        let err = Pytest::new(&c).unwrap_err().to_string();
        assert!(err.contains("framework.run_args"), "{err}");
    }

    #[test]
    fn locality_is_the_file_of_a_node_id() {
        let fw = Pytest::new(&config(None)).unwrap();
        assert_eq!(fw.locality("t/a b.py::K::m[x::y]"), Some("t/a b.py"));
        assert_eq!(fw.locality("t/a.py::test_p"), Some("t/a.py"));
        assert_eq!(fw.locality("t/a.py"), None);
    }

    #[test]
    fn a_resident_batch_goes_through_the_client_with_the_plain_command_after_it() {
        let mut c = config(Some("uv run pytest"));
        c.resident_worker = true;
        c.run_args = Some("--import-mode=importlib".to_owned());
        let fw = Pytest::new(&c).unwrap();
        let ids = vec!["t/a.py::x".to_owned()];
        let paths = crate::framework::test_paths("/tmp/r.xml");
        let batch = fw.batch_command(&ids, &paths, true).unwrap();
        let words = argv(&batch.command);
        assert_eq!(words[..3], ["sh", "-c", RESIDENT_SNIPPET]);
        // Support dir, shared dir, key, the prefix's length, the number of files at the
        // end; then the plain command.
        assert_eq!(words[3..5], ["/sb/support", "/sb/shared"]);
        assert_eq!(words[5].len(), 16, "{words:?}");
        assert_eq!(words[6..8], ["3", "1"]);
        assert_eq!(words[8..11], ["uv", "run", "pytest"]);
        assert!(words.contains(&"-x".to_owned()), "{words:?}");
        assert_eq!(words.last().map(String::as_str), Some("t/a.py"));
        let two = fw
            .batch_command(&["t/a.py::x".to_owned(), "t/b.py::y".to_owned()], &paths, false)
            .unwrap();
        let two = argv(&two.command);
        assert_eq!(two[7], "2");
        assert_eq!(two[two.len() - 2..], ["t/a.py", "t/b.py"]);
        let written: Vec<&str> = batch.inputs.iter().map(|f| f.path.as_str()).collect();
        for module in ["worker", "client"] {
            let path = format!("/sb/support/offload_pytest_{module}.py");
            assert!(written.contains(&path.as_str()), "{written:?}");
        }
        // Another command or collection is another worker.
        let key = |command: &str, run_args: Option<&str>| {
            let mut c = config(Some(command));
            c.resident_worker = true;
            c.run_args = run_args.map(str::to_owned);
            let fw = Pytest::new(&c).unwrap();
            argv(&fw.batch_command(&ids, &paths, false).unwrap().command)[5].clone()
        };
        assert_eq!(key("uv run pytest", None), key("uv run pytest", None));
        // Other tests, the same worker.
        let other = fw
            .batch_command(&["t/b.py::y".to_owned()], &paths, false)
            .unwrap();
        assert_eq!(argv(&other.command)[5], words[5]);
        assert_ne!(key("uv run pytest", None), key("pytest", None));
        assert_ne!(key("pytest", None), key("pytest", Some("-p no:foo")));
    }

    #[test]
    fn a_warm_up_is_a_batch_of_no_test_collecting_the_paths() {
        let mut c = config(Some("uv run pytest"));
        c.paths = vec!["tests".into(), "more".into()];
        let paths = crate::framework::test_paths("/tmp/r.xml");
        let off = Pytest::new(&c).unwrap();
        assert_eq!(off.warm_command(&paths, false, true), None);
        c.resident_worker = true;
        let fw = Pytest::new(&c).unwrap();
        let warm = fw.warm_command(&paths, true, true).unwrap();
        let batch = fw
            .batch_command(&["t/a.py::x".to_owned()], &paths, true)
            .unwrap();
        let (w, b) = (argv(&warm.command), argv(&batch.command));
        // The same worker and arguments as a batch's (so batches fork from it), with
        // the paths as its files and an empty tests file.
        assert_eq!(w[..7], b[..7]);
        assert_eq!(w[7], "2");
        assert_eq!(w[w.len() - 2..], ["tests", "more"]);
        assert_eq!(w[8..w.len() - 2], b[8..b.len() - 1]);
        assert!(warm.command.env.contains(&(WARM_VARIABLE.to_owned(), "1".to_owned())));
        let start = fw.warm_command(&paths, true, false).unwrap();
        assert_eq!(argv(&start.command), w);
        assert!(start.command.env.contains(&(WARM_VARIABLE.to_owned(), "start".to_owned())));
        let tests = warm.inputs.iter().find(|f| f.path == paths.tests_file);
        assert_eq!(tests.map(|f| f.contents.as_str()), Some(""));
    }

    #[test]
    fn only_a_command_that_names_pytest_gets_the_worker() {
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        for yes in ["pytest", "python -m pytest", "uv run pytest", ".venv/bin/py.test -x"] {
            assert!(starts_pytest(&words(yes)), "{yes}");
        }
        for no in ["sh run-tests.sh", "tox -e py311", "python run_pytest.py"] {
            assert!(!starts_pytest(&words(no)), "{no}");
        }
    }

    #[test]
    fn batch_command_layout() {
        let mut c = config(Some("uv run pytest"));
        c.run_args = Some("-p no:cacheprovider --maxfail '3'".to_owned());
        let fw = Pytest::new(&c).unwrap();
        let ids = vec![
            "t/a.py::test_p[a b]".to_owned(),
            "t/b.py::K::m".to_owned(),
            "t/a.py::K::m".to_owned(),
            "t/data.yaml".to_owned(),
        ];
        let paths = crate::framework::test_paths("/tmp/r.xml");
        let batch = fw.batch_command(&ids, &paths, false).unwrap();
        assert_eq!(
            argv(&batch.command),
            [
                "sh",
                "-c",
                "PYTHONPATH=\"$0${PYTHONPATH:+:$PYTHONPATH}\" exec \"$@\"",
                "/sb/support",
                "uv",
                "run",
                "pytest",
                "-p",
                "offload_pytest_plugin",
                "-q",
                "--tb=short",
                "--junitxml=/tmp/r.xml",
                "-p",
                "no:cacheprovider",
                "--maxfail",
                "3",
                // Each file once, in order; an ID without `::` is its own path.
                "t/a.py",
                "t/b.py",
                "t/data.yaml",
            ]
        );
        assert_eq!(
            batch.command.env,
            [(
                "OFFLOAD_TESTS_FILE".to_owned(),
                "/sb/batch-1.tests".to_owned()
            )]
        );
        assert_eq!(
            batch.inputs,
            [
                InputFile {
                    path: "/sb/support/offload_pytest_plugin.py".to_owned(),
                    contents: String::from_utf8(crate::bundled::PYTEST_PLUGIN.contents.to_vec())
                        .unwrap(),
                },
                InputFile {
                    path: "/sb/batch-1.tests".to_owned(),
                    contents: "t/a.py::test_p[a b]\nt/b.py::K::m\nt/a.py::K::m\nt/data.yaml\n"
                        .to_owned(),
                },
            ]
        );
        let spec = fw.batch_command(&ids[..1], &paths, true).unwrap().command;
        assert_eq!(spec.args[11], "-x");
    }

    #[test]
    fn many_files_fall_back_to_the_discovery_paths() {
        let fw = Pytest::new(&config(None)).unwrap();
        let ids: Vec<String> = (0..5000)
            .map(|i| format!("tests/test_module_number_{i}.py::test_x"))
            .collect();
        let batch = fw
            .batch_command(&ids, &crate::framework::test_paths("/r.xml"), false)
            .unwrap();
        let args = &batch.command.args;
        assert_eq!(args[args.len() - 2..], ["tests", "more tests"]);
        assert!(args.iter().map(String::len).sum::<usize>() < ARGS_BUDGET);
        assert_eq!(batch.inputs[1].contents.lines().count(), 5000);
    }

    #[test]
    fn run_args_need_command() {
        let mut c = config(None);
        c.run_args = Some("--maxfail 3".to_owned());
        let fw = Pytest::new(&c).unwrap();
        let spec = fw
            .batch_command(
                &["a.py::t".to_owned()],
                &crate::framework::test_paths("/r.xml"),
                false,
            )
            .unwrap()
            .command;
        assert!(!spec.args.iter().any(|a| a == "--maxfail"));
    }

    #[test]
    fn mangling_matches_pytest_junitxml() {
        let table = [
            ("tests/test_a.py::test_plain", "tests.test_a", "test_plain"),
            (
                "tests/test_a.py::TestK::test_m",
                "tests.test_a.TestK",
                "test_m",
            ),
            (
                "tests/test_a.py::TestK::TestInner::test_n",
                "tests.test_a.TestK.TestInner",
                "test_n",
            ),
            (
                "tests/test_a.py::test_p[a b]",
                "tests.test_a",
                "test_p[a b]",
            ),
            (
                "tests/test_a.py::test_p[x::y]",
                "tests.test_a",
                "test_p[x::y]",
            ),
            (
                "tests/test_a.py::test_p[p/q]",
                "tests.test_a",
                "test_p[p/q]",
            ),
            (
                "tests/test_a.py::test_p[a.py]",
                "tests.test_a",
                "test_p[a.py]",
            ),
            (
                "tests/test_a.py::test_p[\\xe9]",
                "tests.test_a",
                "test_p[\\xe9]",
            ),
            ("tests/test_é.py::test_ü", "tests.test_é", "test_ü"),
            ("test_top.py::test_x", "test_top", "test_x"),
            ("a.py.d/test_x.py::t", "a.py.d.test_x", "t"),
            ("README.txt::README.txt", "README.txt", "README.txt"),
            ("tests/data.yaml", "", "tests.data.yaml"),
        ];
        for (id, classname, name) in table {
            assert_eq!(
                mangle_node_id(id),
                (classname.to_owned(), name.to_owned()),
                "{id}"
            );
        }
    }

    #[test]
    fn junit_keys_meet_id_keys() {
        let fw = Pytest::new(&config(None)).unwrap();
        for id in [
            "tests/test_a.py::test_p[x::y]",
            "tests/test_a.py::TestK::test_m",
            "tests/test_a.py::test_p[a b]",
        ] {
            let keys = fw.id_keys(id);
            assert_eq!(keys[0], id);
            let (classname, name) = mangle_node_id(id);
            // Plain pytest output.
            assert!(
                keys.contains(&fw.junit_key(&name, Some(&classname))),
                "{id}"
            );
            // Conftest-hook output: name = node id.
            assert!(keys.contains(&fw.junit_key(id, Some(&classname))), "{id}");
        }
        // A result for one test never lands on another.
        let a = fw.id_keys("tests/test_a.py::test_x");
        let b = fw.id_keys("pkg/tests/test_a.py::test_x");
        assert!(a.iter().all(|k| !b.contains(k)));
        assert_eq!(fw.junit_key("t", None), "\u{1f}t");
    }

    #[test]
    fn classname_and_file_are_pytests_own() {
        let fw = Pytest::new(&config(None)).unwrap();
        for (id, classname, file) in [
            (
                "tests/test_a.py::TestK::test_m",
                "tests.test_a.TestK",
                "tests/test_a.py",
            ),
            (
                "tests/test_a.py::test_p[x::y]",
                "tests.test_a",
                "tests/test_a.py",
            ),
            ("test_top.py::test_x", "test_top", "test_top.py"),
        ] {
            assert_eq!(fw.junit_classname(id).as_deref(), Some(classname), "{id}");
            assert_eq!(fw.source_file(id), Some(file), "{id}");
        }
    }

    #[test]
    fn parses_node_ids_whole() {
        let stdout = "tests/sub/test_b.py::test_b\n\
                      tests/test_a.py::test_p[a b]\n\
                      tests/test_a.py::test_p[x::y]\n\
                      tests/test_a.py::TestK::test_m\n\
                      tests/test_é.py::test_ü\n\
                      \n\
                      5 tests collected in 0.01s\n";
        let d = Pytest::new(&config(None))
            .unwrap()
            .parse_discovery(&CommandSpec::default(), &out(0, stdout, ""))
            .unwrap();
        assert_eq!(
            d.ids,
            [
                "tests/sub/test_b.py::test_b",
                "tests/test_a.py::test_p[a b]",
                "tests/test_a.py::test_p[x::y]",
                "tests/test_a.py::TestK::test_m",
                "tests/test_é.py::test_ü",
            ]
        );
        assert_eq!(d.warning, None);
    }

    #[test]
    fn ids_end_at_the_first_blank_line_and_skip_chatter() {
        let stdout = "\nconftest says hi\nt.py::a\r\nt.py::b\n\n=== warnings summary ===\n\
                      t.py:2\n  x::y warning\n\n-- Docs\n2 tests collected in 0.01s\n";
        assert_eq!(parse_node_ids(stdout), ["t.py::a", "t.py::b"]);
        assert_eq!(summary_line(stdout).unwrap(), "2 tests collected in 0.01s");
    }

    #[test]
    fn exit_5_is_an_empty_group_with_the_summary() {
        let fw = Pytest::new(&config(None)).unwrap();
        let d = fw
            .parse_discovery(
                &CommandSpec::default(),
                &out(5, "\nno tests collected (10 deselected) in 0.02s\n", ""),
            )
            .unwrap();
        assert!(d.ids.is_empty());
        assert_eq!(
            d.warning.unwrap(),
            "pytest: no tests collected (10 deselected) in 0.02s"
        );
    }

    #[test]
    fn collection_errors_fail_with_pytest_output() {
        let fw = Pytest::new(&config(None)).unwrap();
        let stdout = "tests/test_ok.py::test_ok\n\n\
            ==================================== ERRORS ====================================\n\
            ______________________ ERROR collecting tests/test_bad.py ______________________\n\
            E   ModuleNotFoundError: No module named 'nonexistent_mod'\n\
            !!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!\n\
            1 test collected, 1 error in 0.43s\n";
        let spec = CommandSpec {
            program: "python".to_owned(),
            args: vec!["-m".to_owned(), "pytest".to_owned()],
            ..CommandSpec::default()
        };
        let err = fw
            .parse_discovery(&spec, &out(2, stdout, ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`python -m pytest` exited with code 2:\n====="),
            "{err}"
        );
        assert!(err.contains("No module named 'nonexistent_mod'"), "{err}");
        assert!(!err.contains("test_ok.py::test_ok"), "{err}");
        // Even when a plugin makes pytest exit 0.
        let err = fw
            .parse_discovery(&spec, &out(0, stdout, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reported errors while collecting"), "{err}");
    }

    #[test]
    fn other_failures_show_stdout_and_stderr() {
        let fw = Pytest::new(&config(None)).unwrap();
        let err = fw
            .parse_discovery(
                &CommandSpec::default(),
                &out(4, "", "ERROR: file or directory not found: tests\n"),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exited with code 4") && err.contains("not found: tests"),
            "{err}"
        );
    }

    #[test]
    fn exit_0_without_ids_or_summary_is_an_error() {
        let fw = Pytest::new(&config(None)).unwrap();
        let err = fw
            .parse_discovery(&CommandSpec::default(), &out(0, "tests/test_a.py: 3\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("printed no test IDs") && err.contains("test_a.py: 3"),
            "{err}"
        );
    }
}
