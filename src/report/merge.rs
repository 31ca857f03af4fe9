//! Joining the reports of the parts of a partitioned run (`offload run --partition K/N`,
//! see `crate::partition`) into one report of the whole run.
//!
//! Each part's report is read back ([`super::junit::parse`]) into the per-test model the
//! writer takes ([`TestResult`]): a testcase's outcome is its final attempt, and each
//! `<flakyFailure>`, `<flakyError>`, `<rerunFailure>` and `<rerunError>` an earlier one,
//! so the merged report keeps every flaky attempt and counts each test once. A suite
//! becomes the group of its tests, and groups of the same name in several parts become
//! one `<testsuite>`.
//!
//! A test in two parts (or twice in one) is refused: the parts of one plan never share
//! a test, so the reports come from different plans or are not parts at all. What the
//! parts say about themselves ([`PARTITION_PROPERTY`], [`PLAN_TESTS_PROPERTY`]) is
//! checked too: parts missing from a set, or parts whose tests do not add up to the plan
//! they were cut from, make warnings.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use rustc_hash::FxHashMap;

use super::junit::{CaseOutcome, NOT_RUN_KIND, RerunKind, TestCase, TestSuite};
use super::verdict::{Attempt, TestResult, Verdict};

/// The `<property>` that says which part a report is: `K/N` or `hash:K/N`.
pub(crate) const PARTITION_PROPERTY: &str = "offload.partition";

/// The `<property>` that says how many tests the plan a part was cut from had.
pub(crate) const PLAN_TESTS_PROPERTY: &str = "offload.partition.plan-tests";

/// One report to merge.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Where it was read from, for messages.
    pub(crate) source: String,
    /// Its suites.
    pub(crate) suites: Vec<TestSuite>,
}

/// The merged report, and what the merge noticed.
#[derive(Debug)]
pub(crate) struct Merged {
    /// Each test once, parts in the order given, tests in document order.
    pub(crate) results: Vec<TestResult>,
    /// The earliest `timestamp` of the parts' suites.
    pub(crate) started: Option<SystemTime>,
    /// Problems that do not stop the merge, one sentence each.
    pub(crate) warnings: Vec<String>,
}

/// Merges `parts` (see the module docs).
pub(crate) fn merge(parts: Vec<Part>) -> Result<Merged> {
    let mut seen: FxHashMap<String, usize> = FxHashMap::default();
    let mut results = Vec::new();
    let mut started: Option<SystemTime> = None;
    let mut labels: Vec<Option<PartLabel>> = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        labels.push(PartLabel::of(&part.suites));
        for suite in &part.suites {
            if let Some(at) = suite.timestamp.as_deref().and_then(parse_timestamp) {
                started = Some(started.map_or(at, |s| s.min(at)));
            }
            for case in &suite.cases {
                if let Some(&first) = seen.get(&case.name) {
                    let place = if first == index {
                        format!("twice in `{}`", part.source)
                    } else {
                        format!("in `{}` and in `{}`", parts[first].source, part.source)
                    };
                    bail!(
                        "test `{}` is {place}: the parts of one plan never share a test, so \
                         these reports are not parts of one run (were they cut from different \
                         discoveries or durations? `--partition hash:K/N` gives each test the \
                         same part whatever the machine discovers)",
                        case.name
                    );
                }
                seen.insert(case.name.clone(), index);
                results.push(result_of(&suite.name, case));
            }
        }
    }
    let warnings = check_parts(&parts, &labels);
    Ok(Merged {
        results,
        started,
        warnings,
    })
}

/// What a part's report says about the part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartLabel {
    /// `hash:` or nothing.
    mode: String,
    k: usize,
    n: usize,
    /// The number of tests of the whole plan, when recorded.
    plan_tests: Option<usize>,
}

