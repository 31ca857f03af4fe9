//! The `modal` provider: Modal cloud sandboxes through the bundled `modal_sandbox.py`.
//!
//! This module only translates `[provider] type = "modal"` into the five lifecycle
//! commands of the `default` provider ([`default_config`]), each a call of the bundled
//! script through `uv run @modal_sandbox.py`. Everything else — the image pipeline
//! (cache, thin diffs, `--no-cache`), retries, destroy on every path, the self-healing
//! of a gone cached image — is the `default` provider's own code path, so a `default`
//! provider written with the same `@modal_sandbox.py` commands behaves identically.
//! The script's exit codes (2: bad arguments, 3: credentials) are interpreted there too
//! ([`super::default`]).
//!
//! The commands (`q` is shell quoting, numbers in their shortest form):
//!
//! - prepare: `uv run @modal_sandbox.py prepare[ q(dockerfile)][ --include-cwd]`, with
//!   `thin_diff` on: the script reads everything else (context dir, copy dirs, init
//!   command, base image, patch file, ...) from the `OFFLOAD_*` environment variables
//!   of the prepare contract ([`super::default_image`]);
//! - create: `uv run @modal_sandbox.py create {image_id} --cpu {cpu_cores}[ --memory-gb
//!   GB][ --experimental-options q(json)]`;
//! - exec, download, destroy: `uv run @modal_sandbox.py exec {sandbox_id} {command}`,
//!   `... download {sandbox_id} {paths}`, `... destroy {sandbox_id}`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use serde::Deserialize;

use super::{DefaultProviderConfig, ProviderInfo, ProviderSection, Setup};
use crate::config::{Described, check_copy_dirs, check_cpu_cores};
use crate::process::quote;

/// `[provider] type = "modal"`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModalProviderConfig {
    /// Dockerfile the sandbox image is built from.
    #[serde(default)]
    pub(crate) dockerfile: Option<PathBuf>,
    /// Copy the working tree into the image.
    #[serde(default)]
    pub(crate) include_cwd: bool,
    /// Directories copied into the image, as `"local:remote"`.
    #[serde(default)]
    pub(crate) copy_dirs: Vec<String>,
    /// Environment variables for test processes.
    #[serde(default)]
    pub(crate) env: IndexMap<String, String>,
    /// CPU cores per sandbox.
    #[serde(default = "default_modal_cpu_cores")]
    pub(crate) cpu_cores: f64,
    /// Memory per sandbox, in GiB.
    #[serde(default)]
    pub(crate) memory_gb: Option<f64>,
    /// Extra options passed to Modal as JSON.
    #[serde(default)]
    pub(crate) experimental_options: toml::Table,
}

fn default_modal_cpu_cores() -> f64 {
    0.125
}

impl Described for ModalProviderConfig {
    type Info = ProviderInfo;
    const INFO: ProviderInfo = ProviderInfo {
        name: "modal",
        aliases: &[],
        summary: "Modal cloud sandboxes",
        template: TEMPLATE,
        local: false,
    };
}

/// The commented section `offload init` writes.
const TEMPLATE: &str = "\
# Where batches run: Modal cloud sandboxes (needs `uv` and Modal credentials). The image
# is built from `dockerfile`; include_cwd copies this directory into sandbox_project_root.
[provider]
type = \"modal\"
dockerfile = \"Dockerfile\"
include_cwd = true
# Directories copied into the image, as \"local:remote\".
# copy_dirs = [\"./data:/app/data\"]
# Resources per sandbox.
# cpu_cores = 0.125
# memory_gb = 2.0
";

impl ProviderSection for ModalProviderConfig {
    fn check(&self) -> Result<()> {
        check_copy_dirs(&self.copy_dirs)?;
        check_cpu_cores(self.cpu_cores)?;
        if let Some(gb) = self.memory_gb {
            if !gb.is_finite() || gb <= 0.0 {
                bail!(
                    "`provider.memory_gb` is {gb}; it must be more than 0, e.g. \
                     `memory_gb = 4`, or removed to use Modal's default"
                );
            }
        }
        Ok(())
    }

    fn no_image(&self) -> Option<&'static str> {
        None
    }

    fn env_mut(&mut self) -> &mut IndexMap<String, String> {
        &mut self.env
    }

    fn add_copy_dirs(&mut self, dirs: &[String]) {
        self.copy_dirs.extend(dirs.iter().cloned());
    }

    fn setup(&self) -> Result<Setup<'_>> {
        Ok(Setup::Commands(Box::new(default_config(self)?)))
    }
}

/// Price of one CPU-second of a Modal sandbox in USD (non-preemptible, per core).
/// `--show-estimated-cost` prices the CPU-seconds of `default` and `modal` sandboxes
/// (each sandbox's lifetime × `cpu_cores`) with it.
pub(crate) const USD_PER_CPU_SECOND: f64 = 0.000_039_42;

/// `(USD, CPU-seconds)` of sandboxes that lived `sandbox_seconds` in all, with
/// `cpu_cores` each, at [`USD_PER_CPU_SECOND`].
pub(crate) fn estimated_cost(sandbox_seconds: f64, cpu_cores: f64) -> (f64, f64) {
    let cpu_seconds = sandbox_seconds * cpu_cores;
    (cpu_seconds * USD_PER_CPU_SECOND, cpu_seconds)
}

