//! Tests of the reader and the writer, and of the round trip between them.

use std::time::{Duration, SystemTime};

use super::parse::scan_testcases;
use super::write::{escape_attr, millis, push_millis, push_timestamp};
use super::*;
use crate::framework::Framework;
use crate::report::verdict::{Attempt, TestResult, Verdict};

fn only_case(xml: &str) -> TestCase {
    let suites = parse(xml).unwrap();
    let cases: Vec<_> = suites.into_iter().flat_map(|s| s.cases).collect();
    assert_eq!(cases.len(), 1, "{cases:?}");
    cases.into_iter().next().unwrap()
}

fn detail(message: Option<&str>, kind: Option<&str>, body: &str) -> Detail {
    Detail {
        message: message.map(str::to_owned),
        kind: kind.map(str::to_owned),
        body: body.to_owned(),
    }
}

const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.050" timestamp="2024-01-01T00:00:00" hostname="h"><testcase classname="tests.test_math" name="test_add" time="0.001" /><testcase classname="tests.test_math" name="test_div" time="0.002"><failure message="AssertionError: expected 2 got 3&#10;assert 1 / 0 == 2">tests/test_math.py:10: in test_div
    assert 1 / 0 == 2
E   AssertionError: expected 2 got 3</failure><system-out>printed &lt;here&gt;</system-out></testcase><testcase classname="tests.test_math" name="test_skip" time="0.000"><skipped type="pytest.skip" message="no db">tests/test_math.py:20: no db</skipped></testcase></testsuite></testsuites>"#;

#[test]
fn parses_pytest_output() {
    let suites = parse(PYTEST).unwrap();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].name, "pytest");
    let cases = &suites[0].cases;
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0].name, "test_add");
    assert_eq!(cases[0].classname.as_deref(), Some("tests.test_math"));
    assert_eq!(cases[0].time, 0.001);
    assert_eq!(cases[0].outcome, CaseOutcome::Passed);
    assert_eq!(
        cases[1].outcome,
        CaseOutcome::Failed(detail(
            Some("AssertionError: expected 2 got 3\nassert 1 / 0 == 2"),
            None,
            "tests/test_math.py:10: in test_div\n    assert 1 / 0 == 2\nE   AssertionError: expected 2 got 3"
        ))
    );
    assert_eq!(cases[1].system_out.as_deref(), Some("printed <here>"));
    assert_eq!(cases[1].system_err, None);
    assert_eq!(
        cases[2].outcome,
        CaseOutcome::Skipped(detail(
            Some("no db"),
            Some("pytest.skip"),
            "tests/test_math.py:20: no db"
        ))
    );
}

#[test]
fn parses_nextest_output() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="2" failures="1" errors="0" uuid="x" timestamp="t" time="0.012">
    <testsuite name="my-crate" tests="2" disabled="0" errors="0" failures="1">
        <testcase name="tests::ok" classname="my-crate" timestamp="t" time="0.004">
        </testcase>
        <testcase name="tests::bad" classname="my-crate" timestamp="t" time="0.003">
            <failure type="test failure">thread 'tests::bad' panicked at src/lib.rs:9:9:
assertion `left == right` failed
  left: 2
 right: 3</failure>
            <system-out>
running 1 test
</system-out>
            <system-err>stderr line</system-err>
        </testcase>
    </testsuite>
</testsuites>
"#;
    let suites = parse(xml).unwrap();
    assert_eq!(suites.len(), 1);
    let [ok, bad] = &suites[0].cases[..] else {
        panic!("two cases expected")
    };
    assert_eq!(ok.name, "tests::ok");
    assert_eq!(ok.outcome, CaseOutcome::Passed);
    assert_eq!(bad.time, 0.003);
    match &bad.outcome {
        CaseOutcome::Failed(d) => {
            assert_eq!(d.kind.as_deref(), Some("test failure"));
            assert_eq!(d.message, None);
            assert!(d.body.contains("left: 2\n right: 3"), "{:?}", d.body);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bad.system_out.as_deref(), Some("\nrunning 1 test\n"));
    assert_eq!(bad.system_err.as_deref(), Some("stderr line"));
}

