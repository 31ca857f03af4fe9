//! The `prepare_command` contract (issue 12, item 2): the command runs exactly as
//! written, what Offload has for it comes in `OFFLOAD_*` variables (each set only when
//! it has a value) and placeholders, thin diffs are only for a prepare that opts in, and
//! any other prepare gets a full build whose context holds the working tree.
//!
//! Each project is a git repository with one scripted test, `check.sh`, that compares
//! files in its sandbox with what `--env` says they should hold. Images and sandboxes
//! are directories in a scratch directory outside the project.

use std::path::{Path, PathBuf};

use crate::support::{self, Project, Run, commit_all, git, init_repo};

/// The test: every `EXPECT_<name>=<content>` pair of `$EXPECT` (space-separated) must
/// match the file `<name>` in the sandbox (`-` for a file that must not exist).
const CHECK: &str = r#"for pair in $EXPECT; do
  file=${pair%%=*}; want=${pair#*=}
  if [ "$want" = - ]; then
    [ ! -e "$file" ] || { echo "$file should not exist"; exit 1; }
  else
    got=$(cat "$file" 2>/dev/null) || { echo "$file is missing"; exit 1; }
    [ "$got" = "$want" ] || { echo "$file holds '$got', not '$want'"; exit 1; }
  fi
done
"#;

/// Makes a new image directory from the directory `$1` and prints its path.
const MAKE_IMAGE: &str = r#"img=$(mktemp -d "$STATE/image-XXXXXX") || exit 1
cp -R "$1/." "$img/" && rm -rf "$img/.git" && echo "$img"
"#;

/// A project in a git repository and the scratch directory its images live in.
struct Setup {
    project: Project,
    state: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Setup {
    /// A repository holding `check.sh` and `app.txt` (committed as `base`), with
    /// `offload.toml` whose `[provider]` starts with `provider` (sandboxes are copies
    /// of the image directory) and whose `[offload]` ends with `offload_extra`.
    fn new(provider: &str, offload_extra: &str) -> Self {
        let s = Self {
            project: Project::new(),
            state: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
        };
        std::fs::write(s.state.path().join("make-image.sh"), MAKE_IMAGE).unwrap();
        let p = &s.project;
        p.file("check.sh", CHECK);
        p.file("app.txt", "base\n");
        p.file(".gitignore", "test-results/\n");
        s.write_config(provider, offload_extra);
        init_repo(p.path());
        commit_all(p.path(), "base");
        s
    }

    fn write_config(&self, provider: &str, offload_extra: &str) {
        self.project.file(
            "offload.toml",
            &format!(
                r#"[offload]
max_parallel = 1
sandbox_project_root = "."
{offload_extra}

[provider]
type = "default"
{provider}
create_command = "d=$(mktemp -d \"$STATE/sandbox-XXXXXX\") && cp -R {{image_id}}/. \"$d/\" && echo \"$d\""
exec_command = "cd {{sandbox_id}} && sh -c {{command}}"
destroy_command = "rm -rf {{sandbox_id}}"
timeout_secs = 120

[framework]
type = "default"
discover_command = "echo check {{filters}}"
run_command = "sh check.sh {{tests}}"
test_id_format = "{{name}}"

[groups.all]
retry_count = 0
"#
            ),
        );
    }

    /// A script in the scratch directory (outside every build context).
    fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.state.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `offload run` expecting the files of `expect` (`name=content` pairs).
    fn run(&self, expect: &str) -> Run {
        support::run(
            self.project
                .offload()
                .args(["run", "--env", &format!("EXPECT={expect}")])
                .env("STATE", self.state.path())
                .env("OFFLOAD_SANDBOX_HOME", self.state.path())
                .env("XDG_CACHE_HOME", self.cache.path()),
        )
    }

    /// The lines the prepare scripts appended to `$STATE/prepares`.
    fn prepares(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.path().join("prepares"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn notes(&self) -> String {
        git(
            self.project.path(),
            &["notes", "--ref=offload-images", "list"],
        )
    }
}

/// Like `docker build -q .`: a prepare that rejects any argument runs, and the image it
/// printed is the one the tests run in.
#[test]
fn a_prepare_that_rejects_arguments_runs_as_written_and_its_image_is_used() {
    let s = Setup::new("prepare_command = \"sh \\\"$STATE/strict.sh\\\"\"", "");
    s.script(
        "strict.sh",
        r#"if [ $# -gt 0 ]; then echo "strict.sh: unknown flag: $1" >&2; exit 2; fi
echo full >> "$STATE/prepares"
img=$(sh "$STATE/make-image.sh" .) || exit 1
echo yes > "$img/built-by-prepare"
echo "$img"
"#,
    );
    s.project.file("app.txt", "changed\n");
    let run = s.run("app.txt=changed built-by-prepare=yes");
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(s.prepares(), ["full"], "{}", run.show());
}

/// A prepare that takes no thin diffs and reads none of the variables (it builds from
/// its working directory) gets a full build on every run, and nothing is cached: an
/// image built while the tree held a change is never reused once the change is gone.
#[test]
fn a_prepare_that_ignores_the_variables_always_tests_the_working_tree() {
    let s = Setup::new("prepare_command = \"sh \\\"$STATE/lax.sh\\\"\"", "");
    s.script(
        "lax.sh",
        r#"echo full >> "$STATE/prepares"
sh "$STATE/make-image.sh" .
"#,
    );
    s.project.file("app.txt", "uncommitted\n");
    s.project.file("new.txt", "untracked\n");
    let run = s.run("app.txt=uncommitted new.txt=untracked");
    assert_eq!(run.code, 0, "{}", run.show());

    git(s.project.path(), &["checkout", "-q", "--", "app.txt"]);
    std::fs::remove_file(s.project.path().join("new.txt")).unwrap();
    let run = s.run("app.txt=base new.txt=-");
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(s.prepares(), ["full", "full"], "one full build per run");
    assert_eq!(s.notes(), "", "nothing cached");
    assert!(
        run.stderr
            .contains("does not opt into thin diffs: full build of the working tree"),
        "{}",
        run.show()
    );
    let status = support::run(s.project.offload().arg("checkpoint-status"));
    assert_eq!(status.code, 0, "{}", status.show());
    assert!(
        status.stdout.contains("full build of the working tree"),
        "{}",
        status.show()
    );
}

/// A full build's context (`OFFLOAD_CONTEXT_DIR`, `{context_dir}`) is the working tree
/// as git sees it: tracked and untracked files as they are on disk, without ignored or
/// deleted ones.
#[test]
fn a_full_build_context_holds_the_working_tree_as_git_sees_it() {
    let s = Setup::new(
        "prepare_command = \"sh \\\"$STATE/make-image.sh\\\" {context_dir}\"",
        "",
    );
    s.project.file(".gitignore", "test-results/\n*.log\n");
    s.project.file("gone.txt", "committed\n");
    commit_all(s.project.path(), "more");
    std::fs::remove_file(s.project.path().join("gone.txt")).unwrap();
    s.project.file("app.txt", "uncommitted\n");
    s.project.file("sub dir/new.txt", "untracked\n");
    s.project.file("debug.log", "ignored\n");
    let run = s.run("app.txt=uncommitted debug.log=- gone.txt=-");
    assert_eq!(run.code, 0, "{}", run.show());
    // `$EXPECT` cannot name a path with a space: look in the image directly.
    let image = std::fs::read_dir(s.state.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("image-"))
        .expect("an image directory")
        .path();
    assert_eq!(
        std::fs::read_to_string(image.join("sub dir/new.txt")).unwrap(),
        "untracked\n"
    );
    assert!(!image.join("debug.log").exists());
    assert!(!image.join("gone.txt").exists());
}

/// A prepare that names `{base_image}` and `{patch_file}` opts into thin diffs: after a
/// commit that is not a checkpoint and a new uncommitted change, the second run builds
/// only the thin diff on the cached base image, and the tests see both changes.
#[test]
fn a_prepare_naming_base_image_and_patch_file_gets_thin_diffs() {
    let s = Setup::new(
        "prepare_command = \"sh \\\"$STATE/thin.sh\\\" {base_image} {patch_file}\"",
        "\n[checkpoint]\nbuild_inputs = [\"deps.txt\"]\n",
    );
    s.project.file("deps.txt", "one\n");
    commit_all(s.project.path(), "deps");
    s.script(
        "thin.sh",
        r#"base=$1 patch=$2
if [ -z "$base" ]; then
  echo "full" >> "$STATE/prepares"
  exec sh "$STATE/make-image.sh" "$OFFLOAD_CONTEXT_DIR"
fi
echo "thin${patch:+ with patch}" >> "$STATE/prepares"
img=$(sh "$STATE/make-image.sh" "$base") || exit 1
if [ -n "$patch" ]; then
  "$OFFLOAD_BIN" apply-diff "$patch" --project-root "$img" >&2 || exit 1
fi
echo "$img"
"#,
    );
    let run = s.run("app.txt=base note.txt=-");
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(s.prepares(), ["full"]);
    assert_ne!(s.notes(), "", "the base image is cached");

    s.project.file("app.txt", "committed\n");
    commit_all(s.project.path(), "change app");
    s.project.file("note.txt", "uncommitted\n");
    let run = s.run("app.txt=committed note.txt=uncommitted");
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(s.prepares(), ["full", "thin with patch"], "{}", run.show());
    assert!(run.stderr.contains("checkpoint hit"), "{}", run.show());
}

/// What the prepare gets, with the bundled `@local_sandbox.sh` doing the build: each
/// variable only when it has a value (even when Offload's own environment has a stale
/// one), copy dirs one a line, and placeholders as single words (`''` without a value).
#[test]
fn the_variables_are_set_only_when_they_have_a_value() {
    let record = r#"{
  echo "call: $#:$1|$2"
  for v in OFFLOAD_CONTEXT_DIR OFFLOAD_BASE_IMAGE OFFLOAD_PATCH_FILE \
      OFFLOAD_SANDBOX_PROJECT_ROOT OFFLOAD_COPY_DIRS OFFLOAD_SANDBOX_INIT_CMD \
      OFFLOAD_POST_PATCH_CMD; do
    eval "set=\${$v+yes} value=\${$v-}"
    if [ "$set" = yes ]; then printf '%s=[%s]\n' "$v" "$value"; fi
  done
} >> "$STATE/prepares"
"#;
    let provider = "prepare_command = \"sh \\\"$STATE/record.sh\\\" {context_dir} {sandbox_init_cmd} && @local_sandbox.sh prepare\"\n\
                    copy_dirs = [\"extra one:copied/one\"]";
    let s = Setup::new(provider, "sandbox_init_cmd = \"echo init > init.txt\"");
    s.script("record.sh", record);
    s.project.file("extra one/x.txt", "x\n");
    commit_all(s.project.path(), "extra");
    let cli_dir = tempfile::tempdir().unwrap();
    std::fs::write(cli_dir.path().join("y.txt"), "y\n").unwrap();
    let cli_copy = format!("{}:copied/two", cli_dir.path().display());
    s.project.file("app.txt", "uncommitted\n");
    let run_with = |expect: &str| {
        support::run(
            s.project
                .offload()
                .args(["run", "--copy-dir", &cli_copy])
                .args(["--env", &format!("EXPECT={expect}")])
                .env("STATE", s.state.path())
                .env("OFFLOAD_SANDBOX_HOME", s.state.path())
                .env("XDG_CACHE_HOME", s.cache.path())
                .env("OFFLOAD_BASE_IMAGE", "stale")
                .env("OFFLOAD_PATCH_FILE", "stale"),
        )
    };
    let expect = "app.txt=uncommitted copied/one/x.txt=x copied/two/y.txt=y init.txt=init";
    let run = run_with(expect);
    assert_eq!(run.code, 0, "{}", run.show());
    let text = s.prepares().join("\n");
    let context = text
        .lines()
        .find_map(|l| l.strip_prefix("OFFLOAD_CONTEXT_DIR=["))
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no context dir: {text}"));
    assert!(
        Path::new(context).is_absolute() && context != s.project.path().to_string_lossy(),
        "{text}"
    );
    assert_eq!(
        text,
        format!(
            "call: 2:{context}|echo init > init.txt\n\
             OFFLOAD_CONTEXT_DIR=[{context}]\n\
             OFFLOAD_SANDBOX_PROJECT_ROOT=[.]\n\
             OFFLOAD_COPY_DIRS=[extra one:copied/one\n{cli_copy}]\n\
             OFFLOAD_SANDBOX_INIT_CMD=[echo init > init.txt]"
        )
    );

    // Opted in: a base build of HEAD, then the incremental build with the patch.
    std::fs::remove_file(s.state.path().join("prepares")).unwrap();
    let config = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    s.project.file(
        "offload.toml",
        &config
            .replace(
                "type = \"default\"\n",
                "type = \"default\"\nthin_diff = true\n",
            )
            .replace(
                "sandbox_init_cmd = ",
                "post_patch_cmd = \"echo post > post.txt\"\nsandbox_init_cmd = ",
            ),
    );
    let run = run_with(&format!("{expect} post.txt=post"));
    assert_eq!(run.code, 0, "{}", run.show());
    let text = s.prepares().join("\n");
    let (full, incremental) = text
        .split_once("\ncall: ")
        .unwrap_or_else(|| panic!("two calls: {text}"));
    assert!(full.contains("OFFLOAD_CONTEXT_DIR=["), "{full}");
    assert!(!full.contains("OFFLOAD_BASE_IMAGE"), "{full}");
    let patch = incremental
        .lines()
        .find_map(|l| l.strip_prefix("OFFLOAD_PATCH_FILE=["))
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no patch file: {incremental}"));
    let base = incremental
        .lines()
        .find_map(|l| l.strip_prefix("OFFLOAD_BASE_IMAGE=["))
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no base image: {incremental}"));
    assert!(base.contains("/image-"), "{incremental}");
    assert_eq!(
        incremental,
        format!(
            "2:|\n\
             OFFLOAD_BASE_IMAGE=[{base}]\n\
             OFFLOAD_PATCH_FILE=[{patch}]\n\
             OFFLOAD_SANDBOX_PROJECT_ROOT=[.]\n\
             OFFLOAD_POST_PATCH_CMD=[echo post > post.txt]"
        )
    );
}
