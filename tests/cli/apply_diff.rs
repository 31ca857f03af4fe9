//! `offload apply-diff` against real git: patches made by `git diff --binary` in a real
//! repository are applied by Offload to one copy of the base tree and by `git apply` to
//! another, and the two results must be identical (content, mode, symlinks). Plus the
//! all-or-nothing property, path escapes, and bad patch files.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::support::{Run, run};

pub(crate) fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("offload-apply-")
        .tempdir()
        .expect("temp dir")
}

/// A git command isolated from the user's and system's configuration.
fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CEILING_DIRECTORIES", dir.parent().expect("parent"))
        .args(["-c", "user.email=t@example.com", "-c", "user.name=T"])
        .args(["-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"]);
    cmd
}

pub(crate) fn git_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = git(dir).args(args).output().expect("spawn git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(crate) fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
}

pub(crate) fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
}

pub(crate) fn symlink(root: &Path, rel: &str, target: &str) {
    std::os::unix::fs::symlink(target, root.join(rel)).expect("symlink");
}

/// Deterministic pseudo-random bytes (xorshift), so binary files defeat compression.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One entry of a tree snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Link(PathBuf),
}

/// Every path under `root` (except `.git`) with its content, mode or link target.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if rel == Path::new(".git") {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Link(fs::read_link(&path).expect("read_link")));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else {
                let data = fs::read(&path).expect("read");
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel, Entry::File { data, mode });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Compares two snapshots, naming the paths that differ (not dumping binary content).
pub(crate) fn assert_same_tree(
    a: &BTreeMap<PathBuf, Entry>,
    b: &BTreeMap<PathBuf, Entry>,
    what: &str,
) {
    let keys: std::collections::BTreeSet<&PathBuf> = a.keys().chain(b.keys()).collect();
    let show = |e: Option<&Entry>| match e {
        None => "missing".to_string(),
        Some(Entry::Dir) => "dir".to_string(),
        Some(Entry::Link(t)) => format!("link -> {}", t.display()),
        Some(Entry::File { data, mode }) => format!(
            "file {mode:o}, {} bytes: {:?}",
            data.len(),
            String::from_utf8_lossy(&data[..data.len().min(40)])
        ),
    };
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "  {}: {} vs {}",
                k.display(),
                show(a.get(k)),
                show(b.get(k))
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// What git tracks of a snapshot: no directories, and only the x bit of a mode.
fn as_git_sees_it(tree: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    tree.into_iter()
        .filter_map(|(k, e)| match e {
            Entry::Dir => None,
            Entry::File { data, mode } => Some((
                k,
                Entry::File {
                    data,
                    mode: mode & 0o100,
                },
            )),
            link => Some((k, link)),
        })
        .collect()
}

/// Copies a tree (without `.git`), keeping modes and symlinks.
fn copy_tree(src: &Path, dst: &Path) {
    for (rel, entry) in snapshot(src) {
        let to = dst.join(&rel);
        match entry {
            Entry::Dir => fs::create_dir_all(&to).expect("mkdir"),
            Entry::Link(target) => std::os::unix::fs::symlink(target, &to).expect("symlink"),
            Entry::File { data, mode } => {
                fs::write(&to, data).expect("write");
                fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
            }
        }
    }
}

pub(crate) fn apply_diff(patch: &Path, root: &Path) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_offload"))
        .arg("apply-diff")
        .arg(patch)
        .arg("--project-root")
        .arg(root)
        .env("NO_COLOR", "1"))
}

/// `git apply --binary PATCH` in `root` (not a repository), isolated from the user's
/// configuration.
pub(crate) fn git_apply(patch: &Path, root: &Path) -> std::process::Output {
    // umask 022 so git's modes (0666/0777 minus umask) are the 0644/0755 the patch says.
    let script = format!("umask 022 && git apply --binary '{}'", patch.display());
    Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CEILING_DIRECTORIES", root.parent().expect("parent"))
        .output()
        .expect("spawn git apply")
}

/// How the patch is taken from the repository.
#[derive(Clone, Copy)]
enum DiffMode {
    /// `git add -A`, then `git diff --cached --binary` plus extra flags.
    Cached(&'static [&'static str]),
    /// `git add -N .` (intent to add new files), then `git diff HEAD --binary`.
    HeadIntentToAdd,
}

/// A repository at its base commit, with two copies of the base tree.
struct Case {
    repo: TempDir,
    ours: TempDir,
    theirs: TempDir,
    scratch: TempDir,
}

