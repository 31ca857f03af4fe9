//! The durations history: recorded on request, read when there is no previous report,
//! pruned of tests that are gone, merged by git without conflicts, and never lost to a
//! bad file or to two runs recording at once.

use std::path::Path;
use std::process::Command;

use crate::support::{self, Project, git, init_repo, run};

const TESTS: &str = "import time\n\n\
def test_slow():\n    time.sleep(0.4)\n\n\
def test_mid():\n    time.sleep(0.15)\n\n\
def test_quick():\n    pass\n";

fn project() -> Project {
    let p = Project::new();
    p.file("tests/test_a.py", TESTS);
    p.config(
        "type = \"pytest\"\ncommand = \"python -m pytest\"\npaths = [\"tests\"]",
        "[groups.all]\nretry_count = 0\n",
    );
    p
}

/// The history's entries: (group, test ID, seconds, runs), in file order.
fn entries(p: &Project) -> Vec<(String, String, f64, u32)> {
    let text = std::fs::read_to_string(p.path().join(".offload/durations")).expect("history");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("{\"format\":\"offload-durations\",\"version\":1}"),
        "{text}"
    );
    lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `collect --format json`'s (id, duration, duration_source) per test.
fn scheduled(p: &Project) -> Vec<(String, Option<f64>, Option<String>)> {
    let out = run(p
        .offload_with_python()
        .args(["collect", "--format", "json"]));
    assert_eq!(out.code, 0, "{}", out.show());
    let items: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json");
    items
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["duration"].as_f64(),
                i["duration_source"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn record(p: &Project) -> support::Run {
    let out = run(p.offload_with_python().args(["run", "--record-history"]));
    assert_eq!(out.code, 0, "{}", out.show());
    out
}

#[test]
fn a_recorded_history_schedules_a_run_that_has_no_report() {
    let p = project();
    // A plain run records nothing: the tree stays clean.
    let plain = run(p.offload_with_python().arg("run"));
    assert_eq!(plain.code, 0, "{}", plain.show());
    assert!(!p.path().join(".offload").exists());
    assert!(
        scheduled(&p)
            .iter()
            .all(|(_, _, source)| source.as_deref() == Some("report"))
    );

    let first = record(&p);
    assert!(
        first
            .stderr
            .contains("Recorded 3 test times into the durations history `.offload/durations`"),
        "{}",
        first.show()
    );
    let got = entries(&p);
    let ids: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
    // Sorted, one test a line.
    assert_eq!(
        ids,
        [
            "tests/test_a.py::test_mid",
            "tests/test_a.py::test_quick",
            "tests/test_a.py::test_slow"
        ]
    );
    assert!(got.iter().all(|e| e.0 == "all" && e.3 == 1), "{got:?}");
    let slow = got[2].2;
    assert!((0.38..2.0).contains(&slow), "{got:?}");

    // A CI run: no previous report, only the history.
    std::fs::remove_dir_all(p.path().join("test-results")).unwrap();
    let plan = scheduled(&p);
    for (id, secs, source) in &plan {
        assert_eq!(source.as_deref(), Some("history"), "{plan:?}");
        let recorded = got.iter().find(|e| &e.1 == id).unwrap().2;
        assert!((secs.unwrap() - recorded).abs() < 0.01, "{plan:?}");
    }

    // A new test counts as its group's mean until it is recorded.
    p.file("tests/test_b.py", "def test_new():\n    pass\n");
    let plan = scheduled(&p);
    let new = plan
        .iter()
        .find(|t| t.0 == "tests/test_b.py::test_new")
        .unwrap();
    assert_eq!(new.2.as_deref(), Some("group mean"), "{plan:?}");

    // The second recording adds the new test and counts a second run for the others.
    record(&p);
    let got = entries(&p);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.iter()
            .all(|e| e.3 == if e.1.contains("test_new") { 1 } else { 2 }),
        "{got:?}"
    );
}

#[test]
fn tests_that_are_gone_leave_the_history_unless_discovery_was_narrowed() {
    let p = project();
    p.file("tests/test_b.py", "def test_other():\n    pass\n");
    record(&p);
    assert_eq!(entries(&p).len(), 4);

    // pytest's `-k` selects at discovery: the tests it did not select still exist.
    let narrowed = run(p
        .offload_with_python()
        .args(["run", "--record-history", "-k", "quick"]));
    assert_eq!(narrowed.code, 0, "{}", narrowed.show());
    assert_eq!(entries(&p).len(), 4, "{:?}", entries(&p));

    std::fs::remove_file(p.path().join("tests/test_b.py")).unwrap();
    record(&p);
    let ids: Vec<String> = entries(&p).into_iter().map(|e| e.1).collect();
    assert!(!ids.iter().any(|id| id.contains("test_other")), "{ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[test]
fn history_setting_in_the_config_records_every_run_at_its_path() {
    let p = project();
    p.config(
        "type = \"pytest\"\ncommand = \"python -m pytest\"\npaths = [\"tests\"]",
        "[groups.all]\n[history]\nrecord_history = \"always\"\npath = \"ci/durations.txt\"\n",
    );
    let out = run(p.offload_with_python().arg("run"));
    assert_eq!(out.code, 0, "{}", out.show());
    let text = std::fs::read_to_string(p.path().join("ci/durations.txt")).expect("recorded");
    assert_eq!(text.lines().count(), 4, "{text}");
    // Nothing beside it: the lock is on the directory, not a file to commit by mistake.
    let names: Vec<_> = std::fs::read_dir(p.path().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["durations.txt"]);
}

#[test]
fn a_history_it_cannot_read_is_named_and_never_written_over() {
    let header = "{\"format\":\"offload-durations\",\"version\":1}\n";
    for (bad, says) in [
        (
            format!("{header}[\"all\",\"x\",1.0,1]\n[\"all\",\"y\""),
            "truncated",
        ),
        (format!("{header}[\"all\",\"x\",\"slow\",1]\n"), "line 2"),
        ("<testsuites/>\n".to_owned(), "line 1"),
        (
            "{\"format\":\"offload-durations\",\"version\":9}\n[\"all\",\"x\",1.0,1,{}]\n"
                .to_owned(),
            "newer Offload",
        ),
    ] {
        let p = project();
        p.file(".offload/durations", &bad);
        let out = run(p.offload_with_python().args(["run", "--record-history"]));
        // The run itself is not the history's hostage.
        assert_eq!(out.code, 0, "{}", out.show());
        out.assert_summary("Passed: 3");
        assert!(
            out.stderr.contains(".offload/durations") && out.stderr.contains(says),
            "{says}: {}",
            out.show()
        );
        assert!(out.stderr.contains("not recorded"), "{}", out.show());
        let kept = std::fs::read_to_string(p.path().join(".offload/durations")).unwrap();
        assert_eq!(kept, bad);
    }
}

#[test]
fn two_runs_recording_at_once_both_land() {
    let p = Project::new();
    p.file("tests/test_a.py", TESTS);
    p.file("tests/test_b.py", "def test_b():\n    pass\n");
    // Two configurations sharing one history: one group each, their own reports.
    for (name, group, paths) in [
        ("a", "ga", "tests/test_a.py"),
        ("b", "gb", "tests/test_b.py"),
    ] {
        p.file(
            &format!("offload-{name}.toml"),
            &format!(
                "[offload]\nmax_parallel = 2\n[provider]\ntype = \"local\"\n\
                 [framework]\ntype = \"pytest\"\ncommand = \"python -m pytest\"\n\
                 paths = [\"{paths}\"]\n[groups.{group}]\n\
                 [report]\noutput_dir = \"results-{name}\"\n"
            ),
        );
    }
    for _ in 0..3 {
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|name| {
                support::spawn_piped(p.offload_with_python().args([
                    "-c",
                    &format!("offload-{name}.toml"),
                    "run",
                    "--record-history",
                ]))
            })
            .collect();
        for child in children {
            let out = support::wait_bounded(child, std::time::Duration::from_secs(120), "run");
            assert_eq!(out.code, 0, "{}", out.show());
        }
    }
    let got = entries(&p);
    let groups: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(groups, ["ga", "ga", "ga", "gb"], "{got:?}");
    assert!(
        got.iter().all(|e| e.3 == 3),
        "every run of both landed: {got:?}"
    );
}

/// Runs `git merge` of `branch` in `dir` with the `offload` under test on `PATH` (the
/// merge driver runs it); returns whether it merged cleanly.
fn merge(dir: &Path, branch: &str) -> bool {
    let bin = Path::new(env!("CARGO_BIN_EXE_offload")).parent().unwrap();
    Command::new("git")
        .current_dir(dir)
        .args(["merge", "-q", "--no-edit", branch])
        .env("PATH", support::path_with(bin))
        .env("LC_ALL", "C")
        .output()
        .expect("git runs")
        .status
        .success()
}

#[test]
fn branches_that_both_recorded_merge_without_conflicts() {
    let p = project();
    let dir = p.path();
    p.file(".gitignore", "test-results/\n__pycache__/\n");
    init_repo(dir);
    record(&p);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "durations"]);

    for (branch, file) in [("one", "test_one.py"), ("two", "test_two.py")] {
        git(dir, &["checkout", "-q", "-b", branch, "main"]);
        p.file(&format!("tests/{file}"), "def test_it():\n    pass\n");
        record(&p);
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", branch]);
    }

    // Without the driver, the two recordings conflict (both touched every line).
    git(dir, &["checkout", "-q", "one"]);
    assert!(
        !merge(dir, "two"),
        "the scenario must conflict without the driver"
    );
    git(dir, &["merge", "--abort"]);

    let setup = run(p.offload().args(["history", "setup-merge-driver"]));
    assert_eq!(setup.code, 0, "{}", setup.show());
    let attributes = std::fs::read_to_string(dir.join(".gitattributes")).unwrap();
    assert_eq!(attributes, "/.offload/durations merge=offload-durations\n");
    // Once is enough.
    run(p.offload().args(["history", "setup-merge-driver"]));
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitattributes")).unwrap(),
        attributes
    );

    assert!(merge(dir, "two"), "merged with the driver");
    let got = entries(&p);
    let ids: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        ids,
        [
            "tests/test_a.py::test_mid",
            "tests/test_a.py::test_quick",
            "tests/test_a.py::test_slow",
            "tests/test_one.py::test_it",
            "tests/test_two.py::test_it",
        ],
        "{got:?}"
    );
    assert_eq!(git(dir, &["status", "--porcelain", "--", ".offload"]), "");
}

#[test]
fn the_merge_driver_refuses_a_file_it_cannot_read() {
    let p = Project::new();
    let header = "{\"format\":\"offload-durations\",\"version\":1}\n";
    p.file("base", header);
    p.file("ours", &format!("{header}[\"all\",\"a\",1.000,1]\n"));
    p.file("theirs", "not a history\n");
    let out = run(p
        .offload()
        .args(["history", "merge", "base", "ours", "theirs"]));
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(
        out.stderr.contains("theirs") && out.stderr.contains("line 1"),
        "{}",
        out.show()
    );
    // Ours is left as it was, for git to show as a conflict.
    assert_eq!(
        std::fs::read_to_string(p.path().join("ours")).unwrap(),
        format!("{header}[\"all\",\"a\",1.000,1]\n")
    );
}
