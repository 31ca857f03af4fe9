//! Rules that span fields, checked after expansion.
//!
//! [`validate`] runs on a [`Config`] whose strings are already expanded. It checks what
//! types alone cannot (ranges, placeholders, paths, combinations of provider and
//! features) and fills derived values: for the `default` and `modal` providers, a missing
//! `sandbox_repo_root` or `sandbox_project_root` is set from the other. Each error names
//! the field and says how to fix it; the loader adds the file name. The first broken rule
//! wins, in a fixed order, so the message is deterministic.

use anyhow::{Result, bail};

use super::schema::{CheckpointConfig, Config, OffloadConfig, ProviderConfig, ReportConfig, shown};

/// The example group shown when a config has none.
const GROUP_EXAMPLE: &str = "[groups.all]\nretry_count = 0\nfilters = \"\"";

/// The longest `test_timeout_secs` and `provider.timeout_secs` accepted: a year. Longer
/// values mean "never" to their authors, and would overflow the clock.
pub(super) const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// Checks `config` and fills the values derived from others.
pub(super) fn validate(config: &mut Config) -> Result<()> {
    check_groups(config)?;
    check_offload(&config.offload)?;
    check_report(&config.report)?;
    config.provider.section().check()?;
    if !config.provider.is_local() {
        fill_sandbox_roots(&mut config.offload, config.provider.type_name())?;
    }
    config.framework.section().check()?;
    if let Some(checkpoint) = &config.checkpoint {
        check_checkpoint(checkpoint, &config.provider)?;
    }
    {
        let secs = config.history.default_duration_secs;
        if !secs.is_finite() || secs < 0.0 {
            bail!(
                "`history.default_duration_secs` is {secs}; it must be a number of seconds \
                 of 0 or more, e.g. `default_duration_secs = 1.0`"
            );
        }
    }
    Ok(())
}

fn check_groups(config: &Config) -> Result<()> {
    if config.groups.is_empty() {
        bail!("no test groups are defined; define at least one group, e.g.:\n{GROUP_EXAMPLE}");
    }
    let splits_filters = config.framework.kind().info().splits_filters;
    for (name, group) in &config.groups {
        if name.trim().is_empty() {
            bail!(
                "a group has an empty name (`[groups.\"{}\"]`); name it, e.g. `[groups.all]`",
                shown(name)
            );
        }
        // Filters a framework splits into arguments can be rejected early; those it
        // substitutes verbatim cannot.
        if splits_filters {
            if let Err(err) = shell_words::split(&group.filters) {
                bail!(
                    "`groups.{}.filters` cannot be split into arguments ({err}): `{}`; \
                     close every quote",
                    shown(name),
                    shown(&group.filters)
                );
            }
        }
    }
    Ok(())
}

fn check_offload(offload: &OffloadConfig) -> Result<()> {
    if offload.max_parallel == 0 {
        bail!(
            "`offload.max_parallel` is 0; it must be at least 1 (the number of sandboxes \
             running at once), e.g. `max_parallel = 10`"
        );
    }
    check_timeout(
        "offload.test_timeout_secs",
        offload.test_timeout_secs,
        "the time one batch may take",
        900,
    )
}

/// A timeout in seconds: from 1 to [`MAX_TIMEOUT_SECS`].
pub(crate) fn check_timeout(field: &str, secs: u64, meaning: &str, example: u64) -> Result<()> {
    let key = field.rsplit('.').next().unwrap_or(field);
    if secs == 0 {
        bail!("`{field}` is 0; it must be at least 1 ({meaning}), e.g. `{key} = {example}`");
    }
    if secs > MAX_TIMEOUT_SECS {
        bail!(
            "`{field}` is {secs}; it must be at most {MAX_TIMEOUT_SECS} (a year; {meaning}), \
             e.g. `{key} = {example}`"
        );
    }
    Ok(())
}

