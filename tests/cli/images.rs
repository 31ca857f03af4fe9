//! Black-box tests of the image cache as users see it: `offload checkpoint-status` in
//! real git repositories (with and without a bare `origin`), both caching modes, an
//! empty repository and a directory outside git.

use std::path::Path;
use std::process::Command;

use crate::support::{Project, commit_all, git, init_repo};

fn add_note(dir: &Path, sha: &str, json: &str) {
    git(
        dir,
        &[
            "notes",
            "--ref=offload-images",
            "add",
            "-f",
            "-m",
            json,
            sha,
        ],
    );
}

/// A default-provider config (checkpoint mode needs a provider that builds images).
fn write_config(p: &Project, checkpoint: Option<&str>) {
    let checkpoint = checkpoint
        .map(|inputs| format!("\n[checkpoint]\nbuild_inputs = {inputs}\n"))
        .unwrap_or_default();
    p.file(
        "offload.toml",
        &format!(
            "[offload]\nsandbox_project_root = \"/app\"\n\n\
             [provider]\ntype = \"default\"\nprepare_command = \"echo im-x\"\nthin_diff = true\n\
             create_command = \"echo sb\"\nexec_command = \"sh -c {{command}}\"\n\
             destroy_command = \"true\"\n\n\
             [framework]\ntype = \"default\"\ndiscover_command = \"echo t {{filters}}\"\n\
             run_command = \"true {{tests}}\"\ntest_id_format = \"{{name}}\"\n\n\
             [groups.all]\n{checkpoint}"
        ),
    );
}

struct Status {
    code: i32,
    stdout: String,
    stderr: String,
}

fn status(p: &Project) -> Status {
    let out = p
        .offload()
        .arg("checkpoint-status")
        .output()
        .expect("offload runs");
    Status {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn expect_lines(s: &Status, want: &[String]) {
    assert_eq!(s.code, 0, "stderr: {}", s.stderr);
    let got: Vec<&str> = s.stdout.lines().collect();
    assert_eq!(got, want, "stderr: {}", s.stderr);
}

fn line(label: &str, value: &str) -> String {
    format!("{label:<20}{value}")
}

#[test]
fn empty_repository_answers() {
    let p = Project::new();
    init_repo(p.path());
    write_config(&p, None);
    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", "(none: empty repository)"),
            line("Next run mode:", "full build (no commits yet, no caching)"),
        ],
    );
}

#[test]
fn latest_commit_mode_miss_hit_and_uncommitted_changes() {
    let p = Project::new();
    init_repo(p.path());
    write_config(&p, None);
    p.file("app.py", "v = 1\n");
    let head = commit_all(p.path(), "one");
    let h8 = &head[..8];

    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", h8),
            line("Base commit:", &format!("{h8} (latest commit, HEAD)")),
            line("Cached image:", "(none)"),
            line(
                "Next run mode:",
                &format!("build base image from {h8}, then thin diff (no cached image for HEAD)"),
            ),
        ],
    );
    assert!(
        s.stderr.contains("no git remote `origin`"),
        "a repository without a remote gets a note: {}",
        s.stderr
    );

    // Another config's entry does not count for this one.
    add_note(p.path(), &head, r#"{"other.toml":{"image_id":"im-other"}}"#);
    assert!(status(&p).stdout.contains(&line("Cached image:", "(none)")));

    add_note(
        p.path(),
        &head,
        r#"{"other.toml":{"image_id":"im-other"},"offload.toml":{"image_id":"im-abc123"}}"#,
    );
    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", h8),
            line("Base commit:", &format!("{h8} (latest commit, HEAD)")),
            line("Cached image:", "im-abc123"),
            line(
                "Next run mode:",
                "cached image as is (no uncommitted changes)",
            ),
        ],
    );

    p.file("app.py", "v = 2\n");
    let s = status(&p);
    assert!(
        s.stdout.contains(&line(
            "Next run mode:",
            "thin diff (uncommitted changes only)"
        )),
        "{}",
        s.stdout
    );
    // Nothing was written: no remote, no config change.
    assert_eq!(git(p.path(), &["remote"]), "");
    let config = std::fs::read_to_string(p.path().join(".git/config")).unwrap();
    assert!(!config.contains("notes"), "{config}");
}