impl PartLabel {
    /// The label in the first suite that has one.
    fn of(suites: &[TestSuite]) -> Option<Self> {
        let property = |name: &str| {
            suites
                .iter()
                .flat_map(|s| &s.properties)
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let value = property(PARTITION_PROPERTY)?;
        let (mode, kn) = match value.rsplit_once(':') {
            Some((mode, kn)) => (format!("{mode}:"), kn),
            None => (String::new(), value),
        };
        let (k, n) = kn.split_once('/')?;
        Some(Self {
            mode,
            k: k.parse().ok()?,
            n: n.parse().ok()?,
            plan_tests: property(PLAN_TESTS_PROPERTY).and_then(|v| v.parse().ok()),
        })
    }
}

/// Warnings about the set of parts: parts of one partitioning missing, two reports of one
/// part, or tests that do not add up to the plan.
fn check_parts(parts: &[Part], labels: &[Option<PartLabel>]) -> Vec<String> {
    let mut warnings = Vec::new();
    let labelled: Vec<(&Part, &PartLabel)> = parts
        .iter()
        .zip(labels)
        .filter_map(|(p, l)| Some((p, l.as_ref()?)))
        .collect();
    let Some((_, first)) = labelled.first() else {
        return warnings;
    };
    if labelled
        .iter()
        .any(|(_, l)| l.mode != first.mode || l.n != first.n)
    {
        let all: Vec<String> = labelled
            .iter()
            .map(|(p, l)| format!("`{}` is part {}{}/{}", p.source, l.mode, l.k, l.n))
            .collect();
        warnings.push(format!(
            "the reports are parts of different partitionings: {}",
            all.join(", ")
        ));
        return warnings;
    }
    let mut present = BTreeSet::new();
    for (part, label) in &labelled {
        if !present.insert(label.k) {
            warnings.push(format!(
                "part {}{}/{} is given twice (again as `{}`)",
                label.mode, label.k, label.n, part.source
            ));
        }
    }
    let missing: Vec<String> = (1..=first.n)
        .filter(|k| !present.contains(k))
        .map(|k| format!("{}{k}/{}", first.mode, first.n))
        .collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "{} {} {} missing: {} tests are not in the merged report",
            if missing.len() == 1 { "part" } else { "parts" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "its" } else { "their" }
        ));
        return warnings;
    }
    // Every part of a balanced plan records the same total; hash parts may come from
    // machines that discovered different suites.
    if first.mode.is_empty() && labelled.len() == parts.len() {
        let plans: BTreeSet<Option<usize>> = labelled.iter().map(|(_, l)| l.plan_tests).collect();
        let tests: usize = parts
            .iter()
            .map(|p| p.suites.iter().map(|s| s.cases.len()).sum::<usize>())
            .sum();
        if let [Some(plan)] = plans.into_iter().collect::<Vec<_>>()[..] {
            if plan != tests {
                warnings.push(format!(
                    "the parts hold {tests} tests but their plan had {plan}: the jobs did not \
                     compute the same plan (different discoveries or durations), so some tests \
                     may not have run"
                ));
            }
        }
    }
    warnings
}

/// The result of a testcase of a part: its earlier failed attempts from its rerun
/// elements, then its final attempt.
fn result_of(group: &str, case: &TestCase) -> TestResult {
    let mut attempts: Vec<Attempt> = case
        .reruns
        .iter()
        .map(|rerun| {
            let mut detail = rerun.detail.clone();
            unwrite_not_run(&mut detail);
            let outcome = match rerun.kind {
                RerunKind::FlakyFailure | RerunKind::RerunFailure => CaseOutcome::Failed(detail),
                RerunKind::FlakyError | RerunKind::RerunError => CaseOutcome::Error(detail),
            };
            Attempt {
                case: TestCase {
                    name: case.name.clone(),
                    classname: case.classname.clone(),
                    file: case.file.clone(),
                    outcome,
                    system_out: rerun.system_out.clone(),
                    system_err: rerun.system_err.clone(),
                    ..TestCase::default()
                },
                batch: 0,
            }
        })
        .collect();
    let verdict = Verdict::of_report_case(case);
    let mut last = TestCase {
        reruns: Vec::new(),
        ..case.clone()
    };
    if let CaseOutcome::Error(detail) = &mut last.outcome {
        unwrite_not_run(detail);
    }
    attempts.push(Attempt {
        case: last,
        batch: 0,
    });
    TestResult {
        id: case.name.clone(),
        group: group.to_owned(),
        verdict,
        attempts,
    }
}

