//! The kind of every outcome survives from a batch's report to the merged report, the
//! summary and `offload logs`: failures, errors (setup and teardown), skips, tests not
//! run, timeouts, and the failed attempts of flaky tests.

use crate::support::{self, Junit, Project};

fn pytest_project(tests: &str, groups: &str) -> Project {
    let p = Project::new();
    p.file("tests/test_kinds.py", tests);
    p.config(
        "type = \"pytest\"\npaths = [\"tests\"]\ncommand = \"python -m pytest\"",
        groups,
    );
    p
}

fn report(p: &Project) -> Junit {
    let path = p.path().join("test-results/junit.xml");
    Junit::parse(&std::fs::read_to_string(&path).expect("the merged report"))
}

const KINDS: &str = r#"
import os, pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

@pytest.fixture
def bad_teardown():
    yield 1
    raise RuntimeError("teardown exploded")

def test_setup_error(broken):
    pass

def test_teardown_error(bad_teardown):
    pass

def test_fail():
    assert 1 == 2

def test_ok():
    pass

@pytest.mark.skip(reason="not today")
def test_skip():
    pass
"#;

#[test]
fn pytest_errors_stay_errors_in_report_summary_and_logs() {
    let p = pytest_project(KINDS, "[groups.all]\nretry_count = 0\n");
    let run = support::run(p.offload_with_python().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Failed:  1\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Errors:  2\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Skipped: 1\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Some tests failed."), "{}", run.stdout);

    let junit = report(&p);
    assert_eq!(junit.count("tests"), 5);
    assert_eq!(junit.count("failures"), 1);
    assert_eq!(junit.count("errors"), 2);
    assert_eq!(junit.count("skipped"), 1);
    let setup = junit.case("tests/test_kinds.py::test_setup_error");
    assert_eq!(setup.outcome, "error", "{setup:?}");
    assert!(setup.message.contains("fixture exploded"), "{setup:?}");
    let teardown = junit.case("tests/test_kinds.py::test_teardown_error");
    assert_eq!(teardown.outcome, "error", "{teardown:?}");
    assert_eq!(
        junit.case("tests/test_kinds.py::test_fail").outcome,
        "failure"
    );
    assert_eq!(
        junit.case("tests/test_kinds.py::test_skip").outcome,
        "skipped"
    );
    assert_eq!(junit.case("tests/test_kinds.py::test_ok").outcome, "");

    let logs = support::run(p.offload().args(["logs", "--errors"]));
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    let banners: Vec<&str> = logs
        .stdout
        .lines()
        .filter(|l| l.starts_with("==="))
        .collect();
    assert_eq!(
        banners,
        [
            "=== tests/test_kinds.py::test_setup_error [ERROR] ===",
            "=== tests/test_kinds.py::test_teardown_error [ERROR] ===",
        ],
        "{}",
        logs.stdout
    );
    let logs = support::run(p.offload().args(["logs", "--failures"]));
    let banners: Vec<&str> = logs
        .stdout
        .lines()
        .filter(|l| l.starts_with("==="))
        .collect();
    assert_eq!(banners, ["=== tests/test_kinds.py::test_fail [FAILED] ==="]);
}

#[test]
fn retried_errors_are_rerun_and_flaky_errors() {
    // `test_flaky_setup` errors in setup on its first attempt only; `test_always` errors
    // on every attempt.
    let tests = r#"
import os, pytest

@pytest.fixture
def first_time_broken():
    marker = os.path.join(os.path.dirname(__file__), "..", "marker")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first setup fails")

@pytest.fixture
def broken():
    raise RuntimeError("always broken")

def test_flaky_setup(first_time_broken):
    pass

def test_always(broken):
    pass
"#;
    let p = pytest_project(tests, "[groups.all]\nretry_count = 1\n");
    let run = support::run(p.offload_with_python().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Errors:  1\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Flaky:   1\n"), "{}", run.stdout);
    let junit = report(&p);
    let flaky = junit.case("tests/test_kinds.py::test_flaky_setup");
    assert_eq!(flaky.outcome, "");
    assert_eq!(flaky.reruns, ["flakyError"]);
    let always = junit.case("tests/test_kinds.py::test_always");
    assert_eq!(always.outcome, "error");
    assert_eq!(always.reruns, ["rerunError"]);
    assert_eq!(junit.count("errors"), 1);
    assert_eq!(junit.count("failures"), 0);
}

#[test]
fn progress_lines_count_tests_not_run_apart_from_failures() {
    // The runner writes a result for `pass-1` only: `ghost-1` and `ghost-2` are not run.
    let p = Project::new();
    p.file("tests.txt", "pass-1\nghost-1\nghost-2\n");
    p.file(
        "runner.sh",
        "printf '<testsuite><testcase name=\"pass-1\"/></testsuite>' > \"$1\"\n",
    );
    p.config(
        "type = \"default\"\ndiscover_command = \"cat tests.txt {filters}\"\n\
         run_command = \"sh runner.sh {result_file} {tests}\"\ntest_id_format = \"{name}\"",
        "[groups.all]\nretry_count = 0\n",
    );
    let run = support::run(p.offload().args(["run", "--ci"]));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Not Run: 2"), "{}", run.stdout);
    let last = run
        .stderr
        .lines()
        .rfind(|l| l.starts_with("[offload]"))
        .unwrap_or_default();
    assert!(
        last.contains("3/3 tests done, 0 failed, 0 flaky, 2 not run"),
        "{}",
        run.stderr
    );
}

/// A crate with a passing, a `should_panic` and an `#[ignore]`d test.
fn crate_with_ignored_test(include_ignored: bool) -> Project {
    let p = Project::new();
    p.manifest("kinds");
    p.file(
        "src/lib.rs",
        r#"
#[cfg(test)]
mod tests {
    #[test]
    fn passes() {}
    #[test]
    #[should_panic(expected = "boom")]
    fn panics_as_expected() { panic!("boom") }
    #[test]
    #[ignore = "slow"]
    fn ignored() {}
}
"#,
    );
    p.config(
        &format!("type = \"cargo\"\ninclude_ignored = {include_ignored}"),
        "[groups.all]\n",
    );
    p
}

fn cargo_run(p: &Project, args: &[&str]) -> support::Run {
    support::run(p.offload().args(args))
}

#[test]
fn ignored_cargo_tests_are_reported_skipped_as_nextest_does() {
    let p = crate_with_ignored_test(false);
    let run = cargo_run(&p, &["run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Total:   3\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Skipped: 1\n"), "{}", run.stdout);
    let junit = report(&p);
    let ignored = junit.case("kinds tests::ignored");
    assert_eq!(ignored.outcome, "skipped", "{ignored:?}");
    assert_eq!(ignored.kind, "offload.Ignored", "{ignored:?}");
    assert_eq!(junit.case("kinds tests::panics_as_expected").outcome, "");
    // What a run runs is what collect lists.
    let collect = cargo_run(&p, &["collect"]);
    assert_eq!(collect.code, 0, "{}", collect.stderr);
    assert!(
        collect.stdout.contains("kinds tests::passes"),
        "{}",
        collect.stdout
    );
    assert!(
        !collect.stdout.contains("tests::ignored"),
        "{}",
        collect.stdout
    );

    let p = crate_with_ignored_test(true);
    let run = cargo_run(&p, &["run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Total:   3\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("Skipped"), "{}", run.stdout);
    assert_eq!(report(&p).case("kinds tests::ignored").outcome, "");
}
