//! Records the commit and the date of the build for `offload --version`
//! (`OFFLOAD_COMMIT`, `OFFLOAD_BUILD_DATE`).
//!
//! The commit is `git rev-parse --short HEAD` of the repository this package is the root
//! of; a package built from crates.io or a tarball has no such repository, and falls back
//! to the commit cargo recorded in `.cargo_vcs_info.json`, then to `unknown`. Nothing
//! here can fail the build.
//!
//! The script re-runs only when the commit can change (`HEAD` and the branch it points
//! to), not on every edit of the sources, so the date is that of the build that first
//! saw the commit. `SOURCE_DATE_EPOCH` sets the date for reproducible builds.

// A build script talks to cargo through `cargo:` lines on stdout; the crate's rule
// against `println!` (terminal output goes through `output::print`) does not apply.
#![allow(clippy::disallowed_macros)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "src/date.rs"]
mod date;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git_commit(&root)
        .or_else(|| vcs_info_commit(&root))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=OFFLOAD_COMMIT={commit}");
    println!("cargo:rustc-env=OFFLOAD_BUILD_DATE={}", build_date());
}

/// The short commit of `HEAD` when `root` is the top of a git work tree (a plain
/// checkout or a `git worktree`), with the files that move it registered for re-runs.
fn git_commit(root: &Path) -> Option<String> {
    // A package unpacked inside some other repository must not take that one's commit.
    if !root.join(".git").exists() {
        return None;
    }
    let head = git(root, &["rev-parse", "--short", "HEAD"])?;
    for file in ["HEAD", "packed-refs"] {
        watch(root, file);
    }
    // The branch `HEAD` points to (none when detached).
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        watch(root, &branch);
    }
    Some(head)
}

/// Registers the git file `name` (resolved like git does, so `HEAD` of a worktree and a
/// branch in the common directory are both found) for re-runs, if it exists: cargo
/// re-runs a script on every build while a file it watches is missing.
fn watch(root: &Path, name: &str) {
    let Some(path) = git(root, &["rev-parse", "--git-path", name]) else {
        return;
    };
    let path = root.join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed stdout of a successful `git args` in `root`; `None` when git is missing
/// or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The commit `cargo package` recorded (`"sha1": "<40 hex>"`), shortened.
fn vcs_info_commit(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".cargo_vcs_info.json")).ok()?;
    let after = text.split_once("\"sha1\"")?.1;
    let value = after.split('"').nth(1)?;
    let valid = value.len() >= 7 && value.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| value[..7].to_owned())
}

/// The UTC date, `YYYY-MM-DD`, of `SOURCE_DATE_EPOCH` when set, else of now.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        });
    let Some(secs) = secs else {
        return "unknown".to_owned();
    };
    let (y, m, d) = date::civil_from_days(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}
