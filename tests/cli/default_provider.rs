//! `offload run` through the `default` provider and the bundled local-directory backend
//! (`@local_sandbox.sh`): every sandbox a private copy of the project under a temporary
//! `OFFLOAD_SANDBOX_HOME`, scripts extracted into a temporary `XDG_CACHE_HOME`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, Junit, LOCAL_SANDBOXES, Project, Run, assert_dead_soon};

/// A runner for the default framework: `sh runner.sh RESULT ID...`. `pass-*` passes,
/// `fail-*` fails, `hang-*` writes its pid to `$PIDS/<id>` and sleeps. It prints the
/// environment and directory it sees, and what the copy dir brought.
const RUNNER: &str = r#"result=$1; shift
echo "env: FROM_CONFIG=$FROM_CONFIG FROM_CLI=$FROM_CLI ROOT=$OFFLOAD_ROOT"
echo "pwd: $(pwd -P)"
echo "copied: $(cat copied/e.txt 2>/dev/null)"
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

/// A project, plus the sandbox home and script cache it runs with.
struct Setup {
    project: Project,
    home: tempfile::TempDir,
    cache: tempfile::TempDir,
    /// Scratch space outside the project (pid files, counters, logs).
    state: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let tmp = || tempfile::tempdir().expect("temp dir");
        Self {
            project: Project::new(),
            home: tmp(),
            cache: tmp(),
            state: tmp(),
        }
    }

    /// A project running `tests` through the scripted runner, with `provider` lines
    /// overriding the local-sandbox defaults (same keys win: later TOML keys would be
    /// duplicates, so the defaults are filtered).
    fn scripted(tests: &[&str], offload_extra: &str, provider: &[(&str, &str)]) -> Self {
        let s = Self::new();
        s.project.file("runner.sh", RUNNER);
        s.project.file("tests.txt", &(tests.join("\n") + "\n"));
        std::fs::create_dir_all(s.state.path().join("pids")).unwrap();
        let mut lines: Vec<(String, String)> = [
            ("prepare_command", "\"@local_sandbox.sh prepare\""),
            ("create_command", "\"@local_sandbox.sh create {image_id}\""),
            (
                "exec_command",
                "\"@local_sandbox.sh exec {sandbox_id} {command}\"",
            ),
            (
                "download_command",
                "\"@local_sandbox.sh download {sandbox_id} {paths}\"",
            ),
            (
                "destroy_command",
                "\"@local_sandbox.sh destroy {sandbox_id}\"",
            ),
            ("timeout_secs", "60"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (key, value) in provider {
            lines.retain(|(k, _)| k != key);
            lines.push(((*key).to_owned(), (*value).to_owned()));
        }
        let provider: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let timeout = if offload_extra.contains("test_timeout_secs") {
            ""
        } else {
            "test_timeout_secs = 60\n"
        };
        s.project.file(
            "offload.toml",
            &format!(
                r#"[offload]
max_parallel = 3
sandbox_project_root = "."
{timeout}{offload_extra}

[provider]
type = "default"
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
                pids = s.state.path().join("pids").display()
            ),
        );
        s
    }

    /// `offload` in the project, with the sandbox home and the script cache set.
    fn offload(&self) -> Command {
        let mut cmd = self.project.offload();
        cmd.env("OFFLOAD_SANDBOX_HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.cache.path());
        cmd
    }

    /// Directories under the sandbox home whose names start with `kind-`.
    fn count(&self, kind: &str) -> usize {
        std::fs::read_dir(self.home.path())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{kind}-"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Asserts that no sandbox is left, only the run's image.
    fn assert_all_destroyed(&self, images: usize) {
        assert_eq!(self.count("sandbox"), 0, "sandboxes left behind");
        assert_eq!(self.count("image"), images, "unexpected image count");
    }

    fn junit(&self) -> Junit {
        Junit::of(&self.project)
    }

    /// Every batch log's content, concatenated.
    fn logs(&self) -> String {
        let dir = self.project.path().join("test-results/logs");
        let mut all = String::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        all
    }

    fn pids(&self) -> Vec<i32> {
        support::read_pids(&self.state.path().join("pids"))
    }
}

#[test]
fn scripted_tests_run_in_private_sandboxes_that_are_all_destroyed() {
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("e.txt"), "from the copy dir").unwrap();
    let exec_log = PathBuf::from("exec.log");
    let s = Setup::scripted(
        &["pass-1", "pass-2", "pass-3", "fail-4", "pass 5"],
        "",
        &[
            (
                "exec_command",
                "\"echo {sandbox_id} {cpu_cores} >> ../exec.log; @local_sandbox.sh exec {sandbox_id} {command}\"",
            ),
            ("cpu_cores", "2"),
            ("working_dir", "\"work\""),
        ],
    );
    // The lifecycle commands run in `work/`; the image is built from the context
    // Offload hands the prepare (`OFFLOAD_CONTEXT_DIR`), not from there.
    std::fs::create_dir(s.project.path().join("work")).unwrap();
    let run = support::run(
        s.offload()
            .args(["run", "--env", "FROM_CLI=cli 'value'"])
            .arg("--copy-dir")
            .arg(format!("{}:copied", extra.path().display())),
    );
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Passed: 4");
    run.assert_summary("Failed: 1");
    let report = s.junit();
    assert_eq!(report.case("pass 5").outcome, "", "{report:#?}");
    let failed = report.case("fail-4");
    assert_eq!(
        (failed.outcome.as_str(), failed.message.as_str()),
        ("failure", "boom"),
        "{failed:#?}"
    );

    // Env, root and directory reached the test command inside a sandbox directory.
    let logs = s.logs();
    assert!(
        logs.contains("env: FROM_CONFIG=config value FROM_CLI=cli 'value' ROOT=."),
        "{logs}"
    );
    let home = s.home.path().canonicalize().unwrap();
    assert!(
        logs.contains(&format!("pwd: {}/sandbox-", home.display())),
        "{logs}"
    );
    assert!(logs.contains("copied: from the copy dir"), "{logs}");

    // Placeholders: the sandbox id (a directory under the home) and the cores.
    let exec_log = std::fs::read_to_string(s.project.path().join(&exec_log)).unwrap();
    assert!(!exec_log.is_empty());
    for line in exec_log.lines() {
        let (id, cores) = line.rsplit_once(' ').unwrap();
        assert!(id.contains("/sandbox-"), "{line}");
        assert_eq!(cores, "2", "{line}");
    }
    // Prepare progress is shown on stderr.
    assert!(run.stderr.contains("[prepare] "), "{}", run.show());

    s.assert_all_destroyed(1);
    // Results were written inside the sandboxes, never in the project.
    let stray: Vec<_> = std::fs::read_dir(s.project.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".offload-batch")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // The bundled script was extracted into XDG_CACHE_HOME, executable and current.
    let script = s.cache.path().join("offload/scripts/local_sandbox.sh");
    let bundled =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local_sandbox.sh"))
            .unwrap();
    assert_eq!(std::fs::read(&script).unwrap(), bundled);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn a_create_that_fails_for_some_sandboxes_runs_on_the_others() {
    let ticket = tempfile::tempdir().unwrap();
    // Only the first create gets a ticket; the others (and their retries) fail.
    let create = format!(
        "\"if mkdir {}/ticket 2>/dev/null; then @local_sandbox.sh create {{image_id}}; else echo quota exceeded >&2; exit 1; fi\"",
        ticket.path().display()
    );
    let s = Setup::scripted(
        &["pass-1", "pass-2", "pass-3", "pass-4", "pass-5", "pass-6"],
        "",
        &[("create_command", &create)],
    );
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary("Passed: 6");
    assert!(run.stderr.contains("quota exceeded"), "{}", run.show());
    assert!(run.stderr.contains("retrying"), "{}", run.show());
    s.assert_all_destroyed(1);
}

#[test]
fn a_create_that_always_fails_ends_the_run_with_tests_not_run() {
    let s = Setup::scripted(
        &["pass-1", "pass-2"],
        "",
        &[("create_command", "\"echo no capacity >&2; exit 1\"")],
    );
    let started = Instant::now();
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Not Run: 2");
    assert!(run.stderr.contains("no capacity"), "{}", run.show());
    // Three attempts a sandbox, 1.5 s of delays: generous for a loaded machine, and
    // still far from retrying without end.
    assert!(started.elapsed() < Duration::from_secs(60));
    s.assert_all_destroyed(1);
    let report = s.junit();
    for name in ["pass-1", "pass-2"] {
        let case = report.case(name);
        assert_eq!(case.kind, "offload.NotRun", "{case:#?}");
        assert!(
            format!("{} {}", case.message, case.body).contains("no capacity"),
            "{case:#?}"
        );
    }
}

#[test]
fn a_timeout_kills_the_exec_and_every_sandbox_is_destroyed() {
    // 5 s: ample for the exec to start the test on a loaded machine; it sleeps 300 s.
    let s = Setup::scripted(&["hang-a", "pass-b"], "test_timeout_secs = 5\n", &[]);
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let pids = s.pids();
    assert_eq!(pids.len(), 1);
    assert_dead_soon(pids[0]);
    let report = s.junit();
    let hang = report.case("hang-a");
    assert_eq!(hang.outcome, "failure", "{hang:#?}");
    assert!(
        format!("{} {}", hang.message, hang.body).contains("timed out after 5 s"),
        "{hang:#?}"
    );
    assert_eq!(report.case("pass-b").outcome, "", "{report:#?}");
    s.assert_all_destroyed(1);
}

#[test]
fn fail_fast_destroys_every_sandbox() {
    let s = Setup::scripted(&["fail-a", "hang-b"], "max_parallel_collection = 1\n", &[]);
    let run = support::run(s.offload().args(["run", "--fail-fast"]));
    assert_eq!(run.code, 1, "{}", run.show());
    for pid in s.pids() {
        assert_dead_soon(pid);
    }
    s.assert_all_destroyed(1);
}

#[test]
fn sigint_kills_the_batches_and_destroys_every_sandbox() {
    let s = Setup::scripted(&["hang-a", "hang-b"], "", &[]);
    let child = support::spawn_piped(s.offload().arg("run"));
    support::wait_until(
        "the hanging tests to start",
        Duration::from_secs(60),
        || s.pids().len() >= 2,
    );
    assert_eq!(s.count("sandbox"), 2);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, 130, "{}", run.show());
    run.assert_summary("Not Run: 2");
    for pid in s.pids() {
        assert_dead_soon(pid);
    }
    s.assert_all_destroyed(1);
}

/// `offload.toml` for the pytest suite under `tests` in `max_parallel` sandboxes of
/// `@local_sandbox.sh`, with `env` (TOML lines) as `[provider.env]`.
fn pytest_in_local_sandboxes(max_parallel: usize, env: &str) -> String {
    format!(
        r#"[offload]
max_parallel = {max_parallel}
sandbox_project_root = "."

{LOCAL_SANDBOXES}
[provider.env]
{env}
[framework]
type = "pytest"
paths = ["tests"]
command = "python -m pytest"

[groups.all]
retry_count = 0
"#
    )
}

#[test]
fn pytest_runs_in_local_sandboxes() {
    let s = Setup::new();
    s.project.file(
        "tests/test_things.py",
        r#"import os, pytest

def test_passes():
    assert 1 + 1 == 2

def test_fails():
    assert "a" == "b"

@pytest.mark.parametrize("text", ["a b", "x [y]"])
def test_param(text):
    assert text

def test_runs_inside_a_sandbox():
    assert os.environ["OFFLOAD_ROOT"] == "."
    home = os.path.realpath(os.environ["OFFLOAD_SANDBOX_HOME"])
    assert os.path.realpath(os.getcwd()).startswith(os.path.join(home, "sandbox-"))
    assert os.environ["GREETING"] == "hi there"
"#,
    );
    s.project.file(
        "offload.toml",
        &pytest_in_local_sandboxes(2, "GREETING = \"hi there\"\n"),
    );
    let mut cmd = s.offload();
    cmd.env("PATH", support::path_with(&support::python_bin_dir()))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("run");
    let run = support::run(&mut cmd);
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Passed: 4");
    run.assert_summary("Failed: 1");
    let report = s.junit();
    assert_eq!(
        report.case("tests/test_things.py::test_param[a b]").outcome,
        ""
    );
    assert_eq!(
        report.case("tests/test_things.py::test_fails").outcome,
        "failure"
    );
    assert_eq!(
        report
            .case("tests/test_things.py::test_runs_inside_a_sandbox")
            .outcome,
        ""
    );
    s.assert_all_destroyed(1);
}

/// A pytest project in sandboxes of `@local_sandbox.sh` with `max_parallel` of them,
/// whose discovery waits (up to 30 s) until a resident worker in a sandbox has loaded
/// `tests/conftest.py`, and says in `PROBE_LOG` whether one did; each worker writes its
/// pid there. With `stop`, discovery then fails.
fn pytest_discovery_waiting_for_a_worker(s: &Setup, max_parallel: usize, stop: bool) -> PathBuf {
    let log = s.state.path().join("probe.log");
    std::fs::write(&log, "").unwrap();
    s.project.file(
        "tests/conftest.py",
        r#"import os, sys, time

LOG = os.environ["PROBE_LOG"]


def say(line):
    with open(LOG, "a") as out:
        out.write(line + "\n")


if "--collect-only" in sys.argv:
    deadline = time.monotonic() + 30
    seen = False
    while not seen and time.monotonic() < deadline:
        with open(LOG) as log:
            seen = any(line.startswith("worker ") for line in log)
        time.sleep(0.05)
    say("discovery saw a worker" if seen else "discovery saw no worker")
    if os.environ.get("PROBE_STOP"):
        raise RuntimeError("discovery stops here")
else:
    say("worker %d" % os.getpid())
"#,
    );
    s.project.file(
        "tests/test_things.py",
        "def test_one():\n    assert True\n\ndef test_two():\n    assert 1 == 2\n",
    );
    let stop = if stop { "PROBE_STOP = \"1\"\n" } else { "" };
    s.project.file(
        "offload.toml",
        &pytest_in_local_sandboxes(
            max_parallel,
            &format!("PROBE_LOG = \"{}\"\n{stop}", log.display()),
        ),
    );
    log
}

/// The pids the workers wrote to the probe log.
fn probe_workers(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("worker ")?.parse().ok())
        .collect()
}

/// No sandbox is left but the image, and every worker the probe log names has ended.
fn assert_sandboxes_and_workers_gone(s: &Setup, log: &Path) {
    s.assert_all_destroyed(1);
    for pid in probe_workers(log) {
        assert_dead_soon(pid);
    }
}

fn pytest_offload(s: &Setup, log: &Path, stop: bool) -> Command {
    let mut cmd = s.offload();
    cmd.env("PATH", support::path_with(&support::python_bin_dir()))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PROBE_LOG", log)
        .arg("run");
    if stop {
        cmd.env("PROBE_STOP", "1");
    }
    cmd
}

#[test]
fn remote_sandboxes_start_their_workers_while_discovery_runs() {
    let s = Setup::new();
    // Four sandboxes made ahead; two tests need two.
    let log = pytest_discovery_waiting_for_a_worker(&s, 4, false);
    let run = support::run(&mut pytest_offload(&s, &log, false));
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Passed: 1");
    run.assert_summary("Failed: 1");
    let probe = std::fs::read_to_string(&log).unwrap();
    assert!(probe.contains("discovery saw a worker"), "{probe}");
    let report = s.junit();
    assert_eq!(
        report.case("tests/test_things.py::test_two").outcome,
        "failure"
    );
    assert!(!probe_workers(&log).is_empty(), "{probe}");
    // The sandboxes the plan did not need went too, with their workers.
    assert_sandboxes_and_workers_gone(&s, &log);
}

#[test]
fn a_run_that_ends_at_discovery_destroys_the_sandboxes_made_ahead() {
    let s = Setup::new();
    let log = pytest_discovery_waiting_for_a_worker(&s, 2, true);
    let run = support::run(&mut pytest_offload(&s, &log, true));
    assert_ne!(run.code, 0, "{}", run.show());
    let probe = std::fs::read_to_string(&log).unwrap();
    assert!(probe.contains("discovery saw a worker"), "{probe}");
    assert_sandboxes_and_workers_gone(&s, &log);
}

#[test]
fn an_unknown_bundled_script_is_a_clear_error() {
    let s = Setup::scripted(
        &["pass-1"],
        "",
        &[("create_command", "\"@nope_sandbox.sh create {image_id}\"")],
    );
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stderr.contains("`@nope_sandbox.sh`"), "{}", run.show());
    assert!(run.stderr.contains("`@local_sandbox.sh`"), "{}", run.show());
    assert!(run.stderr.contains("create_command"), "{}", run.show());
}

