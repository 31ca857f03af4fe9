//! Applying parsed [`FilePatch`]es to a directory, all or nothing.
//!
//! [`apply_patch`] works in two phases. The *check* phase reads every file the patch
//! touches into an in-memory [`Tree`], applies the sections in order there (text hunks
//! with [`super::text`], binary blocks with [`super::binary`]), and checks that sources
//! exist, targets are free, hunks match, no mode line changes a file's type, and that no
//! path passes through a symbolic link or a file. Nothing is written unless all of that succeeds. The *write* phase then removes
//! deleted paths (and directories they leave empty) and writes each new file or symlink
//! to a temporary name in its own directory, renaming it into place. Only an I/O failure
//! during that phase (disk full, permissions) can leave the tree part-way.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::blob::blob_id;
use super::parse::{Content, FileMode, FilePatch, Operation};
use super::path::RepoPath;
use super::text::apply_hunks;

/// What [`apply_patch`] changed, for a one-line summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApplySummary {
    /// Files created.
    pub(crate) created: usize,
    /// Files deleted.
    pub(crate) deleted: usize,
    /// Files changed in place (content or mode).
    pub(crate) modified: usize,
    /// Files renamed.
    pub(crate) renamed: usize,
    /// Files copied.
    pub(crate) copied: usize,
}

/// One path's state, on disk or in the patched tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Absent,
    File { data: Vec<u8>, perm: u32 },
    Symlink(Vec<u8>),
    Dir,
}

impl Node {
    fn is_present_leaf(&self) -> bool {
        matches!(self, Node::File { .. } | Node::Symlink(_))
    }
}

/// The tree as the patch sees it: the disk state of every touched path when first read,
/// and its state after the sections applied so far.
struct Tree {
    root: PathBuf,
    original: BTreeMap<RepoPath, Node>,
    current: BTreeMap<RepoPath, Node>,
}

impl Tree {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            original: BTreeMap::new(),
            current: BTreeMap::new(),
        }
    }

    fn full(&self, path: &RepoPath) -> PathBuf {
        self.root.join(path.to_path_buf())
    }

    /// The on-disk state of `path`, refusing paths below a symbolic link.
    fn read_disk(&self, path: &RepoPath) -> Result<Node> {
        for ancestor in path.ancestors() {
            match fs::symlink_metadata(self.full(&ancestor)) {
                Ok(meta) if meta.file_type().is_symlink() => bail!(
                    "`{path}` lies beyond the symbolic link `{ancestor}`, which could lead out of the project root"
                ),
                Ok(meta) if !meta.is_dir() => return Ok(Node::Absent),
                Ok(_) => {}
                Err(err) if is_missing(&err) => return Ok(Node::Absent),
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot inspect `{ancestor}`"));
                }
            }
        }
        let full = self.full(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(err) if is_missing(&err) => return Ok(Node::Absent),
            Err(err) => return Err(err).with_context(|| format!("cannot inspect `{path}`")),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target =
                fs::read_link(&full).with_context(|| format!("cannot read the link `{path}`"))?;
            Ok(Node::Symlink(target.as_os_str().as_bytes().to_vec()))
        } else if kind.is_dir() {
            Ok(Node::Dir)
        } else if kind.is_file() {
            let data = fs::read(&full).with_context(|| format!("cannot read `{path}`"))?;
            Ok(Node::File {
                data,
                perm: meta.permissions().mode() & 0o7777,
            })
        } else {
            bail!("`{path}` is neither a file, a directory nor a symbolic link")
        }
    }

    /// The current state of `path` (read from disk the first time).
    fn get(&mut self, path: &RepoPath) -> Result<Node> {
        if let Some(node) = self.current.get(path) {
            return Ok(node.clone());
        }
        let node = self.read_disk(path)?;
        self.original.insert(path.clone(), node.clone());
        self.current.insert(path.clone(), node.clone());
        Ok(node)
    }

    fn set(&mut self, path: &RepoPath, node: Node) -> Result<()> {
        self.get(path)?;
        self.current.insert(path.clone(), node);
        Ok(())
    }
}