#[test]
fn checkpoint_mode_reports_distance_cache_and_changed_files() {
    let p = Project::new();
    init_repo(p.path());
    write_config(&p, Some(r#"["Dockerfile", "requirements.txt"]"#));
    p.file("Dockerfile", "FROM python\n");
    commit_all(p.path(), "one");
    p.file("requirements.txt", "flask\n");
    let ckpt = commit_all(p.path(), "deps");
    p.file("a.py", "a\n");
    commit_all(p.path(), "code");
    p.file("b.py", "b\n");
    let head = commit_all(p.path(), "more code");
    let (h8, c8) = (&head[..8], &ckpt[..8]);

    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", h8),
            line(
                "Base commit:",
                &format!("{c8} (checkpoint, 2 commits back)"),
            ),
            line("Cached image:", "(none)"),
            line(
                "Next run mode:",
                &format!("build base image from {c8}, then thin diff (no cached checkpoint image)"),
            ),
        ],
    );

    add_note(
        p.path(),
        &ckpt,
        r#"{"offload.toml":{"image_id":"im-ckpt"}}"#,
    );
    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", h8),
            line(
                "Base commit:",
                &format!("{c8} (checkpoint, 2 commits back)"),
            ),
            line("Cached image:", "im-ckpt"),
            line(
                "Next run mode:",
                "thin diff (2 files changed since checkpoint)",
            ),
        ],
    );
    // An uncommitted file counts too: it ships in the thin diff.
    p.file("c.py", "c\n");
    assert!(status(&p).stdout.contains(&line(
        "Next run mode:",
        "thin diff (3 files changed since checkpoint)"
    )));
}

#[test]
fn checkpoint_mode_without_a_matching_commit() {
    let p = Project::new();
    init_repo(p.path());
    write_config(&p, Some(r#"["never-there.txt"]"#));
    p.file("a.py", "a\n");
    let head = commit_all(p.path(), "one");
    let s = status(&p);
    expect_lines(
        &s,
        &[
            line("HEAD:", &head[..8]),
            line("Base commit:", "(no checkpoint found in last 1 commit)"),
            line("Next run mode:", "full build (no checkpoint found)"),
        ],
    );
}

#[test]
fn notes_are_fetched_from_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("origin.git");
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);

    // A teammate's clone caches an image and pushes the note.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    init_repo(&theirs);
    std::fs::write(theirs.join("app.py"), "v = 1\n").unwrap();
    let head = commit_all(&theirs, "one");
    add_note(
        &theirs,
        &head,
        r#"{"offload.toml":{"image_id":"im-shared"}}"#,
    );
    git(
        &theirs,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    git(
        &theirs,
        &["push", "-q", "origin", "main", "refs/notes/offload-images"],
    );

    // Our clone has no notes until checkpoint-status fetches them.
    let p = Project::new();
    git(p.path(), &["clone", "-q", remote.to_str().unwrap(), "."]);
    write_config(&p, None);
    std::fs::write(p.path().join(".git/info/exclude"), "offload.toml\n").unwrap();
    let s = status(&p);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stdout.contains(&line("Cached image:", "im-shared")),
        "{}\n{}",
        s.stdout,
        s.stderr
    );
    let config = std::fs::read_to_string(p.path().join(".git/config")).unwrap();
    assert!(!config.contains("notes"), "no refspec added: {config}");
}

#[test]
fn outside_a_git_repository_is_a_clear_error() {
    let p = Project::new();
    write_config(&p, None);
    let s = status(&p);
    assert_eq!(s.code, 1, "{}", s.stdout);
    assert!(s.stdout.is_empty(), "{}", s.stdout);
    assert!(
        s.stderr.contains("is not in a git repository"),
        "{}",
        s.stderr
    );
}

