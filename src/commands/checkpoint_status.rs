//! `offload checkpoint-status`: the image cache state of the current commit.
//!
//! Prints (stdout) which commit the next run would build its base image from, whether
//! an image is cached for it under this config, and what the next run will do:
//!
//! ```text
//! HEAD:               a1b2c3d4
//! Base commit:        f5e6d7c8 (checkpoint, 3 commits back)
//! Cached image:       im-abc123
//! Next run mode:      thin diff (2 files changed since checkpoint)
//! ```
//!
//! A `default` provider whose `prepare_command` does not opt into thin diffs gets a
//! full build of the working tree on every run, and the command says so.
//!
//! The notes are fetched from `--remote` first (best effort: no remote or no network
//! only adds a note on stderr). The command never writes a note, a ref or git config.
//! An empty repository answers with `HEAD: (none: empty repository)`; outside a git
//! repository there is no cache to describe and the command fails (exit 1) with a
//! message saying so. The file counts come from the same thin diff a run would ship
//! (committed, staged, unstaged and untracked changes, minus `.dockerignore`d paths).

use std::path::Path;

use anyhow::{Context, Result};

use crate::exit;
use crate::image::base::{CHECKPOINT_WALK_LIMIT, CheckpointSearch, RepoState, find_checkpoint};
use crate::image::diff::thin_diff;
use crate::image::dockerignore::DockerIgnore;
use crate::image::git::Git;
use crate::image::notes::{self, SyncOutcome, short};
use crate::image::pipeline::commits_back;
use crate::output::plural;
use crate::provider::ProviderConfig;
use crate::provider::Setup;
use crate::provider::default_image::opts_into_thin_diffs;

/// Width of the label column (`Next run mode:` plus padding).
const LABEL_WIDTH: usize = 20;

/// Prints the checkpoint state for the config at `config`.
pub(crate) fn run(config: &Path, remote: &str) -> Result<i32> {
    let loaded = crate::config::load(config)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let state = RepoState::detect(&Git::new(&cwd))?;
    let status = match state {
        RepoState::NotARepo => anyhow::bail!(
            "`{}` is not in a git repository, so there is no checkpoint or image cache to \
             show (hint: the cache lives in git notes on commits; outside a repository \
             `offload run` caches the image id in `.offload-image-cache`)",
            cwd.display()
        ),
        RepoState::Empty { .. } => vec![
            ("HEAD:", "(none: empty repository)".to_owned()),
            (
                "Next run mode:",
                "full build (no commits yet, no caching)".to_owned(),
            ),
        ],
        RepoState::Commit { head, .. } if !takes_thin_diffs(&loaded.config.provider)? => vec![
            ("HEAD:", short(&head).to_owned()),
            (
                "Next run mode:",
                "full build of the working tree (`prepare_command` does not opt into thin \
                 diffs, no caching)"
                    .to_owned(),
            ),
        ],
        RepoState::Commit { toplevel, head } => {
            let git = Git::new(&toplevel);
            match notes::fetch(&git, remote) {
                SyncOutcome::Done | SyncOutcome::RemoteHasNoNotes => {}
                SyncOutcome::NoRemote => crate::statusln!(
                    "note: no git remote `{remote}`: showing the image cache of this clone only"
                ),
                SyncOutcome::Failed(msg) => crate::statusln!(
                    "warning: cannot fetch image notes from `{remote}` (showing the local \
                     cache): {msg}"
                ),
            }
            let config_key = notes::config_key(config, &toplevel)
                .map_err(|err| crate::statusln!("warning: {err:#}"))
                .ok();
            let cx = StatusContext {
                git,
                toplevel,
                head,
                config_key,
                has_post_patch_cmd: loaded.config.offload.post_patch_cmd.is_some(),
            };
            match &loaded.config.checkpoint {
                Some(checkpoint) => checkpoint_status(&cx, &checkpoint.build_inputs)?,
                None => latest_commit_status(&cx)?,
            }
        }
    };
    for (label, value) in status {
        crate::output::print(&format!("{label:<LABEL_WIDTH$}{value}\n"));
    }
    Ok(exit::SUCCESS)
}

