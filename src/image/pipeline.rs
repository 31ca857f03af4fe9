//! The image pipeline: from a repository and a provider to the image sandboxes run.
//!
//! [`prepare`] picks a base commit, looks up its cached base image, builds what is
//! missing through an [`ImageBuilder`] and layers the thin diff on top. It is the same
//! for every provider with a prepare step; providers only implement the two builds.
//! The steps (each progress line goes to stderr):
//!
//! 1. Find the repository ([`RepoState`]). Not a repository: the snapshot path with
//!    the `.offload-image-cache` file as cache ([`super::cache_file`]). Empty
//!    repository, or a builder that takes no thin diffs
//!    ([`PrepareOptions::thin_diff`]): a full build of a working-tree snapshot, no
//!    caching. The steps below are for thin-diff builders only.
//! 2. The base commit: `HEAD` (latest-commit mode) or the nearest checkpoint
//!    ([`find_checkpoint`]); no checkpoint found → full build with a warning.
//! 3. Unless `--no-cache`: fetch the notes from the remote and read the note on the
//!    base. A hit → thin diff on the cached image; success ends here, failure (for
//!    example a cached image that is gone) falls through to a rebuild.
//! 4. Export the base commit's tree, `build_full` it, record the note and push it
//!    (unless `--no-cache`), then the thin diff on the new base image.
//! 5. Any failure of 4 → fall back to a full build of a working-tree snapshot (plus
//!    `post_patch_cmd` on top when set), with a warning. Only a failure of this last
//!    build fails [`prepare`].
//!
//! The thin-diff step: an empty diff with no `post_patch_cmd` returns the base image
//! unchanged without calling the builder; otherwise `build_incremental` runs with the
//! patch (if any).
//!
//! # Self-healing a gone image (the caller's contract)
//!
//! A cached image can disappear (garbage-collected, a deleted directory) while its
//! note remains. If the thin diff needs a build, the builder fails on the missing base
//! and step 3 rebuilds by itself. With an empty diff the cached id is returned without
//! any build, so only the caller can notice, when creating a sandbox from it fails.
//! Then, if [`PreparedImage::from_cache`] is true, the caller runs [`prepare`] once
//! more with [`PrepareOptions::refresh_cache`] set: the cache is not read, the base is
//! rebuilt and the note on the same base commit is replaced (and pushed). If creation
//! fails again, or `from_cache` was false, the error is real.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::base::{CHECKPOINT_WALK_LIMIT, CheckpointSearch, RepoState, find_checkpoint};
use super::cache_file;
use super::diff::thin_diff;
use super::dockerignore::DockerIgnore;
use super::export::{export_commit, snapshot_git_worktree, snapshot_worktree};
use super::git::Git;
use super::notes::{self, SyncOutcome, short};
use crate::output::plural;

/// What a provider must do to take part in the pipeline.
#[async_trait]
pub(crate) trait ImageBuilder: Send + Sync {
    /// Full build from a context directory (an exported commit tree or a working-tree
    /// snapshot). `Ok(None)`: this provider builds no images (the pipeline stops).
    async fn build_full(&self, context_dir: &Path) -> Result<Option<String>>;

    /// An image derived from `base`: `patch` (when given) applied at the repository
    /// root with `offload apply-diff`, then `post_patch_cmd` if configured (with
    /// `OFFLOAD_PATCH_FILE` set when there is a patch). Returns the new image id.
    async fn build_incremental(&self, base: &str, patch: Option<&Path>) -> Result<String>;

    /// Shows one progress line of the pipeline (`[cache] ...`, `[prepare] ...`). The
    /// default prints it on stderr; a provider may hold lines back (for example while
    /// test discovery prints).
    fn progress(&self, line: &str) {
        crate::statusln!("{line}");
    }
}

/// What [`prepare`] needs to know.
#[derive(Debug, Clone)]
pub(crate) struct PrepareOptions {
    /// The directory Offload runs in (the project; inside the repository, if any).
    pub(crate) repo_dir: PathBuf,
    /// The config file path as given on the command line; it keys the cache
    /// ([`notes::config_key`]).
    pub(crate) config_path: PathBuf,
    /// `[checkpoint] build_inputs`; `None` is latest-commit mode.
    pub(crate) build_inputs: Option<Vec<String>>,
    /// `--no-cache`: no note (or cache file) read, write, fetch or push.
    pub(crate) no_cache: bool,
    /// Read nothing from the cache but write the rebuilt image to it (self-healing).
    pub(crate) refresh_cache: bool,
    /// Whether `post_patch_cmd` is configured.
    pub(crate) has_post_patch_cmd: bool,
    /// Whether the run adds files of its own (the cargo test archive) in an incremental
    /// layer on top of its image: then the run's image is always an incremental build,
    /// also on an unchanged tree, and no cache holds that layer (outside git, where the
    /// cache file would hold the finished image, it is not used).
    pub(crate) run_layer: bool,
    /// Whether the builder takes thin diffs (`build_incremental`) on a base image.
    /// Without them, a repository with commits gets a full build of its working tree
    /// on every run, and nothing is cached: a base image in the git-notes cache holds a
    /// commit's tree, which only a thin diff brings up to the working tree.
    pub(crate) thin_diff: bool,
    /// The git remote notes are shared through (`origin`).
    pub(crate) remote: String,
    /// Offload's output directory (relative to `repo_dir`, or absolute): left out of
    /// every image, like a `.dockerignore`d path. It changes on every run (reports,
    /// logs, caches), so in an image it would only make every run a fresh build.
    pub(crate) own_output: Option<PathBuf>,
}

