//! `offload apply-diff` against `git apply`, on generated trees and damaged patches.
//!
//! Each case builds a small tree (text files with few distinct lines, so hunks have many
//! places to match; executables, symlinks, binary files), changes it, takes the patch
//! with `git diff --binary`, damages the patch (truncation, lines dropped or duplicated,
//! context altered, hunk headers shifted, sections duplicated, mode lines changed) and
//! applies it with `git apply` to one copy of the tree and with Offload to another. Both
//! must give the same verdict and the same tree (content, file type, executable bit); a
//! refusal must leave the tree untouched, exit 1 (never a panic), and nothing may be
//! written outside the root. The few kinds of damage on which Offload is stricter than
//! git on purpose are listed, with the reason, in [`STRICTER`].
//!
//! `OFFLOAD_PROPTEST_CASES` sets the number of cases (default 256).

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::apply_diff::{
    apply_diff, assert_same_tree, chmod, git_apply, git_ok, snapshot, symlink, tempdir, write,
};

/// The paths a generated tree may hold: one with a space, two in a directory that
/// disappears when both go.
const PATHS: [&str; 5] = ["a", "b", "s p", "d/e", "d/f"];

/// Lines are drawn from this short list, so the same line recurs often.
const WORDS: [&str; 4] = ["a", "b", "c", "d"];

/// One generated file.
#[derive(Debug, Clone)]
enum Spec {
    Text {
        lines: Vec<u8>,
        final_newline: bool,
        exec: bool,
    },
    Link(String),
    Binary(Vec<u8>),
}

/// One edit of a text file's lines, at a position taken modulo the length.
#[derive(Debug, Clone)]
enum LineEdit {
    Insert(usize, u8),
    Remove(usize),
    Replace(usize, u8),
}

/// What happens to one path between the two trees.
#[derive(Debug, Clone)]
enum Change {
    Keep,
    Delete,
    Put(Spec),
    Edit(Vec<LineEdit>, bool),
    ToggleExec,
}

/// One way of damaging a patch; the numbers pick a place, modulo what there is.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    DropLine(usize),
    DuplicateLine(usize),
    AlterContext(usize),
    ShiftHunk(usize, i8, i8),
    DuplicateSection(usize),
    SetMode(usize, u8),
    AddModeChange(usize, u8, u8),
}

/// Damage that Offload refuses while `git apply` reads past it, skipping what it cannot
/// place as garbage and applying the rest. Offload is stricter on purpose: each is the
/// mark of a damaged or hand-edited patch, and applying part of it is what we avoid. So a
/// damaged patch that git applies and Offload refuses with one of these messages is not
/// a disagreement; neither is a patch cut off inside a line (git ignores a cut-off tail
/// too short to parse). Undamaged patches must always agree.
const STRICTER: [&str; 8] = [
    // A path created twice (a duplicated section): git checks only the disk, where the
    // path does not exist yet, so a second creation whose content needs no base (a
    // binary literal, an empty file) passes there.
    "already exists",
    // Hunks without a `diff --git` line: git reads them as a traditional patch, Offload
    // takes only git's own format.
    "not a git patch",
    "a hunk or file header outside a `diff --git` section",
    // Lines after a hunk that its counts do not cover.
    "does not match its line counts",
    // A `+++` name that differs from the `---` name or the `diff --git` line without a
    // `rename` header: git renames the file.
    "without a `rename` header",
    "but the section header names",
    // A header line git does not know (git ends the header there and goes on).
    "unexpected line in a file header",
    // `/dev/null` as a name without `new file mode` or `deleted file mode`: git takes it
    // for a file called `dev/null` (and creates one).
    "`/dev/null` in a section without",
];

