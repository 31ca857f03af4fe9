//! The default framework: the user's own shell commands discover and run the tests.
//!
//! `discover_command` (with `{filters}` replaced by the group's raw filter string)
//! prints one test ID per line; `run_command` runs a batch with `{tests}` replaced by
//! the shell-quoted IDs and `{result_file}` by the result path. Both run as `sh -c` in
//! `working_dir`. Results come from JUnit XML (per batch, or at the fixed
//! `result_file`) or, with neither, from the batch's exit code. JUnit testcases map
//! back through `test_id_format`. Nothing here spawns a process.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::{
    BatchCommand, FrameworkInfo, FrameworkSection, BatchPaths, Discovered, Framework, InputFile, ResultSource, command_failed,
    failure_output, shell_batch, tests_file_contents,
};
use crate::config::{Described, shown};
use crate::process::{CapturedOutput, CommandSpec, ExitOutcome};
use crate::template::substitute;

/// `[framework] type = "default"`.
#[derive(Debug, Clone, Deserialize)]
pub struct DefaultFrameworkConfig {
    /// Prints one test id per line; must contain `{filters}`.
    pub(crate) discover_command: String,
    /// Runs a batch: `{tests}` and `{result_file}` are substituted.
    pub(crate) run_command: String,
    /// JUnit XML file the run command writes (none: pass/fail from the exit code).
    #[serde(default)]
    pub(crate) result_file: Option<String>,
    /// Working directory of the discover and run commands.
    #[serde(default)]
    pub(crate) working_dir: Option<PathBuf>,
    /// How JUnit `name`/`classname` form a test id (`{name}`, `{classname}`).
    pub(crate) test_id_format: String,
}

impl Described for DefaultFrameworkConfig {
    type Info = FrameworkInfo;
    const INFO: FrameworkInfo = FrameworkInfo {
        name: "default",
        aliases: &[],
        summary: "Your own discovery and run commands",
        template: TEMPLATE,
        starter_files: &STARTER_SCRIPTS,
        // The filters are substituted verbatim into `discover_command`.
        splits_filters: false,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# How tests are found and run, with your own commands (each run with `sh -c`):
# - discover_command prints one test ID per line; {filters} becomes the group's `filters`.
# - run_command runs one batch: {tests} becomes the batch's test IDs, shell-quoted, and
#   {result_file} the path of the JUnit XML report it must write.
# - test_id_format rebuilds a test ID from the report's `classname` and `name`.
# Without result_file, a batch passes or fails as a whole by its exit code.
# The two scripts are starters written beside this file (they run `tests/test_*.sh`
# scripts, the path being the test ID): replace them with your own.
[framework]
type = \"default\"
discover_command = \"sh scripts/list-tests.sh {filters}\"
run_command = \"sh scripts/run-tests.sh --junit-xml {result_file} {tests}\"
test_id_format = \"{name}\"
";

/// The starter scripts the template runs, relative to the directory `offload` runs in
/// (where the template's commands run).
const STARTER_SCRIPTS: [(&str, &str); 2] = [
    (
        "scripts/list-tests.sh",
        include_str!("../../scripts/starter/list-tests.sh"),
    ),
    (
        "scripts/run-tests.sh",
        include_str!("../../scripts/starter/run-tests.sh"),
    ),
];

impl FrameworkSection for DefaultFrameworkConfig {
    fn check(&self) -> Result<()> {
        let f = self;
        if !f.discover_command.contains("{filters}") {
            bail!(
                "`framework.discover_command` must contain `{{filters}}`, where each group's \
                 `filters` go; got `{}`; add it, e.g. `discover_command = \"./list-tests.sh {{filters}}\"`",
                shown(&f.discover_command)
            );
        }
        if !f.run_command.contains("{tests}") && !f.run_command.contains("{tests_file}") {
            bail!(
                "`framework.run_command` must contain `{{tests}}` or `{{tests_file}}`, where the \
                 batch's test IDs go; got `{}`; e.g. `run_command = \"./run-tests.sh {{tests}}\"`",
                shown(&f.run_command)
            );
        }
        if !f.test_id_format.contains("{name}") && !f.test_id_format.contains("{classname}") {
            bail!(
                "`framework.test_id_format` must contain `{{name}}` or `{{classname}}` (the JUnit \
                 attributes a test ID is built from); got `{}`; e.g. `test_id_format = \"{{name}}\"`",
                shown(&f.test_id_format)
            );
        }
        if f.result_file
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            bail!(
                "`framework.result_file` is empty; remove it or name the JUnit XML file `run_command` writes"
            );
        }
        Ok(())
    }

    fn build(&self) -> Result<Box<dyn Framework>> {
        Ok(Box::new(DefaultFramework::new(self)))
    }
}

/// The default framework, built from `[framework] type = "default"`.
#[derive(Debug, Clone)]
pub(super) struct DefaultFramework {
    config: DefaultFrameworkConfig,
}

impl DefaultFramework {
    /// Builds the framework.
    pub(super) fn new(config: &DefaultFrameworkConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }

