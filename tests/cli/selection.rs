//! Choosing what runs from the command line: positional filters, `-k` (pytest's own
//! expression, a regex on IDs elsewhere), `--rerun-failed` and `--no-capture`.

use std::io::BufRead;

use crate::run::scripted;
use crate::support::{self, Junit, Project};

const PYTEST_TESTS: &str = r#"
import pytest

def test_alpha():
    pass

def test_beta():
    pass

def test_alpha_slow():
    pass

@pytest.mark.slow
def test_alpha_marked():
    pass
"#;

fn pytest_project() -> Project {
    let p = Project::new();
    p.file("pytest.ini", "[pytest]\nmarkers =\n    slow: slow tests\n");
    p.file("tests/test_x.py", PYTEST_TESTS);
    p.file("tests/test_y.py", "def test_gamma():\n    pass\n");
    p.config(
        "type = \"pytest\"\npaths = [\"tests\"]",
        "[groups.all]\nretry_count = 0\n",
    );
    p
}

/// The testcase names of the merged report, sorted.
fn ran(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = Junit::of(p).cases.into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[test]
fn positional_filters_run_the_tests_whose_id_contains_one() {
    let p = pytest_project();
    let run = support::run(p.offload_with_python().args([
        "run",
        "tests/test_x.py::test_beta",
        "test_y.py",
    ]));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        ran(&p),
        ["tests/test_x.py::test_beta", "tests/test_y.py::test_gamma"]
    );
    assert!(run.stdout.contains("Total:   2"), "{}", run.stdout);

    // `collect` lists the same selection.
    let listed = support::run(p.offload_with_python().args(["collect", "alpha_"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(
        listed.stdout,
        "Discovered 2 tests across 1 group:\n\nGroup 'all':\n  \
         tests/test_x.py::test_alpha_slow\n  tests/test_x.py::test_alpha_marked\n"
    );
}

#[test]
fn k_is_pytests_own_expression() {
    let p = pytest_project();
    // Markers are keywords to pytest: `not slow` drops the marked test too, which no
    // match on IDs would do.
    let run = support::run(
        p.offload_with_python()
            .args(["run", "-k", "not slow and alpha"]),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(ran(&p), ["tests/test_x.py::test_alpha"]);

    // With a positional filter too, a test must match both.
    let run = support::run(
        p.offload_with_python()
            .args(["run", "-k", "alpha or gamma", "test_y"]),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(ran(&p), ["tests/test_y.py::test_gamma"]);
}

#[test]
fn k_is_a_regex_on_ids_for_the_default_framework() {
    let p = scripted(&["pass-a", "pass-b", "pass-c", "fail-d"], "", "");
    let run = support::run(p.offload().args(["run", "-k", "^pass-(a|c)$"]));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(ran(&p), ["pass-a", "pass-c"]);

    let log = p.path().join("times.log");
    std::fs::remove_file(&log).unwrap();
    let run = support::run(p.offload().args(["run", "-k", "pass-("]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("error: invalid `-k pass-(`") && run.stderr.contains("hint"),
        "{}",
        run.stderr
    );
    assert!(!log.exists(), "a test ran despite the bad -k");
}

#[test]
fn a_selection_that_matches_nothing_fails_and_runs_nothing() {
    let p = scripted(&["pass-a", "pass-b"], "", "");
    let run = support::run(p.offload().args(["run", "nothing-like-this"]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("no tests match an ID containing `nothing-like-this` (2 tests discovered)"),
        "{}",
        run.stderr
    );
    assert!(!p.path().join("times.log").exists(), "a test ran");
}

#[test]
fn rerun_failed_runs_what_did_not_pass_last_time() {
    let p = scripted(
        &["pass-a", "fail-b", "flaky-c", "pass-d"],
        "",
        "[groups.all]\nretry_count = 1\n",
    );
    let first = support::run(p.offload().args(["run", "--rerun-failed"]));
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stderr.contains("no report of a previous run") && first.stderr.contains("hint"),
        "{}",
        first.stderr
    );
    assert!(!p.path().join("times.log").exists(), "a test ran");

    let first = support::run(p.offload().arg("run"));
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);

    // The flaky test passed in the end: only the failed one runs again.
    std::fs::remove_file(p.path().join("times.log")).unwrap();
    let rerun = support::run(p.offload().args(["run", "--rerun-failed"]));
    assert_eq!(rerun.code, 1, "{}\n{}", rerun.stdout, rerun.stderr);
    assert_eq!(ran(&p), ["fail-b"]);
    let times = std::fs::read_to_string(p.path().join("times.log")).unwrap();
    let ids: Vec<&str> = times.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(ids, ["fail-b", "fail-b"], "{times}");

    // Once it passes there is nothing left to rerun.
    p.file("tests.txt", "pass-a\npass-b\n");
    let run = support::run(p.offload().args(["run", "pass-b"]));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let done = support::run(p.offload().args(["run", "--rerun-failed"]));
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert!(done.stdout.contains("Nothing to rerun"), "{}", done.stdout);
}

#[test]
fn no_capture_shows_a_tests_output_while_it_runs() {
    let p = pytest_project();
    // The test prints, then waits until this side saw the line: it passes only when its
    // output reaches the terminal while it is still running.
    p.file(
        "tests/test_talk.py",
        r#"
import os, time

def test_talks():
    print("hello from the test", flush=True)
    for _ in range(300):
        if os.path.exists("go"):
            return
        time.sleep(0.1)
    raise AssertionError("nobody saw the line")
"#,
    );
    let mut child =
        support::spawn_piped(
            p.offload_with_python()
                .args(["run", "--no-capture", "test_talk"]),
        );
    let stdout = child.stdout.take().unwrap();
    let mut seen = false;
    let mut rest = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("hello from the test") && !seen {
            seen = true;
            std::fs::write(p.path().join("go"), "").unwrap();
        }
        rest.push_str(&line);
        rest.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(seen, "the test's output never showed:\n{rest}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{rest}\n{stderr}");
    assert_eq!(ran(&p), ["tests/test_talk.py::test_talks"]);
    // The batch log has it too.
    let logs = std::fs::read_dir(p.path().join("test-results/logs")).unwrap();
    let text: String = logs
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(text.contains("hello from the test"), "{text}");
}