/// How every generated command calls the bundled script.
const SCRIPT: &str = "uv run @modal_sandbox.py";

/// Bound of each lifecycle command (prepare, create, download, destroy), in seconds.
const COMMAND_TIMEOUT_SECS: u64 = 3600;

/// The `default` provider configuration that drives Modal for `modal`.
///
/// Copy dirs and env are carried over as they are (the caller has already added the
/// `--copy-dir` and `--env` flags); fails only if `experimental_options` cannot be
/// written as JSON.
pub(crate) fn default_config(modal: &ModalProviderConfig) -> Result<DefaultProviderConfig> {
    let mut prepare = format!("{SCRIPT} prepare");
    if let Some(dockerfile) = &modal.dockerfile {
        prepare.push(' ');
        prepare.push_str(&quote(&dockerfile.to_string_lossy()));
    }
    if modal.include_cwd {
        prepare.push_str(" --include-cwd");
    }

    let mut create = format!("{SCRIPT} create {{image_id}} --cpu {{cpu_cores}}");
    if let Some(gb) = modal.memory_gb {
        create.push_str(&format!(" --memory-gb {gb}"));
    }
    if !modal.experimental_options.is_empty() {
        let json = serde_json::to_string(&modal.experimental_options)
            .context("cannot write `[provider] experimental_options` as JSON")?;
        create.push_str(" --experimental-options ");
        create.push_str(&quote(&json));
    }

    Ok(DefaultProviderConfig {
        prepare_command: Some(prepare),
        // The script reads the image pipeline's environment variables, base image and
        // patch file included.
        thin_diff: true,
        create_command: create,
        exec_command: format!("{SCRIPT} exec {{sandbox_id}} {{command}}"),
        destroy_command: format!("{SCRIPT} destroy {{sandbox_id}}"),
        download_command: Some(format!("{SCRIPT} download {{sandbox_id}} {{paths}}")),
        working_dir: None,
        timeout_secs: COMMAND_TIMEOUT_SECS,
        copy_dirs: modal.copy_dirs.clone(),
        env: modal.env.clone(),
        cpu_cores: modal.cpu_cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_lifetime_times_cores_at_the_modal_rate() {
        let (usd, cpu) = estimated_cost(100.0, 0.125);
        assert_eq!(cpu, 12.5);
        assert!((usd - 12.5 * 0.000_039_42).abs() < 1e-12, "{usd}");
        assert_eq!(estimated_cost(0.0, 2.0), (0.0, 0.0));
    }
    use crate::template::substitute;

    fn modal(toml_text: &str) -> ModalProviderConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn minimal_config_gives_the_plain_commands() {
        let c = default_config(&modal("")).unwrap();
        assert_eq!(
            c.prepare_command.as_deref(),
            Some("uv run @modal_sandbox.py prepare")
        );
        assert_eq!(
            c.create_command,
            "uv run @modal_sandbox.py create {image_id} --cpu {cpu_cores}"
        );
        assert_eq!(
            c.exec_command,
            "uv run @modal_sandbox.py exec {sandbox_id} {command}"
        );
        assert_eq!(
            c.download_command.as_deref(),
            Some("uv run @modal_sandbox.py download {sandbox_id} {paths}")
        );
        assert_eq!(
            c.destroy_command,
            "uv run @modal_sandbox.py destroy {sandbox_id}"
        );
        assert_eq!(c.timeout_secs, 3600);
        assert!(c.thin_diff, "the script takes thin diffs");
        assert_eq!(c.cpu_cores, 0.125);
        assert!(c.working_dir.is_none() && c.copy_dirs.is_empty() && c.env.is_empty());
    }

    #[test]
    fn every_field_reaches_its_command_quoted() {
        let c = default_config(&modal(
            r#"
            dockerfile = "docker/Test File"
            include_cwd = true
            copy_dirs = ["./data:/app/data"]
            cpu_cores = 2
            memory_gb = 8
            env = { A = "b" }
            [experimental_options]
            enable_docker = true
            note = "it's"
            "#,
        ))
        .unwrap();
        assert_eq!(
            c.prepare_command.as_deref(),
            Some("uv run @modal_sandbox.py prepare 'docker/Test File' --include-cwd")
        );
        assert_eq!(
            c.create_command,
            "uv run @modal_sandbox.py create {image_id} --cpu {cpu_cores} --memory-gb 8 \
             --experimental-options '{\"enable_docker\":true,\"note\":\"it'\\''s\"}'"
        );
        let words = shell_words::split(&substitute(
            &c.create_command,
            &[("image_id", "im-1"), ("cpu_cores", "2")],
        ))
        .unwrap();
        assert_eq!(
            words[4..],
            [
                "im-1",
                "--cpu",
                "2",
                "--memory-gb",
                "8",
                "--experimental-options",
                r#"{"enable_docker":true,"note":"it's"}"#
            ]
        );
        assert_eq!(c.copy_dirs, ["./data:/app/data"]);
        assert_eq!(c.env.get("A").map(String::as_str), Some("b"));
        assert_eq!(c.cpu_cores, 2.0);

        let c = default_config(&modal("memory_gb = 0.5\ndockerfile = \"Dockerfile\"")).unwrap();
        assert!(c.create_command.ends_with("--memory-gb 0.5"), "{c:?}");
        assert!(
            c.prepare_command.unwrap().ends_with("prepare Dockerfile"),
            "plain names stay unquoted"
        );
    }
}
