//! `offload logs` against a merged report on disk: filters, banners, messages, exit codes.

use crate::support::{Project, Run, run};

const CONFIG: &str = r#"[offload]
max_parallel = 1

[provider]
type = "local"

[framework]
type = "default"
discover_command = "echo a {filters}"
run_command = "true {tests}"
test_id_format = "{name}"

[groups.all]
"#;

/// A merged report as `offload run` writes it: one passed, two failed (one with an
/// earlier attempt), one not run, one skipped, one flaky.
const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="offload" tests="6" failures="2" errors="1" skipped="1" time="1.000">
  <testsuite name="all" tests="6" failures="2" errors="1" skipped="1" time="0.600">
    <testcase name="tests/test_math.py::test_add" classname="tests.test_math" time="0.100"/>
    <testcase name="tests/test_math.py::test_div" classname="tests.test_math" time="0.100">
      <failure message="AssertionError: expected 2 got 3&#10;second line" type="AssertionError">tests/test_math.py:10: in test_div
    assert 1 / 0 == 2
E   AssertionError: expected 2 got 3</failure>
      <rerunFailure message="first try failed" type="AssertionError"><stackTrace>first traceback</stackTrace></rerunFailure>
      <system-out>captured &lt;stdout&gt;</system-out>
      <system-err>captured stderr</system-err>
    </testcase>
    <testcase name="tests/test_db.py::test_query" classname="tests.test_db" time="0.100">
      <failure message="db is down"/>
    </testcase>
    <testcase name="tests/test_db.py::test_conn" classname="all" time="0.000">
      <error message="not run: sandbox died" type="offload.NotRun"/>
    </testcase>
    <testcase name="tests/test_math.py::test_skip" classname="tests.test_math" time="0.000">
      <skipped message="no gpu"/>
    </testcase>
    <testcase name="tests/test_net.py::test_flaky" classname="tests.test_net" time="0.200">
      <flakyFailure message="timeout" type="TimeoutError"><stackTrace>net trace</stackTrace></flakyFailure>
    </testcase>
  </testsuite>
</testsuites>
"#;

fn project() -> Project {
    let p = Project::new();
    p.file("offload.toml", CONFIG);
    p.file("test-results/junit.xml", REPORT);
    p
}

fn logs(p: &Project, args: &[&str]) -> Run {
    run(p.offload().arg("logs").args(args))
}

