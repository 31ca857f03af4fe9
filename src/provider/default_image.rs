//! The default provider's side of the image pipeline ([`crate::image::ImageBuilder`]).
//!
//! The contract with a user's `prepare_command` (documented in the README): the command
//! runs exactly as written, with nothing appended. What Offload has for one build is in
//! environment variables, each set only when it has a value (and removed from the
//! inherited environment otherwise), and in the matching placeholders the command may
//! name (each one shell word, `''` without a value) — see [`INPUTS`]:
//!
//! - full build: `OFFLOAD_CONTEXT_DIR` holds the tree to build from (an exported commit
//!   tree, or a snapshot of the working tree), with `OFFLOAD_COPY_DIRS` (one
//!   `LOCAL:REMOTE` a line) and `OFFLOAD_SANDBOX_INIT_CMD`;
//! - incremental build (only for a prepare that opts into thin diffs:
//!   [`opts_into_thin_diffs`]): start from `OFFLOAD_BASE_IMAGE`, apply
//!   `OFFLOAD_PATCH_FILE` (when there is one) at `OFFLOAD_SANDBOX_PROJECT_ROOT` with
//!   `"$OFFLOAD_BIN" apply-diff PATCH --project-root ROOT`, add the copy dirs of this
//!   run only (`OFFLOAD_COPY_DIRS`: the cargo test archive), then run
//!   `OFFLOAD_POST_PATCH_CMD`.
//!
//! `OFFLOAD_SANDBOX_PROJECT_ROOT` is set for both, and `OFFLOAD_BIN` (the path of the
//! running `offload`) always. The last non-empty stdout line of the command is the image
//! id. This module fills in the command and its environment; running it is
//! [`super::default::run_prepare`].
//!
//! [`ImagePlan`] owns everything the pipeline needs for one run, so the provider can
//! run it again later ([`CacheRefresh`]) when a cached image turns out to be gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::DefaultProviderConfig;
use super::default::{ImageRebuild, PrepareLog, run_prepare};
use crate::config::Config;
use crate::image::{ImageBuilder, PrepareOptions, PreparedImage};
use crate::process::quote;
use crate::template::substitute;

/// What Offload hands `prepare_command`: `(placeholder, environment variable)`.
const INPUTS: [(&str, &str); 7] = [
    ("context_dir", "OFFLOAD_CONTEXT_DIR"),
    ("base_image", "OFFLOAD_BASE_IMAGE"),
    ("patch_file", "OFFLOAD_PATCH_FILE"),
    ("sandbox_project_root", "OFFLOAD_SANDBOX_PROJECT_ROOT"),
    ("copy_dirs", "OFFLOAD_COPY_DIRS"),
    ("sandbox_init_cmd", "OFFLOAD_SANDBOX_INIT_CMD"),
    ("post_patch_cmd", "OFFLOAD_POST_PATCH_CMD"),
];

/// Whether `config`'s `prepare_command` builds incrementally, so the pipeline may give
/// it a base image and a thin diff: `thin_diff = true`, or the command names
/// `{base_image}` or `{patch_file}`. Any other prepare only ever gets full builds.
pub(crate) fn opts_into_thin_diffs(config: &DefaultProviderConfig) -> bool {
    config.thin_diff
        || config
            .prepare_command
            .as_deref()
            .is_some_and(|c| c.contains("{base_image}") || c.contains("{patch_file}"))
}

/// The values of [`INPUTS`] for one build, in the same order.
type InputValues = [Option<String>; 7];