/// The image to run sandboxes from, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedImage {
    /// The image id.
    pub(crate) image_id: String,
    /// The base commit it was built on (`None` for full builds of the working tree).
    base: Option<String>,
    /// Whether it is a cached image (or one derived from it): see the module docs.
    pub(crate) from_cache: bool,
}

/// How the base commit was chosen, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeKind {
    LatestCommit,
    Checkpoint,
}

impl std::fmt::Display for ModeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LatestCommit => "latest-commit",
            Self::Checkpoint => "checkpoint",
        })
    }
}

/// Runs the pipeline; `Ok(None)` when the builder builds no images.
pub(crate) async fn prepare(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
) -> Result<Option<PreparedImage>> {
    let repo_dir = opts.repo_dir.clone();
    let state = blocking(move || RepoState::detect(&Git::new(&repo_dir))).await?;
    match state {
        RepoState::NotARepo => prepare_without_git(builder, opts).await,
        RepoState::Empty { toplevel } => {
            builder.progress(
                "[cache] empty repository (no commits yet): full build of the working tree, \
                 no caching",
            );
            full_build(builder, opts, &toplevel).await
        }
        RepoState::Commit { toplevel, .. } if !opts.thin_diff => {
            builder.progress(
                "[cache] `prepare_command` does not opt into thin diffs: full build of the \
                 working tree, no caching",
            );
            full_build(builder, opts, &toplevel).await
        }
        RepoState::Commit { toplevel, head } => {
            prepare_in_repo(builder, opts, toplevel, head).await
        }
    }
}

/// Steps 2 to 5 of the module docs: a repository with commits and a builder that
/// takes thin diffs.
async fn prepare_in_repo(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
    toplevel: PathBuf,
    head: String,
) -> Result<Option<PreparedImage>> {
    let ignore = load_ignore(&toplevel, opts)?;
    let repo = InRepo {
        builder,
        opts,
        git: Git::new(&toplevel),
        toplevel,
        ignore,
    };
    let Some((kind, base)) = repo.base_commit(head).await else {
        return full_build(builder, opts, &repo.toplevel).await;
    };
    let key = repo.cache_key();
    if let Some(image) = repo.cached_image(key.as_deref(), &base).await? {
        if let Some(prepared) = repo.reuse(kind, &base, &image).await {
            return Ok(Some(prepared));
        }
    } else {
        repo.announce_base_build(kind, &base);
    }
    repo.rebuild(base, key.as_deref()).await
}

/// What the steps of [`prepare_in_repo`] share.
struct InRepo<'a> {
    builder: &'a dyn ImageBuilder,
    opts: &'a PrepareOptions,
    toplevel: PathBuf,
    git: Git,
    ignore: DockerIgnore,
}