/// The IDs of the banners, in order.
fn banners(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("=== "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn prints_every_test_sorted_with_its_status() {
    let p = project();
    let r = logs(&p, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        banners(&r.stdout),
        [
            "=== tests/test_db.py::test_conn [ERROR] ===",
            "=== tests/test_db.py::test_query [FAILED] ===",
            "=== tests/test_math.py::test_add [PASSED] ===",
            "=== tests/test_math.py::test_div [FAILED] ===",
            "=== tests/test_math.py::test_skip [SKIPPED] ===",
            "=== tests/test_net.py::test_flaky [FLAKY] ===",
        ]
    );
    assert!(
        r.stdout.contains(
            "=== tests/test_math.py::test_div [FAILED] ===\n\
             AssertionError: expected 2 got 3\nsecond line\n\
             tests/test_math.py:10: in test_div\n    assert 1 / 0 == 2\n\
             E   AssertionError: expected 2 got 3\n\
             --- attempt 1 ---\nfirst try failed\nfirst traceback\n\
             --- stdout ---\ncaptured <stdout>\n\
             --- stderr ---\ncaptured stderr\n\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("=== tests/test_math.py::test_skip [SKIPPED] ===\nno gpu\n\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "=== tests/test_net.py::test_flaky [FLAKY] ===\n--- attempt 1 ---\ntimeout\nnet trace\n\n"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("=== tests/test_math.py::test_add [PASSED] ===\n\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("\n\n"));
}

#[test]
fn failures_keeps_failed_tests_only() {
    let r = logs(&project(), &["--failures"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        banners(&r.stdout),
        [
            "=== tests/test_db.py::test_query [FAILED] ===",
            "=== tests/test_math.py::test_div [FAILED] ===",
        ]
    );
}

#[test]
fn errors_keeps_tests_not_run() {
    let r = logs(&project(), &["--errors"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "=== tests/test_db.py::test_conn [ERROR] ===\nnot run: sandbox died\n\n"
    );
}

#[test]
fn failures_and_errors_keep_either() {
    let r = logs(&project(), &["--failures", "--errors"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(banners(&r.stdout).len(), 3, "{}", r.stdout);
}

#[test]
fn test_ids_match_exactly_and_repeat() {
    let p = project();
    let r = logs(
        &p,
        &[
            "--test",
            "tests/test_math.py::test_add",
            "--test",
            "tests/test_net.py::test_flaky",
            "--test",
            "test_add",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        banners(&r.stdout),
        [
            "=== tests/test_math.py::test_add [PASSED] ===",
            "=== tests/test_net.py::test_flaky [FLAKY] ===",
        ]
    );
}

#[test]
fn regex_is_an_unanchored_search() {
    let r = logs(&project(), &["--test-regex", "math.*(add|skip)"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        banners(&r.stdout),
        [
            "=== tests/test_math.py::test_add [PASSED] ===",
            "=== tests/test_math.py::test_skip [SKIPPED] ===",
        ]
    );
}

#[test]
fn filters_combine_with_and() {
    let p = project();
    let r = logs(&p, &["--failures", "--test-regex", "test_math"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        banners(&r.stdout),
        ["=== tests/test_math.py::test_div [FAILED] ==="]
    );

    let r = logs(
        &p,
        &[
            "--failures",
            "--test",
            "tests/test_math.py::test_add",
            "--test",
            "tests/test_db.py::test_query",
        ],
    );
    assert_eq!(
        banners(&r.stdout),
        ["=== tests/test_db.py::test_query [FAILED] ==="]
    );
}

#[test]
fn nothing_matching_exits_zero_with_a_message() {
    let r = logs(&project(), &["--errors", "--test-regex", "math"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .contains("No matching test results found in test-results/junit.xml"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_report_exits_one() {
    let p = Project::new();
    p.file("offload.toml", CONFIG);
    let r = logs(&p, &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .contains("No test results found at test-results/junit.xml. Run `offload run` first."),
        "{}",
        r.stderr
    );
    // A directory where the report should be is not a report either.
    std::fs::create_dir_all(p.path().join("test-results/junit.xml")).unwrap();
    assert_eq!(logs(&p, &[]).code, 1);
}

#[test]
fn bad_regex_exits_one_naming_it() {
    let r = logs(&project(), &["--test-regex", "test_(add"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--test-regex"), "{}", r.stderr);
    assert!(r.stderr.contains("`test_(add`"), "{}", r.stderr);
    assert!(r.stderr.contains("unclosed group"), "{}", r.stderr);
}

#[test]
fn unreadable_report_exits_one_naming_the_file() {
    let p = Project::new();
    p.file("offload.toml", CONFIG);
    p.file(
        "test-results/junit.xml",
        "<testsuites>\n<testsuite name=\"x\">\n<testcase name=\"a\">",
    );
    let r = logs(&p, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("test-results/junit.xml"), "{}", r.stderr);
    assert!(r.stderr.contains("line 3"), "{}", r.stderr);
}

#[test]
fn reads_the_output_dir_of_the_config_given() {
    let p = project();
    p.file(
        "ci/other.toml",
        &format!("{CONFIG}\n[report]\noutput_dir = \"other-results\"\njunit_file = \"r.xml\"\n"),
    );
    p.file(
        "other-results/r.xml",
        r#"<testsuites><testsuite name="g"><testcase name="only::here"/></testsuite></testsuites>"#,
    );
    let r = logs(&p, &["-c", "ci/other.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "=== only::here [PASSED] ===\n\n");

    let r = run(p
        .offload()
        .args(["logs", "--config", "ci/other.toml", "--failures"]));
    assert_eq!(r.code, 0);
    assert!(
        r.stderr
            .contains("No matching test results found in other-results/r.xml"),
        "{}",
        r.stderr
    );
}

#[test]
fn duplicate_ids_keep_the_worst_outcome() {
    let p = Project::new();
    p.file("offload.toml", CONFIG);
    p.file(
        "test-results/junit.xml",
        r#"<testsuites>
<testsuite name="batch-0"><testcase name="a"/><testcase name="b"><failure message="first"/></testcase></testsuite>
<testsuite name="batch-1"><testcase name="a"><failure message="retry failed"/></testcase><testcase name="b"/></testsuite>
</testsuites>"#,
    );
    let r = logs(&p, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "=== a [FAILED] ===\nretry failed\n\n=== b [FAILED] ===\nfirst\n\n"
    );
}

#[test]
fn missing_config_exits_one() {
    let p = Project::new();
    let r = logs(&p, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("offload.toml"), "{}", r.stderr);
}