    fn shell(&self, script: String) -> CommandSpec {
        CommandSpec {
            program: "sh".to_owned(),
            args: vec!["-c".to_owned(), script],
            cwd: self.config.working_dir.clone(),
            env: Vec::new(),
        }
    }
}

impl Framework for DefaultFramework {
    fn name(&self) -> &'static str {
        "default"
    }

    fn discover_command(&self, filters: &str) -> Result<CommandSpec> {
        let script = substitute(&self.config.discover_command, &[("filters", filters)]);
        Ok(self.shell(script))
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
        let mut ids = Vec::new();
        for (index, line) in output.stdout.lines().enumerate() {
            let garbage = |what: &str| {
                anyhow::anyhow!(
                    "`{}` printed garbage on line {} of its output: {what}\n\
                     (hint: `discover_command` must print one test ID per line, as text)",
                    command.display(),
                    index + 1
                )
            };
            // Printable ASCII needs no checks (most IDs; it matters at tens of thousands).
            let plain = line.bytes().all(|b| matches!(b, b' '..=b'~'));
            // Capture decodes lossily, so invalid UTF-8 shows up as U+FFFD.
            if !plain && line.contains('\u{fffd}') {
                return Err(garbage("it is not valid UTF-8"));
            }
            let id = line.trim();
            if let Some(c) = id.chars().find(|c| !plain && c.is_control()) {
                return Err(garbage(&format!(
                    "it contains the control character U+{:04X}",
                    u32::from(c)
                )));
            }
            if id.is_empty() || id.starts_with('#') {
                continue;
            }
            ids.push(id.to_owned());
        }
        let warning = ids
            .is_empty()
            .then(|| "`discover_command` printed no test IDs".to_owned());
        Ok(Discovered {
            ids,
            warning,
            ..Discovered::default()
        })
    }

    fn result_source(&self) -> ResultSource {
        if self.config.run_command.contains("{result_file}") {
            ResultSource::JunitPerBatch
        } else if let Some(fixed) = &self.config.result_file {
            ResultSource::JunitFixed(fixed.clone())
        } else {
            ResultSource::ExitCode
        }
    }

    /// `run_command` with `{tests}` (the IDs, shell-quoted), `{tests_file}` (a file
    /// listing them, one per line) and `{result_file}` filled in, run by `sh`; a long
    /// script is passed as a file (see [`super::shell_batch`]).
    fn batch_command(
        &self,
        tests: &[String],
        paths: &BatchPaths,
        _fail_fast: bool,
    ) -> Result<BatchCommand> {
        let run = &self.config.run_command;
        let quoted_tests = if run.contains("{tests}") {
            shell_words::join(tests)
        } else {
            String::new()
        };
        let mut inputs = Vec::new();
        if run.contains("{tests_file}") {
            inputs.push(InputFile {
                path: paths.tests_file.clone(),
                contents: tests_file_contents(tests),
            });
        }
        let script = substitute(
            run,
            &[
                ("tests", &quoted_tests),
                ("tests_file", &crate::process::quote(&paths.tests_file)),
                ("result_file", &crate::process::quote(&paths.result)),
            ],
        );
        Ok(shell_batch(
            script,
            &paths.script_file,
            self.config.working_dir.clone(),
            inputs,
        ))
    }

