//! Sharding across CI jobs: `offload run --partition K/N` in N processes runs each test
//! once, each part's report says which part it is, and `offload report merge` joins the
//! parts' reports, flaky attempts included.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::run::scripted;
use crate::support::{self, Junit, Project, Run, run};

/// The `[report]` table that puts each part's output in `$PART_DIR`.
const PART_REPORT: &str = "[report]\noutput_dir = \"${PART_DIR:-test-results}\"\n";

/// A scripted project (see `crate::run::RUNNER`) running `tests`, one retry, its output
/// directory taken from `PART_DIR`.
fn scripted_parts(tests: &[&str]) -> Project {
    scripted(
        tests,
        "",
        &format!("[groups.all]\nretry_count = 1\n\n{PART_REPORT}"),
    )
}

/// Runs `offload run --partition VALUE` with its output in `dir`.
fn run_part(p: &Project, value: &str, dir: &str) -> Run {
    run(p
        .offload()
        .env("PART_DIR", dir)
        .args(["run", "--partition", value]))
}

/// The report written in `dir`, and its text.
fn report_in(p: &Project, dir: &str) -> (Junit, String) {
    let xml = std::fs::read_to_string(p.path().join(dir).join("junit.xml"))
        .unwrap_or_else(|err| panic!("the report in {dir}: {err}"));
    (Junit::parse(&xml), xml)
}

/// The `offload.partition` property of a report: the first `value` after its name.
fn part_of(xml: &str) -> Option<String> {
    let at = xml.find("<property name=\"offload.partition\" value=\"")?;
    let rest = &xml[at..];
    let start = rest.find("value=\"")? + 7;
    let len = rest[start..].find('"')?;
    Some(rest[start..start + len].to_owned())
}

#[test]
fn parts_run_each_test_once_and_merge_into_one_report_with_flaky_attempts() {
    let tests = [
        "pass-a", "pass-b", "pass-c", "fail-d", "flaky-e", "skip-f", "pass-g",
    ];
    let p = scripted_parts(&tests);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut codes = Vec::new();
    for k in 1..=3 {
        let dir = format!("part-{k}");
        let out = run_part(&p, &format!("{k}/3"), &dir);
        assert!(
            out.stderr.contains(&format!("part {k}/3: ")) && out.stderr.contains(" of 7"),
            "{}",
            out.show()
        );
        codes.push(out.code);
        let (report, xml) = report_in(&p, &dir);
        assert_eq!(part_of(&xml).as_deref(), Some(&*format!("{k}/3")), "{xml}");
        assert!(
            xml.contains("<property name=\"offload.partition.plan-tests\" value=\"7\"/>"),
            "{xml}"
        );
        for case in report.cases {
            if let Some(other) = seen.insert(case.name.clone(), dir.clone()) {
                panic!("{} ran in {other} and {dir}", case.name);
            }
        }
    }
    assert_eq!(seen.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut all = tests.to_vec();
        all.sort_unstable();
        all
    });
    // The part with `fail-d` fails; the others pass (the one with `flaky-e` is flaky).
    assert!(codes.contains(&1), "{codes:?}");

    let merged = run(p.offload().args([
        "report",
        "merge",
        "part-1/junit.xml",
        "part-2/junit.xml",
        "part-3/junit.xml",
        "-o",
        "all/junit.xml",
    ]));
    assert_eq!(merged.code, 0, "{}", merged.show());
    assert_eq!(
        merged.stdout,
        "Merged 3 reports into `all/junit.xml`: 7 tests: 4 passed, 1 flaky, 1 failed, 1 skipped.\n"
    );
    assert!(!merged.stderr.contains("WARN"), "{}", merged.show());
    let (report, xml) = report_in(&p, "all");
    assert_eq!(report.cases.len(), 7, "{xml}");
    assert_eq!(
        (
            report.count("tests"),
            report.count("failures"),
            report.count("errors"),
            report.count("skipped")
        ),
        (7, 1, 0, 1),
        "{xml}"
    );
    assert_eq!(report.case("flaky-e").reruns, ["flakyFailure"], "{xml}");
    assert_eq!(report.case("flaky-e").outcome, "", "{xml}");
    let failed = report.case("fail-d");
    assert_eq!(
        (failed.outcome.as_str(), failed.reruns.as_slice()),
        ("failure", &["rerunFailure".to_owned()][..]),
        "{xml}"
    );
    assert_eq!(part_of(&xml), None, "the merged report is no part: {xml}");
    // A JUnit consumer reads it.
    let check = run(
        std::process::Command::new(support::python_bin_dir().join("python"))
            .current_dir(p.path())
            .args([
                "-c",
                "import junitparser; x = junitparser.JUnitXml.fromfile('all/junit.xml'); \
         print(sum(1 for s in x for c in s))",
            ]),
    );
    assert_eq!(check.stdout.trim(), "7", "{}", check.show());

    // The output may be one of the inputs; a test in two reports is refused, and the
    // output is left alone.
    let again = run(p.offload().args([
        "report",
        "merge",
        "all/junit.xml",
        "part-1/junit.xml",
        "-o",
        "all/junit.xml",
    ]));
    assert_eq!(again.code, 1, "{}", again.show());
    assert!(
        again
            .stderr
            .contains("is in `all/junit.xml` and in `part-1/junit.xml`: the parts of one plan never share a test"),
        "{}",
        again.show()
    );
    assert_eq!(report_in(&p, "all").1, xml);
}