#[test]
fn self_closing_outcomes_count() {
    let case = only_case(
        r#"<testsuite name="s"><testcase name="a"><failure message="boom" type="E"/></testcase></testsuite>"#,
    );
    assert_eq!(
        case.outcome,
        CaseOutcome::Failed(detail(Some("boom"), Some("E"), ""))
    );
    let case = only_case(
        r#"<testsuite name="s"><testcase name="a"><error message="bad fixture"/></testcase></testsuite>"#,
    );
    assert_eq!(
        case.outcome,
        CaseOutcome::Error(detail(Some("bad fixture"), None, ""))
    );
    let case =
        only_case(r#"<testsuite name="s"><testcase name="a"><skipped/></testcase></testsuite>"#);
    assert_eq!(case.outcome, CaseOutcome::Skipped(Detail::default()));
}

#[test]
fn cdata_and_entities_are_kept() {
    let case = only_case(
        r#"<testsuite name="s"><testcase name="a &amp; b &#x41;&#66;"><failure message="&lt;&gt;&quot;&apos;">before <![CDATA[<raw> & stuff]]> after &amp;</failure><system-err><![CDATA[err
text]]></system-err></testcase></testsuite>"#,
    );
    assert_eq!(case.name, "a & b AB");
    assert_eq!(
        case.outcome,
        CaseOutcome::Failed(detail(Some("<>\"'"), None, "before <raw> & stuff after &"))
    );
    assert_eq!(case.system_err.as_deref(), Some("err\ntext"));
}

#[test]
fn failure_wins_over_error_in_one_case() {
    let case = only_case(
        r#"<testsuite><testcase name="a"><error message="teardown"/><failure message="assert"/><skipped/></testcase></testsuite>"#,
    );
    assert_eq!(
        case.outcome,
        CaseOutcome::Failed(detail(Some("assert"), None, ""))
    );
}

#[test]
fn suites_are_found_wherever_they_are() {
    let xml = r#"<testsuites><testsuites><testsuite name="a"><testsuite name="inner"><testcase name="x"/></testsuite><testcase name="y"/></testsuite></testsuites><testsuite name="b"/></testsuites>"#;
    let suites = parse(xml).unwrap();
    let names: Vec<_> = suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "inner", "b"]);
    assert_eq!(suites[0].cases[0].name, "y");
    assert_eq!(suites[1].cases[0].name, "x");
    assert!(suites[2].cases.is_empty());
}

