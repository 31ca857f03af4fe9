//! `offload run` end to end with the local provider: real pytest, real nextest and a
//! scripted runner through the default framework.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{self, Junit, Project, Run, assert_dead_soon, read_pids};

/// A test runner for the default framework: `python3 runner.py RESULT_FILE ID...`.
///
/// Each ID says what the test does: `pass-*` passes, `fail-*` fails, `skip-*` skips,
/// `flaky-*` fails on its first attempt (marker file) then passes, `sleep-<secs>-*`
/// sleeps then passes, `hang-*` writes its pid to `pids/` and sleeps forever,
/// `meet-<n>-*` passes once `n` `meet-` tests are running at the same time (it fails
/// after 60 s without them). An ID ending in `-after-<other>` first waits until the
/// `hang-` test `<other>` runs. Every test appends `<id> <start> <end>` to `times.log`.
const RUNNER: &str = r#"
import os, sys, time, html
result, ids = sys.argv[1], sys.argv[2:]
cases = []
os.makedirs("pids", exist_ok=True)
os.makedirs("met", exist_ok=True)

def wait_for(done, limit=60):
    deadline = time.time() + limit
    while not done():
        if time.time() > deadline:
            return False
        time.sleep(0.02)
    return True

for tid in ids:
    if "-after-" in tid:
        other = tid.split("-after-")[1]
        wait_for(lambda: os.path.exists(os.path.join("pids", other)))
    start = time.time()
    outcome = ""
    if tid.startswith("meet-"):
        # Arrive, then wait for the others: only tests running at once all pass.
        n = int(tid.split("-")[1])
        open(os.path.join("met", tid), "w").close()
        if not wait_for(lambda: len(os.listdir("met")) >= n):
            outcome = f'<failure message="only {len(os.listdir("met"))} of {n} ran at once"/>'
    elif tid.startswith("fail-"):
        outcome = '<failure message="boom">assert False</failure>'
    elif tid.startswith("skip-"):
        outcome = '<skipped message="not today"/>'
    elif tid.startswith("flaky-"):
        marker = "marker-" + tid
        if not os.path.exists(marker):
            open(marker, "w").close()
            outcome = '<failure message="first attempt fails">flaky</failure>'
    elif tid.startswith("sleep-"):
        time.sleep(float(tid.split("-")[1]))
    elif tid.startswith("hang-"):
        with open(os.path.join("pids", tid), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
    end = time.time()
    with open("times.log", "a") as f:
        f.write(f"{tid} {start} {end}\n")
    print(f"ran {tid}")
    cases.append(f'<testcase name="{html.escape(tid)}" time="{end - start:.3f}">{outcome}</testcase>')
with open(result, "w") as f:
    f.write('<?xml version="1.0"?><testsuite name="runner">' + "".join(cases) + "</testsuite>")
"#;

/// A project running `tests` (one per line) through the scripted runner.
pub(crate) fn scripted(tests: &[&str], extra_offload: &str, groups: &str) -> Project {
    let p = Project::new();
    p.file("runner.py", RUNNER);
    p.file("tests.txt", &(tests.join("\n") + "\n"));
    let groups = if groups.is_empty() {
        "[groups.all]\nretry_count = 0\n"
    } else {
        groups
    };
    let timeout = if extra_offload.contains("test_timeout_secs") {
        ""
    } else {
        "test_timeout_secs = 60"
    };
    p.file(
        "offload.toml",
        &format!(
            r#"[offload]
max_parallel = 2
{timeout}
{extra_offload}

[provider]
type = "local"

[framework]
type = "default"
discover_command = "grep -v '^$' tests.txt {{filters}}"
run_command = "python3 runner.py {{result_file}} {{tests}}"
test_id_format = "{{name}}"

{groups}
"#
        ),
    );
    p
}

/// The merged report.
fn junit(p: &Project) -> Junit {
    Junit::of(p)
}

/// The file names in `test-results/logs`.
fn log_names(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.path().join("test-results/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn exit_codes_follow_the_verdicts() {
    let p = scripted(&["pass-a", "pass-b", "skip-c"], "", "");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("All tests passed!"), "{}", run.stdout);
    assert!(run.stdout.contains("Skipped: 1"), "{}", run.stdout);

    let p = scripted(&["pass-a", "fail-b"], "", "");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Failed:  1"), "{}", run.stdout);
    assert!(run.stdout.contains("Some tests failed."), "{}", run.stdout);

    let p = scripted(
        &["pass-a", "flaky-b"],
        "",
        "[groups.all]\nretry_count = 1\n",
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Flaky:   1"), "{}", run.stdout);
    let report = junit(&p);
    assert_eq!(report.cases_named("flaky-b").len(), 1, "{report:#?}");
    let flaky = report.case("flaky-b");
    assert_eq!(flaky.outcome, "", "{flaky:#?}");
    assert_eq!(flaky.reruns, ["flakyFailure"], "{flaky:#?}");
}

#[test]
fn without_retries_a_flaky_test_fails() {
    let p = scripted(&["flaky-x"], "", "");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn groups_have_their_own_filters_and_retries() {
    let groups = "[groups.steady]\nretry_count = 0\nfilters = \"| grep -v flaky\"\n\n\
                  [groups.wobbly]\nretry_count = 2\nfilters = \"| grep flaky\"\n";
    let p = scripted(&["pass-a", "pass-b", "flaky-c"], "", groups);
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let report = junit(&p);
    assert_eq!(report.case("pass-a").suite, "steady", "{report:#?}");
    assert_eq!(report.case("pass-b").suite, "steady", "{report:#?}");
    assert_eq!(report.case("flaky-c").suite, "wobbly", "{report:#?}");
}

#[test]
fn a_result_file_that_never_appears_ends_as_not_run() {
    let p = Project::new();
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 2
[provider]
type = "local"
[framework]
type = "default"
discover_command = "printf 'alpha\nbeta one\n# comment\n' {filters}"
run_command = "echo would run {tests} > /dev/null; echo no report for {result_file}"
test_id_format = "{name}"
[groups.all]
retry_count = 2
"#,
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Not Run: 2"), "{}", run.stdout);
    let report = junit(&p);
    for name in ["alpha", "beta one"] {
        let case = report.case(name);
        assert_eq!(case.outcome, "error", "{case:#?}");
        assert_eq!(case.kind, "offload.NotRun", "{case:#?}");
    }
    let logs = log_names(&p);
    assert!(logs.iter().any(|n| n.ends_with(".error")), "{logs:?}");
}

#[test]
fn without_a_result_file_the_exit_code_decides() {
    let p = Project::new();
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 1
[provider]
type = "local"
[framework]
type = "default"
discover_command = "printf 'ok\nbad\n' {filters}"
run_command = "for t in {tests}; do echo running $t; done; case '{tests}' in *bad*) exit 3;; esac"
test_id_format = "{name}"
[groups.all]
"#,
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Failed:  2"), "{}", run.stdout);
}

#[test]
fn a_hanging_batch_is_killed_with_its_whole_process_tree() {
    // 5 s: ample for the runner to start on a loaded machine; the test sleeps 300 s.
    let p = scripted(&["pass-a", "hang-b"], "test_timeout_secs = 5", "");
    let started = Instant::now();
    let run = support::run(p.offload().args(["run", "--parallel", "1"]));
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let pids = read_pids(&p.path().join("pids"));
    assert!(!pids.is_empty(), "the hanging test never started");
    for pid in pids {
        assert_dead_soon(pid);
    }
    let report = junit(&p);
    let hang = report.case("hang-b");
    assert!(
        format!("{} {}", hang.message, hang.body).contains("timed out after 5 s"),
        "{hang:#?}"
    );
}

#[test]
fn sigint_stops_the_run_cleans_up_and_reports() {
    stop_with_signal(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_the_run_cleans_up_and_reports() {
    stop_with_signal(libc::SIGTERM, 143);
}

fn stop_with_signal(signal: i32, expected_code: i32) {
    let p = scripted(&["hang-a", "hang-b", "pass-c"], "", "");
    let child = support::spawn_piped(p.offload().arg("run"));
    let pids_dir = p.path().join("pids");
    support::wait_until(
        "the hanging tests to start",
        Duration::from_secs(60),
        || read_pids(&pids_dir).len() >= 2,
    );
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    // Generous for a loaded machine; the hanging tests would sleep 300 s.
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?} to stop",
        sent.elapsed()
    );
    let run: Run = out.into();
    assert_eq!(run.code, expected_code, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Test Results:"), "{}", run.stdout);
    // pass-c shares a batch with hang-a, so it never ran either.
    assert!(run.stdout.contains("Not Run: 3"), "{}", run.stdout);
    for pid in read_pids(&pids_dir) {
        assert_dead_soon(pid);
    }
    let report = junit(&p);
    for name in ["hang-a", "hang-b", "pass-c"] {
        assert_eq!(report.case(name).kind, "offload.NotRun", "{report:#?}");
    }
    let logs = log_names(&p);
    assert!(logs.iter().all(|n| !n.ends_with(".running")), "{logs:?}");
    assert!(logs.iter().any(|n| n.ends_with(".cancelled")), "{logs:?}");
}

#[test]
fn batch_logs_keep_stdout_and_prefix_stderr() {
    let p = Project::new();
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 1
[provider]
type = "local"
[framework]
type = "default"
discover_command = "echo only {filters}"
run_command = "echo to-stdout; echo to-stderr >&2; exit 1; : {tests}"
test_id_format = "{name}"
[groups.all]
"#,
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let log = std::fs::read_to_string(p.path().join("test-results/logs/batch-0.failure")).unwrap();
    // The two pipes are read concurrently: their relative order is not defined.
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["[stderr] to-stderr", "to-stdout"], "{log}");
}

/// Intervals `(start, end)` of each test from `times.log`.
fn intervals(p: &Project) -> Vec<(String, f64, f64)> {
    std::fs::read_to_string(p.path().join("times.log"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            let id = it.next().unwrap().to_owned();
            (
                id,
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn max_overlap(iv: &[(String, f64, f64)]) -> usize {
    iv.iter()
        .map(|(_, s, _)| iv.iter().filter(|(_, s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn parallel_runs_that_many_batches_at_once() {
    // Each test waits until all four run: they pass only if four batches run at once,
    // however slowly each starts.
    let tests = ["meet-4-a", "meet-4-b", "meet-4-c", "meet-4-d"];
    let p = scripted(&tests, "", "");
    let run = support::run(p.offload().args(["run", "--parallel", "4"]));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary("Passed: 4");

    // One at a time: no test starts before the previous one ended.
    let p = scripted(&["sleep-0.5-a", "sleep-0.5-b"], "", "");
    let run = support::run(p.offload().args(["run", "--parallel", "1"]));
    assert_eq!(run.code, 0, "{}", run.show());
    let times = intervals(&p);
    assert_eq!(times.len(), 2, "{times:?}");
    assert_eq!(max_overlap(&times), 1, "{times:?}");
}

/// The IDs each batch ran, from the batch logs (`ran <id>` lines).
fn batches(p: &Project) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = std::fs::read_dir(p.path().join("test-results/logs"))
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let mut ids: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("ran "))
                .map(str::to_owned)
                .collect();
            ids.sort();
            ids
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_previous_reports_durations_drive_lpt() {
    // Nothing known: the five tests are dealt to two batches, so the slow one shares.
    let p = scripted(
        &["sleep-1.5-slow", "pass-a", "pass-b", "pass-c", "pass-d"],
        "",
        "",
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let first = batches(&p);
    let mut ran: Vec<&String> = first.iter().flatten().collect();
    ran.sort();
    assert_eq!(
        ran,
        ["pass-a", "pass-b", "pass-c", "pass-d", "sleep-1.5-slow"],
        "{first:?}"
    );
    let slow_batch = first
        .iter()
        .find(|b| b.iter().any(|t| t == "sleep-1.5-slow"))
        .unwrap();
    assert!(slow_batch.len() > 1, "{first:?}");
    // The second run knows the slow test is slow (its report says at least 1.5 s, the
    // others about nothing) and gives it a batch of its own.
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        batches(&p),
        vec![
            vec!["pass-a", "pass-b", "pass-c", "pass-d"],
            vec!["sleep-1.5-slow"]
        ]
        .into_iter()
        .map(|b| b.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
}

#[test]
fn fail_fast_cancels_the_rest() {
    // The failure comes only once the other batch runs, so there is one to cancel.
    let p = scripted(&["fail-a-after-hang-b", "hang-b"], "", "");
    let started = Instant::now();
    let run = support::run(p.offload().args(["run", "--fail-fast", "--parallel", "2"]));
    // Generous for a loaded machine; hang-b would sleep 300 s.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Not Run: 1"), "{}", run.stdout);
    let logs = log_names(&p);
    assert!(logs.iter().any(|n| n.ends_with(".cancelled")), "{logs:?}");
    let pids = read_pids(&p.path().join("pids"));
    assert_eq!(pids.len(), 1, "hang-b ran");
    for pid in pids {
        assert_dead_soon(pid);
    }
    let report = junit(&p);
    assert_eq!(report.case("fail-a-after-hang-b").outcome, "failure");
    assert_eq!(report.case("hang-b").kind, "offload.NotRun");
}

#[test]
fn output_dir_dot_leaves_the_project_alone() {
    let p = scripted(&["pass-a"], "", "");
    let toml = std::fs::read_to_string(p.path().join("offload.toml")).unwrap()
        + "\n[report]\noutput_dir = \".\"\n";
    p.file("offload.toml", &toml);
    p.file("keep.txt", "precious");
    p.file("logs/notes.md", "mine");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("logs/notes.md")).unwrap(),
        "mine"
    );
    assert!(p.path().join("runner.py").exists());
    assert!(p.path().join("junit.xml").exists());
}

#[test]
fn the_same_test_in_two_groups_still_ends() {
    let groups = "[groups.one]\nretry_count = 0\n\n[groups.two]\nretry_count = 1\n";
    let p = scripted(&["pass-a", "flaky-b"], "", groups);
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Total:   2"), "{}", run.stdout);
}

// --- real pytest -------------------------------------------------------------------

fn pytest_project(config_extra: &str) -> Project {
    let p = Project::new();
    p.file(
        "tests/test_mix.py",
        r#"
import os, pytest

def test_pass():
    assert True

def test_fail():
    assert 1 == 2, "one is not two"

def test_flaky():
    marker = os.path.join(os.environ["STATE"], "flaky-marker")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise AssertionError("first attempt")

@pytest.mark.parametrize("text", ["a b", "x [y] z", "ünï"])
def test_param(text):
    assert text

class TestThing:
    def test_method(self):
        pass

@pytest.mark.skip(reason="later")
def test_skipped():
    pass
"#,
    );
    let state = p.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    p.file(
        "offload.toml",
        &format!(
            r#"[offload]
max_parallel = 3
[provider]
type = "local"
[provider.env]
STATE = "{}"
[framework]
type = "pytest"
paths = ["tests"]
command = "python -m pytest"
{config_extra}
"#,
            state.display()
        ),
    );
    p
}

fn with_python(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let bin = support::python_bin_dir();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
}

#[test]
fn pytest_verdicts_map_back_to_node_ids() {
    let p = pytest_project(
        "[groups.main]\nretry_count = 0\nfilters = \"-k 'not flaky'\"\n[groups.retrying]\nretry_count = 1\nfilters = \"-k flaky\"\n",
    );
    let run = support::run(with_python(p.offload().arg("run")));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Total:   8"), "{}", run.stdout);
    assert!(run.stdout.contains("Failed:  1"), "{}", run.stdout);
    assert!(run.stdout.contains("Flaky:   1"), "{}", run.stdout);
    assert!(run.stdout.contains("Skipped: 1"), "{}", run.stdout);
    assert!(!run.stdout.contains("Not Run"), "{}", run.stdout);
    let report = junit(&p);
    assert_eq!(
        report.case("tests/test_mix.py::test_param[a b]").outcome,
        ""
    );
    assert_eq!(
        report
            .case("tests/test_mix.py::TestThing::test_method")
            .outcome,
        ""
    );
    assert_eq!(
        report.case("tests/test_mix.py::test_fail").outcome,
        "failure"
    );

    let logs = support::run(p.offload().args(["logs", "--failures"]));
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout
            .contains("=== tests/test_mix.py::test_fail [FAILED] ==="),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("one is not two"), "{}", logs.stdout);
    assert!(!logs.stdout.contains("test_pass"), "{}", logs.stdout);
}

#[test]
fn pytest_all_passing_exits_zero_and_flaky_exits_two() {
    let p = pytest_project("[groups.main]\nfilters = \"-k 'not fail and not flaky'\"\n");
    let run = support::run(with_python(p.offload().arg("run")));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let p = pytest_project("[groups.main]\nretry_count = 2\nfilters = \"-k 'not fail'\"\n");
    let run = support::run(with_python(p.offload().arg("run")));
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
}

// --- real nextest --------------------------------------------------------------------

#[test]
fn nextest_verdicts_and_retries() {
    let p = Project::new();
    let state = p.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    p.manifest("tiny");
    p.file(
        "src/lib.rs",
        r#"
#[cfg(test)]
mod tests {
    #[test]
    fn passes() {}
    #[test]
    fn fails() { assert_eq!(1, 2, "one is not two"); }
    #[test]
    fn flaky() {
        let marker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("state/flaky");
        if !marker.exists() {
            std::fs::write(&marker, "x").unwrap();
            panic!("first attempt");
        }
    }
}
"#,
    );
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 2\n[provider]\ntype = \"local\"\n[framework]\ntype = \"nextest\"\n\
         [groups.all]\nretry_count = 1\n",
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Total:   3"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("Failed:  1"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("Flaky:   1"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let report = junit(&p);
    let fails = report.case("tiny tests::fails");
    assert_eq!(fails.outcome, "failure", "{fails:#?}");
    assert_eq!(fails.reruns, ["rerunFailure"], "{fails:#?}");
    assert_eq!(report.case("tiny tests::flaky").reruns, ["flakyFailure"]);
}

#[test]
fn pytest_discovery_is_reused_only_while_nothing_changed() {
    let p = pytest_project("[groups.main]\nfilters = \"-k 'not fail and not flaky'\"\n");
    let first = support::run(with_python(p.offload().args(["-v", "run"])));
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        !first.stderr.contains("reusing the previous discovery"),
        "{}",
        first.stderr
    );

    let second = support::run(with_python(p.offload().args(["-v", "run"])));
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second.stderr.contains("reusing the previous discovery"),
        "{}",
        second.stderr
    );
    assert!(second.stdout.contains("Total:   6"), "{}", second.stdout);

    // A new test file is a change: it is discovered and run.
    p.file("tests/test_new.py", "def test_new():\n    pass\n");
    let third = support::run(with_python(p.offload().args(["-v", "run"])));
    assert_eq!(third.code, 0, "{}\n{}", third.stdout, third.stderr);
    assert!(
        !third.stderr.contains("reusing the previous discovery"),
        "{}",
        third.stderr
    );
    assert!(third.stdout.contains("Total:   7"), "{}", third.stdout);

    // --no-cache always discovers afresh.
    let fourth = support::run(with_python(p.offload().args(["-v", "run", "--no-cache"])));
    assert_eq!(fourth.code, 0, "{}\n{}", fourth.stdout, fourth.stderr);
    assert!(
        !fourth.stderr.contains("reusing the previous discovery"),
        "{}",
        fourth.stderr
    );
}

#[test]
fn a_closed_stdout_does_not_change_the_exit_code() {
    let p = scripted(&["pass-a"], "", "");
    let mut child = support::spawn_piped(p.offload().arg("run"));
    // Nobody reads the results: the pipe is closed before the summary is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let run: Run = out.into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn a_first_pytest_run_keeps_the_tests_of_a_file_in_one_batch() {
    // 40 files x 4 tests over 2 local sandboxes, nothing known: each batch imports 20
    // whole files, not a share of all 40.
    let p = Project::new();
    for f in 0..40 {
        let body: String = (0..4)
            .map(|t| format!("def test_{t}():\n    pass\n\n"))
            .collect();
        p.file(&format!("tests/test_f{f}.py"), &body);
    }
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 2\n[provider]\ntype = \"local\"\n\
         [framework]\ntype = \"pytest\"\npaths = [\"tests\"]\ncommand = \"python -m pytest\"\n\
         [groups.all]\n",
    );
    let run = support::run(with_python(p.offload().arg("run")));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let mut batches_of_file = vec![0; 40];
    let mut batches = 0;
    for part in std::fs::read_dir(p.path().join("test-results/junit-parts")).unwrap() {
        let part = Junit::parse(&std::fs::read_to_string(part.unwrap().path()).unwrap());
        batches += 1;
        for (f, count) in batches_of_file.iter_mut().enumerate() {
            let classname = format!("tests.test_f{f}");
            if part.cases.iter().any(|c| c.classname == classname) {
                *count += 1;
            }
        }
    }
    assert_eq!(batches, 2);
    assert_eq!(
        batches_of_file,
        vec![1; 40],
        "batches that loaded each file"
    );
}

#[test]
fn a_closed_stderr_neither_panics_nor_changes_the_exit_code() {
    // `offload -vv run 2>&1 | head -1`: the reader goes away while Offload still has
    // progress, log and status lines to write.
    let p = scripted(&["sleep-0.5-a", "pass-b"], "", "");
    let mut child = p
        .offload()
        .args(["-vv", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut stderr, &mut first).unwrap();
    drop(stderr);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(junit(&p).case("sleep-0.5-a").outcome, "");
}

#[test]
fn nextest_batches_reuse_one_build_and_see_changed_sources() {
    let p = Project::new();
    p.manifest("tiny");
    let tests = |names: &[&str]| {
        let body: String = names
            .iter()
            .map(|n| format!("    #[test]\n    fn {n}() {{}}\n"))
            .collect();
        format!("#[cfg(test)]\nmod tests {{\n{body}}}\n")
    };
    p.file("src/lib.rs", &tests(&["a", "b", "c", "d"]));
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 2\n[provider]\ntype = \"local\"\n[framework]\ntype = \"cargo\"\n\
         [groups.all]\nretry_count = 0\n",
    );
    let run = support::run(p.offload().args(["-vv", "run"]));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let batches: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("cargo nextest run"))
        .collect();
    assert_eq!(batches.len(), 2, "{}", run.stderr);
    for batch in batches {
        assert!(batch.contains("--binaries-metadata"), "{batch}");
    }
    // A new test: the next run lists a fresh build and runs it.
    p.file("src/lib.rs", &tests(&["a", "b", "c", "d", "e"]));
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Passed:  5"), "{}", run.stdout);
    assert_eq!(junit(&p).case("tiny tests::e").outcome, "");
}
