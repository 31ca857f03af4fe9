//! Choosing the base commit: the commit a cached base image is built from.
//!
//! - [`RepoState`] says whether the directory is in a git repository and whether it
//!   has commits yet.
//! - Latest-commit mode: the base is `HEAD`.
//! - Checkpoint mode ([`find_checkpoint`]): the base is the nearest commit on `HEAD`'s
//!   first-parent chain that touched any build input. A merge commit counts when it
//!   differs from *any* of its parents in a build input (so merging a branch that
//!   changed the `Dockerfile` makes the merge a checkpoint). The walk stops after
//!   [`CHECKPOINT_WALK_LIMIT`] commits.
//!
//! This module only reads the repository.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::git::Git;

/// How many first-parent commits the checkpoint search looks at before giving up.
pub(crate) const CHECKPOINT_WALK_LIMIT: usize = 1000;

/// Where a directory stands with respect to git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepoState {
    /// Not inside a git work tree.
    NotARepo,
    /// A repository without commits yet.
    Empty {
        /// The top level of the work tree.
        toplevel: PathBuf,
    },
    /// A repository with a `HEAD` commit.
    Commit {
        /// The top level of the work tree.
        toplevel: PathBuf,
        /// The full sha of `HEAD`.
        head: String,
    },
}

impl RepoState {
    /// Finds the repository around `git`'s directory.
    pub(crate) fn detect(git: &Git) -> Result<Self> {
        let top = git.try_run(["rev-parse", "--show-toplevel"])?;
        if !top.success {
            let stderr = top.stderr.to_lowercase();
            if stderr.contains("not a git repository") || stderr.contains("work tree") {
                return Ok(Self::NotARepo);
            }
            anyhow::bail!(
                "cannot find the git repository of `{}`: {}",
                git.dir().display(),
                top.stderr
            );
        }
        let toplevel = PathBuf::from(top.stdout_trimmed());
        let head = git.try_run(["rev-parse", "--verify", "-q", "HEAD^{commit}"])?;
        if head.success {
            Ok(Self::Commit {
                toplevel,
                head: head.stdout_trimmed(),
            })
        } else {
            Ok(Self::Empty { toplevel })
        }
    }
}

/// The result of a checkpoint search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckpointSearch {
    /// The nearest checkpoint commit.
    Found {
        /// Its full sha.
        sha: String,
        /// How many first-parent steps back from `HEAD` (0: `HEAD` itself).
        distance: usize,
    },
    /// No commit among the walked ones touched a build input.
    NotFound {
        /// How many commits were examined.
        walked: usize,
        /// Whether the walk stopped at the limit (older history was not examined).
        truncated: bool,
    },
}

