//! Build contexts: a commit's tree ([`export_commit`]) or the working tree
//! ([`snapshot_worktree`]) written into a fresh directory.
//!
//! The commit export is exactly the tracked files of that commit (modes and symlinks
//! as git stores them), minus `.dockerignore`d paths. Nothing from the working tree is
//! added: the base image of a commit is the same on every machine, which is what makes
//! a shared cache entry trustworthy. (Files that are neither tracked nor created by the
//! image build reach sandboxes only through `copy_dirs`.) It is done by git itself,
//! through a private index, so neither the real index nor the work tree is touched and
//! no `.git` directory is created in the export.
//!
//! The snapshots are the context of every full build of the working tree (a prepare
//! that takes no thin diffs, an empty repository, no repository, the full-build
//! fallback). In a repository ([`snapshot_git_worktree`]) it holds what git sees: tracked
//! files and untracked ones that are not ignored, as they are on disk, so uncommitted
//! changes are always in. Outside one ([`snapshot_worktree`]) it holds the whole
//! directory but `.git` and [`super::cache_file::FILE_NAME`]. Both leave out
//! `.dockerignore`d paths and return a fingerprint of what they copied.

use std::path::Path;

use anyhow::{Context, Result};

use super::dockerignore::DockerIgnore;
use super::git::Git;

/// Writes the tree of `sha` into the empty directory `dest`.
pub(super) fn export_commit(
    git: &Git,
    sha: &str,
    dest: &Path,
    ignore: &DockerIgnore,
) -> Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let git = git.with_index(&scratch.path().join("index"));
    git.run(["read-tree", sha])
        .with_context(|| format!("cannot read the tree of `{sha}`"))?;
    if !ignore.is_empty() {
        let listed = git.run(["ls-files", "-z", "--cached"])?;
        let mut drop = Vec::new();
        for path in listed.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            if ignore.is_ignored(&String::from_utf8_lossy(path)) {
                drop.extend_from_slice(path);
                drop.push(0);
            }
        }
        if !drop.is_empty() {
            git.run_with_stdin(["update-index", "--force-remove", "-z", "--stdin"], &drop)
                .context("cannot leave `.dockerignore`d paths out of the export")?;
        }
    }
    let mut prefix = dest.to_string_lossy().into_owned();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    git.run([
        "checkout-index".to_owned(),
        "--all".to_owned(),
        "--force".to_owned(),
        format!("--prefix={prefix}"),
    ])
    .with_context(|| format!("cannot write the tree of `{sha}` to `{}`", dest.display()))?;
    Ok(())
}

/// Copies the directory at `root` into `dest` (skipping `.git`, the cache file and
/// `.dockerignore`d paths) and returns a fingerprint of the copied content: paths,
/// file kinds, executable bits and bytes. For a project outside git.
pub(super) fn snapshot_worktree(root: &Path, dest: &Path, ignore: &DockerIgnore) -> Result<String> {
    let mut hash = Fnv::new();
    copy_dir(root, dest, "", ignore, &mut hash)?;
    Ok(format!("{:016x}", hash.0))
}

/// Copies the working tree of the repository at `git`'s top level into `dest` as it is
/// on disk: tracked files and untracked files that are not gitignored (deleted ones
/// are left out), minus `.dockerignore`d paths. Returns the fingerprint of
/// [`snapshot_worktree`].
pub(super) fn snapshot_git_worktree(
    git: &Git,
    dest: &Path,
    ignore: &DockerIgnore,
) -> Result<String> {
    let listed = git
        .run([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .context("cannot list the files of the working tree")?;
    let mut paths: Vec<String> = listed
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    // Sorted and once each (an unmerged file is listed per stage), so the fingerprint
    // does not depend on git's order.
    paths.sort();
    paths.dedup();
    let mut hash = Fnv::new();
    for rel in paths {
        if ignore.is_ignored(&rel) || git.dir().join(&rel).symlink_metadata().is_err() {
            continue;
        }
        if let Some(parent) = Path::new(&rel).parent() {
            let parent = dest.join(parent);
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        copy_entry(git.dir(), dest, &rel, ignore, &mut hash)?;
    }
    Ok(format!("{:016x}", hash.0))
}

fn copy_dir(
    src_root: &Path,
    dest_root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    hash: &mut Fnv,
) -> Result<()> {
    let dir = src_root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list `{}`", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list `{}`", dir.display()))?;
    // Sorted, so the fingerprint does not depend on directory order.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if name == ".git" || child == super::cache_file::FILE_NAME || ignore.is_ignored(&child) {
            continue;
        }
        copy_entry(src_root, dest_root, &child, ignore, hash)?;
    }
    Ok(())
}