fn check_report(report: &ReportConfig) -> Result<()> {
    if report.output_dir.as_os_str().is_empty() {
        bail!(
            "`report.output_dir` is empty; set it to the directory for logs and the JUnit \
             report, e.g. `output_dir = \"test-results\"`"
        );
    }
    let file = report.junit_file.as_str();
    if file.trim().is_empty() {
        bail!(
            "`report.junit_file` is empty; set it to a file name, e.g. `junit_file = \"junit.xml\"`"
        );
    }
    if file.contains(['/', '\\', '\0']) || file == "." || file == ".." {
        bail!(
            "`report.junit_file` is `{}`, but it must be a plain file name (it is written \
             inside `output_dir`; no `/`, `\\` or NUL), e.g. `junit_file = \"junit.xml\"`",
            shown(&file.escape_debug().to_string())
        );
    }
    // Longer names are refused by the file system (`NAME_MAX`), after the run.
    if file.len() > 255 {
        bail!(
            "`report.junit_file` is {} bytes long (`{}`); a file name has at most 255, e.g. \
             `junit_file = \"junit.xml\"`",
            file.len(),
            shown(file)
        );
    }
    let dir = report.output_dir.to_string_lossy();
    if dir.contains('\0') {
        bail!(
            "`report.output_dir` contains a NUL character (`{}`); no path can hold one, e.g. \
             `output_dir = \"test-results\"`",
            shown(&dir.escape_debug().to_string())
        );
    }
    Ok(())
}

/// Checks `copy_dirs` entries are `LOCAL:REMOTE`.
pub(crate) fn check_copy_dirs(copy_dirs: &[String]) -> Result<()> {
    for entry in copy_dirs {
        let ok = entry
            .split_once(':')
            .is_some_and(|(local, remote)| !local.is_empty() && !remote.is_empty());
        if !ok {
            bail!(
                "`provider.copy_dirs` entry `{}` is not of the form `LOCAL:REMOTE`, e.g. \
                 `\"./data:/app/data\"`",
                shown(entry)
            );
        }
    }
    Ok(())
}

/// Checks `cpu_cores` is a positive number.
pub(crate) fn check_cpu_cores(cores: f64) -> Result<()> {
    if !cores.is_finite() || cores <= 0.0 {
        bail!("`provider.cpu_cores` is {cores}; it must be more than 0, e.g. `cpu_cores = 1.0`");
    }
    Ok(())
}

/// Remote providers need to know where the project lives inside the sandbox; one root
/// is enough, the other is taken from it.
fn fill_sandbox_roots(offload: &mut OffloadConfig, provider: &str) -> Result<()> {
    let non_empty = |root: &Option<String>| root.clone().filter(|r| !r.trim().is_empty());
    let project = non_empty(&offload.sandbox_project_root);
    let repo = non_empty(&offload.sandbox_repo_root);
    match (project, repo) {
        (None, None) => bail!(
            "`[offload]` needs `sandbox_project_root` (or `sandbox_repo_root`) with the `{provider}` \
             provider: the directory of the project inside the sandbox, e.g. \
             `sandbox_project_root = \"/app\"`"
        ),
        (Some(project), None) => offload.sandbox_repo_root = Some(project),
        (None, Some(repo)) => offload.sandbox_project_root = Some(repo),
        (Some(_), Some(_)) => {}
    }
    Ok(())
}

fn check_checkpoint(checkpoint: &CheckpointConfig, provider: &ProviderConfig) -> Result<()> {
    if provider.is_local() {
        bail!(
            "`[checkpoint]` needs a provider that builds images, but the provider is `{}`; \
             remove `[checkpoint]`, or use `type = \"default\"` (with a `prepare_command`) or \
             `type = \"modal\"`",
            provider.type_name()
        );
    }
    if checkpoint.build_inputs.is_empty() {
        bail!(
            "`checkpoint.build_inputs` is empty; list the files whose changes call for a new \
             base image, e.g.:\n[checkpoint]\nbuild_inputs = [\"Dockerfile\", \"requirements.txt\"]"
        );
    }
    let mut seen: Vec<(String, &str)> = Vec::new();
    for input in &checkpoint.build_inputs {
        let normalized = normalize_build_input(input)?;
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == normalized) {
            bail!(
                "`checkpoint.build_inputs` lists `{}` twice (as `{}` and `{}`); remove one",
                shown(&normalized),
                shown(first),
                shown(input)
            );
        }
        seen.push((normalized, input));
    }
    Ok(())
}