const MODES: [&str; 3] = ["100644", "100755", "120000"];

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        8 => (
            prop::collection::vec(0u8..4, 0..10),
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(lines, final_newline, exec)| Spec::Text { lines, final_newline, exec }),
        1 => "[a-c]{1,3}".prop_map(Spec::Link),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|mut data| {
            data.push(0);
            Spec::Binary(data)
        }),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let edit = prop_oneof![
        (any::<usize>(), 0u8..4).prop_map(|(at, w)| LineEdit::Insert(at, w)),
        any::<usize>().prop_map(LineEdit::Remove),
        (any::<usize>(), 0u8..4).prop_map(|(at, w)| LineEdit::Replace(at, w)),
    ];
    prop_oneof![
        3 => Just(Change::Keep),
        1 => Just(Change::Delete),
        2 => spec().prop_map(Change::Put),
        6 => (prop::collection::vec(edit, 1..4), prop::bool::weighted(0.1))
            .prop_map(|(edits, flip)| Change::Edit(edits, flip)),
        1 => Just(Change::ToggleExec),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::AlterContext),
        (any::<usize>(), -2i8..=2, -2i8..=2).prop_map(|(i, o, n)| Mutation::ShiftHunk(i, o, n)),
        any::<usize>().prop_map(Mutation::DuplicateSection),
        (any::<usize>(), 0u8..3).prop_map(|(i, m)| Mutation::SetMode(i, m)),
        (any::<usize>(), 0u8..3, 0u8..3).prop_map(|(i, a, b)| Mutation::AddModeChange(i, a, b)),
    ]
}

fn write_spec(root: &Path, rel: &str, spec: &Spec) {
    match spec {
        Spec::Text {
            lines,
            final_newline,
            exec,
        } => {
            let mut text = lines
                .iter()
                .map(|&w| WORDS[usize::from(w)])
                .collect::<Vec<_>>()
                .join("\n");
            if *final_newline && !lines.is_empty() {
                text.push('\n');
            }
            write(root, rel, text);
            chmod(root, rel, if *exec { 0o755 } else { 0o644 });
        }
        Spec::Link(target) => {
            fs::create_dir_all(root.join(rel).parent().expect("parent")).expect("mkdir");
            symlink(root, rel, target);
        }
        Spec::Binary(data) => {
            write(root, rel, data);
            chmod(root, rel, 0o644);
        }
    }
}

/// The tree after `change`, as specs per path.
fn changed(base: &[Option<Spec>], changes: &[Change]) -> Vec<Option<Spec>> {
    base.iter()
        .zip(changes)
        .map(|(spec, change)| match (spec, change) {
            (_, Change::Delete) => None,
            (_, Change::Put(new)) => Some(new.clone()),
            (
                Some(Spec::Text {
                    lines,
                    final_newline,
                    exec,
                }),
                Change::Edit(edits, flip_newline),
            ) => {
                let mut lines = lines.clone();
                for edit in edits {
                    match *edit {
                        LineEdit::Insert(at, w) => lines.insert(at % (lines.len() + 1), w),
                        LineEdit::Remove(at) if !lines.is_empty() => {
                            lines.remove(at % lines.len());
                        }
                        LineEdit::Replace(at, w) if !lines.is_empty() => {
                            let at = at % lines.len();
                            lines[at] = w;
                        }
                        _ => {}
                    }
                }
                Some(Spec::Text {
                    lines,
                    final_newline: final_newline ^ flip_newline,
                    exec: *exec,
                })
            }
            (
                Some(Spec::Text {
                    lines,
                    final_newline,
                    exec,
                }),
                Change::ToggleExec,
            ) => Some(Spec::Text {
                lines: lines.clone(),
                final_newline: *final_newline,
                exec: !exec,
            }),
            (spec, _) => spec.clone(),
        })
        .collect()
}

fn write_tree(root: &Path, specs: &[Option<Spec>]) {
    for (rel, spec) in PATHS.iter().zip(specs) {
        if let Some(spec) = spec {
            write_spec(root, rel, spec);
        }
    }
}

/// Clears the working tree of `repo` (all but `.git`).
fn clear(repo: &Path) {
    for entry in fs::read_dir(repo).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.file_name() == Some(".git".as_ref()) {
            continue;
        }
        if fs::symlink_metadata(&path).expect("metadata").is_dir() {
            fs::remove_dir_all(&path).expect("rm -r");
        } else {
            fs::remove_file(&path).expect("rm");
        }
    }
}

