//! `offload run` with `type = "modal"` and with a `default` provider written with
//! `@modal_sandbox.py` commands, both against a recording stand-in `uv` first on `PATH`.
//!
//! No Modal account is reachable here. The stand-in records each call's arguments and
//! the `OFFLOAD_*` variables of the prepare contract it got (one JSON object per line,
//! plus the id a `create` printed) and then does what the call asks with the bundled
//! local-directory backend `scripts/local_sandbox.sh`, so the runs really execute their
//! tests. Also here: the self-healing of a gone cached image
//! (issue 5), driven through `@local_sandbox.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, Junit, Project, Run, assert_dead_soon};

/// The stand-in `uv`: `uv run SCRIPT SUBCOMMAND ARGS...`, recorded, then emulated.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys

LOG = @LOG@
LOCAL = @LOCAL@
argv = sys.argv[1:]
if len(argv) < 3 or argv[0] != "run":
    sys.exit("stand-in uv: unexpected call %r" % argv)
sub, rest = argv[2], argv[3:]

def record(entry):
    entry["env"] = sorted("%s=%s" % (k, v) for k, v in os.environ.items()
                          if k.startswith("OFFLOAD_") and k not in ("OFFLOAD_SANDBOX_HOME", "OFFLOAD_BIN"))
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")

if sub == "prepare":
    # Modal-only words (the Dockerfile, --include-cwd) have no local meaning; the rest
    # comes in the environment, which both scripts read.
    local = ["prepare"]
elif sub == "create":
    done = subprocess.run(["sh", LOCAL, "create", rest[0]], stdout=subprocess.PIPE, text=True)
    record({"argv": argv, "id": done.stdout.strip()})
    sys.stdout.write(done.stdout)
    sys.exit(done.returncode)
else:
    local = [sub] + rest
record({"argv": argv})
os.execv("/bin/sh", ["sh", LOCAL] + local)
"#;

/// A runner for the default framework: `sh runner.sh RESULT ID...`. `pass-*` passes,
/// `fail-*` fails, `hang-*` writes its pid to `$PIDS/<id>` and sleeps.
const RUNNER: &str = r#"result=$1; shift
echo "env: FROM_CONFIG=$FROM_CONFIG FROM_CLI=$FROM_CLI"
echo "copied: $(cat copied/e.txt 2>/dev/null) app: $(cat app.txt)"
cases=""
for id; do
  out=""
  case $id in
  fail-*) out='<failure message="boom">no</failure>' ;;
  hang-*) echo $$ > "$PIDS/$id"; sleep 300 ;;
  esac
  cases="$cases<testcase name=\"$id\">$out</testcase>"
done
printf '<?xml version="1.0"?><testsuite name="r">%s</testsuite>' "$cases" > "$result"
"#;

/// The `[provider]` of the modal config.
const MODAL_PROVIDER: &str = r#"type = "modal"
dockerfile = "docker/Test Dockerfile"
include_cwd = true
copy_dirs = ["extra:copied"]
cpu_cores = 2
memory_gb = 8

[provider.experimental_options]
enable_docker = true
"#;

/// The same, written as a `default` provider (as in `offload-pytest-default.toml`).
const DEFAULT_PROVIDER: &str = r#"type = "default"
prepare_command = "uv run @modal_sandbox.py prepare 'docker/Test Dockerfile' --include-cwd"
thin_diff = true
create_command = "uv run @modal_sandbox.py create {image_id} --cpu {cpu_cores} --memory-gb 8 --experimental-options '{\"enable_docker\":true}'"
exec_command = "uv run @modal_sandbox.py exec {sandbox_id} {command}"
download_command = "uv run @modal_sandbox.py download {sandbox_id} {paths}"
destroy_command = "uv run @modal_sandbox.py destroy {sandbox_id}"
copy_dirs = ["extra:copied"]
cpu_cores = 2
"#;

/// A git project with scripted tests, the stand-in `uv` and the directories it uses.
struct Setup {
    project: Project,
    /// Holds `uv`.
    bin: tempfile::TempDir,
    home: tempfile::TempDir,
    cache: tempfile::TempDir,
    /// Logs and pid files.
    state: tempfile::TempDir,
}