fn is_missing(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Applies `files` under `root`, all or nothing (see the module docs).
///
/// Errors name the file and, for a hunk that does not match, the hunk's number and
/// header; the tree is then untouched.
pub(crate) fn apply_patch(files: &[FilePatch], root: &Path) -> Result<ApplySummary> {
    let root = root
        .canonicalize()
        .with_context(|| format!("the project root `{}` does not exist", root.display()))?;
    if !root.is_dir() {
        bail!("the project root `{}` is not a directory", root.display());
    }
    let mut tree = Tree::new(root);
    let mut summary = ApplySummary::default();
    for file in files {
        if file.old_mode == Some(FileMode::Gitlink) || file.new_mode == Some(FileMode::Gitlink) {
            tracing::warn!(
                "skipping the submodule change of `{}`: submodules are not patched",
                file.display_path()
            );
            continue;
        }
        apply_section(&mut tree, file, &mut summary).map_err(|err| {
            anyhow!(
                "patch does not apply: `{}` (line {} of the patch): {err:#}; nothing was written",
                file.display_path(),
                file.line
            )
        })?;
    }
    check_final_tree(&tree).context("patch does not apply; nothing was written")?;
    write_tree(&tree).context(
        "writing the patched files failed part-way; the project tree may be partly patched",
    )?;
    Ok(summary)
}

/// Applies one section to the in-memory tree.
fn apply_section(tree: &mut Tree, file: &FilePatch, summary: &mut ApplySummary) -> Result<()> {
    match file.operation {
        Operation::Create => {
            let path = required(&file.new_path)?;
            let existing = tree.get(path)?;
            if existing.is_present_leaf() {
                bail!("it already exists");
            }
            let data = apply_content(file, b"")?;
            let node = make_node(data, file.new_mode, None)?;
            tree.set(path, node)?;
            summary.created += 1;
        }
        Operation::Delete => {
            let path = required(&file.old_path)?;
            let existing = tree.get(path)?;
            let old = existing_content(&existing, file.old_mode)?;
            let rest = apply_content(file, &old)?;
            if !rest.is_empty() {
                bail!("the file has content that the deletion does not remove");
            }
            tree.set(path, Node::Absent)?;
            summary.deleted += 1;
        }
        Operation::Modify | Operation::Rename | Operation::Copy => {
            let from = required(&file.old_path)?;
            let to = required(&file.new_path)?;
            let source = tree.get(from)?;
            let old = existing_content(&source, file.old_mode)?;
            check_type_kept(&source, file.new_mode)?;
            if file.operation != Operation::Modify {
                let target = tree.get(to)?;
                if target.is_present_leaf() {
                    bail!("the target `{to}` already exists");
                }
            }
            let data = apply_content(file, &old)?;
            let node = make_node(data, file.new_mode, Some(&source))?;
            match file.operation {
                Operation::Rename => {
                    tree.set(from, Node::Absent)?;
                    summary.renamed += 1;
                }
                Operation::Copy => summary.copied += 1,
                _ => summary.modified += 1,
            }
            tree.set(to, node)?;
        }
    }
    Ok(())
}

fn required(path: &Option<RepoPath>) -> Result<&RepoPath> {
    // The parser always fills the paths an operation needs.
    path.as_ref()
        .context("internal error: a file section lacks a path")
}

/// The bytes a section patches: file content or link target, checked against the type
/// the patch expects.
fn existing_content(node: &Node, expected: Option<FileMode>) -> Result<Vec<u8>> {
    let wants_link = expected == Some(FileMode::Symlink);
    match node {
        Node::Absent => bail!("it does not exist"),
        Node::Dir => bail!("it is a directory"),
        Node::File { .. } if wants_link => {
            bail!("it is a regular file, but the patch expects a symbolic link")
        }
        Node::Symlink(_) if expected.is_some() && !wants_link => {
            bail!("it is a symbolic link, but the patch expects a regular file")
        }
        Node::File { data, .. } => Ok(data.clone()),
        Node::Symlink(target) => Ok(target.clone()),
    }
}

/// Refuses a mode change between a symbolic link and a regular file: like `git apply`,
/// only a deletion and a creation may change a path's type.
fn check_type_kept(source: &Node, new_mode: Option<FileMode>) -> Result<()> {
    let Some(new_mode) = new_mode else {
        return Ok(());
    };
    let (was, becomes) = match (source, new_mode == FileMode::Symlink) {
        (Node::File { .. }, true) => ("a regular file", "a symbolic link"),
        (Node::Symlink(_), false) => ("a symbolic link", "a regular file"),
        _ => return Ok(()),
    };
    bail!(
        "the patch changes its type from {was} to {becomes} with a mode change (hint: a patch changes a path's type by deleting it and creating it anew, as `git diff` writes it)"
    )
}

/// The new node for `data`: the mode the patch says, else the source's kind and mode.
fn make_node(data: Vec<u8>, mode: Option<FileMode>, source: Option<&Node>) -> Result<Node> {
    Ok(match (mode, source) {
        (Some(FileMode::Symlink), _) | (None, Some(Node::Symlink(_))) => {
            if data.is_empty() || data.contains(&0) {
                bail!("the new symbolic link target is empty or contains a NUL byte");
            }
            Node::Symlink(data)
        }
        (Some(FileMode::Executable), _) => Node::File { data, perm: 0o755 },
        (None, Some(Node::File { perm, .. })) => Node::File { data, perm: *perm },
        _ => Node::File { data, perm: 0o644 },
    })
}

/// Applies a section's content change to `old`.
fn apply_content(file: &FilePatch, old: &[u8]) -> Result<Vec<u8>> {
    match &file.content {
        Content::None => Ok(old.to_vec()),
        Content::BinaryWithoutData => bail!(
            "the patch only says `Binary files … differ` and carries no data (hint: generate it with `git diff --binary`)"
        ),
        Content::Binary(binary) => {
            // A literal block ignores the old bytes, so the `index` ids are what tells
            // whether this is the base the patch was made from (as in `git apply`).
            let ids = file.index_ids.as_ref();
            let is_null = |id: &str| id.bytes().all(|b| b == b'0');
            if let Some((before, _)) = ids.filter(|(before, _)| !is_null(before)) {
                if blob_id(old) != *before {
                    bail!(
                        "the binary file is not the one the patch was made from (blob id differs from `{before}`)"
                    );
                }
            }
            let new = binary
                .apply(old)
                .context("the binary patch does not apply")?;
            if let Some((_, after)) = ids.filter(|(_, after)| !is_null(after)) {
                if blob_id(&new) != *after {
                    bail!(
                        "the binary patch produces a different file than it promises (blob id `{after}`)"
                    );
                }
            }
            Ok(new)
        }
        Content::Text(hunks) => apply_hunks(old, hunks),
    }
}

/// Checks the patched tree as a whole: no present path below a file or symlink, and a
/// directory replaced by a file must lose everything below it.
fn check_final_tree(tree: &Tree) -> Result<()> {
    for (path, node) in &tree.current {
        if !node.is_present_leaf() {
            continue;
        }
        for ancestor in path.ancestors() {
            let blocked = match tree.current.get(&ancestor) {
                Some(n) => n.is_present_leaf(),
                None => tree.read_disk(&ancestor)?.is_present_leaf(),
            };
            if blocked {
                bail!("`{path}` would be created below the file `{ancestor}`");
            }
        }
        if tree.original.get(path) == Some(&Node::Dir) {
            if let Some(left) = first_surviving_file(tree, &tree.full(path), path)? {
                bail!("`{path}` is a directory, and the patch does not delete `{left}` in it");
            }
        }
    }
    Ok(())
}

/// The first non-directory below `dir` that the patched tree still has.
fn first_surviving_file(tree: &Tree, dir: &Path, rel: &RepoPath) -> Result<Option<RepoPath>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list `{rel}`"))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list `{rel}`"))?;
        let mut bytes = rel.as_bytes().to_vec();
        bytes.push(b'/');
        bytes.extend_from_slice(entry.file_name().as_bytes());
        let child = RepoPath::new(&bytes)?;
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot inspect `{child}`"))?;
        if kind.is_dir() {
            if let Some(left) = first_surviving_file(tree, &entry.path(), &child)? {
                return Ok(Some(left));
            }
        } else if tree.current.get(&child) != Some(&Node::Absent) {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// The write phase: deletions first (so a file may replace a directory and vice versa),
/// then every new or changed file through a temporary file and a rename.
fn write_tree(tree: &Tree) -> Result<()> {
    for (path, node) in &tree.current {
        let original = &tree.original[path];
        let full = tree.full(path);
        if *node == Node::Absent && original.is_present_leaf() {
            fs::remove_file(&full).with_context(|| format!("cannot delete `{path}`"))?;
            remove_empty_parents(&tree.root, &full);
        }
    }
    for (path, node) in &tree.current {
        let original = &tree.original[path];
        if node == original || !node.is_present_leaf() {
            continue;
        }
        let full = tree.full(path);
        if *original == Node::Dir {
            remove_empty_dirs(&full)
                .with_context(|| format!("cannot remove the directory `{path}`"))?;
        }
        let parent = full
            .parent()
            .context("a patched path has no parent directory")?;
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the directory of `{path}`"))?;
        match node {
            Node::File { data, perm } => {
                let mut tmp = tempfile::Builder::new()
                    .prefix(".offload-apply-")
                    .tempfile_in(parent)
                    .with_context(|| format!("cannot create a temporary file next to `{path}`"))?;
                tmp.write_all(data)
                    .with_context(|| format!("cannot write `{path}`"))?;
                fs::set_permissions(tmp.path(), fs::Permissions::from_mode(*perm))
                    .with_context(|| format!("cannot set the mode of `{path}`"))?;
                tmp.persist(&full)
                    .with_context(|| format!("cannot move `{path}` into place"))?;
            }
            Node::Symlink(target) => {
                let tmp = temp_sibling(parent);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &tmp)
                    .with_context(|| format!("cannot create the symbolic link `{path}`"))?;
                if let Err(err) = fs::rename(&tmp, &full) {
                    // Best effort: do not leave the temporary link behind.
                    let _ = fs::remove_file(&tmp);
                    return Err(err).with_context(|| format!("cannot move `{path}` into place"));
                }
            }
            Node::Absent | Node::Dir => {}
        }
    }
    Ok(())
}

