//! Cargo batches reuse one build made before the run instead of each running cargo,
//! which checks the build (and builds everything in a fresh sandbox):
//!
//! - in local sandboxes, the test binaries are built and listed once, where and as the
//!   sandboxes run commands, and every batch runs that list ([`for_local_cargo`],
//!   [`Cargo::reuse_build`]);
//! - in remote sandboxes, the tests are built once on this machine into a nextest
//!   archive, which reaches every sandbox through the image as one more copy dir (in a
//!   layer of its own on a thin-diff image), and every batch runs from it
//!   ([`for_remote_cargo`], [`Cargo::run_from_archive`]).
//!
//! Either way, when the build cannot be made, batches build for themselves as before.
//! The framework builds the batch commands; this module makes the build they run.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::ProviderConfig;
use super::default_image::ImagePlan;
use crate::config::{Config, FrameworkConfig};
use crate::framework;
use crate::framework::cargo::{ArchivedBuild, Cargo, ReusedBuild};
use crate::process::{self, CapturedOutput, CommandSpec, ExitOutcome};

/// Where in the sandbox project root the archive's copy dir lands.
const SANDBOX_ARCHIVE_DIR: &str = ".offload-archive";

/// A run's nextest archive for remote sandboxes (see [`for_remote_cargo`]).
#[derive(Debug)]
pub(crate) struct RemoteArchive {
    /// The framework whose batches run from the archive.
    pub(crate) framework: Cargo,
    /// The copy dir (`LOCAL:REMOTE`) that puts the archive into the image.
    pub(crate) copy_dir: String,
}

/// Whether a run of `config` with the image `plan` gets a nextest archive: cargo tests
/// in remote sandboxes with an image to put it in (see
/// [`ImagePlan::with_run_copy_dir`]). Says why not (at info level) for remote cargo
/// runs that do not.
pub(crate) fn archives(config: &Config, plan: Option<&ImagePlan>) -> bool {
    if !matches!(config.framework, FrameworkConfig::Cargo(_)) || config.provider.is_local() {
        return false;
    }
    if plan.is_some() {
        return true;
    }
    tracing::info!(
        "no nextest archive: there is no `prepare_command` to put it into the image; \
         cargo batches build in each sandbox"
    );
    false
}