/// The environment of one prepare run: each variable with its value, or `None` to
/// remove it ([`run_prepare`]).
type PrepareEnv = Vec<(&'static str, Option<String>)>;

/// The image pipeline of one run, for a provider driven by `prepare_command`.
#[derive(Debug, Clone)]
pub(crate) struct ImagePlan {
    /// The provider config (`modal` is translated to this form first).
    pub(crate) config: DefaultProviderConfig,
    /// Its `prepare_command`, as written.
    pub prepare_command: String,
    /// `[offload] sandbox_init_cmd`.
    pub(crate) init_cmd: Option<String>,
    /// `[offload] post_patch_cmd`.
    pub(crate) post_patch_cmd: Option<String>,
    /// The repository root inside the sandbox (where patches apply), if configured.
    pub(crate) sandbox_repo_root: Option<String>,
    /// Offload's directory.
    pub(crate) cwd: PathBuf,
    /// The pipeline options (`refresh_cache` is set by [`CacheRefresh`] only).
    pub(crate) options: PrepareOptions,
    /// Copy dirs of this run only (`LOCAL:REMOTE`), for a thin-diff prepare: handed to
    /// every incremental build in `OFFLOAD_COPY_DIRS`, never to a (cached) base image.
    pub(crate) run_copy_dirs: Vec<String>,
}

impl ImagePlan {
    /// The image pipeline of a run with `config`, whose provider is `p` (in the
    /// command-driven form); `None` when `p` has no `prepare_command` to build images
    /// with. Warns about settings that only apply to thin diffs when the command does not
    /// opt into them.
    pub(crate) fn for_run(
        config: &Config,
        p: &DefaultProviderConfig,
        config_path: &Path,
        cwd: &Path,
        no_cache: bool,
    ) -> Option<Self> {
        let prepare_command = p.prepare_command.clone()?;
        let thin_diff = opts_into_thin_diffs(p);
        if !thin_diff {
            let unused = [
                (config.checkpoint.is_some(), "`[checkpoint]`"),
                (
                    config.offload.post_patch_cmd.is_some(),
                    "`[offload] post_patch_cmd`",
                ),
            ];
            for (_, setting) in unused.iter().filter(|(set, _)| *set) {
                tracing::warn!(
                    "{setting} has no effect: it applies to thin-diff builds, and `prepare_command` \
                     does not opt into them, so every run is a full build of the working tree \
                     (hint: set `thin_diff = true` in `[provider]` once your prepare builds from \
                     OFFLOAD_BASE_IMAGE and OFFLOAD_PATCH_FILE, or name `{{base_image}}` and \
                     `{{patch_file}}` in it)"
                );
            }
        }
        Some(Self {
            config: p.clone(),
            prepare_command,
            init_cmd: config.offload.sandbox_init_cmd.clone(),
            post_patch_cmd: config.offload.post_patch_cmd.clone().filter(|_| thin_diff),
            sandbox_repo_root: config
                .offload
                .sandbox_repo_root
                .clone()
                .or_else(|| config.offload.sandbox_project_root.clone()),
            cwd: cwd.to_path_buf(),
            options: crate::image::PrepareOptions {
                repo_dir: cwd.to_path_buf(),
                config_path: config_path.to_path_buf(),
                build_inputs: config.checkpoint.as_ref().map(|c| c.build_inputs.clone()),
                no_cache,
                refresh_cache: false,
                has_post_patch_cmd: thin_diff && config.offload.post_patch_cmd.is_some(),
                run_layer: false,
                thin_diff,
                remote: "origin".to_owned(),
                own_output: Some(config.report.output_dir.clone()),
            },
            run_copy_dirs: Vec::new(),
        })
    }

    /// The same plan, with one more copy dir (`LOCAL:REMOTE`) that holds files of this
    /// run only: in the image of a full build (which is then not cached), or, for a
    /// thin-diff prepare, in a layer built on top of every image of the run (cached base
    /// images never hold it).
    pub(crate) fn with_run_copy_dir(&self, copy_dir: String) -> Self {
        let mut plan = self.clone();
        if plan.options.thin_diff {
            plan.run_copy_dirs.push(copy_dir);
            plan.options.run_layer = true;
        } else {
            plan.config.copy_dirs.push(copy_dir);
            // Outside git a full build is cached by the project's fingerprint, which
            // does not see this run's files: a later run would get this run's image.
            plan.options.no_cache = true;
        }
        plan
    }

    /// The builder for this plan, with progress going to `log`.
    fn builder<'a>(
        &'a self,
        log: &'a PrepareLog,
        cancel: &'a CancellationToken,
    ) -> DefaultImageBuilder<'a> {
        DefaultImageBuilder {
            config: &self.config,
            prepare_command: &self.prepare_command,
            init_cmd: self.init_cmd.as_deref(),
            post_patch_cmd: self.post_patch_cmd.as_deref(),
            sandbox_repo_root: self.sandbox_repo_root.as_deref(),
            run_copy_dirs: &self.run_copy_dirs,
            cwd: &self.cwd,
            log,
            cancel,
        }
    }

    /// Runs the pipeline ([`crate::image::prepare`]).
    pub(crate) async fn prepare(
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
pub(super) struct CacheRefresh {
    /// The run's plan.
    pub(super) plan: Arc<ImagePlan>,
    /// Interrupts the rebuild.
    pub(super) cancel: CancellationToken,
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
pub(crate) struct DefaultImageBuilder<'a> {
    /// The provider config.
    config: &'a DefaultProviderConfig,
    /// Its `prepare_command`.
    pub prepare_command: &'a str,
    /// `[offload] sandbox_init_cmd`.
    init_cmd: Option<&'a str>,
    /// `[offload] post_patch_cmd`.
    post_patch_cmd: Option<&'a str>,
    /// The repository root inside the sandbox (where patches apply), if configured.
    sandbox_repo_root: Option<&'a str>,
    /// Copy dirs of incremental builds (see [`ImagePlan::run_copy_dirs`]).
    run_copy_dirs: &'a [String],
    /// Offload's directory.
    cwd: &'a Path,
    /// Where progress goes.
    log: &'a PrepareLog,
    /// Interrupts.
    cancel: &'a CancellationToken,
}

impl DefaultImageBuilder<'_> {
    /// The inputs of a full build from `context_dir`.
    fn full_inputs(&self, context_dir: &Path) -> InputValues {
        let copy_dirs =
            (!self.config.copy_dirs.is_empty()).then(|| self.config.copy_dirs.join("\n"));
        [
            Some(context_dir.to_string_lossy().into_owned()),
            None,
            None,
            self.sandbox_repo_root.map(str::to_owned),
            copy_dirs,
            self.init_cmd.map(str::to_owned),
            None,
        ]
    }

    /// The inputs of an incremental build on `base`.
    fn incremental_inputs(&self, base: &str, patch: Option<&Path>) -> InputValues {
        [
            None,
            Some(base.to_owned()),
            patch.map(|p| p.to_string_lossy().into_owned()),
            self.sandbox_repo_root.map(str::to_owned),
            (!self.run_copy_dirs.is_empty()).then(|| self.run_copy_dirs.join("\n")),
            None,
            self.post_patch_cmd.map(str::to_owned),
        ]
    }

    /// The command line (bundled scripts expanded, placeholders filled) and the
    /// environment for one build.
    fn command(&self, values: &InputValues) -> Result<(String, PrepareEnv)> {
        let expanded =
            crate::bundled::expand(self.prepare_command).context("in `prepare_command`")?;
        let quoted: Vec<String> = values
            .iter()
            .map(|v| quote(v.as_deref().unwrap_or_default()).into_owned())
            .collect();
        let pairs: Vec<(&str, &str)> = INPUTS
            .iter()
            .zip(&quoted)
            .map(|((name, _), value)| (*name, value.as_str()))
            .collect();
        let command = substitute(&expanded, &pairs);
        let bin = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("offload"));
        let mut env: PrepareEnv = INPUTS
            .iter()
            .zip(values)
            .map(|((_, var), value)| (*var, value.clone()))
            .collect();
        env.push(("OFFLOAD_BIN", Some(bin.to_string_lossy().into_owned())));
        Ok((command, env))
    }

    /// Runs one build with `values` and returns the image id.
    async fn build(&self, values: &InputValues) -> Result<String> {
        let (command, env) = self.command(values)?;
        run_prepare(self.config, &command, &env, self.cwd, self.log, self.cancel).await
    }
}

