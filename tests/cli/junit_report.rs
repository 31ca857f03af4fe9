//! The merged report as a JUnit consumer reads it: a real pytest project with every
//! outcome, its report read by `junitparser` (from PyPI, in the test virtualenv), every
//! field of every case checked against what was meant.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{self, Project};

const TESTS_A: &str = r#"import pathlib

import pytest


class TestK:
    def test_m(self):
        pass


def test_fail():
    assert 1 == 2, "one is not two"


@pytest.fixture
def broken():
    raise RuntimeError("no database")


def test_error(broken):
    pass


@pytest.mark.skip(reason="no db")
def test_skip():
    pass


def test_flaky():
    marker = pathlib.Path("flaky-marker")
    if not marker.exists():
        marker.write_text("failed once")
        assert False, "the first attempt fails"


def test_vanishes():
    pass
"#;

/// Drops `test_vanishes` when pytest runs rather than collects: discovered, listed in
/// its batch, and without a result, it is not run.
const CONFTEST: &str = r#"def pytest_collection_modifyitems(config, items):
    if not config.option.collectonly:
        items[:] = [i for i in items if not i.nodeid.endswith("test_vanishes")]
"#;

/// Reads the report with junitparser and checks each case against `EXPECTED`; prints
/// every mismatch and exits 1 if there is one.
const CHECK: &str = r#"import datetime
import socket
import sys

import junitparser
from junitparser import xunit2

# junitparser has no `file` on a testcase; the attribute is declared as its docs show.
xunit2.TestCase.file = junitparser.Attr("file")

report, started = sys.argv[1], float(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc).timestamp()

A = "tests/test_a.py"
# name -> (suite, classname, file, final result types, interim result types, result type attr)
EXPECTED = {
    A + "::TestK::test_m": ("main", "tests.test_a.TestK", A, [], [], None),
    A + "::test_fail": ("main", "tests.test_a", A, ["Failure"], ["RerunFailure"], None),
    A + "::test_error": ("main", "tests.test_a", A, ["Error"], ["RerunError"], None),
    A + "::test_skip": ("main", "tests.test_a", A, ["Skipped"], [], None),
    A + "::test_flaky": ("main", "tests.test_a", A, [], ["FlakyFailure"], None),
    "tests/sub/test_b.py::test_p[a b]": (
        "main", "tests.sub.test_b", "tests/sub/test_b.py", [], [], None),
    A + "::test_vanishes": ("edge", "tests.test_a", A, ["Error"], [], "offload.NotRun"),
}

problems = []


def check(what, got, want):
    if got != want:
        problems.append(f"{what}: got {got!r}, want {want!r}")


xml = xunit2.JUnitXml.fromfile(report)
# The xunit2 flavour has no `skipped` on the root; the plain one reads it.
check("root skipped", junitparser.JUnitXml.fromfile(report).skipped, 1)
written = {"root": (xml.tests, xml.failures, xml.errors, xml.time)}
check("root counts", (xml.tests, xml.failures, xml.errors), (7, 1, 2))
seen = {}
suite_times = 0.0
for suite in xml:
    written[suite.name] = (suite.tests, suite.failures, suite.errors, suite.skipped, suite.time)
    suite_times += suite.time
    check(f"{suite.name}: hostname", suite.hostname, socket.gethostname())
    try:
        stamp = datetime.datetime.fromisoformat(suite.timestamp)
        check(f"{suite.name}: timestamp is UTC", stamp.utcoffset(), datetime.timedelta(0))
        # The run started after `started` (to the second) and before now.
        if not (int(started) <= stamp.timestamp() <= now):
            problems.append(f"{suite.name}: timestamp {suite.timestamp} not in the run")
    except (TypeError, ValueError) as err:
        problems.append(f"{suite.name}: timestamp {suite.timestamp!r}: {err}")
    case_times = 0.0
    for case in suite:
        if case.name in seen:
            problems.append(f"{case.name}: listed twice")
        seen[case.name] = suite.name
        if not isinstance(case.time, float) or case.time < 0:
            problems.append(f"{case.name}: time {case.time!r}")
        case_times += case.time
        want = EXPECTED.get(case.name)
        if want is None:
            problems.append(f"unexpected testcase {case.name!r}")
            continue
        suite_name, classname, file, results, interims, kind = want
        check(f"{case.name}: suite", suite.name, suite_name)
        check(f"{case.name}: classname", case.classname, classname)
        check(f"{case.name}: file", case.file, file)
        check(f"{case.name}: results", [type(r).__name__ for r in case.result], results)
        check(f"{case.name}: interim results",
              [type(r).__name__ for r in case.interim_result], interims)
        if kind is not None:
            check(f"{case.name}: result type", case.result[0].type, kind)
    check(f"{suite.name}: time is the sum of its cases'", suite.time, round(case_times, 3))
check("root time is the sum of the suites'", xml.time, round(suite_times, 3))
check("testcases", sorted(seen), sorted(EXPECTED))

# A consumer that recomputes the statistics finds what was written.
xml.update_statistics()
recomputed = {"root": (xml.tests, xml.failures, xml.errors, xml.time)}
for suite in xml:
    recomputed[suite.name] = (suite.tests, suite.failures, suite.errors, suite.skipped, suite.time)
check("recomputed statistics", recomputed, written)

for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
"#;

#[test]
fn junitparser_reads_every_field_of_the_merged_report_as_meant() {
    let p = Project::new();
    p.file("tests/test_a.py", TESTS_A);
    p.file(
        "tests/sub/test_b.py",
        "import pytest\n\n\n@pytest.mark.parametrize(\"x\", [\"a b\"])\ndef test_p(x):\n    pass\n",
    );
    p.file("tests/conftest.py", CONFTEST);
    p.file("check_report.py", CHECK);
    p.config(
        "type = \"pytest\"\npaths = [\"tests\"]",
        "[groups.main]\nretry_count = 1\nfilters = \"-k 'not vanishes'\"\n\n\
         [groups.edge]\nretry_count = 0\nfilters = \"-k vanishes\"\n",
    );
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let run = support::run(p.offload_with_python().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    run.assert_summary("Not Run: 1");
    run.assert_summary("Flaky: 1");

    let python = support::python_bin_dir().join("python");
    let check = support::run(
        std::process::Command::new(python)
            .current_dir(p.path())
            .arg("check_report.py")
            .arg("test-results/junit.xml")
            .arg(started.to_string()),
    );
    let xml = std::fs::read_to_string(p.path().join("test-results/junit.xml")).unwrap();
    assert_eq!(check.code, 0, "{}\n--- report\n{xml}", check.show());

    // Offload's own reader still reads it: `offload logs` by ID, not-run included.
    let logs = support::run(p.offload().args(["logs", "--errors"]));
    assert_eq!(logs.code, 0, "{}", logs.show());
    assert!(
        logs.stdout
            .contains("=== tests/test_a.py::test_vanishes [ERROR] ===\nnot run: "),
        "{}",
        logs.show()
    );
    let logs = support::run(
        p.offload()
            .args(["logs", "--test", "tests/test_a.py::TestK::test_m"]),
    );
    assert!(
        logs.stdout
            .contains("=== tests/test_a.py::TestK::test_m [PASSED] ==="),
        "{}",
        logs.show()
    );
}
