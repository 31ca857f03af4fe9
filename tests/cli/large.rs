//! Batches of any size (issue 12, item 6): a batch's selection reaches the test process
//! whatever its size, through every provider, and a command that cannot start is its
//! batch's error, not the sandbox's.
//!
//! On Linux one argument may hold at most 128 KiB, so each suite here has IDs adding up
//! to far more than that, all in one batch (one sandbox).

use crate::support::{self, Junit, LOCAL_SANDBOXES, Project, Run};

/// The number of parametrized tests in the large pytest module.
const MANY: usize = 20_000;

/// A pytest module with [`MANY`] parametrized tests whose IDs are long and awkward
/// (spaces, brackets, a quote, non-ASCII), a small second file, and a test that pytest
/// collects in discovery but not when the batch runs.
fn large_pytest_project() -> Project {
    let p = Project::new();
    p.file(
        "tests/test_many.py",
        &format!(
            r#"import pytest

CASES = [f"case {{i:05}} of a long parametrized suite, it's [bracketed] and ü" for i in range({MANY})]

@pytest.mark.parametrize("case", CASES)
def test_case(case):
    assert case.startswith("case ")
"#
        ),
    );
    p.file(
        "tests/test_other.py",
        "def test_other():\n    pass\n\ndef test_vanishes():\n    pass\n",
    );
    // Drops one test when pytest runs rather than collects: its ID was discovered, so
    // the batch lists it, and it must come out "not run" with a reason, not be lost.
    p.file(
        "tests/conftest.py",
        r#"def pytest_collection_modifyitems(config, items):
    if not config.option.collectonly:
        items[:] = [i for i in items if not i.nodeid.endswith("test_vanishes")]
"#,
    );
    p
}

/// The batch logs of the last run (`batch-N.<kind>`).
fn batch_logs(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.path().join("test-results/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that the run cut at most `max` batches: with [`MANY`] long IDs, each then
/// holds far more IDs than one command-line argument could.
fn assert_few_batches(p: &Project, max: usize, run: &Run) {
    let logs = batch_logs(p);
    assert!(
        !logs.is_empty() && logs.len() <= max,
        "{} batches ({logs:?}), expected at most {max}\n{}",
        logs.len(),
        run.show()
    );
}

/// Runs `offload run --no-cache` with the test virtualenv on `PATH`.
fn run_with_python(p: &Project, cmd: &mut std::process::Command) -> Run {
    cmd.env("PATH", support::path_with(&support::python_bin_dir()))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["run", "--no-cache"]);
    let run = support::run(cmd);
    // The vanished test is the only one not run; every other test passed.
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary(&format!("Passed: {}", MANY + 1));
    run.assert_summary("Failed: 0");
    run.assert_summary("Not Run: 1");
    let report = Junit::of(p);
    assert!(
        report
            .cases
            .iter()
            .any(|c| c.name.starts_with(
                "tests/test_many.py::test_case[case 19999 of a long parametrized suite"
            ) && c.outcome.is_empty()),
        "the last parametrized ID is missing or did not pass"
    );
    run
}

#[test]
fn a_pytest_batch_of_20000_long_ids_runs_through_the_local_provider() {
    let p = large_pytest_project();
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 1
test_timeout_secs = 600

[provider]
type = "local"

[framework]
type = "pytest"
paths = ["tests"]

[groups.all]
"#,
    );
    let run = run_with_python(&p, &mut p.offload());
    assert_few_batches(&p, 1, &run);
    let logs = std::fs::read_to_string(p.path().join("test-results/logs/batch-0.error"))
        .expect("one batch, an error for the vanished test");
    assert!(
        logs.contains("tests/test_other.py::test_vanishes"),
        "the plugin names the ID pytest did not collect:\n{logs}"
    );
}

#[test]
fn a_pytest_batch_of_20000_long_ids_runs_through_the_default_provider() {
    let p = large_pytest_project();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    p.file(
        "offload.toml",
        &format!(
            r#"[offload]
max_parallel = 1
test_timeout_secs = 600
sandbox_project_root = "."

{LOCAL_SANDBOXES}
[framework]
type = "pytest"
paths = ["tests"]
command = "python -m pytest"

[groups.all]
"#
        ),
    );
    let mut cmd = p.offload();
    cmd.env("OFFLOAD_SANDBOX_HOME", home.path())
        .env("XDG_CACHE_HOME", cache.path());
    let run = run_with_python(&p, &mut cmd);
    // Remote sandboxes get two batches each on a first run.
    assert_few_batches(&p, 2, &run);
}

