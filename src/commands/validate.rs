//! `offload validate`: check the configuration and print a summary of its settings.
//!
//! The whole loading pipeline runs ([`crate::config::load`]); on success the summary goes
//! to stdout, on failure `Configuration error: <message>` goes to stderr with the full
//! message (file, line and column, field, fix) and the exit code is 1. Warnings (unknown
//! keys) are logged to stderr by the loader.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::config::{self, Config};
use crate::exit;

/// Validates the config at `config` and returns the exit code.
pub(crate) fn run(config: &Path) -> Result<i32> {
    match config::load(config) {
        Ok(loaded) => {
            crate::output::print(&summary(&loaded.config));
            Ok(exit::SUCCESS)
        }
        Err(err) => {
            crate::statusln!("Configuration error: {err:#}");
            Ok(exit::FAILURE)
        }
    }
}

/// The text printed for a valid configuration; groups in file order.
fn summary(config: &Config) -> String {
    let mut out = String::from("Configuration is valid!\n\nSettings:\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "  Max parallel: {}", config.offload.max_parallel);
    let _ = writeln!(out, "  Test timeout: {}s", config.offload.test_timeout_secs);
    let _ = writeln!(out, "  Provider: {}", config.provider.type_name());
    let _ = writeln!(out, "  Framework: {}", config.framework.type_name());
    if let Some(cmd) = &config.offload.sandbox_init_cmd {
        let _ = writeln!(out, "  Sandbox init cmd: {cmd}");
    }
    let report = &config.report;
    if report.junit {
        let _ = writeln!(out, "  Output: {}", report.junit_path().display());
    } else {
        let _ = writeln!(
            out,
            "  Output: {} (no JUnit report)",
            report.output_dir.display()
        );
    }
    out.push_str("\nGroups:\n");
    for (name, group) in &config.groups {
        let _ = write!(
            out,
            "  {name}: retry_count = {}, filters = {:?}",
            group.retry_count, group.filters
        );
        if group.schedule_individual {
            out.push_str(", schedule_individual = true");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(text: &str) -> String {
        let loaded = config::load_str(text, Path::new("offload.toml")).unwrap();
        summary(&loaded.config)
    }

    #[test]
    fn summary_of_a_local_pytest_config() {
        let text = r#"
[offload]
[provider]
type = "local"
[framework]
type = "pytest"
[groups.unit]
retry_count = 2
filters = "-m 'not slow'"
[groups.slow]
filters = "-m slow"
schedule_individual = true
"#;
        assert_eq!(
            summary_of(text),
            "Configuration is valid!\n\
             \n\
             Settings:\n  \
             Max parallel: 10\n  \
             Test timeout: 900s\n  \
             Provider: local\n  \
             Framework: pytest\n  \
             Output: test-results/junit.xml\n\
             \n\
             Groups:\n  \
             unit: retry_count = 2, filters = \"-m 'not slow'\"\n  \
             slow: retry_count = 0, filters = \"-m slow\", schedule_individual = true\n"
        );
    }

    #[test]
    fn summary_shows_init_cmd_and_disabled_junit() {
        let text = r#"
[offload]
max_parallel = 3
test_timeout_secs = 60
sandbox_project_root = "/app"
sandbox_init_cmd = "uv sync"
[provider]
type = "modal"
[framework]
type = "nextest"
[groups.all]
[report]
output_dir = "out"
junit = false
"#;
        let got = summary_of(text);
        assert!(
            got.contains(
                "  Max parallel: 3\n  Test timeout: 60s\n  Provider: modal\n  Framework: cargo\n  \
                 Sandbox init cmd: uv sync\n  Output: out (no JUnit report)\n"
            ),
            "{got}"
        );
        assert!(
            got.ends_with("Groups:\n  all: retry_count = 0, filters = \"\"\n"),
            "{got}"
        );
    }
}