#[test]
fn hash_parts_cover_the_suite_and_a_missing_part_is_named() {
    let tests: Vec<String> = (0..12).map(|i| format!("pass-{i}")).collect();
    let ids: Vec<&str> = tests.iter().map(String::as_str).collect();
    let p = scripted_parts(&ids);
    let mut total = 0;
    for k in 1..=2 {
        let dir = format!("h{k}");
        let out = run_part(&p, &format!("hash:{k}/2"), &dir);
        assert_eq!(out.code, 0, "{}", out.show());
        let (report, xml) = report_in(&p, &dir);
        assert_eq!(part_of(&xml).as_deref(), Some(&*format!("hash:{k}/2")));
        total += report.cases.len();
    }
    assert_eq!(total, 12);
    let merged = run(p
        .offload()
        .args(["report", "merge", "h1/junit.xml", "h2/junit.xml"]));
    assert_eq!(merged.code, 0, "{}", merged.show());
    assert_eq!(
        Junit::parse(&std::fs::read_to_string(p.path().join("junit.xml")).unwrap())
            .cases
            .len(),
        12
    );

    let one = run(p
        .offload()
        .args(["report", "merge", "h2/junit.xml", "-o", "half.xml"]));
    assert_eq!(one.code, 0, "{}", one.show());
    assert!(
        one.stderr
            .contains("part hash:1/2 is missing: its tests are not in the merged report"),
        "{}",
        one.show()
    );
}

#[test]
fn a_part_without_tests_says_so_and_passes() {
    let p = scripted_parts(&["pass-a", "pass-b"]);
    let out = run_part(&p, "3/3", "empty");
    assert_eq!(out.code, 0, "{}", out.show());
    assert_eq!(out.stdout, "Part 3/3 has no tests: nothing to run.\n");
    assert!(!p.path().join("times.log").exists(), "a test ran");
    // Its report exists for the job's upload, names the part and holds no test.
    let (report, xml) = report_in(&p, "empty");
    assert_eq!(report.cases.len(), 0, "{xml}");
    assert_eq!(part_of(&xml).as_deref(), Some("3/3"), "{xml}");

    // `--collect-only` lists the part.
    let listed = run(p
        .offload()
        .args(["run", "--collect-only", "--partition", "2/3"]));
    assert_eq!(listed.code, 0, "{}", listed.show());
    assert!(
        listed.stdout.contains("pass-b") && !listed.stdout.contains("pass-a"),
        "{}",
        listed.show()
    );
}

