//! Per-test results from inside running batches: real pytest and cargo-nextest batches
//! report each test as it finishes, and a test that finished keeps its result when its
//! batch is killed afterwards (timeout, interrupt).

use std::time::Duration;

use crate::support::{self, Junit, Project};

/// A pytest project whose one batch runs `test_a_quick`, then `test_b_long` (which
/// touches `started-b` and sleeps), then `test_c_after`.
fn pytest_batch(timeout_secs: u32) -> Project {
    let p = Project::new();
    p.file(
        "tests/test_order.py",
        r#"
import pathlib, time

def test_a_quick():
    print("quick output")

def test_b_long():
    pathlib.Path("started-b").write_text("yes")
    time.sleep(30)

def test_c_after():
    pass
"#,
    );
    p.file(
        "offload.toml",
        &format!(
            "[offload]\nmax_parallel = 1\ntest_timeout_secs = {timeout_secs}\n\
             sandbox_project_root = \".\"\n\n[provider]\ntype = \"local\"\n\n\
             [framework]\ntype = \"pytest\"\npaths = [\"tests\"]\n\
             command = \"python -m pytest\"\n\n[groups.all]\nretry_count = 0\n"
        ),
    );
    p
}

/// The issue this guards: with the batch killed at its timeout, every test of it
/// failed "timed out", the quick one too.
#[test]
fn a_batch_timeout_blames_only_the_test_that_was_running() {
    let p = pytest_batch(4);
    let run = support::run(p.offload_with_python().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let report = Junit::of(&p);
    let quick = report.case("tests/test_order.py::test_a_quick");
    assert_eq!(quick.outcome, "", "a passed test stays passed: {quick:?}");
    let long = report.case("tests/test_order.py::test_b_long");
    assert_eq!(
        (long.outcome.as_str(), long.kind.as_str()),
        ("failure", "offload.Timeout"),
        "{long:?}"
    );
    let after = report.case("tests/test_order.py::test_c_after");
    assert_eq!(after.outcome, "error", "{after:?}");
    assert!(
        after.message.contains("before the test started"),
        "{after:?}"
    );
    // The event lines are Offload's channel, not the batch's output.
    let logs = std::fs::read_dir(p.path().join("test-results/logs")).unwrap();
    for log in logs {
        let text = std::fs::read_to_string(log.unwrap().path()).unwrap();
        assert!(!text.contains("##offload-event##"), "{text}");
    }
}

/// Interrupted while `test_b_long` runs: `test_a_quick` had passed and is reported
/// passed, not "not run".
#[test]
fn an_interrupt_keeps_the_tests_that_already_finished() {
    let p = pytest_batch(120);
    let child = support::spawn_piped(p.offload_with_python().arg("run"));
    support::wait_until("test_b_long to start", Duration::from_secs(90), || {
        p.path().join("started-b").exists()
    });
    // The start of `test_b_long` is written after `test_a_quick`'s result line; give
    // the line a moment to travel through the pipe.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = support::wait_bounded(child, Duration::from_secs(60), "offload after SIGINT");
    assert_eq!(run.code, 130, "{}", run.show());
    let report = Junit::of(&p);
    let quick = report.case("tests/test_order.py::test_a_quick");
    assert_eq!(quick.outcome, "", "{quick:?}\n{}", run.show());
    let long = report.case("tests/test_order.py::test_b_long");
    assert_eq!(long.kind, "offload.NotRun", "{long:?}");
}

/// nextest's status lines are read as its tests finish: a passing test keeps its pass
/// when the batch is killed at its timeout by a test that hangs.
#[test]
fn nextest_results_survive_a_batch_timeout() {
    let p = Project::new();
    p.manifest("lv");
    p.file(
        "src/lib.rs",
        "#[cfg(test)]\nmod tests {\n\
         #[test] fn a_quick() {}\n\
         #[test] fn b_hangs() { std::thread::sleep(std::time::Duration::from_secs(120)); }\n}\n",
    );
    // The build happens before the batch's clock matters: build first.
    let build = support::run(
        std::process::Command::new("cargo")
            .args(["build", "--tests", "--quiet"])
            .current_dir(p.path())
            .env("CARGO_TARGET_DIR", p.path().join("target")),
    );
    assert_eq!(build.code, 0, "{}", build.show());
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 1\ntest_timeout_secs = 20\n\n\
         [provider]\ntype = \"local\"\n\n[framework]\ntype = \"cargo\"\n\n\
         [groups.all]\nretry_count = 0\n",
    );
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    let report = Junit::of(&p);
    let quick = report.case("lv tests::a_quick");
    assert_eq!(quick.outcome, "", "{quick:?}\n{}", run.show());
    // nextest itself reports the test it was running when it was stopped.
    let hang = report.case("lv tests::b_hangs");
    assert_eq!(hang.outcome, "failure", "{hang:?}");
}