/// A runner for the default framework: `python3 runner.py RESULT ID...` or
/// `python3 runner.py RESULT --file FILE`; every test passes.
const RUNNER: &str = r#"
import sys, html
result, ids = sys.argv[1], sys.argv[2:]
if ids[:1] == ["--file"]:
    with open(ids[1], encoding="utf-8") as f:
        ids = f.read().splitlines()
cases = "".join(f'<testcase name="{html.escape(t)}"/>' for t in ids)
with open(result, "w", encoding="utf-8") as f:
    f.write(f'<testsuite name="runner">{cases}</testsuite>')
"#;

/// A default-framework project of [`MANY`] long IDs run by `run_command`, in one batch.
fn large_default_project(run_command: &str) -> Project {
    let p = Project::new();
    p.file("runner.py", RUNNER);
    let ids: String = (0..MANY)
        .map(|i| format!("suite/case {i:05} with a long name, it's [odd] ü\n"))
        .collect();
    p.file("tests.txt", &ids);
    p.file(
        "offload.toml",
        &format!(
            r#"[offload]
max_parallel = 1
test_timeout_secs = 300

[provider]
type = "local"

[framework]
type = "default"
discover_command = "cat tests.txt {{filters}}"
run_command = "{run_command}"
test_id_format = "{{name}}"

[groups.all]
"#
        ),
    );
    p
}

#[test]
fn a_default_framework_batch_with_a_huge_tests_placeholder_runs() {
    let p = large_default_project("python3 runner.py {result_file} {tests}");
    let run = support::run(p.offload().args(["run", "--no-cache"]));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary(&format!("Passed: {MANY}"));
    assert_few_batches(&p, 1, &run);
}

#[test]
fn a_default_framework_batch_reads_its_tests_file() {
    let p = large_default_project("python3 runner.py {result_file} --file {tests_file}");
    let run = support::run(p.offload().args(["run", "--no-cache"]));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary(&format!("Passed: {MANY}"));
}

#[test]
fn a_batch_that_cannot_start_is_its_error_and_the_sandbox_runs_the_next() {
    let p = Project::new();
    p.file("tests.txt", "a\nb\nc\nd\n");
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 1

[provider]
type = "local"
shell = "/nonexistent/offload-shell"

[framework]
type = "default"
discover_command = "cat tests.txt {filters}"
run_command = "true {tests}"
test_id_format = "{name}"

[groups.all]
schedule_individual = true
"#,
    );
    let run = support::run(p.offload().args(["run", "--no-cache"]));
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Not Run: 4");
    // One sandbox ran all four batches; each says why it could not start.
    for batch in 0..4 {
        let log = p
            .path()
            .join(format!("test-results/logs/batch-{batch}.error"));
        let log = std::fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", log.display(), run.show()));
        assert!(
            log.contains("failed to start `/nonexistent/offload-shell`"),
            "{log}"
        );
    }
    let report = Junit::of(&p);
    assert_eq!(report.cases.len(), 4, "{report:#?}");
    for case in &report.cases {
        assert_eq!(case.kind, "offload.NotRun", "{case:#?}");
        assert!(
            format!("{} {}", case.message, case.body).contains("failed to start"),
            "{case:#?}"
        );
    }
}

#[test]
fn a_nextest_batch_of_long_names_runs_in_one_batch() {
    // 1500 tests whose filterset terms add up to well over 128 KiB.
    const TESTS: usize = 1500;
    let p = Project::new();
    p.manifest("bigbatch");
    let tests: String = (0..TESTS)
        .map(|i| {
            format!(
                "    #[test] fn test_{i:04}_with_a_long_name_that_fills_the_filterset_up() {{}}\n"
            )
        })
        .collect();
    p.file(
        "src/lib.rs",
        &format!("#[cfg(test)]\nmod tests {{\n{tests}}}\n"),
    );
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 1\ntest_timeout_secs = 600\n[provider]\ntype = \"local\"\n\
         [framework]\ntype = \"cargo\"\n[groups.all]\n",
    );
    let run = support::run(p.offload().args(["run", "--no-cache"]));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary(&format!("Passed: {TESTS}"));
    assert_few_batches(&p, 1, &run);
}
