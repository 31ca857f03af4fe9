//! Which provider a configuration selects, and building it for a run.
//!
//! [`Setup::of`] reads `[provider]` once: the `local` provider, or the shell commands of
//! a command-driven one (`default` as written, `modal` translated into its generated
//! commands: both share one code path). [`from_config`] then builds the provider from
//! it, with what the image preparation produced. The run command owns the order of the
//! phases; this module only knows how each provider is put together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::Provider;
use super::default::DefaultProvider;
use super::default_image::{CacheRefresh, ImagePlan};
use super::local::{LocalProvider, LocalSandboxSettings};
use super::{DefaultProviderConfig, LocalProviderConfig, ProviderConfig};
use crate::config::Config;
use crate::image::PreparedImage;

/// The provider of a configuration, in the form the run works with.
#[derive(Debug)]
pub(crate) enum Setup<'a> {
    /// Child processes on this machine.
    Local(&'a LocalProviderConfig),
    /// Sandboxes driven by shell commands (`default`, or `modal`'s generated ones).
    Commands(Box<DefaultProviderConfig>),
}

impl<'a> Setup<'a> {
    /// The setup `provider` selects; fails only when Modal's generated commands cannot
    /// be made (see [`super::modal::default_config`]).
    pub(crate) fn of(provider: &'a ProviderConfig) -> Result<Self> {
        provider.section().setup()
    }

    /// The shell commands of a command-driven provider; `None` for `local`.
    pub(crate) fn commands(&self) -> Option<&DefaultProviderConfig> {
        match self {
            Self::Local(_) => None,
            Self::Commands(p) => Some(p),
        }
    }
}

/// Builds the provider of `setup` for a run. `prepared` is what the image preparation
/// produced through `plan`: a cached image gets the self-healing rebuild (interrupted
/// by `cancel`).
pub(crate) fn from_config(
    setup: &Setup<'_>,
    config: &Config,
    prepared: Option<PreparedImage>,
    plan: Option<Arc<ImagePlan>>,
    cwd: &Path,
    cancel: &CancellationToken,
) -> Result<Arc<dyn Provider>> {
    match setup {
        Setup::Local(local) => Ok(Arc::new(LocalProvider::new(local_settings(
            config, local, cwd,
        ))?)),
        Setup::Commands(p) => {
            let root = config.offload.sandbox_root();
            let from_cache = prepared.as_ref().is_some_and(|p| p.from_cache);
            let image_id = prepared.map(|p| p.image_id);
            let mut provider = DefaultProvider::new(p, image_id, root, cwd)?;
            if let (true, Some(plan)) = (from_cache, plan) {
                provider = provider.with_rebuild(Arc::new(CacheRefresh {
                    plan,
                    cancel: cancel.clone(),
                }));
            }
            Ok(Arc::new(provider))
        }
    }
}

/// Where and with which environment local sandboxes run their commands.
pub(crate) fn local_settings(
    config: &Config,
    local: &LocalProviderConfig,
    cwd: &Path,
) -> LocalSandboxSettings {
    let working_dir: PathBuf = config
        .offload
        .working_dir
        .clone()
        .or_else(|| local.working_dir.clone())
        .map_or_else(|| cwd.to_path_buf(), |d| cwd.join(d));
    let root = config
        .offload
        .sandbox_project_root
        .clone()
        .unwrap_or_else(|| working_dir.to_string_lossy().into_owned());
    let mut env: Vec<(String, String)> = local
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("OFFLOAD_ROOT".to_owned(), root));
    LocalSandboxSettings {
        working_dir,
        shell: local.shell.clone(),
        env,
    }
}