#[test]
fn testcases_outside_suites_are_kept() {
    let suites = parse(r#"<testsuites><testcase name="lonely" time="x"/></testsuites>"#).unwrap();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].name, "");
    assert_eq!(suites[0].cases[0].name, "lonely");
    assert_eq!(suites[0].cases[0].time, 0.0);
}

#[test]
fn reads_rerun_elements() {
    let case = only_case(
        r#"<testsuite><testcase name="a">
              <flakyFailure message="m1" type="t1">
                <stackTrace>trace 1</stackTrace>
                <system-out>out 1</system-out>
              </flakyFailure>
              <rerunError message="m2">plain body</rerunError>
              <flakyError/>
            </testcase></testsuite>"#,
    );
    assert_eq!(case.outcome, CaseOutcome::Passed);
    assert_eq!(case.reruns.len(), 3);
    assert_eq!(case.reruns[0].kind, RerunKind::FlakyFailure);
    assert_eq!(
        case.reruns[0].detail,
        detail(Some("m1"), Some("t1"), "trace 1")
    );
    assert_eq!(case.reruns[0].system_out.as_deref(), Some("out 1"));
    assert_eq!(case.reruns[1].kind, RerunKind::RerunError);
    assert_eq!(
        case.reruns[1].detail,
        detail(Some("m2"), None, "plain body")
    );
    assert_eq!(case.reruns[2].kind, RerunKind::FlakyError);
    assert_eq!(case.reruns[2].detail, Detail::default());
    // A rerun's output is its own, not the testcase's.
    assert_eq!(case.system_out, None);
}

#[test]
fn malformed_xml_says_where() {
    let err = parse("<testsuite>\n<testcase name=\"a\">\n</testsuite>").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("line 3"), "{msg}");

    let err = parse("<testsuite name=\"s\">\n<testcase name=\"a\">\n<failure>cut").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("`<failure>`"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");

    let err = parse("<testsuite><testcase name=\"a\" name=\"b\"/></testsuite>").unwrap_err();
    assert!(format!("{err:#}").contains("line 1"), "{err:#}");

    assert!(parse("").is_err());
    assert!(parse("   \n").is_err());
    assert!(parse("not xml at all").is_err());
}

#[test]
fn unknown_entities_do_not_lose_the_file() {
    let case = only_case(
        r#"<testsuite><testcase name="a"><failure>x&nbsp;y</failure></testcase></testsuite>"#,
    );
    assert_eq!(
        case.outcome,
        CaseOutcome::Failed(detail(None, None, "x&nbsp;y"))
    );
}

#[test]
fn read_durations_keeps_the_max() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    assert!(read_durations(&path).is_empty());
    std::fs::write(
            &path,
            r#"<testsuites><testsuite><testcase name="a" time="1.5"/><testcase name="b" time="0.25"/></testsuite><testsuite><testcase name="a" time="3"/><testcase name="a" time="2"/></testsuite></testsuites>"#,
        )
        .unwrap();
    let d = read_durations(&path);
    assert_eq!(d.len(), 2);
    assert_eq!(d["a"], 3.0);
    assert_eq!(d["b"], 0.25);
    std::fs::write(&path, "<testsuite><testcase").unwrap();
    assert!(read_durations(&path).is_empty());
}

#[test]
fn read_durations_leaves_out_of_range_times_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    let cases: String = ["1e20", "1.8e19", "-1", "NaN", "inf", "-inf", "x", "604801"]
        .iter()
        .enumerate()
        .map(|(i, t)| format!(r#"<testcase name="bad{i}" time="{t}"/>"#))
        .collect();
    std::fs::write(
            &path,
            format!(r#"<testsuite>{cases}<testcase name="ok" time="604800"/><testcase name="none"/></testsuite>"#),
        )
        .unwrap();
    let d = read_durations(&path);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d["ok"], MAX_DURATION_SECS);
    assert_eq!(d["none"], 0.0);
}

proptest::proptest! {
    #![proptest_config(crate::proptest_config(256))]
    /// Whatever the bytes, the reader and the duration scan neither panic nor give
    /// a duration the scheduler cannot use.
    #[test]
    fn any_input_parses_or_errs_and_durations_stay_in_range(
        text in "(<testsuites?>|<testcase |name=\"[a-z&;<]{0,3}\" |time=\"-?[0-9.e+]{0,6}\"|/>|>|</testcase>|</testsuites?>|<failure>|<!\\[CDATA\\[|\\]\\]>|&amp;|[ -~\\n]){0,40}",
    ) {
        let _ = parse(&text);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, &text).unwrap();
        for secs in read_durations(&path).values() {
            proptest::prop_assert!((0.0..=MAX_DURATION_SECS).contains(secs), "{}", secs);
        }
    }

    /// A parsed report keeps every testcase it holds, with a usable time.
    #[test]
    fn generated_reports_parse_whole(
        cases in proptest::collection::vec(("[a-zA-Z0-9_ <>&\"'\\[\\]]{1,12}", proptest::num::f64::ANY, 0u8..4), 0..8),
    ) {
        let mut xml = String::from("<testsuite name=\"s\">");
        for (name, time, outcome) in &cases {
            xml.push_str("<testcase name=\"");
            escape_attr(name, &mut xml);
            xml.push_str(&format!("\" time=\"{time}\">"));
            xml.push_str(["", "<failure message=\"m\">b</failure>", "<skipped/>", "<error/>"][usize::from(*outcome)]);
            xml.push_str("</testcase>");
        }
        xml.push_str("</testsuite>");
        let suites = parse(&xml).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:#}")))?;
        let parsed: Vec<&TestCase> = suites.iter().flat_map(|s| &s.cases).collect();
        proptest::prop_assert_eq!(parsed.len(), cases.len());
        for (case, (name, time, _)) in parsed.iter().zip(&cases) {
            proptest::prop_assert_eq!(&case.name, name);
            let want = if time.is_finite() && *time >= 0.0 { *time } else { 0.0 };
            proptest::prop_assert_eq!(case.time, want);
        }
    }
}