/// Whether runs with `provider` go through the cache and thin diffs: a `default`
/// provider only when its `prepare_command` opts in.
fn takes_thin_diffs(provider: &ProviderConfig) -> Result<bool> {
    Ok(match Setup::of(provider)? {
        Setup::Local(_) => true,
        Setup::Commands(p) => opts_into_thin_diffs(&p),
    })
}

struct StatusContext {
    git: Git,
    toplevel: std::path::PathBuf,
    head: String,
    config_key: Option<String>,
    has_post_patch_cmd: bool,
}

impl StatusContext {
    fn cached_image(&self, base: &str) -> Result<Option<String>> {
        let Some(key) = &self.config_key else {
            return Ok(None);
        };
        Ok(notes::read(&self.git, base)?.and_then(|note| notes::lookup(&note, key)))
    }

    /// How many files the thin diff from `base` would change, if it can be computed.
    fn changed_files(&self, base: &str) -> Option<usize> {
        let ignore = DockerIgnore::load(&self.toplevel).ok()?;
        match thin_diff(&self.toplevel, base, &ignore) {
            Ok(diff) => Some(diff.files.len()),
            Err(err) => {
                crate::statusln!("warning: cannot compute the thin diff: {err:#}");
                None
            }
        }
    }
}

type Lines = Vec<(&'static str, String)>;

fn latest_commit_status(cx: &StatusContext) -> Result<Lines> {
    let head8 = short(&cx.head).to_owned();
    let cached = cx.cached_image(&cx.head)?;
    let mode = match &cached {
        None => format!("build base image from {head8}, then thin diff (no cached image for HEAD)"),
        Some(_) => match cx.changed_files(&cx.head) {
            Some(0) if cx.has_post_patch_cmd => {
                "post_patch_cmd on the cached image (no uncommitted changes)".to_owned()
            }
            Some(0) => "cached image as is (no uncommitted changes)".to_owned(),
            _ => "thin diff (uncommitted changes only)".to_owned(),
        },
    };
    Ok(vec![
        ("HEAD:", head8.clone()),
        ("Base commit:", format!("{head8} (latest commit, HEAD)")),
        (
            "Cached image:",
            cached.unwrap_or_else(|| "(none)".to_owned()),
        ),
        ("Next run mode:", mode),
    ])
}

fn checkpoint_status(cx: &StatusContext, build_inputs: &[String]) -> Result<Lines> {
    let head8 = short(&cx.head).to_owned();
    let search = find_checkpoint(&cx.git, build_inputs, CHECKPOINT_WALK_LIMIT)
        .context("cannot search for the checkpoint commit")?;
    let (sha, distance) = match search {
        CheckpointSearch::Found { sha, distance } => (sha, distance),
        CheckpointSearch::NotFound { walked, .. } => {
            return Ok(vec![
                ("HEAD:", head8),
                (
                    "Base commit:",
                    format!("(no checkpoint found in last {})", plural(walked, "commit")),
                ),
                (
                    "Next run mode:",
                    "full build (no checkpoint found)".to_owned(),
                ),
            ]);
        }
    };
    let ckpt8 = short(&sha).to_owned();
    let cached = cx.cached_image(&sha)?;
    let mode = match &cached {
        None => {
            format!("build base image from {ckpt8}, then thin diff (no cached checkpoint image)")
        }
        Some(_) => match cx.changed_files(&sha) {
            Some(0) if cx.has_post_patch_cmd => {
                "post_patch_cmd on the cached image (no changes since checkpoint)".to_owned()
            }
            Some(0) => "cached image as is (no changes since checkpoint)".to_owned(),
            Some(n) => format!("thin diff ({} changed since checkpoint)", plural(n, "file")),
            None => "thin diff".to_owned(),
        },
    };
    Ok(vec![
        ("HEAD:", head8),
        (
            "Base commit:",
            format!("{ckpt8} (checkpoint, {})", commits_back(distance)),
        ),
        (
            "Cached image:",
            cached.unwrap_or_else(|| "(none)".to_owned()),
        ),
        ("Next run mode:", mode),
    ])
}