/// A git project with a bare `origin`, a default-provider config driven by the bundled
/// `@local_sandbox.sh`, and one scripted test that checks `app.txt` in the sandbox.
struct SandboxRun {
    project: Project,
    _remote_dir: tempfile::TempDir,
    remote: std::path::PathBuf,
    home: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl SandboxRun {
    fn new() -> Self {
        let project = Project::new();
        let remote_dir = tempfile::tempdir().unwrap();
        let remote = remote_dir.path().join("origin.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        init_repo(project.path());
        project.file(
            "offload.toml",
            "[offload]\nmax_parallel = 1\nsandbox_project_root = \".\"\n\n\
             [provider]\ntype = \"default\"\n\
             prepare_command = \"@local_sandbox.sh prepare\"\nthin_diff = true\n\
             create_command = \"@local_sandbox.sh create {image_id}\"\n\
             exec_command = \"@local_sandbox.sh exec {sandbox_id} {command}\"\n\
             destroy_command = \"@local_sandbox.sh destroy {sandbox_id}\"\n\n\
             [framework]\ntype = \"default\"\n\
             discover_command = \"echo check {filters}\"\n\
             run_command = \"grep -q expected app.txt {tests}\"\n\
             test_id_format = \"{name}\"\n\n[groups.all]\n",
        );
        project.file(".gitignore", "offload-results/\n");
        project.file("app.txt", "old\n");
        commit_all(project.path(), "base");
        git(
            project.path(),
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        git(project.path(), &["push", "-q", "origin", "main"]);
        Self {
            project,
            _remote_dir: remote_dir,
            remote,
            home: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, extra: &[&str]) -> (i32, String) {
        let out = self
            .project
            .offload()
            .arg("run")
            .args(extra)
            .env("OFFLOAD_SANDBOX_HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.cache.path())
            .output()
            .expect("offload runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn remote_notes(&self) -> String {
        git(
            &self.remote,
            &["ls-remote", ".", "refs/notes/offload-images"],
        )
    }
}

#[test]
fn runs_miss_then_hit_and_the_thin_diff_reaches_the_sandbox() {
    let s = SandboxRun::new();
    // The working tree differs from HEAD: only the thin diff carries `expected`.
    s.project.file("app.txt", "expected\n");
    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("latest-commit miss"), "{out}");
    assert!(out.contains("thin diff: 1 file changed"), "{out}");
    assert!(
        s.remote_notes().contains("refs/notes/offload-images"),
        "{out}"
    );

    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("latest-commit hit"), "{out}");
    assert!(
        !out.contains("building the base image"),
        "one base build only: {out}"
    );
}

#[test]
fn no_cache_runs_without_notes() {
    let s = SandboxRun::new();
    s.project.file("app.txt", "expected\n");
    let (code, out) = s.run(&["--no-cache"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--no-cache"), "{out}");
    assert_eq!(s.remote_notes(), "");
    assert_eq!(
        git(s.project.path(), &["notes", "--ref=offload-images", "list"]),
        ""
    );
}

#[test]
fn a_deleted_cached_image_is_rebuilt_and_the_note_replaced() {
    let s = SandboxRun::new();
    s.project.file("app.txt", "expected\n");
    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    let head = git(s.project.path(), &["rev-parse", "HEAD"]);
    let note = git(
        s.project.path(),
        &["notes", "--ref=offload-images", "show", &head],
    );
    let image = note
        .split('"')
        .find(|part| part.contains("image-"))
        .expect("an image dir in the note")
        .to_owned();
    std::fs::remove_dir_all(&image).unwrap();
    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rebuilding the base image"), "{out}");
    let new_note = git(
        s.project.path(),
        &["notes", "--ref=offload-images", "show", &head],
    );
    assert!(!new_note.contains(&image), "{new_note}");
}

fn note_on(dir: &Path, sha: &str) -> String {
    git(dir, &["notes", "--ref=offload-images", "show", sha])
}

#[test]
fn two_configs_keep_their_own_entries_in_one_note() {
    let s = SandboxRun::new();
    let first = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    s.project.file("second.toml", &first);
    let head = commit_all(s.project.path(), "a second config");
    s.project.file("app.txt", "expected\n");

    let (code, out) = s.run(&["-c", "second.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("latest-commit miss"), "{out}");
    let (code, out) = s.run(&["-c", "offload.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("latest-commit miss"),
        "the other config's entry is not ours: {out}"
    );

    // One note on HEAD holds both entries, and each config now hits its own.
    let note = note_on(s.project.path(), &head);
    assert!(
        note.contains("\"second.toml\"") && note.contains("\"offload.toml\""),
        "{note}"
    );
    for config in ["second.toml", "offload.toml"] {
        let (code, out) = s.run(&["-c", config]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("latest-commit hit"), "{config}: {out}");
    }
    assert!(s.remote_notes().contains("refs/notes/offload-images"));
}

#[test]
fn checkpoint_mode_builds_from_the_last_commit_touching_a_build_input() {
    let s = SandboxRun::new();
    let config = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    s.project.file(
        "offload.toml",
        &format!("{config}\n[checkpoint]\nbuild_inputs = [\"deps.txt\"]\n"),
    );
    s.project.file("deps.txt", "one\n");
    let checkpoint = commit_all(s.project.path(), "deps: one");
    s.project.file("notes.md", "later work\n");
    let later = commit_all(s.project.path(), "not a build input");
    s.project.file("app.txt", "expected\n");

    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoint miss"), "{out}");
    assert!(!note_on(s.project.path(), &checkpoint).is_empty());
    let on_later = Command::new("git")
        .current_dir(s.project.path())
        .args(["notes", "--ref=offload-images", "list", &later])
        .output()
        .unwrap();
    assert!(
        !on_later.status.success(),
        "the note belongs on the checkpoint, not on HEAD"
    );

    // A commit that does not touch a build input still hits the checkpoint's image.
    s.project.file("more.md", "x\n");
    commit_all(s.project.path(), "still not a build input");
    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoint hit"), "{out}");

    // Touching a build input makes a new checkpoint: a miss, then a note on it.
    s.project.file("deps.txt", "two\n");
    let next = commit_all(s.project.path(), "deps: two");
    let (code, out) = s.run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoint miss"), "{out}");
    assert!(!note_on(s.project.path(), &next).is_empty());
}