#[test]
fn bad_partitions_are_usage_errors_naming_the_value_and_the_form() {
    let p = scripted_parts(&["pass-a"]);
    for value in [
        "0/3", "3/2", "1/0", "x/3", "hash:0/2", "foo:1/2", "2", "1/-1",
    ] {
        let out = run(p.offload().args(["run", &format!("--partition={value}")]));
        assert_eq!(out.code, 1, "{value}: {}", out.show());
        assert!(
            out.stderr
                .contains(&format!("invalid value '{value}' for '--partition <K/N>'"))
                && out.stderr.contains("expected K/N")
                && out.stderr.contains("hash:K/N"),
            "{value}: {}",
            out.show()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.show());
    }
    assert!(!p.path().join("times.log").exists(), "a test ran");

    let out = run(p.offload().args(["report", "merge", "missing.xml"]));
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(
        out.stderr.contains("cannot read the report `missing.xml`"),
        "{}",
        out.show()
    );
    p.file("broken.xml", "<testsuites><testsuite name=\"x\">");
    let out = run(p.offload().args(["report", "merge", "broken.xml"]));
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(
        out.stderr
            .contains("cannot read the report `broken.xml`: malformed junit xml"),
        "{}",
        out.show()
    );
    assert!(!p.path().join("junit.xml").exists());
}

// The bench's skewed suite (`scripts/bench`, skewed-pytest): 2 tests sleeping 4 s, 10
// sleeping 1 s and 48 sleeping 0.1 s, ten to a file.
fn skewed_suite() -> (Project, Vec<String>) {
    let p = Project::new();
    let mut ids = Vec::new();
    let mut files: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..60 {
        let secs = match i {
            0..2 => "4",
            2..12 => "1",
            _ => "0.1",
        };
        let file = files
            .entry(i / 10)
            .or_insert_with(|| "import time\n".to_owned());
        file.push_str(&format!("\ndef test_{i}():\n    time.sleep({secs})\n"));
        ids.push(format!("tests/test_f{}.py::test_{i}", i / 10));
    }
    for (n, text) in files {
        p.file(&format!("tests/test_f{n}.py"), &text);
    }
    p.config(
        "type = \"pytest\"\npaths = [\"tests\"]",
        &format!("[groups.all]\nretry_count = 0\n\n{PART_REPORT}"),
    );
    (p, ids)
}

/// Starts `offload run ARGS` with its output in `dir`, one sandbox.
fn spawn_in(p: &Project, dir: &str, args: &[&str]) -> std::process::Child {
    support::spawn_piped(
        p.offload_with_python()
            .env("PART_DIR", dir)
            .args(["run", "-p", "1"])
            .args(args),
    )
}

/// Waits for each child; returns their outputs and each one's wall time since `start`.
fn wait_all(children: Vec<std::process::Child>, start: Instant) -> Vec<(Run, Duration)> {
    let waiters: Vec<_> = children
        .into_iter()
        .map(|child| {
            std::thread::spawn(move || {
                let out = support::wait_bounded(child, Duration::from_secs(120), "a part");
                (out, start.elapsed())
            })
        })
        .collect();
    waiters
        .into_iter()
        .map(|w| w.join().expect("a waiting thread"))
        .collect()
}

/// The wall time four concurrent runs of the 0.1 s test `id` take, less the 0.1 s: the
/// start-up a part pays (discovery, a pytest worker, the report) when four start at once.
fn startup(p: &Project, id: &str, name: &str) -> Duration {
    let start = Instant::now();
    let children = (1..=4)
        .map(|k| spawn_in(p, &format!("startup-{name}-{k}"), &[id]))
        .collect();
    wait_all(children, start)
        .into_iter()
        .map(|(out, wall)| {
            assert_eq!(out.code, 0, "{}", out.show());
            wall
        })
        .max()
        .expect("four runs")
        .saturating_sub(Duration::from_millis(100))
}