#[test]
fn the_testcase_scan_reads_what_a_parser_would() {
    let xml = "<testsuites><testcases/>\n<testcase\n  time = '0.5' name=\"a &amp; b &lt;x&gt;\" \
                   classname=\"k>j\"></testcase><testcase name='c[1 > 0]' time=\"2\"/>\
                   <testcase time=\"9\"/><testcase name=\"d\" time=\"1\"/></testsuites>";
    let mut seen = Vec::new();
    assert!(scan_testcases(xml, |name, time| seen
        .push((name.into_owned(), time.map(str::to_owned)))));
    let expected = [
        ("a & b <x>", Some("0.5")),
        ("c[1 > 0]", Some("2")),
        ("d", Some("1")),
    ];
    let expected: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|(n, t)| ((*n).to_owned(), t.map(str::to_owned)))
        .collect();
    assert_eq!(seen, expected);
    // A parser agrees on the names.
    let parsed: Vec<String> = parse(xml).unwrap()[0]
        .cases
        .iter()
        .filter(|c| !c.name.is_empty())
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(parsed, ["a & b <x>", "c[1 > 0]", "d"]);
    // A broken tag ends the scan, keeping what came before.
    let mut names = Vec::new();
    assert!(!scan_testcases(
        "<testcase name=\"ok\"/><testcase name=\"cut",
        |name, _| names.push(name.into_owned())
    ));
    assert_eq!(names, ["ok"]);
}

// ----- writer -----

#[test]
fn seconds_are_written_as_the_formatter_would() {
    let mut values = vec![
        0.0,
        0.0004,
        0.0005,
        0.0015,
        0.0125,
        0.1,
        0.9995,
        1.0,
        1.2345,
        2.5,
        59.9999,
        1234.5675,
        1e14,
        1e16,
        1e20,
        1.8e19,
        3.999_999_9,
    ];
    values.extend((0..20_000).map(|i| f64::from(i) * 0.000_37));
    for secs in values {
        let mut out = String::new();
        push_millis(&mut out, millis(secs));
        assert_eq!(out, format!("{secs:.3}"), "{secs}");
    }
    assert_eq!(millis(-1.0), 0);
    assert_eq!(millis(f64::NAN), 0);
    assert_eq!(millis(1e300), u128::MAX);
    let mut out = String::new();
    push_millis(&mut out, millis(1e20));
    assert_eq!(out, "100000000000000000000.000");
}

/// 2023-11-14T22:13:20Z.
const STARTED_SECS: u64 = 1_700_000_000;

/// A framework whose test IDs say nothing about classnames or files (the `default`
/// framework with `test_id_format = "{name}"`).
fn opaque_framework() -> Box<dyn Framework> {
    let config = crate::framework::DefaultFrameworkConfig {
        discover_command: "list {filters}".into(),
        run_command: "run {tests}".into(),
        result_file: None,
        working_dir: None,
        test_id_format: "{name}".into(),
    };
    crate::framework::from_config(&crate::config::FrameworkConfig::Default(config)).unwrap()
}

