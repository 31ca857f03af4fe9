//! Images: the git-notes cache, checkpoints and thin diffs.
//!
//! [`pipeline::prepare`] turns a repository into the image id sandboxes run from,
//! reusing a cached base image when one exists for the base commit and layering a thin
//! diff of the working tree on top. Providers take part through the small
//! [`pipeline::ImageBuilder`] trait. The parts:
//!
//! - [`git`]: running git with hardened environments and clear errors;
//! - [`base`]: repository state and base-commit selection (latest commit, checkpoint);
//! - [`notes`]: the cache in `refs/notes/offload-images` and its best-effort sharing;
//! - [`cache_file`]: `.offload-image-cache`, the cache outside git repositories;
//! - [`dockerignore`]: what never goes into an image;
//! - [`export`]: build contexts (a commit's tree, a working-tree snapshot);
//! - [`diff`]: the thin diff;
//! - [`pipeline`]: the steps, their fallbacks and the self-healing contract.
//!
//! Applying patches (`offload apply-diff`) is not here but in `crate::patch`.

pub(crate) mod base;
mod cache_file;
pub(crate) mod diff;
pub(crate) mod dockerignore;
mod export;
pub(crate) mod git;
pub(crate) mod notes;
pub(crate) mod pipeline;

pub(crate) use cache_file::FILE_NAME as CACHE_FILE_NAME;
pub(crate) use pipeline::{ImageBuilder, PrepareOptions, PreparedImage, prepare};
