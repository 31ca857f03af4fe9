//! `offload init`: write a new configuration file.
//!
//! [`template`] builds a commented `offload.toml` for a provider and a framework; [`run`]
//! writes it to the `-c` path, refusing to overwrite an existing file without `--force`.
//! Every template passes `offload validate`, and the local ones run as written.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::exit;
use crate::framework::FrameworkKind;
use crate::provider::ProviderKind;

/// Options of `offload init`.
#[derive(Debug, Clone)]
pub(crate) struct InitOptions {
    /// Provider.
    pub(crate) provider: ProviderKind,
    /// Framework.
    pub(crate) framework: FrameworkKind,
    /// Overwrite an existing file.
    pub(crate) force: bool,
}

/// Writes a configuration to `path` and returns the exit code.
pub(crate) fn run(path: &Path, options: InitOptions) -> Result<i32> {
    let text = template(options.provider, options.framework, cpu_count());
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if options.force {
        open.create(true).truncate(true);
    } else {
        // `create_new` makes the existence check and the creation one step.
        open.create_new(true);
    }
    let mut file = match open.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            crate::statusln!(
                "`{}` already exists; pass `--force` to overwrite it, or write to another file \
                 with `-c PATH`",
                path.display()
            );
            return Ok(exit::FAILURE);
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot create `{}`", path.display()));
        }
    };
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    let scripts = write_starter_files(options.framework.info().starter_files, options.force)?;

    let mut next = String::from("offload run");
    if path != Path::new("offload.toml") {
        next.push_str(" -c ");
        next.push_str(&crate::process::quote(&path.display().to_string()));
    }
    let mut created = format!("Created {}\n", path.display());
    for script in scripts {
        created.push_str(&format!(
            "Created {script} (a starter: replace it with your own)\n"
        ));
    }
    crate::output::print(&format!(
        "{created}\nEdit the configuration as needed, then run:\n  {next}\n"
    ));
    Ok(exit::SUCCESS)
}

/// Writes the framework's starter `files`, so the generated configuration runs as
/// written, and returns the ones it wrote. A file that already exists is kept (it is
/// the user's own) unless `force` is given.
fn write_starter_files(
    files: &'static [(&'static str, &'static str)],
    force: bool,
) -> Result<Vec<&'static str>> {
    let mut written = Vec::new();
    for &(rel, text) in files {
        let path = Path::new(rel);
        if path.exists() && !force {
            crate::statusln!("kept the existing `{rel}` (pass `--force` to replace it)");
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("cannot write `{rel}`"))?;
        written.push(rel);
    }
    Ok(written)
}

/// The number of CPUs this process may use, 1 when the system cannot tell.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The commented configuration file for `provider` and `framework`. The local provider
/// runs batches on this machine, so its `max_parallel` is `cpus` (the machine's CPU
/// count); the others keep 10 sandboxes, whose CPUs are not this machine's.
pub(crate) fn template(provider: ProviderKind, framework: FrameworkKind, cpus: usize) -> String {
    let local = provider.info().local;
    let mut out = String::from(HEADER);
    out.push_str(OFFLOAD);
    if local {
        out.push_str(&format!(
            "# One sandbox per CPU: `offload init` found {cpus} on this machine.\n\
             max_parallel = {cpus}\n"
        ));
    } else {
        out.push_str("max_parallel = 10\n");
    }
    out.push_str(OFFLOAD_TIMEOUT);
    if !local {
        out.push_str(SANDBOX_ROOT);
    }
    out.push('\n');
    out.push_str(provider.info().template);
    out.push('\n');
    out.push_str(PROVIDER_ENV);
    out.push('\n');
    out.push_str(framework.info().template);
    out.push('\n');
    out.push_str(GROUPS_AND_REPORT);
    out
}

const HEADER: &str = "\
# Offload configuration. Check it with `offload validate`, run the tests with `offload run`.
# Any string value may read the environment: ${VAR} (VAR must be set), ${VAR:-default}
# (used when VAR is unset or empty); write $$ for a literal `$`.

";

const OFFLOAD: &str = "\
# Core settings: how many sandboxes run at once, and how long one batch of tests may
# take (in seconds) before it is killed.
[offload]
";

const OFFLOAD_TIMEOUT: &str = "\
test_timeout_secs = 900
";

const SANDBOX_ROOT: &str = "\
# Where the project lives inside each sandbox; tests run there and see it as OFFLOAD_ROOT.
sandbox_project_root = \"/app\"
# A command run while the image is built, after the project is copied in.
# sandbox_init_cmd = \"pip install -r requirements.txt\"
";

const PROVIDER_ENV: &str = "\
# Environment variables set for every test process.
[provider.env]
# MY_SETTING = \"value\"
";

const GROUPS_AND_REPORT: &str = "\
# Test groups: each group discovers its own tests, with `filters` passed to the discovery
# (for pytest e.g. \"-m 'not slow'\"), and retries a failed test up to `retry_count`
# times; a test that fails and then passes is reported as flaky.
[groups.all]
retry_count = 0
filters = \"\"

