//! The default provider's side of the image pipeline ([`crate::image::ImageBuilder`]).
//!
//! The contract with a user's `prepare_command` (documented in the README):
//!
//! - full build: `prepare_command [--copy-dir=L:R]... [--sandbox-init-cmd=CMD]
//!   --context-dir=DIR`, where DIR holds the exported commit tree (or a working-tree
//!   snapshot) to build from;
//! - incremental build: `prepare_command --from-base-image=ID [--patch-file=PATCH]
//!   --sandbox-project-root=ROOT [--post-patch-cmd=CMD]`: start from image ID, apply
//!   PATCH at ROOT with `"$OFFLOAD_BIN" apply-diff PATCH --project-root ROOT`, then run
//!   CMD with `OFFLOAD_PATCH_FILE` set when there is a patch.
//!
//! Every value is shell-quoted; `OFFLOAD_BIN` is the path of the running `offload`. The
//! last non-empty stdout line of either command is the image id. This module builds
//! command lines only; running them is [`super::default::run_prepare`].
//!
//! [`ImagePlan`] owns everything the pipeline needs for one run, so the provider can
//! run it again later ([`CacheRefresh`]) when a cached image turns out to be gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::default::{ImageRebuild, PrepareLog, prepare_command, run_prepare};
use crate::config::DefaultProviderConfig;
use crate::image::{ImageBuilder, PrepareOptions, PreparedImage};
use crate::process::quote;

/// The image pipeline of one run, for a provider driven by `prepare_command`.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The provider config (`modal` is translated to this form first).
    pub config: DefaultProviderConfig,
    /// `[offload] sandbox_init_cmd`.
    pub init_cmd: Option<String>,
    /// `[offload] post_patch_cmd`.
    pub post_patch_cmd: Option<String>,
    /// The repository root inside the sandbox (where patches apply).
    pub sandbox_repo_root: String,
    /// Offload's directory.
    pub cwd: PathBuf,
    /// The pipeline options (`refresh_cache` is set by [`CacheRefresh`] only).
    pub options: PrepareOptions,
}

impl ImagePlan {
    /// The builder for this plan, with progress going to `log`.
    pub fn builder<'a>(
        &'a self,
        log: &'a PrepareLog,
        cancel: &'a CancellationToken,
    ) -> DefaultImageBuilder<'a> {
        DefaultImageBuilder {
            config: &self.config,
            init_cmd: self.init_cmd.as_deref(),
            post_patch_cmd: self.post_patch_cmd.as_deref(),
            sandbox_repo_root: &self.sandbox_repo_root,
            cwd: &self.cwd,
            log,
            cancel,
        }
    }

    /// Runs the pipeline ([`crate::image::prepare`]).
    pub async fn prepare(
        &self,
        log: &PrepareLog,
        cancel: &CancellationToken,
    ) -> Result<Option<PreparedImage>> {
        crate::image::prepare(&self.builder(log, cancel), &self.options).await
    }
}

/// Rebuilds a plan's image without reading the cache and replaces the cache entry:
/// what a provider does when a cached image is gone.
#[derive(Debug)]
pub struct CacheRefresh {
    /// The run's plan.
    pub plan: Arc<ImagePlan>,
    /// Interrupts the rebuild.
    pub cancel: CancellationToken,
}

#[async_trait]
impl ImageRebuild for CacheRefresh {
    async fn rebuild(&self) -> Result<String> {
        let mut plan = (*self.plan).clone();
        plan.options.refresh_cache = true;
        // Not held: the run is under way, progress shows at once.
        let log = PrepareLog::default();
        match plan.prepare(&log, &self.cancel).await? {
            Some(prepared) => Ok(prepared.image_id),
            None => anyhow::bail!("the image rebuild produced no image id"),
        }
    }
}

/// Builds images with the default provider's `prepare_command`.
pub struct DefaultImageBuilder<'a> {
    /// The provider config (must have a `prepare_command` to build anything).
    pub config: &'a DefaultProviderConfig,
    /// `[offload] sandbox_init_cmd`.
    pub init_cmd: Option<&'a str>,
    /// `[offload] post_patch_cmd`.
    pub post_patch_cmd: Option<&'a str>,
    /// The repository root inside the sandbox (where patches apply).
    pub sandbox_repo_root: &'a str,
    /// Offload's directory.
    pub cwd: &'a Path,
    /// Where progress goes.
    pub log: &'a PrepareLog,
    /// Interrupts.
    pub cancel: &'a CancellationToken,
}

impl DefaultImageBuilder<'_> {
    fn env(&self) -> Vec<(String, String)> {
        let bin = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("offload"));
        vec![("OFFLOAD_BIN".to_owned(), bin.to_string_lossy().into_owned())]
    }

    /// The incremental command line, or `None` without a `prepare_command`.
    pub fn incremental_command(&self, base: &str, patch: Option<&Path>) -> Result<Option<String>> {
        let Some(template) = &self.config.prepare_command else {
            return Ok(None);
        };
        let mut command = crate::bundled::expand(template)?;
        command.push_str(&format!(" --from-base-image={}", quote(base)));
        if let Some(patch) = patch {
            command.push_str(&format!(
                " --patch-file={}",
                quote(&patch.to_string_lossy())
            ));
        }
        command.push_str(&format!(
            " --sandbox-project-root={}",
            quote(self.sandbox_repo_root)
        ));
        if let Some(cmd) = self.post_patch_cmd {
            command.push_str(&format!(" --post-patch-cmd={}", quote(cmd)));
        }
        Ok(Some(command))
    }
}

#[async_trait]
impl ImageBuilder for DefaultImageBuilder<'_> {
    async fn build_full(&self, context_dir: &Path) -> Result<Option<String>> {
        let Some(mut command) = prepare_command(self.config, self.init_cmd)? else {
            return Ok(None);
        };
        command.push_str(&format!(
            " --context-dir={}",
            quote(&context_dir.to_string_lossy())
        ));
        let id = run_prepare(
            self.config,
            &command,
            &self.env(),
            self.cwd,
            self.log,
            self.cancel,
        )
        .await?;
        Ok(Some(id))
    }

    async fn build_incremental(&self, base: &str, patch: Option<&Path>) -> Result<String> {
        let Some(command) = self.incremental_command(base, patch)? else {
            anyhow::bail!("an incremental image build needs a `prepare_command` (internal error)");
        };
        run_prepare(
            self.config,
            &command,
            &self.env(),
            self.cwd,
            self.log,
            self.cancel,
        )
        .await
    }

    fn progress(&self, line: &str) {
        let line = line.strip_prefix("[prepare] ").unwrap_or(line);
        self.log.line(line);
    }
}