/// A fresh name in `dir` for a temporary symlink.
fn temp_sibling(dir: &Path) -> PathBuf {
    dir.join(format!(".offload-apply-{}", uuid::Uuid::new_v4().simple()))
}

/// Removes the now-empty directories above a deleted file, as `git apply` does.
fn remove_empty_parents(root: &Path, deleted: &Path) {
    let mut dir = deleted.parent();
    while let Some(d) = dir {
        // Stops at the first non-empty directory (or any error): nothing to clean there.
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Removes `dir` and the directories in it; fails if a file is left (checked earlier).
fn remove_empty_dirs(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_empty_dirs(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse_patch;

    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    fn read(root: &Path, rel: &str) -> String {
        fs::read_to_string(root.join(rel)).unwrap()
    }

    fn apply(root: &Path, patch: &str) -> Result<ApplySummary> {
        apply_patch(&parse_patch(patch.as_bytes())?, root)
    }

    const TWO_HUNKS: &str = "diff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n 1\n-2\n+two\n 3\n@@ -7,3 +7,3 @@\n 7\n-8\n+eight\n 9\n";

    #[test]
    fn hunks_apply_and_shifted_hunks_still_match() {
        let dir = tree();
        write(dir.path(), "f", "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        apply(dir.path(), TWO_HUNKS).unwrap();
        assert_eq!(
            read(dir.path(), "f"),
            "0\n1\ntwo\n3\n4\n5\n6\n7\neight\n9\n"
        );
        // A hunk that starts at line 1 is anchored there and does not shift.
        write(dir.path(), "f", "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        let err = apply(dir.path(), &TWO_HUNKS.replace("-2,3 +2,3", "-1,3 +1,3")).unwrap_err();
        assert!(
            format!("{err:#}").contains("hunk 1 (@@ -1,3 +1,3 @@)"),
            "{err:#}"
        );
    }

    #[test]
    fn failing_hunk_is_named_and_nothing_is_written() {
        let dir = tree();
        write(dir.path(), "f", "0\n1\n2\n3\n4\n5\n6\n7\nX\n9\n");
        write(dir.path(), "g", "keep\n");
        let patch = format!(
            "diff --git a/g b/g\nindex 1..2 100644\n--- a/g\n+++ b/g\n@@ -1 +1 @@\n-keep\n+changed\n{TWO_HUNKS}"
        );
        let err = format!("{:#}", apply(dir.path(), &patch).unwrap_err());
        assert!(
            err.contains("patch does not apply: `f`")
                && err.contains("hunk 2 (@@ -7,3 +7,3 @@): context does not match"),
            "{err}"
        );
        assert_eq!(read(dir.path(), "g"), "keep\n");
        assert_eq!(read(dir.path(), "f"), "0\n1\n2\n3\n4\n5\n6\n7\nX\n9\n");
    }

    #[test]
    fn no_newline_at_end_both_ways() {
        let dir = tree();
        write(dir.path(), "a", "x\ny");
        write(dir.path(), "b", "x\ny\n");
        apply(
            dir.path(),
            "diff --git a/a b/a\nindex 1..2 100644\n--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n x\n-y\n\\ No newline at end of file\n+y\n\
diff --git a/b b/b\nindex 1..2 100644\n--- a/b\n+++ b/b\n@@ -1,2 +1,2 @@\n x\n-y\n+y\n\\ No newline at end of file\n",
        )
        .unwrap();
        assert_eq!(read(dir.path(), "a"), "x\ny\n");
        assert_eq!(read(dir.path(), "b"), "x\ny");
        // The same patch again: the preimages no longer match.
        write(dir.path(), "a", "x\ny\n");
        let err = apply(
            dir.path(),
            "diff --git a/a b/a\nindex 1..2 100644\n--- a/a\n+++ b/a\n@@ -1,2 +1,2 @@\n x\n-y\n\\ No newline at end of file\n+y\n",
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("hunk 1"));
    }

    #[test]
    fn create_refuses_existing_and_delete_checks_content() {
        let dir = tree();
        write(dir.path(), "f", "a\n");
        let err = apply(dir.path(), "diff --git a/f b/f\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/f\n@@ -0,0 +1 @@\n+a\n").unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        let err = apply(
            dir.path(),
            "diff --git a/f b/f\ndeleted file mode 100644\nindex e69de29..0000000\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("content that the deletion does not remove"),
            "{err:#}"
        );
        let err = apply(
            dir.path(),
            "diff --git a/g b/g\ndeleted file mode 100644\nindex e69de29..0000000\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("`g`") && format!("{err:#}").contains("does not exist"),
            "{err:#}"
        );
        apply(dir.path(), "diff --git a/f b/f\ndeleted file mode 100644\nindex 1..0\n--- a/f\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n").unwrap();
        assert!(!dir.path().join("f").exists());
    }

    #[test]
    fn modes_are_set_exactly_both_ways() {
        let dir = tree();
        write(dir.path(), "x", "a\n");
        fs::set_permissions(dir.path().join("x"), fs::Permissions::from_mode(0o600)).unwrap();
        apply(
            dir.path(),
            "diff --git a/x b/x\nold mode 100644\nnew mode 100755\n",
        )
        .unwrap();
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("x"), 0o755);
        apply(
            dir.path(),
            "diff --git a/x b/x\nold mode 100755\nnew mode 100644\n",
        )
        .unwrap();
        assert_eq!(mode("x"), 0o644);
        assert_eq!(read(dir.path(), "x"), "a\n");
    }

    #[test]
    fn rename_moves_and_removes_empty_directories() {
        let dir = tree();
        write(dir.path(), "old/deep/f", "a\nb\n");
        apply(
            dir.path(),
            "diff --git a/old/deep/f b/new/f\nsimilarity index 50%\nrename from old/deep/f\nrename to new/f\nindex 1..2 100644\n--- a/old/deep/f\n+++ b/new/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n",
        )
        .unwrap();
        assert_eq!(read(dir.path(), "new/f"), "a\nc\n");
        assert!(!dir.path().join("old").exists());
    }

    #[test]
    fn symlinks_are_created_modified_and_never_followed() {
        let dir = tree();
        apply(
            dir.path(),
            "diff --git a/l b/l\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+target.txt\n\\ No newline at end of file\n",
        )
        .unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("l")).unwrap(),
            Path::new("target.txt")
        );
        apply(
            dir.path(),
            "diff --git a/l b/l\nindex 1..2 120000\n--- a/l\n+++ b/l\n@@ -1 +1 @@\n-target.txt\n\\ No newline at end of file\n+other\n\\ No newline at end of file\n",
        )
        .unwrap();
        assert_eq!(
            fs::read_link(dir.path().join("l")).unwrap(),
            Path::new("other")
        );

        // A link inside the root pointing outside: nothing may be written through it.
        let outside = tree();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let err = apply(dir.path(), "diff --git a/out/x b/out/x\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/out/x\n@@ -0,0 +1 @@\n+a\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("beyond the symbolic link `out`"),
            "{err:#}"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Nor through a link the patch itself creates.
        let err = apply(
            dir.path(),
            "diff --git a/l2 b/l2\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/l2\n@@ -0,0 +1 @@\n+/tmp\n\\ No newline at end of file\n\
diff --git a/l2/x b/l2/x\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/l2/x\n@@ -0,0 +1 @@\n+a\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("below the file `l2`"),
            "{err:#}"
        );
        assert!(!dir.path().join("l2").exists());
    }

    #[test]
    fn type_changes_and_directory_file_swaps() {
        let dir = tree();
        write(dir.path(), "d/inner", "x\n");
        write(dir.path(), "f", "y\n");
        // `d` becomes a file and `f` a directory; git lists the create before the delete.
        apply(
            dir.path(),
            "diff --git a/d b/d\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/d\n@@ -0,0 +1 @@\n+now a file\n\
diff --git a/d/inner b/d/inner\ndeleted file mode 100644\nindex 1..0\n--- a/d/inner\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n\
diff --git a/f b/f\ndeleted file mode 100644\nindex 1..0\n--- a/f\n+++ /dev/null\n@@ -1 +0,0 @@\n-y\n\
diff --git a/f/g b/f/g\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/f/g\n@@ -0,0 +1 @@\n+z\n",
        )
        .unwrap();
        assert_eq!(read(dir.path(), "d"), "now a file\n");
        assert_eq!(read(dir.path(), "f/g"), "z\n");
        // A directory whose files the patch keeps cannot become a file.
        let err = apply(dir.path(), "diff --git a/f b/f\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/f\n@@ -0,0 +1 @@\n+a\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("does not delete `f/g`"),
            "{err:#}"
        );
        // A file cannot gain children while it stays a file.
        let err = apply(dir.path(), "diff --git a/d/x b/d/x\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/d/x\n@@ -0,0 +1 @@\n+a\n").unwrap_err();
        assert!(format!("{err:#}").contains("below the file `d`"), "{err:#}");
    }

    #[test]
    fn binary_literal_checks_the_base_blob_id() {
        let patch = "diff --git a/b b/b\nindex e69de29bb2d1d6434b8b29ae775ad8c2e48c5391..75c3e4d580506d774a97fc6c1e36ad34ceb494e6 100644\nGIT binary patch\nliteral 4\nLcmZQz%*X@)0YCuL\n\nliteral 0\nHcmV?d00001\n\n";
        let dir = tree();
        write(dir.path(), "b", "drifted");
        let err = apply(dir.path(), patch).unwrap_err();
        assert!(
            format!("{err:#}").contains("not the one the patch was made from"),
            "{err:#}"
        );
        assert_eq!(read(dir.path(), "b"), "drifted");
        write(dir.path(), "b", "");
        apply(dir.path(), patch).unwrap();
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"\0\x01hi");
    }

    #[test]
    fn binary_without_data_is_refused() {
        let dir = tree();
        write(dir.path(), "b", "x");
        let err = apply(
            dir.path(),
            "diff --git a/b b/b\nindex 1..2 100644\nBinary files a/b and b/b differ\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("git diff --binary"), "{err:#}");
    }
}