/// `./a//b/` -> `a/b`; absolute paths, `..` and empty paths are errors.
fn normalize_build_input(input: &str) -> Result<String> {
    if input.starts_with('/') || input.starts_with('\\') {
        bail!(
            "`checkpoint.build_inputs` entry `{}` is absolute; write it relative to the \
             repository root, e.g. `\"Dockerfile\"`",
            shown(input)
        );
    }
    let mut parts = Vec::new();
    for part in input.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!(
                "`checkpoint.build_inputs` entry `{}` leaves the repository (`..`); write \
                 it relative to the repository root, without `..`",
                shown(input)
            ),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        bail!(
            "`checkpoint.build_inputs` entry `{}` names no file; remove it or name a file",
            shown(input)
        );
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::load::load_str_with_env;

    const BASE: &str = r#"
[offload]
[provider]
type = "local"
[framework]
type = "pytest"
[groups.all]
"#;

    const DEFAULT_PROVIDER: &str = r#"type = "default"
create_command = "mk"
exec_command = "x {sandbox_id} {command}"
destroy_command = "rm {sandbox_id}""#;

    const DEFAULT_FRAMEWORK: &str = r#"type = "default"
discover_command = "ls {filters}"
run_command = "t {tests}"
test_id_format = "{name}""#;

    fn check(text: &str) -> Result<crate::config::Config, String> {
        load_str_with_env(text, Path::new("offload.toml"), &|_| None)
            .map(|l| l.config)
            .map_err(|e| format!("{e:#}"))
    }

    /// `BASE` with `from` replaced by `to`, applied in order.
    fn edit(edits: &[(&str, &str)]) -> String {
        let mut text = BASE.to_owned();
        for (from, to) in edits {
            assert!(text.contains(from), "{from:?} not in {text:?}");
            text = text.replacen(from, to, 1);
        }
        text
    }

    const REMOTE: (&str, &str) = ("[offload]", "[offload]\nsandbox_project_root = \"/app\"");

    #[test]
    fn rule_errors() {
        let cases: Vec<(String, &str)> = vec![
            (
                edit(&[("[groups.all]", "[groups]")]),
                "invalid config file `offload.toml`: no test groups are defined; define at least one group, e.g.:\n[groups.all]\nretry_count = 0\nfilters = \"\"",
            ),
            (
                edit(&[("[groups.all]", "[groups.\"\"]")]),
                "a group has an empty name",
            ),
            (
                edit(&[("[offload]", "[offload]\nmax_parallel = 0")]),
                "`offload.max_parallel` is 0; it must be at least 1",
            ),
            (
                edit(&[("[offload]", "[offload]\ntest_timeout_secs = 0")]),
                "`offload.test_timeout_secs` is 0; it must be at least 1",
            ),
            (
                edit(&[("[offload]", "[offload]\ntest_timeout_secs = 31536001")]),
                "`offload.test_timeout_secs` is 31536001; it must be at most 31536000 (a year;",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[report]\njunit_file = \"a\\u0000\"\n[groups.all]",
                )]),
                "`report.junit_file` is `a\\0`, but it must be a plain file name",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    format!(
                        "[report]\njunit_file = \"{}\"\n[groups.all]",
                        "j".repeat(256)
                    )
                    .as_str(),
                )]),
                "`report.junit_file` is 256 bytes long",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[report]\noutput_dir = \"a\\u0000\"\n[groups.all]",
                )]),
                "`report.output_dir` contains a NUL character (`a\\0`)",
            ),
            (
                edit(&[("[groups.all]", "[groups.all]\n[report]\noutput_dir = \"\"")]),
                "`report.output_dir` is empty; set it",
            ),
            (
                edit(&[("[groups.all]", "[groups.all]\n[report]\njunit_file = \"\"")]),
                "`report.junit_file` is empty",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[groups.all]\n[report]\njunit_file = \"out/junit.xml\"",
                )]),
                "`report.junit_file` is `out/junit.xml`, but it must be a plain file name",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[groups.all]\n[report]\njunit_file = \"..\"",
                )]),
                "must be a plain file name",
            ),
            (
                edit(&[("[groups.all]", "[groups.all]\nfilters = \"-k 'open\"")]),
                "`groups.all.filters` cannot be split into arguments",
            ),
            (
                edit(&[("type = \"local\"", "type = \"local\"\nshell = \"\"")]),
                "`provider.shell` is empty",
            ),
            (
                edit(&[("type = \"local\"", DEFAULT_PROVIDER)]),
                "`[offload]` needs `sandbox_project_root` (or `sandbox_repo_root`) with the `default` provider",
            ),
            (
                edit(&[("type = \"local\"", "type = \"modal\"")]),
                "`[offload]` needs `sandbox_project_root` (or `sandbox_repo_root`) with the `modal` provider",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("create_command = \"mk\"", "create_command = \" \""),
                ]),
                "`provider.create_command` is empty; the `default` provider needs it",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    (
                        "destroy_command = \"rm {sandbox_id}\"",
                        "destroy_command = \"\"",
                    ),
                ]),
                "`provider.destroy_command` is empty",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("x {sandbox_id} {command}", ""),
                ]),
                "`provider.exec_command` is empty",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("x {sandbox_id} {command}", "x {sandbox_id}"),
                ]),
                "`provider.exec_command` must contain `{command}`, where the test command goes; got `x {sandbox_id}`",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("create_command", "timeout_secs = 0\ncreate_command"),
                ]),
                "`provider.timeout_secs` is 0",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("create_command", "prepare_command = \"\"\ncreate_command"),
                ]),
                "`provider.prepare_command` is empty",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("create_command", "copy_dirs = [\"data\"]\ncreate_command"),
                ]),
                "`provider.copy_dirs` entry `data` is not of the form `LOCAL:REMOTE`",
            ),
            (
                edit(&[
                    REMOTE,
                    (
                        "type = \"local\"",
                        "type = \"modal\"\ncopy_dirs = [\"data:\"]",
                    ),
                ]),
                "`provider.copy_dirs` entry `data:` is not of the form `LOCAL:REMOTE`",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", DEFAULT_PROVIDER),
                    ("create_command", "cpu_cores = 0\ncreate_command"),
                ]),
                "`provider.cpu_cores` is 0; it must be more than 0",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\"\ncpu_cores = -1.5"),
                ]),
                "`provider.cpu_cores` is -1.5",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\"\nmemory_gb = 0"),
                ]),
                "`provider.memory_gb` is 0",
            ),
            (
                edit(&[
                    ("type = \"pytest\"", DEFAULT_FRAMEWORK),
                    ("ls {filters}", "ls"),
                ]),
                "`framework.discover_command` must contain `{filters}`, where each group's `filters` go; got `ls`",
            ),
            (
                edit(&[("type = \"pytest\"", DEFAULT_FRAMEWORK), ("t {tests}", "t")]),
                "`framework.run_command` must contain `{tests}` or `{tests_file}`",
            ),
            (
                edit(&[
                    ("type = \"pytest\"", DEFAULT_FRAMEWORK),
                    ("test_id_format = \"{name}\"", "test_id_format = \"id\""),
                ]),
                "`framework.test_id_format` must contain `{name}` or `{classname}`",
            ),
            (
                edit(&[
                    ("type = \"pytest\"", DEFAULT_FRAMEWORK),
                    ("test_id_format", "result_file = \"\"\ntest_id_format"),
                ]),
                "`framework.result_file` is empty",
            ),
            (
                edit(&[("type = \"pytest\"", "type = \"pytest\"\ncommand = \"  \"")]),
                "`framework.command` is empty; remove it to use `python -m pytest`",
            ),
            (
                edit(&[(
                    "type = \"pytest\"",
                    "type = \"pytest\"\ncommand = \"uv 'run\"",
                )]),
                "`framework.command` cannot be split into arguments",
            ),
            (
                edit(&[(
                    "type = \"pytest\"",
                    "type = \"pytest\"\nrun_args = \"-k 'x\"",
                )]),
                "`framework.run_args` cannot be split into arguments",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[groups.all]\n[checkpoint]\nbuild_inputs = [\"Dockerfile\"]",
                )]),
                "`[checkpoint]` needs a provider that builds images, but the provider is `local`",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\""),
                    ("[groups.all]", "[groups.all]\n[checkpoint]"),
                ]),
                "`checkpoint.build_inputs` is empty; list the files",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\""),
                    (
                        "[groups.all]",
                        "[groups.all]\n[checkpoint]\nbuild_inputs = [\"/etc/passwd\"]",
                    ),
                ]),
                "`checkpoint.build_inputs` entry `/etc/passwd` is absolute",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\""),
                    (
                        "[groups.all]",
                        "[groups.all]\n[checkpoint]\nbuild_inputs = [\"a/../../b\"]",
                    ),
                ]),
                "entry `a/../../b` leaves the repository",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\""),
                    (
                        "[groups.all]",
                        "[groups.all]\n[checkpoint]\nbuild_inputs = [\"./\"]",
                    ),
                ]),
                "entry `./` names no file",
            ),
            (
                edit(&[
                    REMOTE,
                    ("type = \"local\"", "type = \"modal\""),
                    (
                        "[groups.all]",
                        "[groups.all]\n[checkpoint]\nbuild_inputs = [\"Dockerfile\", \"uv.lock\", \"./Dockerfile\"]",
                    ),
                ]),
                "`checkpoint.build_inputs` lists `Dockerfile` twice (as `Dockerfile` and `./Dockerfile`)",
            ),
            (
                edit(&[(
                    "[groups.all]",
                    "[groups.all]\n[history]\ndefault_duration_secs = -1.0",
                )]),
                "`history.default_duration_secs` is -1",
            ),
        ];
        for (text, want) in cases {
            match check(&text) {
                Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
                Err(err) => assert!(
                    err.contains(want),
                    "for {text:?}\nwant: {want}\ngot:  {err}"
                ),
            }
        }
    }

    #[test]
    fn valid_variations() {
        let cases = [
            edit(&[("type = \"pytest\"", DEFAULT_FRAMEWORK)]),
            edit(&[
                ("type = \"pytest\"", DEFAULT_FRAMEWORK),
                ("{name}", "{classname}::x"),
            ]),
            // The default framework substitutes filters verbatim, so quotes need not balance.
            edit(&[
                ("type = \"pytest\"", DEFAULT_FRAMEWORK),
                ("[groups.all]", "[groups.all]\nfilters = \"it's\""),
            ]),
            edit(&[
                REMOTE,
                (
                    "type = \"local\"",
                    "type = \"modal\"\ncopy_dirs = [\"./data:/app/data\"]\nmemory_gb = 0.5",
                ),
            ]),
            edit(&[
                REMOTE,
                ("type = \"local\"", "type = \"modal\""),
                (
                    "[groups.all]",
                    "[groups.all]\n[checkpoint]\nbuild_inputs = [\"Dockerfile\", \"./requirements.txt\", \"deps/\"]",
                ),
            ]),
            edit(&[(
                "[groups.all]",
                "[groups.all]\nfilters = \"-m 'not slow' -k \\\"a b\\\"\"",
            )]),
        ];
        for text in cases {
            if let Err(err) = check(&text) {
                panic!("expected {text:?} to be valid, got: {err}");
            }
        }
    }

    #[test]
    fn sandbox_roots_fill_each_other_for_remote_providers() {
        let c = check(&edit(&[REMOTE, ("type = \"local\"", "type = \"modal\"")])).unwrap();
        assert_eq!(c.offload.sandbox_repo_root.as_deref(), Some("/app"));
        let c = check(&edit(&[
            ("[offload]", "[offload]\nsandbox_repo_root = \"/repo\""),
            ("type = \"local\"", DEFAULT_PROVIDER),
        ]))
        .unwrap();
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("/repo"));
        let c = check(&edit(&[
            (
                "[offload]",
                "[offload]\nsandbox_repo_root = \"/repo\"\nsandbox_project_root = \"/repo/sub\"",
            ),
            ("type = \"local\"", "type = \"modal\""),
        ]))
        .unwrap();
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("/repo/sub"));
        assert_eq!(c.offload.sandbox_repo_root.as_deref(), Some("/repo"));
        // Local leaves them as written.
        let c = check(&edit(&[(
            "[offload]",
            "[offload]\nsandbox_project_root = \".\"",
        )]))
        .unwrap();
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("."));
        assert_eq!(c.offload.sandbox_repo_root, None);
    }

    #[test]
    fn build_inputs_normalise() {
        assert_eq!(super::normalize_build_input("./a//b/").unwrap(), "a/b");
        assert_eq!(
            super::normalize_build_input("Dockerfile").unwrap(),
            "Dockerfile"
        );
        assert!(super::normalize_build_input("../x").is_err());
    }
}