# Reports: per-batch logs go to <output_dir>/logs/, the merged JUnit XML report to
# <output_dir>/<junit_file> (unless junit = false).
[report]
output_dir = \"test-results\"
junit = true
junit_file = \"junit.xml\"
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FrameworkConfig, Kind, ProviderConfig, load::load_str_with_env};

    #[test]
    fn every_template_loads_and_validates_without_warnings() {
        for &provider in ProviderKind::all() {
            for &framework in FrameworkKind::all() {
                let text = template(provider, framework, 3);
                let loaded = load_str_with_env(&text, Path::new("offload.toml"), &|_| None)
                    .unwrap_or_else(|e| panic!("{provider:?}/{framework:?}: {e:#}\n{text}"));
                assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
                let c = loaded.config;
                // Each kind's template selects that kind.
                assert_eq!(c.provider.kind(), provider);
                assert_eq!(c.framework.kind(), framework);
                assert_eq!(c.groups.keys().collect::<Vec<_>>(), ["all"]);
                assert_eq!(c.report.junit_path(), Path::new("test-results/junit.xml"));
                assert!(c.report.junit);
                assert!(text.ends_with("junit_file = \"junit.xml\"\n"));
            }
        }
    }

    #[test]
    fn local_templates_run_as_written() {
        let text = template(ProviderKind::Local, FrameworkKind::Pytest, 3);
        let c = crate::config::load_str(&text, Path::new("offload.toml"))
            .unwrap()
            .config;
        let ProviderConfig::Local(local) = &c.provider else {
            panic!("expected local")
        };
        assert_eq!(local.shell, "/bin/sh");
        assert_eq!(c.offload.sandbox_project_root, None);
        let FrameworkConfig::Pytest(pytest) = &c.framework else {
            panic!("expected pytest")
        };
        assert_eq!(pytest.command.as_deref(), Some("python -m pytest"));
        assert_eq!(pytest.paths, [Path::new("tests")]);

        let text = template(ProviderKind::Local, FrameworkKind::Cargo, 3);
        let c = crate::config::load_str(&text, Path::new("offload.toml"))
            .unwrap()
            .config;
        let FrameworkConfig::Cargo(cargo) = &c.framework else {
            panic!("expected cargo")
        };
        assert!(cargo.package.is_none() && cargo.features.is_empty() && !cargo.include_ignored);
    }

    #[test]
    fn local_sandboxes_are_one_per_cpu_and_remote_ones_ten() {
        for &framework in FrameworkKind::all() {
            for (provider, cpus, want) in [
                (ProviderKind::Local, 3, 3),
                (ProviderKind::Local, 64, 64),
                (ProviderKind::Default, 3, 10),
                (ProviderKind::Modal, 64, 10),
            ] {
                let text = template(provider, framework, cpus);
                let c = crate::config::load_str(&text, Path::new("offload.toml"))
                    .unwrap()
                    .config;
                assert_eq!(c.offload.max_parallel, want, "{provider:?}/{framework:?}");
                assert_eq!(c.offload.test_timeout_secs, 900);
                assert_eq!(
                    text.contains(&format!("found {cpus} on this machine")),
                    provider == ProviderKind::Local,
                    "{text}"
                );
            }
        }
        assert!(cpu_count() >= 1);
    }

    #[test]
    fn remote_templates_have_their_lifecycle() {
        let text = template(ProviderKind::Modal, FrameworkKind::Pytest, 3);
        let c = crate::config::load_str(&text, Path::new("offload.toml"))
            .unwrap()
            .config;
        let ProviderConfig::Modal(modal) = &c.provider else {
            panic!("expected modal")
        };
        assert_eq!(modal.dockerfile.as_deref(), Some(Path::new("Dockerfile")));
        assert!(modal.include_cwd);
        assert_eq!(c.offload.sandbox_project_root.as_deref(), Some("/app"));

        let text = template(ProviderKind::Default, FrameworkKind::Default, 3);
        let c = crate::config::load_str(&text, Path::new("offload.toml"))
            .unwrap()
            .config;
        let ProviderConfig::Default(p) = &c.provider else {
            panic!("expected default")
        };
        assert!(p.exec_command.contains("{sandbox_id}") && p.exec_command.contains("{command}"));
        assert!(p.destroy_command.contains("{sandbox_id}"));
        assert!(p.download_command.as_deref().unwrap().contains("{paths}"));
        for step in ["prepare", "create", "exec", "destroy", "download"] {
            assert!(text.contains(&format!(
                "#   {step}_command = \"uv run @modal_sandbox.py {step}"
            )));
        }
        let FrameworkConfig::Default(f) = &c.framework else {
            panic!("expected default framework")
        };
        assert!(f.discover_command.contains("{filters}"));
        assert!(f.run_command.contains("{tests}") && f.run_command.contains("{result_file}"));
    }

    #[test]
    fn every_table_has_a_comment_above_it() {
        for &provider in ProviderKind::all() {
            for &framework in FrameworkKind::all() {
                let text = template(provider, framework, 3);
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines.iter().enumerate() {
                    if line.starts_with('[') {
                        assert!(
                            i > 0 && lines[i - 1].starts_with('#'),
                            "{provider:?}/{framework:?}: no comment above {line}"
                        );
                    }
                }
            }
        }
    }

    fn options(force: bool) -> InitOptions {
        InitOptions {
            provider: ProviderKind::Local,
            framework: FrameworkKind::Cargo,
            force,
        }
    }

    #[test]
    fn run_writes_refuses_to_overwrite_and_forces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offload.toml");
        assert_eq!(run(&path, options(false)).unwrap(), exit::SUCCESS);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            template(ProviderKind::Local, FrameworkKind::Cargo, cpu_count())
        );
        std::fs::write(&path, "mine").unwrap();
        assert_eq!(run(&path, options(false)).unwrap(), exit::FAILURE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
        assert_eq!(run(&path, options(true)).unwrap(), exit::SUCCESS);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("type = \"cargo\"")
        );
    }

    #[test]
    fn run_reports_an_unwritable_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("offload.toml");
        let err = run(&path, options(false)).unwrap_err();
        assert!(format!("{err:#}").contains("cannot create `"), "{err:#}");
    }
}
