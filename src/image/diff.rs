//! The thin diff: a binary git patch from a base commit's tree to the working tree.
//!
//! [`thin_diff`] stages the whole working tree into a private index seeded with the
//! base tree (`GIT_INDEX_FILE`; the real index is never touched): tracked changes,
//! deletions and untracked files that are not gitignored. `.dockerignore`d paths are
//! then put back to their base state, so they never appear in a patch, and the index
//! is diffed against the base with every output-shaping option pinned (prefixes,
//! colour, external diff drivers, textconv, rename detection, quoting), so the user's
//! git config cannot change the patch format `offload apply-diff` reads.
//!
//! The patch paths are relative to the repository top level. The patch holds commits
//! made since the base, staged and unstaged changes and new files.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::dockerignore::DockerIgnore;
use super::git::Git;

/// A generated thin diff.
#[derive(Debug)]
pub(crate) struct ThinDiff {
    /// The patch bytes; empty when the working tree matches the base.
    patch: Vec<u8>,
    /// The repository-relative paths the patch changes.
    pub(crate) files: Vec<String>,
}

impl ThinDiff {
    /// Whether there is nothing to apply.
    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the patch to a new temporary file (removed when the handle drops).
    pub(super) fn to_temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let mut file = tempfile::Builder::new()
            .prefix("offload-thin-diff-")
            .suffix(".patch")
            .tempfile()
            .context("cannot create a temporary file for the thin diff")?;
        file.write_all(&self.patch)
            .and_then(|()| file.flush())
            .context("cannot write the thin diff to a temporary file")?;
        Ok(file)
    }
}