#[test]
fn image_id_without_a_prepare_command_is_an_error() {
    let s = Setup::scripted(&["pass-1"], "", &[]);
    let config = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("prepare_command"))
        .map(|l| format!("{l}\n"))
        .collect();
    s.project.file("offload.toml", &config);
    let run = support::run(s.offload().args(["run", "--copy-dir", "a:b"]));
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stderr.contains("{image_id}"), "{}", run.show());
    assert!(run.stderr.contains("prepare_command"), "{}", run.show());
    assert!(run.stderr.contains("cannot apply"), "{}", run.show());
    assert_eq!(s.count("sandbox"), 0);
}

/// The backend script on its own: what `prepare` exports from a git work tree, and what
/// `destroy` refuses.
#[test]
fn local_sandbox_exports_the_work_tree_and_removes_only_its_own_directories() {
    let s = Setup::new();
    let root = s.project.path();
    s.project.file(".gitignore", "*.log\n");
    s.project.file("tracked.txt", "committed");
    s.project.file("sub dir/deleted.txt", "gone soon");
    support::init_repo(root);
    support::commit_all(root, "init");
    s.project.file("tracked.txt", "edited");
    s.project.file("new.txt", "untracked");
    s.project.file("build.log", "ignored");
    std::fs::remove_file(root.join("sub dir/deleted.txt")).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local_sandbox.sh");
    let sh = |args: &[&str]| {
        let out = Command::new("sh")
            .arg(&script)
            .args(args)
            .current_dir(root)
            .env("OFFLOAD_SANDBOX_HOME", s.home.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, image, err) = sh(&["prepare"]);
    assert_eq!(code, 0, "{err}");
    let image = PathBuf::from(image);
    assert_eq!(
        std::fs::read_to_string(image.join("tracked.txt")).unwrap(),
        "edited"
    );
    assert!(image.join("new.txt").exists());
    assert!(image.join(".gitignore").exists());
    assert!(!image.join("build.log").exists());
    assert!(!image.join("sub dir/deleted.txt").exists());
    assert!(!image.join(".git").exists());

    let (code, sandbox, err) = sh(&["create", &image.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = sh(&["exec", &sandbox, "cat tracked.txt; exit 7"]);
    assert_eq!((code, out.as_str()), (7, "edited"));

    // destroy removes sandboxes only, and only under the base directory.
    let (code, _, err) = sh(&["destroy", &image.to_string_lossy()]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing"), "{err}");
    let (code, _, err) = sh(&["destroy", &root.to_string_lossy()]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing"), "{err}");
    assert!(root.join("tracked.txt").exists());
    let (code, _, err) = sh(&["destroy", &sandbox]);
    assert_eq!(code, 0, "{err}");
    assert!(!Path::new(&sandbox).exists());
    assert!(image.exists());

    let (code, _, err) = sh(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown subcommand") && err.contains("usage:"),
        "{err}"
    );
}

/// A crate whose tests pass, fail, and check where they run: in the sandbox, reading a
/// data file of the project through a path relative to the package directory, and (with
/// `EXPECT_LIBDIR`) from the sandbox's extraction of the archive.
fn sandboxed_crate(project: &Project) {
    project.manifest("sbx");
    project.file(
        "src/lib.rs",
        "pub fn add(a: i32, b: i32) -> i32 { a + b }\n\
         #[cfg(test)]\nmod tests {\n\
         #[test] fn passes() { assert_eq!(super::add(1, 2), 3); }\n\
         #[test] fn fails() { assert_eq!(super::add(1, 2), 4); }\n\
         #[test] #[ignore] fn ignored_one() {}\n}\n",
    );
    project.file(
        "tests/where.rs",
        "#[test] fn reads_project_data() {\n\
         assert_eq!(std::fs::read_to_string(\"data/greeting.txt\").unwrap(), \"hello\");\n}\n\
         #[test] fn runs_in_its_sandbox() {\n\
         let cwd = std::env::current_dir().unwrap();\n\
         let inside = std::env::var(\"EXPECT_INSIDE\").unwrap();\n\
         assert!(cwd.starts_with(&inside), \"{} is not in {inside}\", cwd.display());\n\
         if let Ok(libdir) = std::env::var(\"EXPECT_LIBDIR\") {\n\
         let path = std::env::var(\"LD_LIBRARY_PATH\").unwrap();\n\
         assert!(path.contains(&libdir), \"{path} does not hold {libdir}\");\n}\n}\n",
    );
    project.file("data/greeting.txt", "hello");
    project.file(".gitignore", "/target\n/test-results\n");
    support::init_repo(project.path());
}

/// `offload.toml` for `sandboxed_crate` on `@local_sandbox.sh`, with `env` as
/// `[provider.env]`.
fn sandboxed_crate_config(env: &str) -> String {
    format!(
        r#"[offload]
max_parallel = 2
sandbox_project_root = "."

{LOCAL_SANDBOXES}
[provider.env]
{env}

[framework]
type = "cargo"

[groups.all]
retry_count = 0
"#
    )
}

/// Writes `sandboxed_crate_config` (changed by `edit`) to `path`, with a `cargo` first on
/// the sandboxes' `PATH` that records every call and fails, and with the tests told to
/// run from the archive's extraction in each sandbox. Returns the file of the calls.
fn write_config_with_cargo_shim(
    s: &Setup,
    path: &Path,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let shims = s.state.path().join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let calls = s.state.path().join("cargo-calls.log");
    let shim = shims.join("cargo");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"cargo $*\" >> '{}'\nexit 97\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = sandboxed_crate_config(&format!(
        "PATH = \"{}:${{PATH}}\"\nEXPECT_INSIDE = \"{}\"\n\
         EXPECT_LIBDIR = \".tar.zst.d/target/nextest/libdirs/host\"",
        shims.display(),
        s.home.path().canonicalize().unwrap().display()
    ));
    std::fs::write(path, edit(config)).unwrap();
    calls
}

#[test]
fn cargo_batches_in_sandboxes_run_one_archive_without_cargo() {
    let s = Setup::new();
    sandboxed_crate(&s.project);
    let calls = write_config_with_cargo_shim(&s, &s.project.path().join("offload.toml"), |c| c);

    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(calls, "", "batches ran cargo; {}", run.show());
    let logs = s.logs();
    assert!(!logs.contains("is not in this sandbox"), "{logs}");
    assert!(!logs.contains("Compiling"), "{logs}");
    let sandboxed = s.junit().outcomes();
    s.assert_all_destroyed(1);

    // The image holds the run's archive, in the sandbox project root.
    let image = std::fs::read_dir(s.home.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("image-"))
        .unwrap()
        .path();
    let archives: Vec<String> = std::fs::read_dir(image.join(".offload-archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        archives.len() == 1 && archives[0].ends_with(".tar.zst"),
        "{archives:?}"
    );

    // The same verdicts as local sandboxes, which run in the project itself.
    s.project.file(
        "local.toml",
        &format!(
            "[offload]\nmax_parallel = 2\n[provider]\ntype = \"local\"\n\
             [provider.env]\nEXPECT_INSIDE = \"{}\"\n\
             [framework]\ntype = \"cargo\"\n[groups.all]\nretry_count = 0\n",
            s.project.path().canonicalize().unwrap().display()
        ),
    );
    let run = support::run(s.offload().args(["-c", "local.toml", "run"]));
    assert_eq!(run.code, 1, "{}", run.show());
    let local = s.junit().outcomes();
    assert_eq!(sandboxed, local);
    assert_eq!(local, sandboxed_crate_verdicts());
}

/// The verdicts of `sandboxed_crate`'s tests.
fn sandboxed_crate_verdicts() -> Vec<(String, String)> {
    [
        ("sbx tests::fails", "failure"),
        ("sbx tests::ignored_one", "skipped"),
        ("sbx tests::passes", ""),
        ("sbx::where reads_project_data", ""),
        ("sbx::where runs_in_its_sandbox", ""),
    ]
    .map(|(id, outcome)| (id.to_owned(), outcome.to_owned()))
    .into()
}

#[test]
fn cargo_batches_build_in_their_sandbox_when_archiving_fails() {
    let s = Setup::new();
    sandboxed_crate(&s.project);
    // `cargo nextest archive` fails on this machine; everything else is the real cargo.
    let shims = s.state.path().join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let shim = shims.join("cargo");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh
[ \"$2\" != archive ] || {{ echo 'archiving is broken here' >&2; exit 3; }}
\
             PATH='{}' exec cargo \"$@\"
",
            std::env::var("PATH").unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inside = s.home.path().canonicalize().unwrap();
    s.project.file(
        "offload.toml",
        &sandboxed_crate_config(&format!("EXPECT_INSIDE = \"{}\"", inside.display())),
    );
    let run = support::run(
        s.offload()
            .env("PATH", support::path_with(&shims))
            .arg("run"),
    );
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(
        run.stderr.matches("cannot archive the tests").count(),
        1,
        "{}",
        run.show()
    );
    assert!(
        run.stderr.contains("archiving is broken here"),
        "{}",
        run.show()
    );
    assert_eq!(s.junit().outcomes(), sandboxed_crate_verdicts());
    s.assert_all_destroyed(1);
}

#[test]
fn a_sandbox_without_the_archive_builds_and_says_why() {
    let s = Setup::new();
    sandboxed_crate(&s.project);
    let inside = s.home.path().canonicalize().unwrap();
    // A prepare that leaves the copy dirs out of the image.
    let config = sandboxed_crate_config(&format!("EXPECT_INSIDE = \"{}\"", inside.display()))
        .replace(
            "\"@local_sandbox.sh prepare\"",
            "\"env -u OFFLOAD_COPY_DIRS @local_sandbox.sh prepare\"",
        );
    s.project.file("offload.toml", &config);
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let logs = s.logs();
    assert!(
        logs.contains("[stderr] offload: the nextest archive"),
        "{logs}"
    );
    assert!(logs.contains("is not in this sandbox"), "{logs}");
    assert_eq!(s.junit().outcomes(), sandboxed_crate_verdicts());
    s.assert_all_destroyed(1);
}

#[test]
fn a_crate_below_its_workspace_root_builds_in_its_sandboxes_and_says_why() {
    let s = Setup::new();
    sandboxed_crate(&s.project);
    // The crate becomes a member of a workspace one level up; Offload runs in the crate.
    let workspace = tempfile::tempdir().unwrap();
    let member = workspace.path().join("member");
    std::fs::rename(s.project.path(), &member).unwrap();
    std::fs::write(
        member.join("Cargo.toml"),
        "[package]\nname = \"sbx\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        workspace.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"member\"]\n",
    )
    .unwrap();
    std::fs::write(
        member.join("offload.toml"),
        sandboxed_crate_config(&format!(
            "EXPECT_INSIDE = \"{}\"",
            s.home.path().canonicalize().unwrap().display()
        )),
    )
    .unwrap();
    let mut cmd = s.offload();
    cmd.current_dir(&member)
        .env("CARGO_TARGET_DIR", workspace.path().join("target"));
    let run = support::run(cmd.arg("run"));
    // Put the project back where its `TempDir` removes it.
    std::fs::rename(&member, s.project.path()).unwrap();
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(
        run.stderr.contains("is not Offload's directory"),
        "{}",
        run.show()
    );
    assert_eq!(s.junit().outcomes(), sandboxed_crate_verdicts());
}

#[test]
fn thin_diff_images_get_the_archive_in_a_layer_of_each_run() {
    let s = Setup::new();
    sandboxed_crate(&s.project);
    let calls = write_config_with_cargo_shim(&s, &s.project.path().join("offload.toml"), |c| {
        c.replace(
            "prepare_command = \"@local_sandbox.sh prepare\"",
            "prepare_command = \"@local_sandbox.sh prepare\"\nthin_diff = true",
        )
    });
    // Cargo writes the lock file at the first run: it must not count as a change.
    s.project
        .file(".gitignore", "/target\n/test-results\n/Cargo.lock\n");
    support::commit_all(s.project.path(), "crate");
    // The first run builds the base image and a layer on it; the second, on an
    // unchanged tree, reuses the base and still layers its own archive on it; the third
    // has a changed test.
    for round in 0..3 {
        if round == 2 {
            s.project.file(
                "src/lib.rs",
                "#[cfg(test)]\nmod tests {\n#[test] fn passes() {}\n#[test] fn now_passes() {}\n}\n",
            );
        }
        let run = support::run(s.offload().arg("run"));
        let calls = std::fs::read_to_string(&calls).unwrap_or_default();
        assert_eq!(
            calls,
            "",
            "round {round}: batches ran cargo; {}",
            run.show()
        );
        if round < 2 {
            assert_eq!(run.code, 1, "{}", run.show());
            assert_eq!(s.junit().outcomes(), sandboxed_crate_verdicts());
        } else {
            assert_eq!(run.code, 0, "{}", run.show());
            run.assert_summary("Passed: 4");
        }
        if round == 1 {
            assert!(
                run.stderr.contains("adding the run's own files"),
                "{}",
                run.show()
            );
        }
    }
}
