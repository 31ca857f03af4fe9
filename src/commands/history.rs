//! `offload history`: the durations history's git merge driver and its set-up.
//!
//! `offload history merge BASE OURS THEIRS` is what git runs (`%O %A %B`) when two
//! branches both recorded durations: it writes the three-way merge of the three files
//! into OURS ([`crate::history::merge`]) and exits 0, so the merge never conflicts; a
//! file it cannot read makes it exit 1 with the reason, and git then reports a conflict
//! as usual. `offload history setup-merge-driver` writes the `.gitattributes` line and
//! the `.git/config` entries that make git use it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exit;
use crate::history::{self, History};

/// The merge driver's name in `.gitattributes` and `.git/config`.
pub(crate) const DRIVER: &str = "offload-durations";

/// Merges the histories `base`, `ours` and `theirs` into `ours`. A missing file counts
/// as an empty history (git passes an empty base when the file is new on both sides),
/// and so does a base that cannot be read: the merge then keeps every entry of both.
pub(crate) fn merge(base: &Path, ours: &Path, theirs: &Path) -> Result<i32> {
    let base = History::read(base).unwrap_or_else(|err| {
        tracing::warn!("{err:#}; merging without the common ancestor");
        History::default()
    });
    let merged = history::merge(&base, &History::read(ours)?, &History::read(theirs)?);
    history::write_atomically(ours, &merged.render())?;
    Ok(exit::SUCCESS)
}

/// Makes git merge the history at `path` (relative to the current directory) with
/// `offload history merge`: appends its line to the repository's `.gitattributes`
/// unless it is there, and sets the driver in the repository's git config.
pub(crate) fn setup_merge_driver(path: &Path) -> Result<i32> {
    let toplevel = git(&["rev-parse", "--show-toplevel"])
        .context("`offload history setup-merge-driver` must run inside a git repository")?;
    let toplevel = PathBuf::from(toplevel);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let pattern = repo_relative(&cwd.join(path), &toplevel)?;
    let line = format!("{pattern} merge={DRIVER}");
    let attributes = toplevel.join(".gitattributes");
    let existing = match std::fs::read_to_string(&attributes) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read `{}`", attributes.display()));
        }
    };
    if existing.lines().any(|l| l.trim() == line) {
        crate::output::print(&format!(
            "`{}` already has `{line}`\n",
            attributes.display()
        ));
    } else {
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        std::fs::write(&attributes, text)
            .with_context(|| format!("cannot write `{}`", attributes.display()))?;
        crate::output::print(&format!("Added `{line}` to `{}`\n", attributes.display()));
    }
    git(&[
        "config",
        &format!("merge.{DRIVER}.name"),
        "Offload durations history",
    ])?;
    git(&[
        "config",
        &format!("merge.{DRIVER}.driver"),
        "offload history merge %O %A %B",
    ])?;
    crate::output::print(&format!(
        "Set `merge.{DRIVER}.driver` in the repository's git config: branches that both \
         recorded durations now merge without conflicts (`offload` must be on the PATH \
         of whoever merges)\n"
    ));
    Ok(exit::SUCCESS)
}

/// `path` relative to the repository root `toplevel`, with `/` separators, as
/// `.gitattributes` patterns are written.
fn repo_relative(path: &Path, toplevel: &Path) -> Result<String> {
    let dir = path.parent().unwrap_or(path);
    let name = path.file_name().unwrap_or_default();
    // The file may not exist yet; its directory may not either.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let toplevel = std::fs::canonicalize(toplevel).unwrap_or_else(|_| toplevel.to_path_buf());
    let Ok(relative) = dir
        .join(name)
        .strip_prefix(&toplevel)
        .map(Path::to_path_buf)
    else {
        bail!(
            "the durations history `{}` is outside the git repository `{}`; set `[history] \
             path` to a file inside it",
            path.display(),
            toplevel.display()
        );
    };
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(format!("/{}", parts.join("/")))
}

/// Runs `git ARGS` and returns its trimmed stdout.
fn git(args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .output()
        .with_context(|| format!("cannot run `git {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