/// Point 4 of the sharding issue: four concurrent `offload run --partition K/4`
/// processes, one sandbox each, with a recorded durations history, run the skewed
/// suite once between them, and the slowest part ends within 1.15 x the lower bound
/// (max(longest test, total / 4)) plus one start-up (see [`startup`]).
#[test]
fn ci_simulation_four_concurrent_parts_of_the_skewed_suite() {
    let (p, ids) = skewed_suite();
    // A run that records the durations history, which gives every part (a CI job with
    // a fresh checkout: no previous report) the same durations.
    let first = run(p.offload_with_python().env("PART_DIR", "first").args([
        "run",
        "-p",
        "4",
        "--record-history",
    ]));
    assert_eq!(first.code, 0, "{}", first.show());
    let (previous, _) = report_in(&p, "first");
    let times: Vec<f64> = previous
        .cases
        .iter()
        .map(|c| c.time.parse::<f64>().expect("a time"))
        .collect();
    assert_eq!(times.len(), 60);
    let longest = times.iter().copied().fold(0.0, f64::max);
    let total: f64 = times.iter().sum();
    let lower = longest.max(total / 4.0);

    // One start-up, as four parts pay it at once on this machine: measured before,
    // during and after the parts, the largest kept, since other work on the machine
    // comes and goes.
    let startup_before = startup(&p, &ids[59], "before");
    // The four parts: no previous report in their output dirs, only the history.
    assert!(p.path().join(".offload/durations").exists());
    let start = Instant::now();
    let mut children: Vec<_> = (1..=4)
        .map(|k| {
            spawn_in(
                &p,
                &format!("part-{k}"),
                &["--partition", &format!("{k}/4")],
            )
        })
        .collect();
    // And a start-up measured under the very load the parts start in: other work on
    // the machine (the other batches of a test run) can change between measurements.
    children.push(spawn_in(&p, "startup-during", &[&ids[59]]));
    let mut parts = wait_all(children, start);
    let (probe, probe_wall) = parts.pop().expect("the probe");
    assert_eq!(probe.code, 0, "{}", probe.show());
    let startup_during = probe_wall.saturating_sub(Duration::from_millis(100));

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (k, (out, _)) in (1..=4).zip(&parts) {
        assert_eq!(out.code, 0, "part {k}: {}", out.show());
        let (report, xml) = report_in(&p, &format!("part-{k}"));
        assert_eq!(part_of(&xml).as_deref(), Some(&*format!("{k}/4")), "{xml}");
        // The parts were cut by the history's durations: each holds a fair share of the
        // work (dealt out by ID alone, two parts would hold 7.2 s and two 4.2 s).
        let work: f64 = report
            .cases
            .iter()
            .map(|c| c.time.parse::<f64>().unwrap())
            .sum();
        assert!(
            work <= 1.1 * total / 4.0,
            "part {k} holds {work:.2}s of {total:.2}s"
        );
        for case in report.cases {
            if let Some(other) = seen.insert(case.name.clone(), k) {
                panic!("{} ran in parts {other} and {k}", case.name);
            }
        }
    }
    let mut all = ids.clone();
    all.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), all);

    let startup = startup_before
        .max(startup_during)
        .max(startup(&p, &ids[59], "after"));
    let slowest = parts.iter().map(|(_, wall)| *wall).max().unwrap();
    let bound = Duration::from_secs_f64(1.15 * lower) + startup;
    let walls: Vec<String> = parts
        .iter()
        .map(|(_, w)| format!("{:.2}s", w.as_secs_f64()))
        .collect();
    // Shown with `--no-capture`, for watching how much room the bound leaves.
    let _ = writeln!(
        std::io::stderr(),
        "parts {walls:?}; lower bound {lower:.2}s, start-up {:.2}s, bound {:.2}s",
        startup.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert!(
        slowest <= bound,
        "the slowest part took {slowest:?} > 1.15 x {lower:.2}s + start-up {startup:?} (parts {walls:?})"
    );

    let merged = run(p.offload().args([
        "report",
        "merge",
        "part-1/junit.xml",
        "part-2/junit.xml",
        "part-3/junit.xml",
        "part-4/junit.xml",
        "-o",
        "merged.xml",
    ]));
    assert_eq!(merged.code, 0, "{}", merged.show());
    assert!(
        merged.stdout.contains("60 tests: 60 passed"),
        "{}",
        merged.show()
    );
    assert!(!merged.stderr.contains("WARN"), "{}", merged.show());
}