    fn junit_key<'a>(&self, name: &'a str, classname: Option<&'a str>) -> Cow<'a, str> {
        if self.config.test_id_format == "{name}" {
            return Cow::Borrowed(name);
        }
        Cow::Owned(substitute(
            &self.config.test_id_format,
            &[("name", name), ("classname", classname.unwrap_or(""))],
        ))
    }

    /// The part of `id` that `{classname}` stands for in `test_id_format` (the shortest
    /// one when the text between `{classname}` and `{name}` occurs more than once);
    /// `None` when the format has no `{classname}` or the ID does not fit it.
    fn junit_classname(&self, id: &str) -> Option<String> {
        classname_in(&self.config.test_id_format, id).map(str::to_owned)
    }

    fn has_stop_flag(&self) -> bool {
        false
    }
}

/// The text `{classname}` stands for in `id` under `format` (see
/// [`DefaultFramework::junit_classname`]).
fn classname_in<'a>(format: &str, id: &'a str) -> Option<&'a str> {
    const CLASSNAME: &str = "{classname}";
    const NAME: &str = "{name}";
    let (before, after) = format.split_once(CLASSNAME)?;
    if after.contains(CLASSNAME) {
        return None;
    }
    let classname = match (before.split_once(NAME), after.split_once(NAME)) {
        // `{classname}` alone: the ID less the text around it.
        (None, None) => id.strip_prefix(before)?.strip_suffix(after)?,
        // `{classname}<sep>{name}`: up to the first separator.
        (None, Some((sep, tail))) if !sep.is_empty() => {
            let middle = id.strip_prefix(before)?.strip_suffix(tail)?;
            middle.split_once(sep)?.0
        }
        // `{name}<sep>{classname}`: after the last separator.
        (Some((lead, sep)), None) if !sep.is_empty() => {
            let middle = id.strip_prefix(lead)?.strip_suffix(after)?;
            middle.rsplit_once(sep)?.1
        }
        _ => return None,
    };
    (!classname.is_empty()).then_some(classname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fw(run_command: &str, result_file: Option<&str>) -> DefaultFramework {
        DefaultFramework::new(&DefaultFrameworkConfig {
            discover_command: "./list {filters} --all".to_owned(),
            run_command: run_command.to_owned(),
            result_file: result_file.map(str::to_owned),
            working_dir: Some(PathBuf::from("sub")),
            test_id_format: "{classname}::{name}".to_owned(),
        })
    }

    fn ok(stdout: &str) -> CapturedOutput {
        CapturedOutput {
            outcome: ExitOutcome::Exited(0),
            stdout: stdout.to_owned(),
            stderr: String::new(),
        }
    }

    #[test]
    fn discover_substitutes_raw_filters_in_working_dir() {
        let spec = fw("run", None).discover_command("-k 'a b'").unwrap();
        assert_eq!(spec.program, "sh");
        assert_eq!(spec.args, ["-c", "./list -k 'a b' --all"]);
        assert_eq!(spec.cwd, Some(PathBuf::from("sub")));
        let spec = fw("run", None).discover_command("").unwrap();
        assert_eq!(spec.args[1], "./list  --all");
    }

    #[test]
    fn parses_lines_skipping_blanks_and_comments() {
        let d = fw("run", None)
            .parse_discovery(
                &CommandSpec::default(),
                &ok("  alpha  \n# a comment\n\n   # indented comment\nbeta one\r\ngamma[x::y]\n"),
            )
            .unwrap();
        assert_eq!(d.ids, ["alpha", "beta one", "gamma[x::y]"]);
        assert_eq!(d.warning, None);
        let d = fw("run", None)
            .parse_discovery(&CommandSpec::default(), &ok("# only\n"))
            .unwrap();
        assert!(d.ids.is_empty() && d.warning.is_some());
    }

    #[test]
    fn garbage_is_an_error_with_the_line_number() {
        let fw = fw("run", None);
        let spec = fw.discover_command("").unwrap();
        let err = fw
            .parse_discovery(&spec, &ok("a\nb\u{0}c\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("printed garbage on line 2") && err.contains("U+0000"),
            "{err}"
        );
        let err = fw
            .parse_discovery(&spec, &ok("ok\n\n\u{fffd}x\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("UTF-8"), "{err}");
        assert!(err.starts_with("`sh -c './list  --all'`"), "{err}");
    }

    #[test]
    fn failure_shows_stderr() {
        let fw = fw("run", None);
        let spec = fw.discover_command("").unwrap();
        let failed = CapturedOutput {
            outcome: ExitOutcome::Exited(3),
            stdout: "partial\n".to_owned(),
            stderr: "lister: boom\n".to_owned(),
        };
        let err = fw.parse_discovery(&spec, &failed).unwrap_err().to_string();
        assert_eq!(
            err,
            "`sh -c './list  --all'` exited with code 3:\nlister: boom"
        );
    }

    #[test]
    fn batch_command_quotes_ids() {
        let fw = fw("runner {tests} --junit {result_file}", None);
        let ids = [
            "plain".to_owned(),
            "with space".to_owned(),
            "it's".to_owned(),
            "{result_file}".to_owned(),
        ];
        let spec = fw
            .batch_command(&ids, &crate::framework::test_paths("/tmp/r 1.xml"), true)
            .unwrap()
            .command;
        assert_eq!(
            spec.args[1],
            "runner plain 'with space' 'it'\\''s' {result_file} --junit '/tmp/r 1.xml'"
        );
        assert_eq!(spec.cwd, Some(PathBuf::from("sub")));
        // The shell gives the runner back exactly the IDs.
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\n' {}", shell_words::join(&ids))])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "plain\nwith space\nit's\n{result_file}\n"
        );
    }

    #[test]
    fn result_source_follows_the_config() {
        assert_eq!(
            fw("r {tests} {result_file}", Some("x.xml")).result_source(),
            ResultSource::JunitPerBatch
        );
        assert_eq!(
            fw("r {tests}", Some("out/junit.xml")).result_source(),
            ResultSource::JunitFixed("out/junit.xml".to_owned())
        );
        assert_eq!(
            fw("r {tests}", None).result_source(),
            ResultSource::ExitCode
        );
        assert!(!fw("r", None).has_stop_flag());
    }

    #[test]
    fn classname_is_read_back_through_the_format() {
        for (format, id, want) in [
            ("{classname}::{name}", "mod::t1", Some("mod")),
            ("{classname}::{name}", "a.b::t::x", Some("a.b")),
            (
                "{classname} {name}",
                "suite.A test with spaces",
                Some("suite.A"),
            ),
            ("[{classname}] {name}!", "[K] t!", Some("K")),
            ("{name} @ {classname}", "t @ x @ pkg.K", Some("pkg.K")),
            ("{classname}", "pkg.K", Some("pkg.K")),
            ("{name}", "t1", None),
            ("{classname}{name}", "Kt", None),
            ("{classname}::{name}", "no-separator", None),
            ("{classname}::{name}", "::t", None),
            ("x{classname}::{name}", "mod::t", None),
        ] {
            let mut fw = fw("r", None);
            fw.config.test_id_format = format.to_owned();
            assert_eq!(fw.junit_classname(id).as_deref(), want, "{format} {id}");
        }
        assert_eq!(fw("r", None).source_file("t"), None);
    }

    #[test]
    fn junit_key_applies_the_format() {
        let fw = fw("r", None);
        assert_eq!(fw.junit_key("t1", Some("mod")), "mod::t1");
        assert_eq!(fw.junit_key("t1", None), "::t1");
        assert_eq!(fw.junit_key("{classname}", Some("c")), "c::{classname}");
        assert_eq!(fw.id_keys("x y"), ["x y"]);
    }
}