/// The writer turns a not-run attempt's reason into `not run: <reason>`; back to the
/// reason, so that writing it again does not say `not run: not run: ...`.
fn unwrite_not_run(detail: &mut super::junit::Detail) {
    if detail.kind.as_deref() != Some(NOT_RUN_KIND) {
        return;
    }
    detail.message = match detail.message.as_deref() {
        Some("not run") => None,
        Some(m) => Some(m.strip_prefix("not run: ").unwrap_or(m).to_owned()),
        None => None,
    };
}

/// A report timestamp as the writer writes it (`2024-05-01T10:00:00+00:00`; also without
/// the offset, or with `Z`, read as UTC), as a time.
fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let text = text
        .strip_suffix("+00:00")
        .or_else(|| text.strip_suffix('Z'))
        .unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<u64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time
        .splitn(3, ':')
        .map(|s| s.split('.').next().unwrap_or(s).parse::<u64>());
    let (h, m, s) = (time.next()?.ok()?, time.next()?.ok()?, time.next()?.ok()?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    // Howard Hinnant's `days_from_civil`, the inverse of `crate::date::civil_from_days`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::junit::{RunInfo, parse, render_merged};

    /// A part's report with the given partition label, its testcases written out.
    fn part(source: &str, label: Option<(&str, usize)>, cases: &str) -> Part {
        let properties = label
            .map(|(value, plan)| {
                format!(
                    "<properties><property name=\"{PARTITION_PROPERTY}\" value=\"{value}\"/>\
                     <property name=\"{PLAN_TESTS_PROPERTY}\" value=\"{plan}\"/></properties>"
                )
            })
            .unwrap_or_default();
        let xml = format!(
            "<testsuites name=\"offload\"><testsuite name=\"all\" \
             timestamp=\"2026-12-03T01:00:0{}+00:00\">{properties}{cases}</testsuite></testsuites>",
            source.len() % 10
        );
        Part {
            source: source.to_owned(),
            suites: parse(&xml).unwrap(),
        }
    }

    fn render(merged: &Merged) -> String {
        render_merged(
            &merged.results,
            &RunInfo {
                started: merged.started.unwrap_or(SystemTime::UNIX_EPOCH),
                hostname: "h",
                framework: None,
                properties: &[],
            },
        )
    }

    const FLAKY: &str = "<testcase name=\"t::flaky\" classname=\"t\" time=\"0.500\">\
        <flakyFailure message=\"boom\" type=\"AssertionError\"><stackTrace>trace 1</stackTrace>\
        <system-out>out 1</system-out></flakyFailure>\
        <flakyError message=\"setup\"/></testcase>";
    const FAILED: &str = "<testcase name=\"t::broken\" classname=\"t\" time=\"1.000\">\
        <failure message=\"final\">last trace</failure>\
        <rerunFailure message=\"first\"><stackTrace>first trace</stackTrace></rerunFailure>\
        <rerunError type=\"offload.NotRun\" message=\"not run: sandbox died\"/></testcase>";
    const NOT_RUN: &str = "<testcase name=\"t::lost\" classname=\"t\" time=\"0.000\">\
        <error type=\"offload.NotRun\" message=\"not run: no result in the JUnit file\"/></testcase>";

    #[test]
    fn flaky_attempts_and_counts_survive_a_merge() {
        let merged = merge(vec![
            part("a.xml", Some(("1/2", 4)), &format!("{FLAKY}{NOT_RUN}")),
            part(
                "b.xml",
                Some(("2/2", 4)),
                &format!("{FAILED}<testcase name=\"t::ok\" classname=\"t\" time=\"0.25\"/>"),
            ),
        ])
        .unwrap();
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        let verdicts: Vec<Verdict> = merged.results.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Flaky,
                Verdict::NotRun,
                Verdict::Failed,
                Verdict::Passed
            ]
        );
        let xml = render(&merged);
        assert!(
            xml.contains("<testsuites name=\"offload\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"0\" time=\"1.750\">"),
            "{xml}"
        );
        // Written again and read back, each test is what it was in its part.
        let again = parse(&xml).unwrap();
        assert_eq!(again.len(), 1, "one suite per group: {xml}");
        let cases = &again[0].cases;
        let originals: Vec<TestCase> = [
            part("a", None, FLAKY),
            part("a", None, NOT_RUN),
            part("a", None, FAILED),
        ]
        .into_iter()
        .map(|p| p.suites[0].cases[0].clone())
        .collect();
        assert_eq!(&cases[..3], &originals[..], "{xml}");
        assert!(!xml.contains("not run: not run"), "{xml}");
        // Merging the merged report again changes nothing.
        let twice = merge(vec![Part {
            source: "merged.xml".into(),
            suites: again,
        }])
        .unwrap();
        assert_eq!(render(&twice), xml);
    }

    #[test]
    fn a_test_in_two_parts_is_refused() {
        let err = merge(vec![part("a.xml", None, FLAKY), part("b.xml", None, FLAKY)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test `t::flaky` is in `a.xml` and in `b.xml`"),
            "{err}"
        );
        let err = merge(vec![part("a.xml", None, &format!("{FLAKY}{FLAKY}"))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("test `t::flaky` is twice in `a.xml`"), "{err}");
    }

    #[test]
    fn missing_parts_and_different_plans_are_warned_about() {
        let one = "<testcase name=\"x\"/>";
        let two = "<testcase name=\"y\"/>";
        let merged = merge(vec![part("a.xml", Some(("1/3", 3)), one)]).unwrap();
        assert_eq!(
            merged.warnings,
            ["parts 2/3, 3/3 are missing: their tests are not in the merged report"]
        );
        let merged = merge(vec![
            part("a.xml", Some(("1/2", 3)), one),
            part("b.xml", Some(("2/2", 3)), two),
        ])
        .unwrap();
        assert_eq!(
            merged.warnings,
            [
                "the parts hold 2 tests but their plan had 3: the jobs did not compute the same \
              plan (different discoveries or durations), so some tests may not have run"
            ]
        );
        let merged = merge(vec![
            part("a.xml", Some(("hash:1/2", 3)), one),
            part("b.xml", Some(("hash:2/2", 1)), two),
        ])
        .unwrap();
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        let merged = merge(vec![
            part("a.xml", Some(("1/2", 2)), one),
            part("b.xml", Some(("1/3", 2)), two),
        ])
        .unwrap();
        assert_eq!(merged.warnings.len(), 1);
        assert!(
            merged.warnings[0].contains("`a.xml` is part 1/2, `b.xml` is part 1/3"),
            "{:?}",
            merged.warnings
        );
        let merged = merge(vec![
            part("a.xml", Some(("1/2", 2)), one),
            part("b.xml", Some(("1/2", 2)), two),
        ])
        .unwrap();
        assert_eq!(
            merged.warnings,
            [
                "part 1/2 is given twice (again as `b.xml`)",
                "part 2/2 is missing: its tests are not in the merged report"
            ]
        );
    }

    #[test]
    fn the_earliest_timestamp_is_the_start() {
        let merged = merge(vec![
            // The timestamps' seconds are the length of the source's name.
            part("abc.xml", None, "<testcase name=\"x\"/>"),
            part("a.xml", None, "<testcase name=\"y\"/>"),
        ])
        .unwrap();
        assert_eq!(merged.started, parse_timestamp("2026-12-03T01:00:05+00:00"));
        let at = |s: &str| {
            parse_timestamp(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(at("2000-02-29T12:30:15Z"), Some(951_827_415));
        assert_eq!(at("2026-12-02T00:00:00"), Some(20_789 * 86_400));
        assert_eq!(at("2026-13-02T00:00:00"), None);
        assert_eq!(at("yesterday"), None);
        // What the writer writes reads back as the same second.
        let mut text = String::new();
        crate::report::junit::push_timestamp(
            &mut text,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_259_661),
        );
        assert_eq!(at(&text), Some(1_796_259_661));
    }
}