impl Setup {
    /// `tests` run through the runner; `provider` is the `[provider]` body; the
    /// working tree differs from HEAD in `app.txt` (a thin diff).
    fn new(tests: &[&str], offload_extra: &str, provider: &str) -> Self {
        let tmp = || tempfile::tempdir().expect("temp dir");
        let s = Self {
            project: Project::new(),
            bin: tmp(),
            home: tmp(),
            cache: tmp(),
            state: tmp(),
        };
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local_sandbox.sh");
        let stand_in = STAND_IN
            .replace("@LOG@", &py_str(&s.log_path()))
            .replace("@LOCAL@", &py_str(&local));
        let uv = s.bin.path().join("uv");
        std::fs::write(&uv, stand_in).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&uv, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(s.state.path().join("pids")).unwrap();

        let p = &s.project;
        p.file("runner.sh", RUNNER);
        p.file("tests.txt", &(tests.join("\n") + "\n"));
        p.file("docker/Test Dockerfile", "FROM scratch\n");
        p.file("extra/e.txt", "from the copy dir");
        p.file("app.txt", "committed\n");
        p.file(".gitignore", "test-results/\n");
        s.write_config("offload.toml", offload_extra, provider);
        support::init_repo(p.path());
        support::commit_all(p.path(), "base");
        p.file("app.txt", "in the thin diff\n");
        s
    }

    fn write_config(&self, name: &str, offload_extra: &str, provider: &str) {
        let timeout = if offload_extra.contains("test_timeout_secs") {
            ""
        } else {
            "test_timeout_secs = 60\n"
        };
        self.project.file(
            name,
            &format!(
                r#"[offload]
max_parallel = 3
sandbox_project_root = "."
{timeout}{offload_extra}

[provider]
{provider}
[provider.env]
FROM_CONFIG = "config value"
PIDS = "{pids}"

[framework]
type = "default"
discover_command = "grep -v '^$' tests.txt {{filters}}"
run_command = "sh runner.sh {{result_file}} {{tests}}"
test_id_format = "{{name}}"

[groups.all]
retry_count = 0
"#,
                pids = self.state.path().join("pids").display()
            ),
        );
    }

    fn log_path(&self) -> PathBuf {
        self.state.path().join("uv.log")
    }