impl InRepo<'_> {
    /// Step 2: the base commit and how it was chosen; `None` (after a warning) when
    /// no checkpoint can be found, for a full build instead.
    async fn base_commit(&self, head: String) -> Option<(ModeKind, String)> {
        let Some(inputs) = &self.opts.build_inputs else {
            return Some((ModeKind::LatestCommit, head));
        };
        let (g, inputs) = (self.git.clone(), inputs.clone());
        let search = blocking(move || find_checkpoint(&g, &inputs, CHECKPOINT_WALK_LIMIT)).await;
        match search {
            Ok(CheckpointSearch::Found { sha, distance }) => {
                self.builder.progress(&format!(
                    "[cache] checkpoint: {} ({})",
                    short(&sha),
                    commits_back(distance)
                ));
                Some((ModeKind::Checkpoint, sha))
            }
            Ok(CheckpointSearch::NotFound { walked, .. }) => {
                tracing::warn!(
                    "no checkpoint found in the last {walked} commits (none touched \
                     `checkpoint.build_inputs`); running a full build of the working tree \
                     (hint: commit a change to a build input to start caching)"
                );
                None
            }
            Err(err) => {
                tracing::warn!(
                    "cannot search for the checkpoint commit: {err:#}; running a full build \
                     of the working tree"
                );
                None
            }
        }
    }

    /// The key of this config in the notes; `None` with `--no-cache` or when it cannot
    /// be made (a warning: the run goes on without the cache).
    fn cache_key(&self) -> Option<String> {
        if self.opts.no_cache {
            return None;
        }
        match notes::config_key(&self.opts.config_path, &self.toplevel) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!("image cache off for this run: {err:#}");
                None
            }
        }
    }

    /// Step 3: fetches the notes (with a `key`) and, unless refreshing, looks up the
    /// cached image of `base`.
    async fn cached_image(&self, key: Option<&str>, base: &str) -> Result<Option<String>> {
        let Some(key) = key else {
            return Ok(None);
        };
        let (g, remote) = (self.git.clone(), self.opts.remote.clone());
        let outcome = blocking(move || Ok(notes::fetch(&g, &remote))).await?;
        report_sync("fetch", &self.opts.remote, &outcome);
        if self.opts.refresh_cache {
            return Ok(None);
        }
        let (g, sha) = (self.git.clone(), base.to_owned());
        match blocking(move || notes::read(&g, &sha)).await {
            Ok(note) => Ok(note.and_then(|n| notes::lookup(&n, key))),
            Err(err) => {
                tracing::warn!("{err:#}; building as on a cache miss");
                Ok(None)
            }
        }
    }

    /// Step 3, a hit: the thin diff on the cached `image`; `None` (after a warning) when
    /// it fails, for a rebuild.
    async fn reuse(&self, kind: ModeKind, base: &str, image: &str) -> Option<PreparedImage> {
        self.builder.progress(&format!(
            "[cache] {kind} hit: using cached image `{image}` from {}",
            short(base)
        ));
        match self.thin_diff(base, image).await {
            Ok(image_id) => Some(PreparedImage {
                image_id,
                base: Some(base.to_owned()),
                from_cache: true,
            }),
            Err(err) => {
                tracing::warn!(
                    "thin diff on the cached image `{image}` failed: {err:#}; rebuilding the \
                     base image from {}",
                    short(base)
                );
                None
            }
        }
    }

    /// Says why the base image is about to be built when there was no cached one.
    fn announce_base_build(&self, kind: ModeKind, base: &str) {
        let line = if self.opts.no_cache {
            format!(
                "[cache] --no-cache: building the {kind} base image from {} (no cache lookup)",
                short(base)
            )
        } else if self.opts.refresh_cache {
            format!(
                "[cache] rebuilding the {kind} base image from {} to replace its cache entry",
                short(base)
            )
        } else {
            format!(
                "[cache] {kind} miss: no cached image for {}; building the base image",
                short(base)
            )
        };
        self.builder.progress(&line);
    }

    /// Steps 4 and 5: builds the base image, records it under `key` and builds the
    /// thin diff on it; any failure falls back to a full build of the working tree.
    async fn rebuild(&self, base: String, key: Option<&str>) -> Result<Option<PreparedImage>> {
        let (builder, opts) = (self.builder, self.opts);
        match base_build(builder, &self.git, &base, &self.ignore).await {
            Ok(None) => return Ok(None),
            Ok(Some(base_image)) => {
                if let Some(key) = key {
                    record(builder, &self.git, &base, key, &base_image, &opts.remote).await;
                }
                match self.thin_diff(&base, &base_image).await {
                    Ok(image_id) => {
                        return Ok(Some(PreparedImage {
                            image_id,
                            base: Some(base),
                            from_cache: false,
                        }));
                    }
                    Err(err) => tracing::warn!(
                        "thin diff on the new base image `{base_image}` failed: {err:#}; \
                         falling back to a full build of the working tree"
                    ),
                }
            }
            Err(err) => tracing::warn!(
                "building the base image from {} failed: {err:#}; falling back to a full \
                 build of the working tree",
                short(&base)
            ),
        }
        full_build(builder, opts, &self.toplevel).await
    }

    /// [`thin_diff_step`] on `image`, built from `base`.
    async fn thin_diff(&self, base: &str, image: &str) -> Result<String> {
        thin_diff_step(
            self.builder,
            self.opts,
            &self.toplevel,
            base,
            image,
            &self.ignore,
        )
        .await
    }
}

/// Exports `base` and builds it.
async fn base_build(
    builder: &dyn ImageBuilder,
    git: &Git,
    base: &str,
    ignore: &DockerIgnore,
) -> Result<Option<String>> {
    let export = tempfile::Builder::new()
        .prefix("offload-export-")
        .tempdir()
        .context("cannot create a directory for the tree export")?;
    let (g, sha, dest, ig) = (
        git.clone(),
        base.to_owned(),
        export.path().to_owned(),
        ignore.clone(),
    );
    blocking(move || export_commit(&g, &sha, &dest, &ig)).await?;
    builder.progress(&format!(
        "[prepare] building the base image from {}",
        short(base)
    ));
    let image = builder.build_full(export.path()).await?;
    if let Some(image) = &image {
        builder.progress(&format!("[prepare] base image: `{image}`"));
    }
    Ok(image)
}

/// Writes the note and pushes it; every failure is a warning.
async fn record(
    builder: &dyn ImageBuilder,
    git: &Git,
    base: &str,
    key: &str,
    image: &str,
    remote: &str,
) {
    let (g, sha, k, id) = (
        git.clone(),
        base.to_owned(),
        key.to_owned(),
        image.to_owned(),
    );
    if let Err(err) = blocking(move || notes::write(&g, &sha, &k, &id)).await {
        tracing::warn!("the image is not cached: {err:#}");
        return;
    }
    builder.progress(&format!(
        "[cache] cached `{image}` for `{key}` on {} ({})",
        short(base),
        notes::NOTES_REF
    ));
    let (g, r) = (git.clone(), remote.to_owned());
    match blocking(move || Ok(notes::push(&g, &r))).await {
        Ok(outcome) => report_sync("push", remote, &outcome),
        Err(err) => tracing::warn!("cannot push the image notes: {err:#}"),
    }
}

fn report_sync(what: &str, remote: &str, outcome: &SyncOutcome) {
    match outcome {
        SyncOutcome::Done => tracing::debug!("image notes: {what} with `{remote}` done"),
        SyncOutcome::RemoteHasNoNotes => {
            tracing::info!("`{remote}` has no image notes yet ({})", notes::NOTES_REF)
        }
        // Every run fetches before it pushes: say it once, at the fetch.
        SyncOutcome::NoRemote if what == "push" => {
            tracing::debug!("no git remote `{remote}`: the image notes are not pushed")
        }
        SyncOutcome::NoRemote => tracing::warn!(
            "no git remote `{remote}`: the image cache stays in this clone (add the remote to \
             share it)"
        ),
        SyncOutcome::Failed(msg) => tracing::warn!(
            "cannot {what} the image notes ({what} is best effort; the local cache still \
             works): {msg}"
        ),
    }
}