/// Computes the thin diff from `base` to the working tree of the repository whose
/// top level is `toplevel`.
pub(crate) fn thin_diff(toplevel: &Path, base: &str, ignore: &DockerIgnore) -> Result<ThinDiff> {
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    // Literal pathspecs: file names with `*` or `:` are names, not patterns.
    let git = Git::new(toplevel)
        .with_index(&scratch.path().join("index"))
        .with_env("GIT_LITERAL_PATHSPECS", "1");
    git.run(["read-tree", base])
        .with_context(|| format!("cannot read the tree of the base commit `{base}`"))?;
    git.run(["add", "-A", "--", "."])
        .context("cannot stage the working tree into a private index")?;
    if !ignore.is_empty() {
        let listed = git.run(["ls-files", "-z", "--cached"])?;
        let mut restore = Vec::new();
        for path in listed.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            if ignore.is_ignored(&String::from_utf8_lossy(path)) {
                restore.extend_from_slice(path);
                restore.push(0);
            }
        }
        if !restore.is_empty() {
            // Back to the base state (or out of the index when not in the base).
            git.run_with_stdin(
                [
                    "reset",
                    "-q",
                    base,
                    "--pathspec-from-file=-",
                    "--pathspec-file-nul",
                ],
                &restore,
            )
            .context("cannot leave `.dockerignore`d paths out of the thin diff")?;
        }
    }
    let pinned = [
        "-c",
        "core.quotePath=false",
        "-c",
        "diff.suppressBlankEmpty=false",
        "diff",
        "--cached",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-relative",
        "--find-renames",
        "--unified=3",
        "--src-prefix=a/",
        "--dst-prefix=b/",
    ];
    let names = git
        .run(pinned.iter().copied().chain(["-z", "--name-only", base]))
        .context("cannot list the files of the thin diff")?;
    let files: Vec<String> = names
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if files.is_empty() {
        return Ok(ThinDiff {
            patch: Vec::new(),
            files,
        });
    }
    let patch = git
        .run(pinned.iter().copied().chain(["--binary", base]))
        .context("cannot generate the thin diff")?;
    Ok(ThinDiff { patch, files })
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::{commit, git, init};
    use super::*;

    fn check_applies(repo: &Path, base: &str, patch: &[u8]) -> tempfile::TempDir {
        // Export the base into a scratch repo and `git apply` the patch there.
        let copy = tempfile::tempdir().unwrap();
        init(copy.path());
        git(
            copy.path(),
            &["fetch", "-q", repo.to_str().unwrap(), "main"],
        );
        git(copy.path(), &["checkout", "-q", base]);
        let patch_path = copy.path().join("../thin.patch");
        std::fs::write(&patch_path, patch).unwrap();
        git(
            copy.path(),
            &["apply", "--check", patch_path.to_str().unwrap()],
        );
        git(copy.path(), &["apply", patch_path.to_str().unwrap()]);
        copy
    }

    #[test]
    fn clean_tree_gives_an_empty_diff() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let sha = commit(dir.path(), &[("a", "1\n")], "one");
        let d = thin_diff(dir.path(), &sha, &DockerIgnore::default()).unwrap();
        assert!(d.is_empty());
        assert!(d.patch.is_empty());
    }

    #[test]
    fn diff_holds_commits_changes_and_untracked_files_and_applies() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d);
        std::fs::write(d.join(".gitignore"), "*.log\n").unwrap();
        let base = commit(
            d,
            &[
                ("a.txt", "one\ntwo\n"),
                ("gone.txt", "bye\n"),
                ("bin.dat", "x"),
            ],
            "base",
        );
        commit(d, &[("later.txt", "committed later\n")], "later");
        std::fs::write(d.join("a.txt"), "one\nTWO\n").unwrap();
        std::fs::remove_file(d.join("gone.txt")).unwrap();
        std::fs::write(d.join("bin.dat"), [0u8, 1, 2, 255, 0]).unwrap();
        std::fs::write(d.join("new file.txt"), "spaces\n").unwrap();
        std::fs::write(d.join("debug.log"), "ignored\n").unwrap();
        // Set a hostile user config: the patch format must not change.
        git(d, &["config", "diff.noprefix", "true"]);
        git(d, &["config", "color.diff", "always"]);
        let real_index_before = std::fs::read(d.join(".git/index")).unwrap();

        let diff = thin_diff(d, &base, &DockerIgnore::default()).unwrap();
        let mut files = diff.files.clone();
        files.sort();
        assert_eq!(
            files,
            ["a.txt", "bin.dat", "gone.txt", "later.txt", "new file.txt"]
        );
        let text = String::from_utf8_lossy(&diff.patch);
        assert!(text.contains("diff --git a/a.txt b/a.txt"), "{text}");
        assert!(text.contains("GIT binary patch"), "{text}");
        assert!(!text.contains('\x1b'), "no colour codes");
        assert_eq!(
            std::fs::read(d.join(".git/index")).unwrap(),
            real_index_before
        );

        let applied = check_applies(d, &base, &diff.patch);
        let a = applied.path();
        assert_eq!(
            std::fs::read_to_string(a.join("a.txt")).unwrap(),
            "one\nTWO\n"
        );
        assert!(!a.join("gone.txt").exists());
        assert_eq!(
            std::fs::read(a.join("bin.dat")).unwrap(),
            [0u8, 1, 2, 255, 0]
        );
        assert_eq!(
            std::fs::read_to_string(a.join("new file.txt")).unwrap(),
            "spaces\n"
        );
        assert!(!a.join("debug.log").exists());
    }

    #[test]
    fn dockerignored_paths_never_reach_the_diff() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d);
        let base = commit(d, &[("src/a.py", "1\n"), ("notes/todo.md", "x\n")], "base");
        std::fs::write(d.join("src/a.py"), "2\n").unwrap();
        std::fs::write(d.join("notes/todo.md"), "changed\n").unwrap();
        std::fs::write(d.join("notes/new.md"), "new\n").unwrap();
        let ignore = DockerIgnore::parse("notes\n");
        let diff = thin_diff(d, &base, &ignore).unwrap();
        assert_eq!(diff.files, ["src/a.py"]);
        // Without a .dockerignore both are included.
        let diff = thin_diff(d, &base, &DockerIgnore::default()).unwrap();
        assert_eq!(diff.files.len(), 3);
    }

    #[test]
    fn invalid_base_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        commit(dir.path(), &[("a", "1\n")], "one");
        let err = thin_diff(
            dir.path(),
            "0000000000000000000000000000000000000000",
            &DockerIgnore::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("base commit"), "{err:#}");
    }
}