fn info(framework: &dyn Framework) -> RunInfo<'_> {
    RunInfo {
        started: SystemTime::UNIX_EPOCH + Duration::from_secs(STARTED_SECS),
        hostname: "ci-7",
        framework: Some(framework),
        properties: &[],
    }
}

/// The merged report of `results` under [`opaque_framework`].
fn render(results: &[TestResult]) -> String {
    render_merged(results, &info(opaque_framework().as_ref()))
}

#[test]
fn timestamps_are_utc_iso_8601() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00+00:00"),
        (STARTED_SECS, "2023-11-14T22:13:20+00:00"),
        (951_782_400, "2000-02-29T00:00:00+00:00"),
        (4_107_542_399, "2100-02-28T23:59:59+00:00"),
        (4_107_542_400, "2100-03-01T00:00:00+00:00"),
    ] {
        let mut out = String::new();
        push_timestamp(&mut out, SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(out, want, "{secs}");
    }
    assert!(!hostname().is_empty());
}

fn case(outcome: CaseOutcome, time: f64) -> TestCase {
    TestCase {
        name: String::new(),
        classname: None,
        file: None,
        time,
        outcome,
        system_out: None,
        system_err: None,
        reruns: Vec::new(),
    }
}

fn attempt(case: TestCase) -> Attempt {
    Attempt { case, batch: 0 }
}

fn result(id: &str, group: &str, verdict: Verdict, attempts: Vec<Attempt>) -> TestResult {
    TestResult {
        id: id.into(),
        group: group.into(),
        verdict,
        attempts,
    }
}

fn failed(message: &str, body: &str) -> CaseOutcome {
    CaseOutcome::Failed(detail(Some(message), Some("AssertionError"), body))
}

#[test]
fn writer_layout() {
    let mut passed = case(CaseOutcome::Passed, 0.5);
    passed.classname = Some("tests.test_a".into());
    let results = vec![
        result("t::a", "unit", Verdict::Passed, vec![attempt(passed)]),
        result(
            "t::b",
            "unit",
            Verdict::Failed,
            vec![
                attempt(case(failed("first", ""), 1.0)),
                attempt(case(failed("second", "trace"), 2.0)),
            ],
        ),
        result(
            "t::c",
            "slow",
            Verdict::NotRun,
            vec![Attempt::not_run("t::c", "sandbox died", 4)],
        ),
    ];
    let xml = render(&results);
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="offload" tests="3" failures="1" errors="1" skipped="0" time="2.500">
  <testsuite name="unit" tests="2" failures="1" errors="0" skipped="0" time="2.500" timestamp="2023-11-14T22:13:20+00:00" hostname="ci-7">
    <testcase name="t::a" classname="tests.test_a" time="0.500"/>
    <testcase name="t::b" classname="unit" time="2.000">
      <failure message="second" type="AssertionError">trace</failure>
      <rerunFailure message="first" type="AssertionError"/>
    </testcase>
  </testsuite>
  <testsuite name="slow" tests="1" failures="0" errors="1" skipped="0" time="0.000" timestamp="2023-11-14T22:13:20+00:00" hostname="ci-7">
    <testcase name="t::c" classname="slow" time="0.000">
      <error message="not run: sandbox died" type="offload.NotRun"/>
    </testcase>
  </testsuite>
</testsuites>
"#;
    assert_eq!(xml, expected);
}