/// Searches `HEAD`'s first-parent history (at most `limit` commits) for the nearest
/// commit touching any of `build_inputs` (repository-relative paths).
pub(crate) fn find_checkpoint(
    git: &Git,
    build_inputs: &[String],
    limit: usize,
) -> Result<CheckpointSearch> {
    let chain = git
        .run_text([
            "rev-list".to_owned(),
            "--first-parent".to_owned(),
            format!("--max-count={}", limit + 1),
            "HEAD".to_owned(),
        ])
        .context("cannot list the history of `HEAD` for the checkpoint search")?;
    let mut chain: Vec<&str> = chain.lines().filter(|l| !l.is_empty()).collect();
    let truncated = chain.len() > limit;
    chain.truncate(limit);
    if chain.is_empty() || build_inputs.is_empty() {
        return Ok(CheckpointSearch::NotFound {
            walked: chain.len(),
            truncated,
        });
    }
    // One diff-tree over the whole chain: `-m` diffs merges against every parent,
    // `--root` diffs the first commit against the empty tree; only commits with a
    // change in a build input are printed (their sha first, then the paths).
    let mut args: Vec<String> = [
        "diff-tree",
        "--stdin",
        "--root",
        "-m",
        "-r",
        "-z",
        "--name-only",
        "--no-renames",
        "--no-ext-diff",
        "--",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(build_inputs.iter().map(|p| format!(":(top){p}")));
    let mut input = chain.join("\n");
    input.push('\n');
    let out = git
        .run_with_stdin(&args, input.as_bytes())
        .context("cannot check which commits touched the checkpoint build inputs")?;
    let out = String::from_utf8_lossy(&out);
    let walked: HashSet<&str> = chain.iter().copied().collect();
    // Records are NUL-separated; a record naming a walked commit starts its section.
    let first = out
        .split(['\0', '\n'])
        .map(|rec| rec.split(' ').next().unwrap_or(rec))
        .find(|rec| walked.contains(rec));
    match first {
        Some(sha) => {
            let distance = chain.iter().position(|c| *c == sha).unwrap_or(0);
            Ok(CheckpointSearch::Found {
                sha: sha.to_owned(),
                distance,
            })
        }
        None => Ok(CheckpointSearch::NotFound {
            walked: chain.len(),
            truncated,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::{commit, git, init};
    use super::*;

    fn inputs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn detects_not_a_repo_empty_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let g = Git::new(dir.path());
        assert_eq!(RepoState::detect(&g).unwrap(), RepoState::NotARepo);
        init(dir.path());
        assert!(matches!(
            RepoState::detect(&g).unwrap(),
            RepoState::Empty { .. }
        ));
        let sha = commit(dir.path(), &[("a", "1")], "one");
        match RepoState::detect(&g).unwrap() {
            RepoState::Commit { head, .. } => assert_eq!(head, sha),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nearest_commit_touching_an_input() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        commit(dir.path(), &[("Dockerfile", "FROM a\n")], "one");
        let ckpt = commit(dir.path(), &[("requirements.txt", "x\n")], "two");
        commit(dir.path(), &[("src/a.py", "1\n")], "three");
        commit(dir.path(), &[("src/b.py", "1\n")], "four");
        let g = Git::new(dir.path());
        let found =
            find_checkpoint(&g, &inputs(&["Dockerfile", "requirements.txt"]), 1000).unwrap();
        assert_eq!(
            found,
            CheckpointSearch::Found {
                sha: ckpt,
                distance: 2
            }
        );
        // A path that never existed matches nothing; the walk covered all 4 commits.
        assert_eq!(
            find_checkpoint(&g, &inputs(&["nope.txt"]), 1000).unwrap(),
            CheckpointSearch::NotFound {
                walked: 4,
                truncated: false
            }
        );
        // The limit bounds the walk.
        assert_eq!(
            find_checkpoint(&g, &inputs(&["Dockerfile"]), 2).unwrap(),
            CheckpointSearch::NotFound {
                walked: 2,
                truncated: true
            }
        );
        // A directory input matches files below it; HEAD itself can be the checkpoint.
        let head = git(dir.path(), &["rev-parse", "HEAD"]);
        assert_eq!(
            find_checkpoint(&g, &inputs(&["src"]), 1000).unwrap(),
            CheckpointSearch::Found {
                sha: head,
                distance: 0
            }
        );
    }

    #[test]
    fn a_merge_that_brings_in_a_build_input_change_is_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d);
        commit(d, &[("Dockerfile", "FROM a\n")], "one");
        git(d, &["checkout", "-q", "-b", "side"]);
        let side = commit(d, &[("Dockerfile", "FROM b\n")], "side changes Dockerfile");
        git(d, &["checkout", "-q", "main"]);
        commit(d, &[("x.txt", "x\n")], "main work");
        git(d, &["merge", "-q", "--no-edit", "side"]);
        let merge = git(d, &["rev-parse", "HEAD"]);
        commit(d, &[("y.txt", "y\n")], "after merge");
        let g = Git::new(d);
        let found = find_checkpoint(&g, &inputs(&["Dockerfile"]), 1000).unwrap();
        assert_eq!(
            found,
            CheckpointSearch::Found {
                sha: merge.clone(),
                distance: 1
            }
        );
        assert_ne!(merge, side);
    }

    #[test]
    fn a_merge_that_matches_its_first_parent_still_counts_against_the_other() {
        // main changed the Dockerfile; the side branch did not: the merge differs from
        // its second parent in the Dockerfile, so it is a checkpoint.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        init(d);
        commit(d, &[("Dockerfile", "FROM a\n")], "one");
        git(d, &["checkout", "-q", "-b", "side"]);
        commit(d, &[("s.txt", "s\n")], "side work");
        git(d, &["checkout", "-q", "main"]);
        commit(d, &[("Dockerfile", "FROM c\n")], "main changes Dockerfile");
        git(d, &["merge", "-q", "--no-edit", "side"]);
        let merge = git(d, &["rev-parse", "HEAD"]);
        let g = Git::new(d);
        assert_eq!(
            find_checkpoint(&g, &inputs(&["Dockerfile"]), 1000).unwrap(),
            CheckpointSearch::Found {
                sha: merge,
                distance: 0
            }
        );
    }
}