#[async_trait]
impl ImageBuilder for DefaultImageBuilder<'_> {
    async fn build_full(&self, context_dir: &Path) -> Result<Option<String>> {
        self.build(&self.full_inputs(context_dir)).await.map(Some)
    }

    async fn build_incremental(&self, base: &str, patch: Option<&Path>) -> Result<String> {
        self.build(&self.incremental_inputs(base, patch)).await
    }

    fn progress(&self, line: &str) {
        let line = line.strip_prefix("[prepare] ").unwrap_or(line);
        self.log.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prepare: &str, thin_diff: bool) -> DefaultProviderConfig {
        let mut c: DefaultProviderConfig =
            toml::from_str("create_command = \"c\"\nexec_command = \"e\"\ndestroy_command = \"d\"")
                .unwrap();
        c.prepare_command = Some(prepare.to_owned());
        c.thin_diff = thin_diff;
        c
    }

    #[test]
    fn opting_in_is_the_flag_or_a_thin_diff_placeholder() {
        assert!(!opts_into_thin_diffs(&config(
            "docker build -q {context_dir}",
            false
        )));
        assert!(opts_into_thin_diffs(&config("docker build -q .", true)));
        assert!(opts_into_thin_diffs(&config("build {base_image}", false)));
        assert!(opts_into_thin_diffs(&config("build {patch_file}", false)));
    }

    #[test]
    fn placeholders_are_one_word_each_and_empty_without_a_value() {
        let c = config(
            "b {context_dir} {base_image} {patch_file} {copy_dirs} {x}",
            false,
        );
        let (log, cancel) = (PrepareLog::default(), CancellationToken::new());
        let builder = DefaultImageBuilder {
            config: &c,
            prepare_command: c.prepare_command.as_deref().unwrap(),
            init_cmd: Some("make it"),
            post_patch_cmd: None,
            sandbox_repo_root: Some("/app"),
            run_copy_dirs: &[],
            cwd: Path::new("."),
            log: &log,
            cancel: &cancel,
        };
        let mut c2 = c.clone();
        c2.copy_dirs = vec!["a b:/x".to_owned(), "c:/y".to_owned()];
        let with_dirs = DefaultImageBuilder {
            config: &c2,
            ..builder
        };
        let (command, env) = with_dirs
            .command(&with_dirs.full_inputs(Path::new("/tmp/ctx dir")))
            .unwrap();
        assert_eq!(
            command, "b '/tmp/ctx dir' '' '' 'a b:/x\nc:/y' {x}",
            "unknown braces stay as written"
        );
        let set: Vec<_> = env
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            set,
            [
                "OFFLOAD_CONTEXT_DIR",
                "OFFLOAD_SANDBOX_PROJECT_ROOT",
                "OFFLOAD_COPY_DIRS",
                "OFFLOAD_SANDBOX_INIT_CMD",
                "OFFLOAD_BIN"
            ]
        );

        let (command, env) = builder
            .command(&builder.incremental_inputs("im-1", Some(Path::new("/p.patch"))))
            .unwrap();
        assert_eq!(command, "b '' im-1 /p.patch '' {x}");
        let unset: Vec<_> = env
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            unset,
            [
                "OFFLOAD_CONTEXT_DIR",
                "OFFLOAD_COPY_DIRS",
                "OFFLOAD_SANDBOX_INIT_CMD",
                "OFFLOAD_POST_PATCH_CMD"
            ]
        );

        // The run's own copy dirs go to incremental builds only.
        let run_dirs = ["/o/archive:.offload-archive".to_owned()];
        let with_run_dirs = DefaultImageBuilder {
            run_copy_dirs: &run_dirs,
            ..builder
        };
        let (command, env) = with_run_dirs
            .command(&with_run_dirs.incremental_inputs("im-1", None))
            .unwrap();
        assert_eq!(command, "b '' im-1 '' /o/archive:.offload-archive {x}");
        assert!(env.contains(&("OFFLOAD_COPY_DIRS", Some(run_dirs[0].clone()))));
        let (command, _) = with_run_dirs
            .command(&with_run_dirs.full_inputs(Path::new("/ctx")))
            .unwrap();
        assert_eq!(command, "b /ctx '' '' '' {x}");
    }

    #[test]
    fn a_run_copy_dir_is_a_layer_of_thin_diff_plans_and_a_copy_dir_of_others() {
        let config = crate::config::load_str(
            "[offload]\nsandbox_project_root = \".\"\n[provider]\ntype = \"default\"\nprepare_command = \"p\"\ncreate_command = \"c\"\n\
             exec_command = \"e {command}\"\ndestroy_command = \"d\"\ncopy_dirs = [\"u:/u\"]\n\
             [framework]\ntype = \"cargo\"\n[groups.all]\n",
            Path::new("offload.toml"),
        )
        .unwrap()
        .config;
        let crate::provider::ProviderConfig::Default(p) = &config.provider else {
            panic!("not the default provider");
        };
        let full = ImagePlan::for_run(&config, p, Path::new("offload.toml"), Path::new("."), false)
            .unwrap()
            .with_run_copy_dir("a:.offload-archive".to_owned());
        assert_eq!(full.config.copy_dirs, ["u:/u", "a:.offload-archive"]);
        assert!(full.run_copy_dirs.is_empty() && !full.options.run_layer);
        assert!(full.options.no_cache);
        let mut thin_config = p.clone();
        thin_config.thin_diff = true;
        let thin = ImagePlan::for_run(
            &config,
            &thin_config,
            Path::new("offload.toml"),
            Path::new("."),
            false,
        )
        .unwrap()
        .with_run_copy_dir("a:.offload-archive".to_owned());
        assert_eq!(thin.config.copy_dirs, ["u:/u"]);
        assert_eq!(thin.run_copy_dirs, ["a:.offload-archive"]);
        assert!(thin.options.run_layer && !thin.options.no_cache);
    }
}
