//! Git patches without git: parse `git diff --binary` output and apply it, all or nothing.
//!
//! [`parse_patch`] turns the bytes of a patch into [`FilePatch`](parse::FilePatch)es
//! (paths checked to stay inside the root, binary blocks decoded); [`apply_patch`]
//! applies them under a directory, checking every hunk of every file before it writes
//! anything. Used by `offload apply-diff`, which ships the thin diff of an image into a
//! sandbox. Producing patches is not done here (git does that).

mod apply;
mod binary;
mod blob;
mod parse;
mod path;
mod text;

pub(crate) use apply::apply_patch;
pub(crate) use parse::parse_patch;