/// Splits a patch into lines that keep their `\n`.
fn lines_of(patch: &[u8]) -> Vec<Vec<u8>> {
    patch
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// The indices of the lines for which `pick` holds.
fn where_lines(lines: &[Vec<u8>], pick: impl Fn(&[u8]) -> bool) -> Vec<usize> {
    (0..lines.len()).filter(|&i| pick(&lines[i])).collect()
}

/// Damages `patch` as `mutation` says (a no-op when there is nothing to damage).
fn mutate(patch: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    let mut lines = lines_of(&patch);
    let n = lines.len();
    let choose = |found: Vec<usize>, i: usize| (!found.is_empty()).then(|| found[i % found.len()]);
    match *mutation {
        Mutation::Truncate(at) => {
            let mut patch = patch;
            if !patch.is_empty() {
                patch.truncate(at % patch.len());
            }
            return patch;
        }
        Mutation::DropLine(i) if n > 0 => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) if n > 0 => {
            let line = lines[i % n].clone();
            lines.insert(i % n, line);
        }
        Mutation::AlterContext(i) => {
            if let Some(at) = choose(where_lines(&lines, |l| l.starts_with(b" ")), i) {
                let newline = lines[at].ends_with(b"\n");
                lines[at] = b" zz".to_vec();
                if newline {
                    lines[at].push(b'\n');
                }
            }
        }
        Mutation::ShiftHunk(i, by_old, by_new) => {
            if let Some(at) = choose(where_lines(&lines, |l| l.starts_with(b"@@ -")), i) {
                lines[at] = shift_header(&lines[at], by_old, by_new);
            }
        }
        Mutation::DuplicateSection(i) => {
            let starts = where_lines(&lines, |l| l.starts_with(b"diff --git "));
            if let Some(k) = (!starts.is_empty()).then(|| i % starts.len()) {
                let end = starts.get(k + 1).copied().unwrap_or(n);
                let section: Vec<Vec<u8>> = lines[starts[k]..end].to_vec();
                lines.splice(end..end, section);
            }
        }
        Mutation::SetMode(i, mode) => {
            let has_mode = |l: &[u8]| {
                let l = l.strip_suffix(b"\n").unwrap_or(l);
                let prefixes: [&[u8]; 5] = [
                    b"index ",
                    b"old mode ",
                    b"new mode ",
                    b"new file mode ",
                    b"deleted file mode ",
                ];
                prefixes.iter().any(|p| l.starts_with(p))
                    && l.len() > 7
                    && l[l.len() - 7] == b' '
                    && l[l.len() - 6..].iter().all(u8::is_ascii_digit)
            };
            if let Some(at) = choose(where_lines(&lines, has_mode), i) {
                let line = &mut lines[at];
                let end = line.len() - usize::from(line.ends_with(b"\n"));
                line.splice(end - 6..end, MODES[usize::from(mode)].bytes());
            }
        }
        Mutation::AddModeChange(i, from, to) => {
            if let Some(at) = choose(where_lines(&lines, |l| l.starts_with(b"diff --git ")), i) {
                let text = format!(
                    "old mode {}\nnew mode {}\n",
                    MODES[usize::from(from)],
                    MODES[usize::from(to)]
                );
                lines.insert(at + 1, text.into_bytes());
            }
        }
        _ => {}
    }
    lines.concat()
}

/// `@@ -a,b +c,d @@…` with `a` and `c` moved by the given amounts (not below 0).
fn shift_header(line: &[u8], by_old: i8, by_new: i8) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let Some((ranges, rest)) = text[3..].split_once(" @@") else {
        return line.to_vec();
    };
    let shift = |range: &str, by: i8| -> String {
        let (start, len) = range
            .split_once(',')
            .map_or((range, None), |(s, l)| (s, Some(l)));
        let start = start
            .parse::<i64>()
            .map_or(0, |s| (s + i64::from(by)).max(0));
        match len {
            Some(len) => format!("{start},{len}"),
            None => start.to_string(),
        }
    };
    let Some((old, new)) = ranges.split_once(' ') else {
        return line.to_vec();
    };
    let (Some(old), Some(new)) = (old.strip_prefix('-'), new.strip_prefix('+')) else {
        return line.to_vec();
    };
    format!(
        "@@ -{} +{} @@{rest}",
        shift(old, by_old),
        shift(new, by_new)
    )
    .into_bytes()
}