    /// `offload` with the stand-in first on `PATH`.
    fn offload(&self) -> Command {
        let mut cmd = self.project.offload();
        cmd.env("PATH", support::path_with(self.bin.path()))
            .env("OFFLOAD_SANDBOX_HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.cache.path());
        cmd
    }

    /// The recorded calls so far (and clears the log).
    fn take_calls(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log_path());
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    fn sandboxes_left(&self) -> usize {
        std::fs::read_dir(self.home.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("sandbox-"))
            .count()
    }

    fn pids(&self) -> Vec<i32> {
        support::read_pids(&self.state.path().join("pids"))
    }

    /// The extracted script every call names.
    fn script(&self) -> String {
        self.cache
            .path()
            .join("offload/scripts/modal_sandbox.py")
            .to_string_lossy()
            .into_owned()
    }

    /// Checks the calls: each names the extracted script, each created sandbox is
    /// destroyed exactly once, and no sandbox directory is left. Returns the calls,
    /// each its arguments after the script followed by its sorted `OFFLOAD_*=value`
    /// variables.
    fn assert_clean(&self, run: &Run) -> Vec<Vec<String>> {
        let calls = self.take_calls();
        let mut created = Vec::new();
        let mut destroyed = Vec::new();
        let mut argvs = Vec::new();
        for call in &calls {
            let argv: Vec<String> = call["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(argv[0], "run", "{argv:?}");
            assert_eq!(argv[1], self.script(), "{argv:?}");
            match argv[2].as_str() {
                "create" => created.push(call["id"].as_str().unwrap().to_owned()),
                "destroy" => destroyed.push(argv[3].clone()),
                _ => {}
            }
            let env = call["env"].as_array().unwrap().iter();
            let env = env.map(|v| v.as_str().unwrap().to_owned());
            argvs.push(argv[2..].iter().cloned().chain(env).collect());
        }
        assert!(!created.is_empty(), "no sandbox created\n{}", run.show());
        created.sort();
        destroyed.sort();
        assert_eq!(
            created,
            destroyed,
            "create/destroy mismatch\n{}",
            run.show()
        );
        assert_eq!(self.sandboxes_left(), 0, "sandboxes left\n{}", run.show());
        argvs
    }
}

/// `s` as a Python string literal.
fn py_str(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap()
}

/// Replaces run-specific values (sandbox and image directories, temporary paths) with
/// fixed words, so two runs can be compared.
fn normalise(argv: &[String], s: &Setup) -> Vec<String> {
    let home = s.home.path().canonicalize().unwrap();
    let sandbox = regex::Regex::new(r"/sandbox-[A-Za-z0-9]+").unwrap();
    let image = regex::Regex::new(r"/image-[A-Za-z0-9]+").unwrap();
    argv.iter()
        .map(|a| {
            if a.starts_with("OFFLOAD_CONTEXT_DIR=") {
                return "OFFLOAD_CONTEXT_DIR=<DIR>".to_owned();
            }
            if a.starts_with("OFFLOAD_PATCH_FILE=") {
                return "OFFLOAD_PATCH_FILE=<PATCH>".to_owned();
            }
            let a = a.replace(&home.to_string_lossy().into_owned(), "<HOME>");
            let a = sandbox.replace_all(&a, "/sandbox-X");
            image.replace_all(&a, "/image-X").into_owned()
        })
        .collect()
}

#[test]
fn modal_generates_the_script_commands_and_matches_the_default_provider() {
    let s = Setup::new(
        &["pass-1", "pass-2", "fail-3", "pass 4"],
        "sandbox_init_cmd = \"echo init\"\n",
        MODAL_PROVIDER,
    );
    s.write_config(
        "default.toml",
        "sandbox_init_cmd = \"echo init\"\n",
        DEFAULT_PROVIDER,
    );
    let cli_dir = tempfile::tempdir().unwrap();
    let cli_copy = format!("{}:cli copied", cli_dir.path().display());

    let mut runs = Vec::new();
    for config in ["offload.toml", "default.toml"] {
        // No durations from an earlier report: both runs batch the same way.
        let _ = std::fs::remove_dir_all(s.project.path().join("test-results"));
        let run = support::run(
            s.offload()
                .args(["-c", config, "run", "--env", "FROM_CLI=cli value"])
                .args(["--copy-dir", &cli_copy]),
        );
        assert_eq!(run.code, 1, "{config}: {}", run.show());
        run.assert_summary("Passed: 3");
        run.assert_summary("Failed: 1");
        let logs: String = std::fs::read_dir(s.project.path().join("test-results/logs"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        assert!(
            logs.contains("env: FROM_CONFIG=config value FROM_CLI=cli value"),
            "{logs}"
        );
        assert!(
            logs.contains("copied: from the copy dir app: in the thin diff"),
            "{logs}"
        );
        let calls = s.assert_clean(&run);
        runs.push(calls);
    }

    let modal = &runs[0];
    let prepares: Vec<&Vec<String>> = modal.iter().filter(|a| a[0] == "prepare").collect();
    assert_eq!(prepares.len(), 2, "a base build and a thin diff: {modal:?}");
    // The full build: the command as generated, and in the environment the exported
    // tree, config then CLI copy dirs (one a line), the init command and the root.
    let words = ["prepare", "docker/Test Dockerfile", "--include-cwd"];
    assert_eq!(prepares[0][..3], words);
    assert!(
        prepares[0][3].starts_with("OFFLOAD_CONTEXT_DIR=/"),
        "{prepares:?}"
    );
    assert_eq!(
        prepares[0][4..],
        [
            format!("OFFLOAD_COPY_DIRS=extra:copied\n{cli_copy}"),
            "OFFLOAD_SANDBOX_INIT_CMD=echo init".to_owned(),
            "OFFLOAD_SANDBOX_PROJECT_ROOT=.".to_owned(),
        ]
    );
    // The thin diff on the new base image: the same words, base image and patch.
    assert_eq!(prepares[1][..3], words);
    assert!(
        prepares[1][3].starts_with("OFFLOAD_BASE_IMAGE=/") && prepares[1][3].contains("/image-"),
        "{prepares:?}"
    );
    assert!(
        prepares[1][4].starts_with("OFFLOAD_PATCH_FILE=/"),
        "{prepares:?}"
    );
    assert_eq!(prepares[1][5..], ["OFFLOAD_SANDBOX_PROJECT_ROOT=."]);

    for create in modal.iter().filter(|a| a[0] == "create") {
        assert!(create[1].contains("/image-"), "{create:?}");
        assert_eq!(
            create[2..],
            [
                "--cpu",
                "2",
                "--memory-gb",
                "8",
                "--experimental-options",
                r#"{"enable_docker":true}"#
            ]
        );
    }
    let execs: Vec<_> = modal.iter().filter(|a| a[0] == "exec").collect();
    assert!(!execs.is_empty());
    for exec in &execs {
        assert_eq!(exec.len(), 3, "{exec:?}");
        assert!(exec[1].contains("/sandbox-"), "{exec:?}");
        assert!(exec[2].contains("FROM_CONFIG="), "{exec:?}");
    }
    assert!(modal.iter().any(|a| a[0] == "download" && a.len() == 3));

    // Both configs issue the same commands.
    let sorted = |calls: &Vec<Vec<String>>| {
        let mut all: Vec<Vec<String>> = calls.iter().map(|a| normalise(a, &s)).collect();
        all.sort();
        all
    };
    assert_eq!(sorted(&runs[0]), sorted(&runs[1]));

    // The extracted script is the bundled one.
    let bundled =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/modal_sandbox.py"))
            .unwrap();
    assert_eq!(std::fs::read(s.script()).unwrap(), bundled);

    // A second run of the modal config hits the cache: only the thin diff is built.
    let run = support::run(s.offload().args(["run", "--show-estimated-cost"]));
    assert_eq!(run.code, 1, "{}", run.show());
    let calls = s.assert_clean(&run);
    let prepares: Vec<_> = calls.iter().filter(|a| a[0] == "prepare").collect();
    assert_eq!(prepares.len(), 1, "{prepares:?}");
    assert!(
        prepares[0][3].starts_with("OFFLOAD_BASE_IMAGE="),
        "{prepares:?}"
    );

    // The cost: CPU-seconds are sandbox lifetimes × 2 cores, priced per CPU-second.
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("Estimated cost:"))
        .unwrap_or_else(|| panic!("no cost line\n{}", run.show()));
    let (usd, cpu) = line
        .trim()
        .strip_prefix("Estimated cost: $")
        .and_then(|rest| rest.strip_suffix(" CPU-seconds)"))
        .and_then(|rest| rest.split_once(" ("))
        .unwrap_or_else(|| panic!("bad cost line `{line}`"));
    let (usd, cpu): (f64, f64) = (usd.parse().unwrap(), cpu.parse().unwrap());
    assert!(cpu > 0.0, "{line}");
    assert!((usd - cpu * 0.000_039_42).abs() < 0.000_1, "{line}");
}

#[test]
fn a_timeout_and_fail_fast_still_destroy_every_modal_sandbox() {
    // 5 s: ample for the exec to start the test on a loaded machine; it sleeps 300 s.
    let s = Setup::new(
        &["hang-a", "pass-b"],
        "test_timeout_secs = 5\n",
        MODAL_PROVIDER,
    );
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let pids = s.pids();
    assert_eq!(pids.len(), 1, "hang-a ran\n{}", run.show());
    for pid in pids {
        assert_dead_soon(pid);
    }
    s.assert_clean(&run);
    let hang = Junit::of(&s.project).case("hang-a").clone();
    assert_eq!(hang.outcome, "failure", "{hang:#?}");
    assert!(
        format!("{} {}", hang.message, hang.body).contains("timed out after 5 s"),
        "{hang:#?}"
    );

    let s = Setup::new(
        &["fail-a", "hang-b"],
        "max_parallel_collection = 1\n",
        MODAL_PROVIDER,
    );
    let run = support::run(s.offload().args(["run", "--fail-fast"]));
    assert_eq!(run.code, 1, "{}", run.show());
    for pid in s.pids() {
        assert_dead_soon(pid);
    }
    s.assert_clean(&run);
}

#[test]
fn sigint_destroys_every_modal_sandbox() {
    let s = Setup::new(&["hang-a", "hang-b"], "", MODAL_PROVIDER);
    let child = support::spawn_piped(s.offload().arg("run"));
    support::wait_until(
        "the hanging tests to start",
        Duration::from_secs(60),
        || s.pids().len() >= 2,
    );
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, 130, "{}", run.show());
    for pid in s.pids() {
        assert_dead_soon(pid);
    }
    let calls = s.assert_clean(&run);
    assert_eq!(calls.iter().filter(|a| a[0] == "create").count(), 2);
}

#[test]
fn modal_credential_failures_name_the_login_command_and_are_not_retried() {
    let s = Setup::new(&["pass-1"], "", MODAL_PROVIDER);
    // A stand-in that fails like the script without credentials.
    std::fs::write(
        s.bin.path().join("uv"),
        "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/calls\"\necho 'Error: Modal credentials missing' >&2\nexit 3\n",
    )
    .unwrap();
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stderr.contains("`modal token new`"), "{}", run.show());
    assert!(!run.stderr.contains("retrying"), "{}", run.show());
}

#[test]
fn the_example_configs_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for config in ["offload-cargo-modal.toml", "offload-pytest-default.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_offload"))
            .current_dir(root)
            .args(["-c", config, "validate"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn local_provider_prints_no_cost_but_says_why() {
    let p = Project::new();
    p.config(
        "type = \"default\"\ndiscover_command = \"echo t1 {filters}\"\nrun_command = \"true {tests}\"\ntest_id_format = \"{name}\"",
        "[groups.all]\n",
    );
    let run = support::run(p.offload().args(["run", "--show-estimated-cost"]));
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(!run.stdout.contains("Estimated cost"), "{}", run.show());
    assert!(run.stderr.contains("no cost to estimate"), "{}", run.show());
}

/// Issue 5: "A cached image that turns out to be gone (create fails for it) is rebuilt
/// once and the note replaced." With a clean working tree the cached id is used as it
/// is, so only the failing create can reveal that the image is gone.
#[test]
fn a_gone_cached_image_with_a_clean_tree_is_rebuilt_once_and_the_note_replaced() {
    let p = Project::new();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let prepares = state.path().join("prepares");
    p.file(
        "offload.toml",
        &format!(
            "[offload]\nmax_parallel = 2\nsandbox_project_root = \".\"\n\n\
             [provider]\ntype = \"default\"\n\
             prepare_command = \"echo x >> {log}; @local_sandbox.sh prepare\"\n\
             thin_diff = true\n\
             create_command = \"@local_sandbox.sh create {{image_id}}\"\n\
             exec_command = \"@local_sandbox.sh exec {{sandbox_id}} {{command}}\"\n\
             destroy_command = \"@local_sandbox.sh destroy {{sandbox_id}}\"\n\n\
             [framework]\ntype = \"default\"\n\
             discover_command = \"printf 'a\\\\nb\\\\n' {{filters}}\"\n\
             run_command = \"grep -q ok app.txt {{tests}}\"\n\
             test_id_format = \"{{name}}\"\n\n[groups.all]\nschedule_individual = true\n",
            log = prepares.display()
        ),
    );
    p.file(".gitignore", "test-results/\n");
    p.file("app.txt", "ok\n");
    support::init_repo(p.path());
    support::commit_all(p.path(), "base");
    let run = || {
        support::run(
            p.offload()
                .arg("run")
                .env("OFFLOAD_SANDBOX_HOME", home.path())
                .env("XDG_CACHE_HOME", cache.path()),
        )
    };
    let prepare_count = || {
        std::fs::read_to_string(&prepares)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let note = || support::git(p.path(), &["notes", "--ref=offload-images", "show", "HEAD"]);

    let first = run();
    assert_eq!(first.code, 0, "{}", first.show());
    assert_eq!(prepare_count(), 1);
    let old_note = note();
    let image = old_note
        .split('"')
        .find(|part| part.contains("/image-"))
        .expect("an image directory in the note")
        .to_owned();

    std::fs::remove_dir_all(&image).unwrap();
    let second = run();
    assert_eq!(second.code, 0, "{}", second.show());
    assert_eq!(prepare_count(), 2, "one rebuild\n{}", second.show());
    assert!(second.stderr.contains("rebuilt once"), "{}", second.show());
    let new_note = note();
    assert_ne!(new_note, old_note);
    assert!(!new_note.contains(&image), "{new_note}");

    // The new note is used as it is.
    let third = run();
    assert_eq!(third.code, 0, "{}", third.show());
    assert_eq!(prepare_count(), 2, "{}", third.show());
}