impl Case {
    /// Commits the tree `base` builds, and copies it twice.
    fn new(base: impl FnOnce(&Path)) -> Self {
        let case = Self {
            repo: tempdir(),
            ours: tempdir(),
            theirs: tempdir(),
            scratch: tempdir(),
        };
        let repo = case.repo.path();
        git_ok(repo, &["init", "-q"]);
        base(repo);
        git_ok(repo, &["add", "-A"]);
        git_ok(repo, &["commit", "-q", "--allow-empty", "-m", "base"]);
        copy_tree(repo, case.ours.path());
        copy_tree(repo, case.theirs.path());
        case
    }

    /// Makes the change, takes the patch, and returns its path and text.
    fn diff(&self, change: impl FnOnce(&Path), mode: DiffMode) -> (PathBuf, String) {
        let repo = self.repo.path();
        change(repo);
        let patch = match mode {
            DiffMode::Cached(extra) => {
                git_ok(repo, &["add", "-A"]);
                let mut args = vec!["diff", "--cached", "--binary"];
                args.extend_from_slice(extra);
                git_ok(repo, &args)
            }
            DiffMode::HeadIntentToAdd => {
                git_ok(repo, &["add", "-N", "."]);
                git_ok(repo, &["diff", "HEAD", "--binary"])
            }
        };
        let path = self.scratch.path().join("change.patch");
        fs::write(&path, &patch).expect("write patch");
        (path, String::from_utf8_lossy(&patch).into_owned())
    }