#[test]
fn writer_flaky_and_skipped() {
    let mut pass = case(CaseOutcome::Passed, 0.1);
    pass.system_out = Some("ok out".into());
    let mut fail = case(failed("boom", "tb"), 0.2);
    fail.system_err = Some("bad err".into());
    let results = vec![
        result("f", "g", Verdict::Flaky, vec![attempt(fail), attempt(pass)]),
        result(
            "s",
            "g",
            Verdict::Skipped,
            vec![attempt(case(
                CaseOutcome::Skipped(detail(Some("no db"), None, "")),
                0.0,
            ))],
        ),
    ];
    let xml = render(&results);
    assert!(xml.contains(r#"<testsuites name="offload" tests="2" failures="0" errors="0" skipped="1" time="0.100">"#), "{xml}");
    assert!(xml.contains(
            "<testcase name=\"f\" classname=\"g\" time=\"0.100\">\n      <flakyFailure message=\"boom\" type=\"AssertionError\"><stackTrace>tb</stackTrace><system-err>bad err</system-err></flakyFailure>\n      <system-out>ok out</system-out>\n    </testcase>"
        ), "{xml}");
    assert!(xml.contains(r#"<skipped message="no db"/>"#), "{xml}");
}

#[test]
fn writer_escapes() {
    let mut c = case(
        failed(
            "line 1\nline 2\t\"q\" 'a' <b> & \r",
            "body <x> & ]]> \r\n\u{1b}[31mred\u{1b}[0m \u{7}bell",
        ),
        0.0,
    );
    c.system_out = Some("nul\u{0}here".into());
    let results = vec![result("id <&\">", "g", Verdict::Failed, vec![attempt(c)])];
    let xml = render(&results);
    assert!(xml.contains(r#"name="id &lt;&amp;&quot;&gt;""#), "{xml}");
    assert!(
        xml.contains(
            r#"message="line 1&#10;line 2&#9;&quot;q&quot; &apos;a&apos; &lt;b&gt; &amp; &#13;""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains("body &lt;x&gt; &amp; ]]&gt; &#13;\nred \u{FFFD}bell</failure>"),
        "{xml}"
    );
    assert!(xml.contains("nul\u{FFFD}here"), "{xml}");
    // And it is well-formed.
    let back = parse(&xml).unwrap();
    match &back[0].cases[0].outcome {
        CaseOutcome::Failed(d) => {
            assert_eq!(
                d.message.as_deref(),
                Some("line 1\nline 2\t\"q\" 'a' <b> & \r")
            );
            assert_eq!(d.body, "body <x> & ]]> \r\nred \u{FFFD}bell");
        }
        other => panic!("{other:?}"),
    }
}

/// Captured output is kept as the test wrote it: tabs and carriage returns survive, a
/// lone ESC (no colour sequence) is replaced without taking what follows with it, and
/// the noncharacters U+FFFE / U+FFFF, which XML forbids, are replaced too.
#[test]
fn writer_keeps_captured_output() {
    let written = "col\tcol\r\nbar 50%\rbar 100% \u{1b}x \u{FFFE}\u{FFFF} end";
    let read = "col\tcol\r\nbar 50%\rbar 100% \u{FFFD}x \u{FFFD}\u{FFFD} end";
    let mut c = case(failed("m", written), 0.0);
    c.system_out = Some(written.into());
    let xml = render(&[result("t", "g", Verdict::Failed, vec![attempt(c)])]);
    assert!(
        xml.contains(
            "<system-out>col\tcol&#13;\nbar 50%&#13;bar 100% \u{FFFD}x \u{FFFD}\u{FFFD} end</system-out>"
        ),
        "{xml}"
    );
    let back = only_case(&xml);
    assert_eq!(back.system_out.as_deref(), Some(read));
    assert_eq!(back.outcome, failed("m", read));
}

#[test]
fn round_trip() {
    let mut pass = case(CaseOutcome::Passed, 0.25);
    pass.classname = Some("pkg.mod".into());
    pass.system_out = Some("multi\nline\n  output\n".into());
    pass.system_err = Some(String::new());
    let mut flaky_fail = case(failed("flaky\nmessage", "tb 1\n  tb 2"), 1.0);
    flaky_fail.system_out = Some("first run".into());
    let results = vec![
        result("a::pass", "g1", Verdict::Passed, vec![attempt(pass)]),
        result(
            "a::flaky [x y]",
            "g1",
            Verdict::Flaky,
            vec![attempt(flaky_fail), attempt(case(CaseOutcome::Passed, 0.5))],
        ),
        result(
            "a::fail",
            "g2",
            Verdict::Failed,
            vec![
                attempt(case(
                    CaseOutcome::Error(detail(Some("setup"), Some("E"), "x")),
                    0.1,
                )),
                attempt(case(failed("again", "tb"), 0.2)),
            ],
        ),
        result(
            "a::skip",
            "g2",
            Verdict::Skipped,
            vec![attempt(case(
                CaseOutcome::Skipped(detail(Some("why"), Some("pytest.skip"), "where")),
                0.0,
            ))],
        ),
        result(
            "a::gone",
            "g2",
            Verdict::NotRun,
            vec![Attempt::not_run(
                "a::gone",
                "timed out waiting for a sandbox",
                1,
            )],
        ),
        result("a::empty", "g2", Verdict::NotRun, vec![]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/out/junit.xml");
    let framework = opaque_framework();
    write_merged(&path, &results, &info(framework.as_ref())).unwrap();
    let suites = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let names: Vec<_> = suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["g1", "g2"]);
    let cases: Vec<TestCase> = suites.into_iter().flat_map(|s| s.cases).collect();
    let ids: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        ids,
        [
            "a::pass",
            "a::flaky [x y]",
            "a::fail",
            "a::skip",
            "a::gone",
            "a::empty"
        ]
    );

    assert_eq!(cases[0].outcome, CaseOutcome::Passed);
    assert_eq!(cases[0].classname.as_deref(), Some("pkg.mod"));
    assert_eq!(cases[0].time, 0.25);
    assert_eq!(
        cases[0].system_out.as_deref(),
        Some("multi\nline\n  output\n")
    );
    assert_eq!(cases[0].system_err.as_deref(), Some(""));

    assert_eq!(cases[1].outcome, CaseOutcome::Passed);
    assert_eq!(cases[1].time, 0.5);
    assert_eq!(cases[1].reruns.len(), 1);
    assert_eq!(cases[1].reruns[0].kind, RerunKind::FlakyFailure);
    assert_eq!(
        cases[1].reruns[0].detail,
        detail(
            Some("flaky\nmessage"),
            Some("AssertionError"),
            "tb 1\n  tb 2"
        )
    );
    assert_eq!(cases[1].reruns[0].system_out.as_deref(), Some("first run"));

    assert_eq!(cases[2].outcome, failed("again", "tb"));
    assert_eq!(cases[2].classname.as_deref(), Some("g2"));
    assert_eq!(cases[2].reruns.len(), 1);
    assert_eq!(cases[2].reruns[0].kind, RerunKind::RerunError);
    assert_eq!(
        cases[2].reruns[0].detail,
        detail(Some("setup"), Some("E"), "x")
    );

    assert_eq!(
        cases[3].outcome,
        CaseOutcome::Skipped(detail(Some("why"), Some("pytest.skip"), "where"))
    );
    assert_eq!(
        cases[4].outcome,
        CaseOutcome::Error(detail(
            Some("not run: timed out waiting for a sandbox"),
            Some(NOT_RUN_KIND),
            ""
        ))
    );
    assert!(cases[4].outcome.is_not_run());
    assert_eq!(
        cases[5].outcome,
        CaseOutcome::Error(detail(Some("not run"), Some(NOT_RUN_KIND), ""))
    );

    // Rewriting replaces the file and leaves no temporary files behind.
    write_merged(&path, &results[..1], &info(framework.as_ref())).unwrap();
    assert_eq!(
        parse(&std::fs::read_to_string(&path).unwrap()).unwrap()[0]
            .cases
            .len(),
        1
    );
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn write_merged_reports_where_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let err = write_merged(
        &blocker.join("junit.xml"),
        &[],
        &info(opaque_framework().as_ref()),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("junit.xml"), "{err:#}");
}

fn pytest_framework() -> Box<dyn Framework> {
    let config = crate::config::PytestConfig {
        paths: vec!["tests".into()],
        command: None,
        run_args: None,
        extra_args: Vec::new(),
        python: "python".into(),
        markers: None,
        test_id_format: None,
        resident_worker: false,
    };
    crate::framework::from_config(&crate::config::FrameworkConfig::Pytest(config)).unwrap()
}

#[test]
fn tests_without_a_classname_get_the_frameworks() {
    let framework = pytest_framework();
    let mut reported = case(CaseOutcome::Passed, 0.1);
    reported.classname = Some("runner.Own".into());
    reported.file = Some("elsewhere/test_a.py".into());
    let results = vec![
        result(
            "tests/test_a.py::TestK::test_m",
            "g",
            Verdict::Passed,
            vec![attempt(reported)],
        ),
        result(
            "tests/sub/test_b.py::test_p[a b]",
            "g",
            Verdict::NotRun,
            vec![Attempt::not_run(
                "tests/sub/test_b.py::test_p[a b]",
                "gone",
                0,
            )],
        ),
        result("tests/test_c.py::test_never", "g", Verdict::NotRun, vec![]),
    ];
    let suites = parse(&render_merged(&results, &info(framework.as_ref()))).unwrap();
    let got: Vec<(&str, Option<&str>, Option<&str>)> = suites[0]
        .cases
        .iter()
        .map(|c| (c.name.as_str(), c.classname.as_deref(), c.file.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "tests/test_a.py::TestK::test_m",
                Some("runner.Own"),
                Some("elsewhere/test_a.py")
            ),
            (
                "tests/sub/test_b.py::test_p[a b]",
                Some("tests.sub.test_b"),
                Some("tests/sub/test_b.py")
            ),
            (
                "tests/test_c.py::test_never",
                Some("tests.test_c"),
                Some("tests/test_c.py")
            ),
        ]
    );

    // A framework whose IDs tell nothing: the group, and no `file`.
    let xml = render(&results[1..2]);
    assert!(
        xml.contains(
            r#"<testcase name="tests/sub/test_b.py::test_p[a b]" classname="g" time="0.000">"#
        ),
        "{xml}"
    );
}

#[test]
fn suite_and_root_times_add_up_the_written_case_times() {
    let results: Vec<TestResult> = [
        ("a", "g1", 0.0004),
        ("b", "g1", 0.0004),
        ("c", "g2", 1.2346),
    ]
    .into_iter()
    .map(|(id, group, time)| {
        result(
            id,
            group,
            Verdict::Passed,
            vec![attempt(case(CaseOutcome::Passed, time))],
        )
    })
    .collect();
    let xml = render(&results);
    // 0.0004 is written 0.000, so its suite's 0.000 too (not 0.001).
    assert!(xml.contains(r#"<testsuites name="offload" tests="3" failures="0" errors="0" skipped="0" time="1.235">"#), "{xml}");
    assert!(
        xml.contains(
            r#"<testsuite name="g1" tests="2" failures="0" errors="0" skipped="0" time="0.000""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="g2" tests="1" failures="0" errors="0" skipped="0" time="1.235""#
        ),
        "{xml}"
    );
    // The durations reader still finds every test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, &xml).unwrap();
    let durations = read_durations(&path);
    assert_eq!(durations.len(), 3);
    assert_eq!(durations["c"], 1.235);
}

#[test]
fn the_file_attribute_is_read() {
    let c = only_case(
        r#"<testsuite><testcase name="t" classname="k" file="tests/t.py" line="3"/></testsuite>"#,
    );
    assert_eq!(c.file.as_deref(), Some("tests/t.py"));
    assert_eq!(c.classname.as_deref(), Some("k"));
}