/// 256 cases, or `OFFLOAD_PROPTEST_CASES`; shrinking bounded (each step runs git), unless
/// `PROPTEST_MAX_SHRINK_ITERS` says otherwise; a fixed seed unless `PROPTEST_RNG_SEED`
/// gives one.
fn config() -> Config {
    let defaults = Config::default();
    let cases = std::env::var("OFFLOAD_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let max_shrink_iters = match defaults.max_shrink_iters {
        u32::MAX => 300,
        set => set,
    };
    // A fixed seed unless `PROPTEST_RNG_SEED` sets one: CI runs the same cases every time.
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x00ff_10ad),
        set => set,
    };
    Config {
        cases,
        max_shrink_iters,
        rng_seed,
        ..defaults
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn apply_diff_agrees_with_git_apply_on_damaged_patches(
        base in prop::collection::vec(prop::option::weighted(0.8, spec()), PATHS.len()),
        changes in prop::collection::vec(change(), PATHS.len()),
        find_renames in prop::bool::weighted(0.3),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let repo = tempdir();
        let repo = repo.path();
        git_ok(repo, &["init", "-q"]);
        write_tree(repo, &base);
        git_ok(repo, &["add", "-A"]);
        git_ok(repo, &["commit", "-q", "--allow-empty", "-m", "base"]);
        clear(repo);
        write_tree(repo, &changed(&base, &changes));
        git_ok(repo, &["add", "-A"]);
        let renames = if find_renames { "-M" } else { "--no-renames" };
        let mut patch = git_ok(repo, &["diff", "--cached", "--binary", renames]);
        // Offload takes an empty patch as "nothing to do" (a thin diff may be empty);
        // `git apply` refuses it. Not a difference to chase here.
        prop_assume!(!patch.is_empty());
        for m in &mutations {
            patch = mutate(patch, m);
        }
        prop_assume!(!patch.iter().all(u8::is_ascii_whitespace));

        let case = tempdir();
        let (ours, theirs) = (case.path().join("ours"), case.path().join("theirs"));
        for dir in [&ours, &theirs] {
            fs::create_dir(dir).expect("mkdir");
            write_tree(dir, &base);
        }
        let before = snapshot(&ours);
        let patch_file = case.path().join("p.patch");
        fs::write(&patch_file, &patch).expect("write patch");

        let git = git_apply(&patch_file, &theirs);
        let out = apply_diff(&patch_file, &ours);
        let shown = String::from_utf8_lossy(&patch);
        let git_stderr = String::from_utf8_lossy(&git.stderr);
        prop_assert!(
            out.code == 0 || out.code == 1,
            "offload exited {}:\n{}\npatch:\n{shown}", out.code, out.stderr
        );
        let mut outside: Vec<_> = fs::read_dir(case.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        outside.sort();
        prop_assert_eq!(outside, ["ours", "p.patch", "theirs"], "written outside the root");
        // On some errors in the patch text (a corrupt binary block, say) `git apply`
        // says `error: …`, stops reading, applies the sections before and exits 0. That
        // is partial application of a damaged patch: Offload must refuse it whole.
        if git.status.success() && git_stderr.contains("error: ") {
            prop_assert_eq!(out.code, 1, "git gave up on the patch:\n{}\npatch:\n{}", git_stderr, shown);
            assert_same_tree(&snapshot(&ours), &before, "offload refused but changed the tree");
            return Ok(());
        }
        let stricter = out.code == 1
            && git.status.success()
            && !mutations.is_empty()
            && (!patch.ends_with(b"\n") || STRICTER.iter().any(|m| out.stderr.contains(m)));
        prop_assume!(!stricter);
        // A `diff --git` line with nothing after it is a stray line to both, but git keeps
        // the names it read there for the next section, and then refuses that section if
        // it creates or deletes the file. A git quirk, not copied.
        let stray_header = lines_of(&patch)
            .windows(2)
            .any(|w| w.iter().all(|l| l.starts_with(b"diff --git ")));
        // Likewise a binary section whose `index` line was dropped (`GIT binary patch`
        // right after `diff --git`): git then refuses the next section's `---` name as
        // "inconsistent". A git quirk, not copied.
        let bare_binary = lines_of(&patch).windows(2).any(|w| {
            w[0].starts_with(b"diff --git ") && w[1].starts_with(b"GIT binary patch")
        });
        prop_assume!(!(out.code == 0 && !git.status.success() && (stray_header || bare_binary)));
        prop_assert_eq!(
            out.code == 0,
            git.status.success(),
            "verdicts differ\noffload: {}\ngit apply: {}\npatch:\n{}",
            out.stderr, git_stderr, shown
        );
        // Both applied: the same tree. Both refused: Offload's tree as it was (git's may
        // not be: it can fail while writing, after it has written part of the patch).
        let (expected, what) = match out.code {
            0 => (snapshot(&theirs), "offload vs git apply"),
            _ => (before, "offload refused but changed the tree"),
        };
        assert_same_tree(&snapshot(&ours), &expected, &format!("{what}, patch:\n{shown}"));
    }
}