/// For cargo batches in remote sandboxes (when [`archives`]): the tests built once, on
/// this machine, into a nextest archive under `{output_dir}/cache/nextest-archive`, and
/// the framework whose batches run from it once the copy dir has put it into the image
/// (see [`Cargo::run_from_archive`]). The archive's name is new for each run, so a
/// sandbox never runs an archive of another run. `None`, with a warning that says why,
/// when archiving fails: batches then build for themselves.
pub(crate) async fn for_remote_cargo(config: &Config, cwd: &Path) -> Option<RemoteArchive> {
    let FrameworkConfig::Cargo(cargo_config) = &config.framework else {
        return None;
    };
    let cargo = Cargo::new(cargo_config);
    let dir = cwd
        .join(&config.report.output_dir)
        .join("cache")
        .join("nextest-archive");
    let warn = |why: String| {
        tracing::warn!(
            "cannot archive the tests for the sandboxes, so every cargo batch builds in its \
             sandbox: {why}"
        );
    };
    if dir.to_string_lossy().contains(':') {
        warn(format!(
            "the archive directory `{}` holds a `:`, which ends the local part of a copy dir \
             (hint: choose an `output_dir` without one)",
            dir.display()
        ));
        return None;
    }
    // The directory goes to the image whole: only this run's archive may be in it. It
    // holds nothing but the archives Offload wrote.
    if let Err(err) = clear_dir(&dir) {
        warn(format!("cannot empty `{}`: {err}", dir.display()));
        return None;
    }
    // Batches remap the workspace root to their own directory, the sandbox project
    // root: that is right only when Offload runs at the workspace root.
    match workspace_root(&cargo, cwd).await {
        Ok(root) if same_dir(&root, cwd) => {}
        Ok(root) => {
            warn(format!(
                "the cargo workspace root `{}` is not Offload's directory `{}`, which \
                 batches run in (hint: run Offload from the workspace root)",
                root.display(),
                cwd.display()
            ));
            return None;
        }
        Err(why) => {
            warn(why);
            return None;
        }
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("tests-{stamp}-{}.tar.zst", std::process::id());
    let local_file = dir.join(&name);
    let spec = CommandSpec {
        cwd: Some(cwd.to_path_buf()),
        ..cargo.archive_command(&local_file.to_string_lossy())
    };
    let started = std::time::Instant::now();
    match process::capture(&spec, None).await {
        Ok(out) if out.outcome == ExitOutcome::Exited(0) => {
            let size = std::fs::metadata(&local_file).map_or(0, |m| m.len());
            tracing::info!(
                "archived the tests for the sandboxes in {:.1} s: `{}`, {:.1} MB",
                started.elapsed().as_secs_f64(),
                local_file.display(),
                size as f64 / 1e6
            );
        }
        Ok(out) => {
            warn(format!(
                "`{}` {}:\n{}",
                spec.display(),
                framework::outcome_text(out.outcome),
                framework::failure_output(&out).trim_end()
            ));
            return None;
        }
        Err(err) => {
            warn(format!("{err:#}"));
            return None;
        }
    }
    let platform = platform(cwd).await;
    let root = config.offload.sandbox_root();
    Some(RemoteArchive {
        framework: cargo.run_from_archive(ArchivedBuild {
            archive_file: format!("{SANDBOX_ARCHIVE_DIR}/{name}"),
            platform,
        }),
        copy_dir: format!("{}:{}", dir.display(), sandbox_dir(root)),
    })
}

/// The directory of the cargo workspace Offload runs in, or why it cannot be told.
async fn workspace_root(cargo: &Cargo, cwd: &Path) -> Result<PathBuf, String> {
    let spec = CommandSpec {
        cwd: Some(cwd.to_path_buf()),
        ..cargo.workspace_manifest_command()
    };
    let out = process::capture(&spec, None)
        .await
        .map_err(|err| format!("{err:#}"))?;
    if out.outcome != ExitOutcome::Exited(0) {
        return Err(format!(
            "`{}` {}:\n{}",
            spec.display(),
            framework::outcome_text(out.outcome),
            framework::failure_output(&out).trim_end()
        ));
    }
    let manifest = PathBuf::from(out.stdout.trim());
    match manifest.parent() {
        Some(dir) if manifest.is_absolute() => Ok(dir.to_path_buf()),
        _ => Err(format!(
            "`{}` printed `{}`, not the path of a `Cargo.toml`",
            spec.display(),
            manifest.display()
        )),
    }
}

/// Whether `a` and `b` are the same directory (through symbolic links too).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `uname -sm` of this machine (`Linux x86_64`), which the sandboxes must share to run
/// what it builds; `None` (no check) when it cannot be told.
async fn platform(cwd: &Path) -> Option<String> {
    let spec = CommandSpec {
        program: "uname".to_owned(),
        args: vec!["-sm".to_owned()],
        cwd: Some(cwd.to_path_buf()),
        env: Vec::new(),
    };
    match process::capture(&spec, None).await {
        Ok(out) if out.outcome == ExitOutcome::Exited(0) && !out.stdout.trim().is_empty() => {
            Some(out.stdout.trim().to_owned())
        }
        other => {
            tracing::debug!("cannot tell this machine's platform with `uname -sm`: {other:?}");
            None
        }
    }
}

/// The archive's directory inside the sandbox: [`SANDBOX_ARCHIVE_DIR`] in `root`.
fn sandbox_dir(root: &str) -> String {
    match root.trim_end_matches('/') {
        "" if root.starts_with('/') => format!("/{SANDBOX_ARCHIVE_DIR}"),
        "" | "." => SANDBOX_ARCHIVE_DIR.to_owned(),
        root => format!("{root}/{SANDBOX_ARCHIVE_DIR}"),
    }
}

/// Creates `dir`, or removes the archives in it.
fn clear_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tests-") && n.ends_with(".tar.zst"));
        if ours {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_lands_in_the_sandbox_project_root() {
        assert_eq!(sandbox_dir("."), ".offload-archive");
        assert_eq!(sandbox_dir("./"), ".offload-archive");
        assert_eq!(sandbox_dir("/app"), "/app/.offload-archive");
        assert_eq!(sandbox_dir("/app/"), "/app/.offload-archive");
        assert_eq!(sandbox_dir("/"), "/.offload-archive");
        assert_eq!(sandbox_dir("work/repo"), "work/repo/.offload-archive");
    }

    #[test]
    fn directories_are_compared_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert!(same_dir(&real, &dir.path().join("link")));
        assert!(same_dir(&real, &real.join("../real")));
        assert!(!same_dir(&real, dir.path()));
    }

    #[test]
    fn clearing_removes_only_archives() {
        let dir = tempfile::tempdir().unwrap();
        let archives = dir.path().join("a");
        clear_dir(&archives).unwrap();
        std::fs::write(archives.join("tests-1-2.tar.zst"), "").unwrap();
        std::fs::write(archives.join("notes.txt"), "").unwrap();
        clear_dir(&archives).unwrap();
        let left: Vec<_> = std::fs::read_dir(&archives)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"]);
    }
}