    /// Applies the patch with Offload and with `git apply`; both must succeed and agree.
    fn check(&self, patch: &Path) {
        let ours = apply_diff(patch, self.ours.path());
        assert_eq!(ours.code, 0, "offload apply-diff failed:\n{}", ours.stderr);
        assert_eq!(ours.stdout, "", "apply-diff prints nothing on success");
        let theirs = git_apply(patch, self.theirs.path());
        assert!(
            theirs.status.success(),
            "git apply failed: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let ours = snapshot(self.ours.path());
        assert_same_tree(&ours, &snapshot(self.theirs.path()), "offload vs git apply");
        assert_same_tree(
            &as_git_sees_it(ours),
            &as_git_sees_it(snapshot(self.repo.path())),
            "offload vs the repository's working tree",
        );
    }

    /// The whole round: change, diff, apply both ways, compare. Returns the patch text.
    fn round(&self, change: impl FnOnce(&Path), mode: DiffMode) -> String {
        let (patch, text) = self.diff(change, mode);
        self.check(&patch);
        text
    }
}

const STAGED: DiffMode = DiffMode::Cached(&[]);

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn text_edits_in_several_hunks_new_and_deleted_files() {
    let case = Case::new(|r| {
        write(r, "src/lib.rs", numbered(60));
        write(r, "doomed.txt", "bye\n");
        write(r, "empty-doomed", "");
        write(r, "crlf.txt", "one\r\ntwo\r\nthree\r\n");
        write(
            r,
            "tricky.txt",
            "diff --git a/x b/x\n@@ -1 +1 @@\n-- \n--- a/x\n",
        );
    });
    let patch = case.round(
        |r| {
            let text = numbered(60)
                .replace("line 3\n", "line three\n")
                .replace("line 30\n", "line 30\ninserted\n")
                .replace("line 58\n", "");
            write(r, "src/lib.rs", text);
            fs::remove_file(r.join("doomed.txt")).unwrap();
            fs::remove_file(r.join("empty-doomed")).unwrap();
            write(r, "new/deep/file.txt", "fresh\n");
            write(r, "new/empty", "");
            write(r, "crlf.txt", "one\r\nTWO\r\nthree\r\n");
            write(
                r,
                "tricky.txt",
                "diff --git a/y b/y\n@@ -1 +1 @@\n-- \n+++ b/x\n-- \n",
            );
        },
        STAGED,
    );
    assert_eq!(patch.matches("\n@@ ").count(), 7, "{patch}");
}

#[test]
fn same_changes_through_git_diff_head_with_intent_to_add() {
    let case = Case::new(|r| {
        write(r, "a.txt", numbered(20));
        write(r, "gone.txt", "x\n");
    });
    let patch = case.round(
        |r| {
            write(r, "a.txt", numbered(20).replace("line 10\n", "ten\n"));
            fs::remove_file(r.join("gone.txt")).unwrap();
            write(r, "untracked.txt", "new\n");
        },
        DiffMode::HeadIntentToAdd,
    );
    assert!(patch.contains("new file mode 100644"), "{patch}");
}

#[test]
fn renames_with_and_without_edits_and_copies() {
    let body = numbered(40);
    let case = Case::new(|r| {
        write(r, "old/pure.txt", &body);
        write(r, "old/edited.txt", numbered(30));
        write(r, "source.txt", numbered(25));
    });
    let patch = case.round(
        |r| {
            fs::create_dir_all(r.join("moved")).unwrap();
            fs::rename(r.join("old/pure.txt"), r.join("moved/pure.txt")).unwrap();
            fs::remove_file(r.join("old/edited.txt")).unwrap();
            write(
                r,
                "moved/edited.txt",
                numbered(30).replace("line 15\n", "fifteen\n"),
            );
            write(r, "copy.txt", numbered(25).replace("line 1\n", "first\n"));
        },
        DiffMode::Cached(&["-C", "--find-copies-harder"]),
    );
    assert!(patch.contains("rename from old/pure.txt"), "{patch}");
    assert!(patch.contains("rename from old/edited.txt"), "{patch}");
    assert!(patch.contains("copy from source.txt"), "{patch}");
    assert!(
        !case.ours.path().join("old").exists(),
        "emptied directory removed"
    );
}

#[test]
fn mode_changes_both_ways() {
    let case = Case::new(|r| {
        write(r, "run.sh", "#!/bin/sh\necho hi\n");
        write(r, "tool", "#!/bin/sh\n");
        chmod(r, "tool", 0o755);
        write(r, "both", "a\n");
    });
    let patch = case.round(
        |r| {
            chmod(r, "run.sh", 0o755);
            chmod(r, "tool", 0o644);
            write(r, "both", "b\n");
            chmod(r, "both", 0o755);
            write(r, "new-exec", "#!/bin/sh\n");
            chmod(r, "new-exec", 0o755);
        },
        STAGED,
    );
    assert!(
        patch.contains("new mode 100755") && patch.contains("new mode 100644"),
        "{patch}"
    );
    let mode = |rel: &str| {
        fs::metadata(case.ours.path().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        (mode("run.sh"), mode("tool"), mode("both"), mode("new-exec")),
        (0o755, 0o644, 0o755, 0o755)
    );
}

#[test]
fn binary_files_added_and_modified_literal_and_delta() {
    let big = random_bytes(7, 20_000);
    let case = Case::new(|r| {
        write(r, "data/big.bin", &big);
        write(r, "data/replaced.bin", random_bytes(3, 500));
    });
    let patch = case.round(
        |r| {
            let mut changed = big.clone();
            changed[100..110].copy_from_slice(b"0123456789");
            changed.extend_from_slice(&random_bytes(11, 300));
            write(r, "data/big.bin", &changed);
            write(r, "data/replaced.bin", random_bytes(5, 800));
            write(r, "data/new.bin", random_bytes(9, 4_000));
            write(r, "data/zeros.bin", [0u8; 256]);
        },
        STAGED,
    );
    assert!(
        patch.contains("\ndelta "),
        "a delta block is exercised: {patch}"
    );
    assert!(patch.contains("\nliteral "), "a literal block is exercised");
}

#[test]
fn trailing_newline_gained_and_lost() {
    let case = Case::new(|r| {
        write(r, "gains", "one\ntwo");
        write(r, "loses", "one\ntwo\n");
        write(r, "edited-without", "a\nb\nc");
    });
    let patch = case.round(
        |r| {
            write(r, "gains", "one\ntwo\n");
            write(r, "loses", "one\ntwo");
            write(r, "edited-without", "a\nB\nc");
            write(r, "new-without", "x");
        },
        STAGED,
    );
    assert!(patch.contains("\\ No newline at end of file"), "{patch}");
}

#[test]
fn paths_with_spaces_unicode_and_quotes() {
    let case = Case::new(|r| {
        write(r, "dir with space/file name.txt", "a\nb\n");
        write(r, "café/naïve.txt", "x\n");
    });
    let patch = case.round(
        |r| {
            write(r, "dir with space/file name.txt", "a\nB\n");
            write(r, "café/naïve.txt", "y\n");
            write(r, "tab\there \"quoted\".txt", "new\n");
            fs::rename(r.join("café/naïve.txt"), r.join("café/renamed ü.txt")).unwrap();
            chmod(r, "dir with space/file name.txt", 0o755);
        },
        STAGED,
    );
    assert!(patch.contains(r#""b/tab\there \"quoted\".txt""#), "{patch}");
    assert!(patch.contains(r"\303\251"), "octal-escaped UTF-8: {patch}");
}

#[test]
fn symlinks_added_changed_removed_and_type_changes() {
    let case = Case::new(|r| {
        write(r, "target.txt", "t\n");
        symlink(r, "old-link", "target.txt");
        symlink(r, "doomed-link", "target.txt");
        write(r, "becomes-link", "plain\n");
        symlink(r, "becomes-file", "target.txt");
    });
    case.round(
        |r| {
            symlink(r, "new-link", "dir/../target.txt");
            symlink(r, "dangling", "does/not/exist");
            fs::remove_file(r.join("old-link")).unwrap();
            symlink(r, "old-link", "elsewhere.txt");
            fs::remove_file(r.join("doomed-link")).unwrap();
            fs::remove_file(r.join("becomes-link")).unwrap();
            symlink(r, "becomes-link", "target.txt");
            fs::remove_file(r.join("becomes-file")).unwrap();
            write(r, "becomes-file", "now a file\n");
        },
        STAGED,
    );
    let link = fs::symlink_metadata(case.ours.path().join("new-link")).unwrap();
    assert!(link.file_type().is_symlink());
}

#[test]
fn file_and_directory_swap_places() {
    let case = Case::new(|r| {
        write(r, "was-dir/inner.txt", "i\n");
        write(r, "was-file", "f\n");
    });
    case.round(
        |r| {
            fs::remove_dir_all(r.join("was-dir")).unwrap();
            write(r, "was-dir", "now a file\n");
            fs::remove_file(r.join("was-file")).unwrap();
            write(r, "was-file/inner.txt", "now a dir\n");
        },
        STAGED,
    );
}

#[test]
fn a_patch_failing_at_its_third_file_changes_nothing() {
    let case = Case::new(|r| {
        write(r, "a.txt", numbered(10));
        write(r, "b.txt", numbered(10));
        write(r, "c.txt", numbered(10));
    });
    let (patch, _) = case.diff(
        |r| {
            for name in ["a.txt", "b.txt", "c.txt"] {
                write(r, name, numbered(10).replace("line 5\n", "five\n"));
            }
            write(r, "d-new.txt", "new\n");
        },
        STAGED,
    );
    let target = case.ours.path();
    write(
        target,
        "c.txt",
        numbered(10).replace("line 4\n", "drifted\n"),
    );
    let before = snapshot(target);
    let out = apply_diff(&patch, target);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("patch does not apply: `c.txt`")
            && out
                .stderr
                .contains("hunk 1 (@@ -2,7 +2,7 @@): context does not match"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("change.patch"),
        "names the patch file: {}",
        out.stderr
    );
    assert!(snapshot(target) == before, "the tree was changed");
    // Applying twice fails the same way and changes nothing either.
    let theirs = case.theirs.path();
    assert_eq!(apply_diff(&patch, theirs).code, 0);
    let before = snapshot(theirs);
    let again = apply_diff(&patch, theirs);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("`a.txt`"), "{}", again.stderr);
    assert!(snapshot(theirs) == before);
}

#[test]
fn paths_leaving_the_root_are_refused_before_writing() {
    let outside = tempdir();
    let root = tempdir();
    write(root.path(), "keep.txt", "k\n");
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let abs = outside.path().join("abs.txt");
    let cases = [
        ("../x", "`..`"),
        (&format!("/{}", abs.display())[..], "absolute"),
        ("escape/evil.txt", "symbolic link `escape`"),
    ];
    for (bad, want) in cases {
        let patch = format!(
            "diff --git a/keep.txt b/keep.txt\nindex 1..2 100644\n--- a/keep.txt\n+++ b/keep.txt\n@@ -1 +1 @@\n-k\n+changed\n\
diff --git a/{bad} b/{bad}\nnew file mode 100644\nindex 0000000..1\n--- /dev/null\n+++ b/{bad}\n@@ -0,0 +1 @@\n+pwned\n"
        );
        let file = outside.path().join("p.patch");
        fs::write(&file, patch).unwrap();
        let before = snapshot(root.path());
        let out = apply_diff(&file, root.path());
        assert_eq!(out.code, 1, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{bad}: {}", out.stderr);
        assert!(snapshot(root.path()) == before, "{bad}: the tree changed");
        assert_eq!(
            snapshot(outside.path()).len(),
            1,
            "{bad}: only the patch is outside"
        );
    }
}

#[test]
fn missing_garbage_and_empty_patch_files() {
    let root = tempdir();
    write(root.path(), "f", "x\n");
    let before = snapshot(root.path());
    let scratch = tempdir();

    let missing = apply_diff(&scratch.path().join("nope.patch"), root.path());
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("failed to read the patch file"),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("nope.patch"), "{}", missing.stderr);

    let garbage = scratch.path().join("garbage.patch");
    fs::write(&garbage, random_bytes(1, 500)).unwrap();
    let out = apply_diff(&garbage, root.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not a git patch"), "{}", out.stderr);

    let truncated = scratch.path().join("truncated.patch");
    fs::write(
        &truncated,
        "diff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n x\n",
    )
    .unwrap();
    let out = apply_diff(&truncated, root.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);

    let empty = scratch.path().join("empty.patch");
    fs::write(&empty, "").unwrap();
    let out = apply_diff(&empty, root.path());
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    assert!(snapshot(root.path()) == before);
}

/// Builds a tree with `setup` in two copies, applies `patch` with `git apply` to one and
/// with Offload to the other, and requires both to refuse, Offload with exit 1, a message
/// containing `want`, and both trees untouched.
fn refused_like_git(setup: impl Fn(&Path), patch: &str, want: &str) {
    let (ours, theirs, scratch) = (tempdir(), tempdir(), tempdir());
    setup(ours.path());
    setup(theirs.path());
    let before = snapshot(ours.path());
    let file = scratch.path().join("p.patch");
    fs::write(&file, patch).unwrap();
    let git = git_apply(&file, theirs.path());
    assert!(
        !git.status.success(),
        "git apply accepts the patch, so Offload must too:\n{patch}"
    );
    assert!(
        snapshot(theirs.path()) == before,
        "git apply changed the tree"
    );
    let out = apply_diff(&file, ours.path());
    assert_eq!(out.code, 1, "{patch}\n{}", out.stderr);
    assert!(out.stderr.contains(want), "want `{want}`: {}", out.stderr);
    assert_same_tree(&snapshot(ours.path()), &before, "offload on refusal");
}

const F_HEADER: &str = "diff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n";

/// A patch cut off in its last line (`+wor`, no newline and no
/// `\ No newline at end of file` marker) is corrupt, not a complete patch.
#[test]
fn a_patch_cut_off_mid_line_is_corrupt() {
    refused_like_git(
        |r| write(r, "f", "hello\n"),
        &format!("{F_HEADER}@@ -1 +1,2 @@\n hello\n+wor"),
        "truncated",
    );
    // Cut inside an extended header line too.
    refused_like_git(
        |r| write(r, "f", "hello\n"),
        "diff --git a/f b/f\nold mode 100644\nnew mode 100755",
        "truncated",
    );
}

/// A hunk without trailing context matches only at the end of the file, one
/// starting at line 1 only at its start, and a section duplicated in a patch does not
/// apply a second time on top of itself.
#[test]
fn hunks_are_anchored_at_the_start_and_end_of_the_file() {
    let appends_d = "@@ -1,3 +1,4 @@\n a\n b\n c\n+d\n";
    refused_like_git(
        |r| write(r, "f", "a\nb\nc\nX\n"),
        &format!("{F_HEADER}{appends_d}"),
        "hunk 1 (@@ -1,3 +1,4 @@)",
    );
    refused_like_git(
        |r| write(r, "f", "z\na\nb\nc\nd\n"),
        &format!("{F_HEADER}@@ -1,4 +1,5 @@\n a\n+new\n b\n c\n d\n"),
        "hunk 1 (@@ -1,4 +1,5 @@)",
    );
    refused_like_git(
        |r| write(r, "f", "a\nb\nc\n"),
        &format!("{F_HEADER}{appends_d}{F_HEADER}{appends_d}"),
        "hunk 1 (@@ -1,3 +1,4 @@)",
    );
}

/// A mode-only section may not change a file's type (git wants a deletion and
/// a creation for that): neither a file into a symlink nor a symlink into a file.
#[test]
fn a_mode_change_cannot_change_the_file_type() {
    refused_like_git(
        |r| write(r, "f", "target\n"),
        "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n",
        "type",
    );
    refused_like_git(
        |r| symlink(r, "f", "target"),
        "diff --git a/f b/f\nold mode 120000\nnew mode 100644\n",
        "type",
    );
}