/// Builds the thin diff of the working tree against `base` on top of `image`.
async fn thin_diff_step(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
    toplevel: &Path,
    base: &str,
    image: &str,
    ignore: &DockerIgnore,
) -> Result<String> {
    let (top, sha, ig) = (toplevel.to_owned(), base.to_owned(), ignore.clone());
    let diff = blocking(move || thin_diff(&top, &sha, &ig)).await?;
    if diff.is_empty() && !opts.has_post_patch_cmd && !opts.run_layer {
        builder.progress(&format!(
            "[prepare] no changes since {}: using `{image}` unchanged",
            short(base)
        ));
        return Ok(image.to_owned());
    }
    let file = if diff.is_empty() {
        let what = if opts.has_post_patch_cmd {
            "running post_patch_cmd"
        } else {
            "adding the run's own files"
        };
        builder.progress(&format!(
            "[prepare] no changes since {}: {what} on `{image}`",
            short(base)
        ));
        None
    } else {
        builder.progress(&format!(
            "[prepare] thin diff: {} changed since {}; building on `{image}`",
            plural(diff.files.len(), "file"),
            short(base)
        ));
        Some(diff.to_temp_file()?)
    };
    let derived = builder
        .build_incremental(image, file.as_ref().map(|f| f.path()))
        .await?;
    builder.progress(&format!("[prepare] image: `{derived}`"));
    Ok(derived)
}

/// A full build of a snapshot of the working tree of the repository whose top level
/// is `toplevel`, then `post_patch_cmd`.
async fn full_build(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
    toplevel: &Path,
) -> Result<Option<PreparedImage>> {
    let (snapshot, _) = snapshot(toplevel, true, opts).await?;
    builder.progress("[prepare] full build of the working tree");
    finish_full_build(builder, opts, snapshot.path()).await
}

async fn finish_full_build(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
    context: &Path,
) -> Result<Option<PreparedImage>> {
    let Some(mut image) = builder
        .build_full(context)
        .await
        .context("the full image build failed")?
    else {
        return Ok(None);
    };
    if opts.has_post_patch_cmd || opts.run_layer {
        builder.progress(&format!(
            "[prepare] {} on `{image}`",
            if opts.has_post_patch_cmd {
                "running post_patch_cmd"
            } else {
                "adding the run's own files"
            }
        ));
        image = builder
            .build_incremental(&image, None)
            .await
            .context("the layer on the fully built image failed")?;
    }
    builder.progress(&format!("[prepare] image: `{image}`"));
    Ok(Some(PreparedImage {
        image_id: image,
        base: None,
        from_cache: false,
    }))
}

/// The `.dockerignore` patterns of the tree at `root`, and Offload's own output
/// directory when it is inside that tree.
fn load_ignore(root: &Path, opts: &PrepareOptions) -> Result<DockerIgnore> {
    let mut ignore = DockerIgnore::load(root)?;
    if let Some(out) = &opts.own_output {
        let out = opts.repo_dir.join(out);
        let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
        let out = out.canonicalize().unwrap_or(out);
        if let Ok(rel) = out.strip_prefix(&root) {
            ignore.exclude(&rel.to_string_lossy());
        }
    }
    Ok(ignore)
}

/// A snapshot of the working tree at `root` (a repository's top level when `in_git`)
/// and its fingerprint ([`super::export`]).
async fn snapshot(
    root: &Path,
    in_git: bool,
    opts: &PrepareOptions,
) -> Result<(tempfile::TempDir, String)> {
    let dir = tempfile::Builder::new()
        .prefix("offload-snapshot-")
        .tempdir()
        .context("cannot create a directory for the working-tree snapshot")?;
    let ignore = load_ignore(root, opts)?;
    let (src, dest) = (root.to_owned(), dir.path().to_owned());
    let fingerprint = blocking(move || {
        if in_git {
            snapshot_git_worktree(&Git::new(&src), &dest, &ignore)
        } else {
            snapshot_worktree(&src, &dest, &ignore)
        }
    })
    .await
    .context("cannot snapshot the working tree")?;
    Ok((dir, fingerprint))
}

/// No git: the `.offload-image-cache` file is the cache.
async fn prepare_without_git(
    builder: &dyn ImageBuilder,
    opts: &PrepareOptions,
) -> Result<Option<PreparedImage>> {
    let root = &opts.repo_dir;
    let (snapshot, fingerprint) = snapshot(root, false, opts).await?;
    let use_file = !opts.no_cache && !opts.run_layer;
    if opts.run_layer && !opts.no_cache {
        builder.progress(&format!(
            "[cache] {} not used: the run adds its own files to the image",
            cache_file::FILE_NAME
        ));
    } else if use_file && !opts.refresh_cache {
        match cache_file::read(root) {
            Ok(Some(entry)) if entry.fingerprint.as_deref() == Some(fingerprint.as_str()) => {
                builder.progress(&format!(
                    "[cache] {} hit: project unchanged, using `{}`",
                    cache_file::FILE_NAME,
                    entry.image_id
                ));
                return Ok(Some(PreparedImage {
                    image_id: entry.image_id,
                    base: None,
                    from_cache: true,
                }));
            }
            Ok(Some(_)) => builder.progress(&format!(
                "[cache] {} is stale (the project changed): full build",
                cache_file::FILE_NAME
            )),
            Ok(None) => builder.progress(&format!(
                "[cache] not a git repository and no {}: full build",
                cache_file::FILE_NAME
            )),
            Err(err) => tracing::warn!("{err:#}; running a full build"),
        }
    } else {
        builder.progress("[cache] not a git repository: full build (cache not read)");
    }
    let prepared = finish_full_build(builder, opts, snapshot.path()).await?;
    if let (true, Some(prepared)) = (use_file, &prepared) {
        match cache_file::write(root, &prepared.image_id, &fingerprint) {
            Ok(()) => builder.progress(&format!(
                "[cache] cached `{}` in {}",
                prepared.image_id,
                cache_file::FILE_NAME
            )),
            Err(err) => tracing::warn!("the image is not cached: {err:#}"),
        }
    }
    Ok(prepared)
}