/// Copies `rel` (a file, a symlink, or a directory with its contents) from `src_root`
/// to `dest_root`, whose parent directory exists, and adds it to `hash`.
fn copy_entry(
    src_root: &Path,
    dest_root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    hash: &mut Fnv,
) -> Result<()> {
    let src = src_root.join(rel);
    let dest = dest_root.join(rel);
    let meta = std::fs::symlink_metadata(&src)
        .with_context(|| format!("cannot read `{}`", src.display()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&src)
            .with_context(|| format!("cannot read the link `{}`", src.display()))?;
        std::os::unix::fs::symlink(&target, &dest)
            .with_context(|| format!("cannot create the link `{}`", dest.display()))?;
        hash.write(b"l\0");
        hash.write(rel.as_bytes());
        hash.write(target.to_string_lossy().as_bytes());
    } else if meta.is_dir() {
        // A nested repository (submodule) in a git snapshot, or any directory otherwise.
        std::fs::create_dir_all(&dest)
            .with_context(|| format!("cannot create `{}`", dest.display()))?;
        hash.write(b"d\0");
        hash.write(rel.as_bytes());
        copy_dir(src_root, dest_root, rel, ignore, hash)?;
    } else if meta.is_file() {
        let bytes =
            std::fs::read(&src).with_context(|| format!("cannot read `{}`", src.display()))?;
        std::fs::write(&dest, &bytes)
            .with_context(|| format!("cannot write `{}`", dest.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of `{}`", dest.display()))?;
        hash.write(b"f\0");
        hash.write(rel.as_bytes());
        hash.write(if mode & 0o111 != 0 { b"x" } else { b"-" });
        hash.write(&(bytes.len() as u64).to_le_bytes());
        hash.write(&bytes);
    }
    // Sockets, fifos and devices cannot go into an image; they are skipped.
    Ok(())
}

/// 64-bit FNV-1a: a stable (across Rust versions) content fingerprint. Not a security
/// hash; it only decides whether the working tree changed since the cached build.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::{commit, git, init};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn export_of_an_older_commit_holds_only_its_tracked_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        init(&repo);
        std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
        let old = commit(
            &repo,
            &[
                ("a.txt", "old a\n"),
                ("sub/dir/b.txt", "b\n"),
                ("run.sh", "#!/bin/sh\n"),
            ],
            "one",
        );
        std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", repo.join("link")).unwrap();
        let mid = commit(&repo, &[], "mode and link");
        commit(&repo, &[("a.txt", "new a\n"), ("c.txt", "c\n")], "two");
        std::fs::write(repo.join("debug.log"), "untracked, ignored\n").unwrap();
        std::fs::write(repo.join("untracked.txt"), "untracked\n").unwrap();
        git(&repo, &["add", "untracked.txt"]); // staged only: not in any commit

        let out = tmp.path().join("old");
        std::fs::create_dir(&out).unwrap();
        export_commit(&Git::new(&repo), &old, &out, &DockerIgnore::default()).unwrap();
        assert_eq!(read(&out.join("a.txt")), "old a\n");
        assert_eq!(read(&out.join("sub/dir/b.txt")), "b\n");
        assert!(!out.join("c.txt").exists());
        assert!(!out.join("debug.log").exists());
        assert!(!out.join("untracked.txt").exists());
        assert!(!out.join(".git").exists());

        let out = tmp.path().join("mid");
        std::fs::create_dir(&out).unwrap();
        export_commit(&Git::new(&repo), &mid, &out, &DockerIgnore::default()).unwrap();
        let mode = std::fs::metadata(out.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "executable bit kept");
        assert_eq!(
            std::fs::read_link(out.join("link")).unwrap(),
            Path::new("a.txt")
        );
        // The real index still has the staged file.
        assert!(git(&repo, &["diff", "--cached", "--name-only"]).contains("untracked.txt"));
    }

    #[test]
    fn export_and_snapshot_leave_out_dockerignored_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        init(&repo);
        let sha = commit(
            &repo,
            &[
                ("keep.txt", "k\n"),
                ("secrets/key", "s\n"),
                ("logs/a.log", "l\n"),
            ],
            "one",
        );
        let ignore = DockerIgnore::parse("secrets\n**/*.log\n");
        let out = tmp.path().join("export");
        std::fs::create_dir(&out).unwrap();
        export_commit(&Git::new(&repo), &sha, &out, &ignore).unwrap();
        assert!(out.join("keep.txt").exists());
        assert!(!out.join("secrets").exists());
        assert!(!out.join("logs/a.log").exists());

        let snap = tmp.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        snapshot_worktree(&repo, &snap, &ignore).unwrap();
        assert!(snap.join("keep.txt").exists());
        assert!(!snap.join("secrets").exists());
        assert!(!snap.join("logs/a.log").exists());
        assert!(!snap.join(".git").exists());
    }

    #[test]
    fn snapshot_fingerprint_follows_content() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), "1").unwrap();
        let snap = |name: &str| {
            let dest = tmp.path().join(name);
            std::fs::create_dir(&dest).unwrap();
            snapshot_worktree(&src, &dest, &DockerIgnore::default()).unwrap()
        };
        let a = snap("a");
        assert_eq!(a, snap("b"), "same tree, same fingerprint");
        std::fs::write(src.join(super::super::cache_file::FILE_NAME), "im-x\n").unwrap();
        assert_eq!(a, snap("c"), "the cache file itself does not count");
        std::fs::write(src.join("d/f"), "2").unwrap();
        assert_ne!(a, snap("e"));
    }
}
