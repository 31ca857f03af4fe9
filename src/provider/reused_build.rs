//! Cargo batches in local sandboxes reuse one build: before the run, the test binaries
//! are built and listed once, where and as the sandboxes run commands, and every batch
//! then runs `cargo nextest run` against that list without cargo (see
//! [`Cargo::reuse_build`]). Remote sandboxes build for themselves.

use std::path::Path;

use anyhow::Result;

use super::ProviderConfig;
use crate::config::{Config, FrameworkConfig};
use crate::framework;
use crate::framework::cargo::{Cargo, ReusedBuild};
use crate::process::{self, CapturedOutput, CommandSpec, ExitOutcome};

/// For cargo batches in local sandboxes: the build checked and listed once for the
/// whole run, where and as the sandboxes run commands, so that batches skip cargo (see
/// [`Cargo::reuse_build`]). `None` for other frameworks and providers, and when
/// listing fails — the batches then build for themselves and report any error.
pub(crate) async fn for_local_cargo(config: &Config, cwd: &Path) -> Option<Cargo> {
    let (FrameworkConfig::Cargo(cargo_config), ProviderConfig::Local(local)) =
        (&config.framework, &config.provider)
    else {
        return None;
    };
    let cargo = Cargo::new(cargo_config);
    let settings = super::local_settings(config, local, cwd);
    let dir = cwd.join(&config.report.output_dir).join("cache");
    if let Err(err) = std::fs::create_dir_all(&dir) {
        tracing::debug!("no reused build: cannot create `{}`: {err}", dir.display());
        return None;
    }
    let [list, metadata] = cargo.reuse_build_commands().map(|spec| CommandSpec {
        cwd: Some(settings.working_dir.clone()),
        env: settings.env.clone(),
        ..spec
    });
    let (list_output, metadata_output) = tokio::join!(
        process::capture(&list, None),
        process::capture(&metadata, None)
    );
    let binaries_metadata = save_stdout(&list, list_output, &dir.join("nextest-binaries.json"))?;
    let cargo_metadata = save_stdout(&metadata, metadata_output, &dir.join("cargo-metadata.json"))?;
    Some(cargo.reuse_build(ReusedBuild {
        binaries_metadata,
        cargo_metadata,
    }))
}

/// Writes the stdout of `spec`, when it succeeded, to `path` and returns the path;
/// otherwise says why at debug level.
fn save_stdout(spec: &CommandSpec, output: Result<CapturedOutput>, path: &Path) -> Option<String> {
    let output = match output {
        Ok(out) if out.outcome == ExitOutcome::Exited(0) => out,
        Ok(out) => {
            tracing::debug!(
                "no reused build: `{}` {}",
                spec.display(),
                framework::outcome_text(out.outcome)
            );
            return None;
        }
        Err(err) => {
            tracing::debug!("no reused build: {err:#}");
            return None;
        }
    };
    match std::fs::write(path, output.stdout) {
        Ok(()) => Some(path.to_string_lossy().into_owned()),
        Err(err) => {
            tracing::debug!("no reused build: cannot write `{}`: {err}", path.display());
            None
        }
    }
}