/// Runs blocking git and file work off the async worker threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .context("a background task of the image pipeline panicked")?
}

/// `1 commit back`, `3 commits back`, `HEAD` for 0.
pub(crate) fn commits_back(distance: usize) -> String {
    match distance {
        0 => "HEAD".to_owned(),
        n => format!("{} back", plural(n, "commit")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::{commit, git, init};
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Builds images as directories under `root`: full = a copy of the context,
    /// incremental = a copy of the base with the patch applied by `git apply`.
    struct FakeBuilder {
        root: tempfile::TempDir,
        next: AtomicUsize,
        full: AtomicUsize,
        incremental: AtomicUsize,
        patches: Mutex<Vec<String>>,
        fail_incremental: bool,
        builds_nothing: bool,
    }

    impl FakeBuilder {
        fn new() -> Self {
            Self {
                root: tempfile::tempdir().unwrap(),
                next: AtomicUsize::new(1),
                full: AtomicUsize::new(0),
                incremental: AtomicUsize::new(0),
                patches: Mutex::new(Vec::new()),
                fail_incremental: false,
                builds_nothing: false,
            }
        }

        fn full(&self) -> usize {
            self.full.load(Ordering::SeqCst)
        }

        fn incremental(&self) -> usize {
            self.incremental.load(Ordering::SeqCst)
        }

        fn dir(&self, image: &str) -> PathBuf {
            self.root.path().join(image)
        }

        fn new_image(&self, kind: &str) -> (String, PathBuf) {
            let id = format!("{kind}-{}", self.next.fetch_add(1, Ordering::SeqCst));
            let dir = self.dir(&id);
            (id, dir)
        }
    }

    fn copy_tree(src: &Path, dest: &Path) {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dest)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[async_trait]
    impl ImageBuilder for FakeBuilder {
        async fn build_full(&self, context_dir: &Path) -> Result<Option<String>> {
            if self.builds_nothing {
                return Ok(None);
            }
            self.full.fetch_add(1, Ordering::SeqCst);
            let (id, dir) = self.new_image("full");
            std::fs::create_dir_all(&dir)?;
            copy_tree(context_dir, &dir);
            Ok(Some(id))
        }

        async fn build_incremental(&self, base: &str, patch: Option<&Path>) -> Result<String> {
            self.incremental.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(!self.fail_incremental, "incremental builds are broken");
            let base_dir = self.dir(base);
            anyhow::ensure!(base_dir.is_dir(), "image `{base}` is gone");
            let (id, dir) = self.new_image("incr");
            std::fs::create_dir_all(&dir)?;
            copy_tree(&base_dir, &dir);
            if let Some(patch) = patch {
                let text = std::fs::read(patch)?;
                self.patches
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&text).into_owned());
                let out = std::process::Command::new("git")
                    .current_dir(&dir)
                    .args(["apply", "--check"])
                    .arg(patch)
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "patch does not apply: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                git(&dir, &["apply", patch.to_str().unwrap()]);
            }
            Ok(id)
        }
    }

    struct Repo {
        _tmp: tempfile::TempDir,
        work: PathBuf,
        remote: PathBuf,
    }

    /// A repository with a bare `origin` it has pushed `main` to.
    fn repo_with_remote() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("origin.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let work = tmp.path().join("work");
        init(&work);
        commit(
            &work,
            &[("app.py", "v = 1\n"), ("Dockerfile", "FROM x\n")],
            "base",
        );
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        git(&work, &["push", "-q", "origin", "main"]);
        Repo {
            _tmp: tmp,
            work,
            remote,
        }
    }

    fn opts(dir: &Path) -> PrepareOptions {
        PrepareOptions {
            repo_dir: dir.to_owned(),
            config_path: PathBuf::from("offload.toml"),
            build_inputs: None,
            no_cache: false,
            refresh_cache: false,
            has_post_patch_cmd: false,
            run_layer: false,
            thin_diff: true,
            remote: "origin".to_owned(),
            own_output: Some(PathBuf::from("test-results")),
        }
    }

    fn note_on(dir: &Path, sha: &str) -> Option<notes::Note> {
        notes::read(&Git::new(dir), sha).unwrap()
    }

    fn remote_notes(remote: &Path) -> String {
        git(remote, &["ls-remote", ".", notes::NOTES_REF])
    }

    #[tokio::test]
    async fn miss_then_hit_with_the_thin_diff_reaching_the_image() {
        let r = repo_with_remote();
        let head = git(&r.work, &["rev-parse", "HEAD"]);
        std::fs::write(r.work.join("app.py"), "v = 2\n").unwrap();
        std::fs::write(r.work.join("new.txt"), "untracked\n").unwrap();
        let b = FakeBuilder::new();

        let first = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 1));
        assert!(!first.from_cache);
        assert_eq!(first.base.as_deref(), Some(head.as_str()));
        let img = b.dir(&first.image_id);
        assert_eq!(
            std::fs::read_to_string(img.join("app.py")).unwrap(),
            "v = 2\n"
        );
        assert_eq!(
            std::fs::read_to_string(img.join("new.txt")).unwrap(),
            "untracked\n"
        );
        // The note records the base image (built from HEAD's tree), and was pushed.
        let note = note_on(&r.work, &head).unwrap();
        let base_image = notes::lookup(&note, "offload.toml").unwrap();
        assert_eq!(
            std::fs::read_to_string(b.dir(&base_image).join("app.py")).unwrap(),
            "v = 1\n"
        );
        assert!(!b.dir(&base_image).join("new.txt").exists());
        assert!(remote_notes(&r.remote).contains(notes::NOTES_REF));
        let patch = b.patches.lock().unwrap()[0].clone();
        assert!(patch.contains("+v = 2"), "{patch}");
        assert!(patch.contains("b/new.txt"), "{patch}");

        // Second run: a hit; only the thin diff is built.
        let second = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 2));
        assert!(second.from_cache);
        let img = b.dir(&second.image_id);
        assert_eq!(
            std::fs::read_to_string(img.join("app.py")).unwrap(),
            "v = 2\n"
        );

        // Clean tree: the cached image itself, no builder call.
        git(&r.work, &["checkout", "-q", "--", "app.py"]);
        std::fs::remove_file(r.work.join("new.txt")).unwrap();
        let third = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 2));
        assert_eq!(third.image_id, base_image);
        assert!(third.from_cache);
    }

    #[tokio::test]
    async fn without_thin_diffs_every_run_is_a_full_build_of_the_working_tree() {
        let r = repo_with_remote();
        std::fs::write(r.work.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(r.work.join("app.py"), "v = 2\n").unwrap();
        std::fs::write(r.work.join("debug.log"), "ignored\n").unwrap();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            thin_diff: false,
            ..opts(&r.work)
        };
        let first = prepare(&b, &o).await.unwrap().unwrap();
        let img = b.dir(&first.image_id);
        assert_eq!(
            std::fs::read_to_string(img.join("app.py")).unwrap(),
            "v = 2\n"
        );
        assert!(img.join(".gitignore").exists());
        assert!(!img.join("debug.log").exists());
        assert!(!img.join(".git").exists());
        assert_eq!(first.base, None);
        assert!(!first.from_cache);

        // Back to the committed state: a new full build, never the image above.
        git(&r.work, &["checkout", "-q", "--", "app.py"]);
        let second = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(b.dir(&second.image_id).join("app.py")).unwrap(),
            "v = 1\n"
        );
        assert_eq!((b.full(), b.incremental()), (2, 0));
        assert_eq!(git(&r.work, &["notes", "--ref=offload-images", "list"]), "");
        assert_eq!(remote_notes(&r.remote), "");
    }

    #[tokio::test]
    async fn a_fresh_clone_hits_the_cache_pushed_by_another() {
        let r = repo_with_remote();
        let b = FakeBuilder::new();
        prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        let clone = r.work.parent().unwrap().join("clone");
        git(
            r.work.parent().unwrap(),
            &[
                "clone",
                "-q",
                r.remote.to_str().unwrap(),
                clone.to_str().unwrap(),
            ],
        );
        let again = prepare(&b, &opts(&clone)).await.unwrap().unwrap();
        assert!(again.from_cache);
        assert_eq!(b.full(), 1);
        // The clone's config gained no refspec or remote.
        let config = std::fs::read_to_string(clone.join(".git/config")).unwrap();
        assert!(!config.contains("notes"), "{config}");
    }

    #[tokio::test]
    async fn no_cache_builds_the_same_way_without_touching_notes() {
        let r = repo_with_remote();
        std::fs::write(r.work.join("app.py"), "v = 3\n").unwrap();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            no_cache: true,
            ..opts(&r.work)
        };
        let first = prepare(&b, &o).await.unwrap().unwrap();
        prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (2, 2));
        assert_eq!(
            std::fs::read_to_string(b.dir(&first.image_id).join("app.py")).unwrap(),
            "v = 3\n"
        );
        assert_eq!(git(&r.work, &["notes", "--ref=offload-images", "list"]), "");
        assert_eq!(remote_notes(&r.remote), "");
        // No fetch happened either: FETCH_HEAD was never written.
        assert!(!r.work.join(".git/FETCH_HEAD").exists());
    }

    #[tokio::test]
    async fn two_configs_share_one_note() {
        let r = repo_with_remote();
        let head = git(&r.work, &["rev-parse", "HEAD"]);
        let b = FakeBuilder::new();
        for config in ["offload.toml", "./ci/offload-gpu.toml"] {
            let o = PrepareOptions {
                config_path: PathBuf::from(config),
                ..opts(&r.work)
            };
            prepare(&b, &o).await.unwrap().unwrap();
        }
        assert_eq!(b.full(), 2);
        let note = note_on(&r.work, &head).unwrap();
        assert!(notes::lookup(&note, "offload.toml").is_some());
        assert!(notes::lookup(&note, "ci/offload-gpu.toml").is_some());
        assert_ne!(
            notes::lookup(&note, "offload.toml"),
            notes::lookup(&note, "ci/offload-gpu.toml")
        );
    }

    #[tokio::test]
    async fn checkpoint_mode_caches_on_the_commit_that_touched_a_build_input() {
        let r = repo_with_remote();
        let ckpt = commit(&r.work, &[("requirements.txt", "flask\n")], "deps");
        commit(&r.work, &[("app.py", "v = 5\n")], "code");
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            build_inputs: Some(vec!["requirements.txt".into(), "Dockerfile".into()]),
            ..opts(&r.work)
        };
        let first = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!(first.base.as_deref(), Some(ckpt.as_str()));
        assert_eq!(
            (b.full(), b.incremental()),
            (1, 1),
            "base + committed change"
        );
        assert_eq!(
            std::fs::read_to_string(b.dir(&first.image_id).join("app.py")).unwrap(),
            "v = 5\n"
        );
        assert!(note_on(&r.work, &ckpt).is_some());

        // More commits not touching the inputs: still a hit on the same checkpoint.
        commit(&r.work, &[("app.py", "v = 6\n")], "more code");
        let second = prepare(&b, &o).await.unwrap().unwrap();
        assert!(second.from_cache);
        assert_eq!(b.full(), 1);

        // A commit touching a build input is a new checkpoint: a miss.
        let new_ckpt = commit(&r.work, &[("Dockerfile", "FROM y\n")], "new base");
        let third = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!(third.base.as_deref(), Some(new_ckpt.as_str()));
        assert_eq!(b.full(), 2);
    }

    #[tokio::test]
    async fn checkpoint_not_found_is_a_full_build() {
        let r = repo_with_remote();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            build_inputs: Some(vec!["never.txt".into()]),
            ..opts(&r.work)
        };
        let p = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!(p.base, None);
        assert_eq!((b.full(), b.incremental()), (1, 0));
        assert_eq!(remote_notes(&r.remote), "");
    }

    #[tokio::test]
    async fn empty_repository_full_build_without_caching() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path());
        std::fs::write(tmp.path().join("a.txt"), "a\n").unwrap();
        let b = FakeBuilder::new();
        let p = prepare(&b, &opts(tmp.path())).await.unwrap().unwrap();
        assert_eq!(p.base, None);
        assert!(!p.from_cache);
        assert!(b.dir(&p.image_id).join("a.txt").exists());
        assert!(!b.dir(&p.image_id).join(".git").exists());
        assert!(!tmp.path().join(cache_file::FILE_NAME).exists());
        prepare(&b, &opts(tmp.path())).await.unwrap().unwrap();
        assert_eq!(b.full(), 2);
    }

    #[tokio::test]
    async fn no_remote_and_rejected_push_are_not_failures() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path());
        let head = commit(tmp.path(), &[("a.txt", "a\n")], "one");
        let b = FakeBuilder::new();
        prepare(&b, &opts(tmp.path())).await.unwrap().unwrap();
        assert!(note_on(tmp.path(), &head).is_some(), "cached locally");
        assert_eq!(git(tmp.path(), &["remote"]), "");

        let r = repo_with_remote();
        let hook = r.remote.join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert_eq!(
            p.base.as_deref(),
            Some(git(&r.work, &["rev-parse", "HEAD"]).as_str())
        );
        assert_eq!(remote_notes(&r.remote), "");
        // The local note is still a hit next time.
        assert!(
            prepare(&b, &opts(&r.work))
                .await
                .unwrap()
                .unwrap()
                .from_cache
        );
    }

    #[tokio::test]
    async fn failing_thin_diffs_fall_back_to_a_full_build() {
        let r = repo_with_remote();
        std::fs::write(r.work.join("app.py"), "v = 9\n").unwrap();
        let mut b = FakeBuilder::new();
        b.fail_incremental = true;
        let p = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert_eq!(p.base, None);
        assert_eq!(b.full(), 2, "base build, then the fallback full build");
        assert_eq!(
            std::fs::read_to_string(b.dir(&p.image_id).join("app.py")).unwrap(),
            "v = 9\n"
        );
        // The base image note survives the thin-diff failure.
        let head = git(&r.work, &["rev-parse", "HEAD"]);
        assert!(note_on(&r.work, &head).is_some());
    }

    #[tokio::test]
    async fn a_gone_cached_image_is_rebuilt_and_the_note_replaced() {
        let r = repo_with_remote();
        let head = git(&r.work, &["rev-parse", "HEAD"]);
        let b = FakeBuilder::new();
        let first = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        std::fs::remove_dir_all(b.dir(&first.image_id)).unwrap();

        // With a diff to build, the pipeline notices by itself.
        std::fs::write(r.work.join("app.py"), "v = 7\n").unwrap();
        let second = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert!(!second.from_cache);
        assert_eq!(b.full(), 2);
        let replaced = notes::lookup(&note_on(&r.work, &head).unwrap(), "offload.toml").unwrap();
        assert_ne!(replaced, first.image_id);

        // With no diff the caller notices (sandbox creation fails) and refreshes.
        git(&r.work, &["checkout", "-q", "--", "app.py"]);
        std::fs::remove_dir_all(b.dir(&replaced)).unwrap();
        let stale = prepare(&b, &opts(&r.work)).await.unwrap().unwrap();
        assert!(stale.from_cache);
        assert_eq!(stale.image_id, replaced);
        let o = PrepareOptions {
            refresh_cache: true,
            ..opts(&r.work)
        };
        let healed = prepare(&b, &o).await.unwrap().unwrap();
        assert!(b.dir(&healed.image_id).is_dir());
        let note = notes::lookup(&note_on(&r.work, &head).unwrap(), "offload.toml").unwrap();
        assert_eq!(note, healed.image_id);
        // And it was pushed: a fresh clone sees the new entry.
        assert!(remote_notes(&r.remote).contains(notes::NOTES_REF));
    }

    #[tokio::test]
    async fn post_patch_cmd_runs_even_without_changes() {
        let r = repo_with_remote();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            has_post_patch_cmd: true,
            ..opts(&r.work)
        };
        prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 1));
        assert!(b.patches.lock().unwrap().is_empty(), "no patch file");
    }

    #[tokio::test]
    async fn a_run_layer_is_built_on_every_image_and_never_cached() {
        let r = repo_with_remote();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            run_layer: true,
            ..opts(&r.work)
        };
        let first = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 1));
        // An unchanged tree on the cached base: a layer again, on the same base.
        let second = prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (1, 2));
        assert!(second.from_cache);
        assert_ne!(second.image_id, first.image_id);
        assert!(b.patches.lock().unwrap().is_empty(), "no patch file");

        // Outside git, every run is a full build with the layer on top.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.txt"), "a\n").unwrap();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            run_layer: true,
            ..opts(tmp.path())
        };
        prepare(&b, &o).await.unwrap().unwrap();
        prepare(&b, &o).await.unwrap().unwrap();
        assert_eq!((b.full(), b.incremental()), (2, 2));
        assert!(!tmp.path().join(cache_file::FILE_NAME).exists());
    }

    #[tokio::test]
    async fn a_builder_without_images_ends_the_pipeline() {
        let r = repo_with_remote();
        let mut b = FakeBuilder::new();
        b.builds_nothing = true;
        assert_eq!(prepare(&b, &opts(&r.work)).await.unwrap(), None);
        assert_eq!(git(&r.work, &["notes", "--ref=offload-images", "list"]), "");
    }

    #[tokio::test]
    async fn offloads_own_output_stays_out_of_the_image_and_out_of_its_cache_key() {
        // Outside git: reports written between two runs do not make a fresh build.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.txt"), "a\n").unwrap();
        std::fs::create_dir_all(dir.join("test-results/logs")).unwrap();
        std::fs::write(dir.join("test-results/junit.xml"), "<first/>").unwrap();
        let b = FakeBuilder::new();
        let first = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        let image = b.dir(&first.image_id);
        assert!(image.join("a.txt").exists());
        assert!(
            !image.join("test-results").exists(),
            "the output dir was copied"
        );
        std::fs::write(dir.join("test-results/junit.xml"), "<second/>").unwrap();
        std::fs::write(dir.join("test-results/logs/batch-0.log"), "x").unwrap();
        let second = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        assert!(second.from_cache, "the reports changed the cache key");
        assert_eq!(b.full(), 1);
        // Without the option (another tool's directory), it is part of the tree.
        let o = PrepareOptions {
            own_output: None,
            no_cache: true,
            ..opts(dir)
        };
        let plain = prepare(&b, &o).await.unwrap().unwrap();
        assert!(
            b.dir(&plain.image_id)
                .join("test-results/junit.xml")
                .exists()
        );

        // In git, an output dir nobody ignored stays out of the working-tree build.
        let r = repo_with_remote();
        std::fs::create_dir_all(r.work.join("test-results")).unwrap();
        std::fs::write(r.work.join("test-results/junit.xml"), "<x/>").unwrap();
        std::fs::write(r.work.join("new.txt"), "untracked\n").unwrap();
        let b = FakeBuilder::new();
        let o = PrepareOptions {
            thin_diff: false,
            ..opts(&r.work)
        };
        let built = prepare(&b, &o).await.unwrap().unwrap();
        let image = b.dir(&built.image_id);
        assert!(image.join("new.txt").exists());
        assert!(
            !image.join("test-results").exists(),
            "the output dir was copied"
        );
    }

    #[tokio::test]
    async fn outside_git_the_cache_file_is_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.txt"), "a\n").unwrap();
        let b = FakeBuilder::new();
        let first = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        assert!(dir.join(cache_file::FILE_NAME).exists());
        let second = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        assert_eq!(second.image_id, first.image_id);
        assert!(second.from_cache);
        assert_eq!(b.full(), 1);
        // A change to the project: rebuilt.
        std::fs::write(dir.join("a.txt"), "changed\n").unwrap();
        let third = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        assert_eq!(b.full(), 2);
        // Deleting the file forces a fresh build.
        std::fs::remove_file(dir.join(cache_file::FILE_NAME)).unwrap();
        let fourth = prepare(&b, &opts(dir)).await.unwrap().unwrap();
        assert_eq!(b.full(), 3);
        assert_ne!(fourth.image_id, third.image_id);
        // --no-cache neither reads nor writes it.
        std::fs::remove_file(dir.join(cache_file::FILE_NAME)).unwrap();
        let o = PrepareOptions {
            no_cache: true,
            ..opts(dir)
        };
        prepare(&b, &o).await.unwrap().unwrap();
        assert!(!dir.join(cache_file::FILE_NAME).exists());
    }
}
