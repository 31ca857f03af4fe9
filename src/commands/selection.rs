//! Which of the discovered tests a command keeps: the positional filters, `-k` and
//! `--rerun-failed` of `offload run` (filters and `-k` of `offload collect` too).
//!
//! Discovery finds every test of the configured groups; a [`Selection`] then keeps the
//! ones the command line asks for, before anything is scheduled. The criteria
//! intersect: a test is kept when its ID contains one of the filters, matches `-k` and
//! failed in the last report, for each criterion given. A framework with its own
//! expression language (pytest) applies `-k` at discovery instead (see
//! [`crate::framework::Framework::select_by_expression`]); for the others `-k` is a
//! regular expression on IDs here. [`previous_unfinished`] reads the last report for
//! `--rerun-failed`. Nothing here runs a test.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use regex::Regex;
use rustc_hash::FxHashSet;

use crate::framework::TestRecord;
use crate::output::{ellipsize, plural};
use crate::report::junit;
use crate::report::verdict::Verdict;

/// The tests the command line selects among the discovered ones.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Positional filters: an ID is kept when it contains any of them.
    filters: Vec<String>,
    /// `-k` as written, for messages.
    keyword: Option<String>,
    /// `-k` as a regular expression, when the framework did not apply it at discovery.
    pattern: Option<Regex>,
    /// `--rerun-failed`: the IDs that did not pass in the last report.
    rerun: Option<FxHashSet<String>>,
}

impl Selection {
    /// A selection by `filters` (substrings), `keyword` (`-k`) and `rerun` (the IDs of
    /// [`previous_unfinished`]). `keyword_at_discovery`: the framework applied `-k`
    /// itself, so it selects nothing more here; otherwise it is a regular expression
    /// matched anywhere in an ID, and an invalid one is an error naming `-k`.
    pub(crate) fn new(
        filters: Vec<String>,
        keyword: Option<&str>,
        keyword_at_discovery: bool,
        rerun: Option<Vec<String>>,
    ) -> Result<Self> {
        let pattern = match keyword {
            Some(expr) if !keyword_at_discovery => Some(Regex::new(expr).map_err(|err| {
                anyhow!(
                    "invalid `-k {expr}`: {err}\n(hint: with this framework `-k` is a regular \
                     expression matched anywhere in a test ID, e.g. `-k '^unit::|_slow$'`; \
                     escape `(`, `[`, `.`, `*` and `+` with `\\` to match them literally)"
                )
            })?),
            _ => None,
        };
        Ok(Self {
            filters,
            keyword: keyword.map(str::to_owned),
            pattern,
            rerun: rerun.map(|ids| ids.into_iter().collect()),
        })
    }

    /// Whether the command line selects anything at all (otherwise every test runs).
    pub(crate) fn is_active(&self) -> bool {
        !self.filters.is_empty() || self.keyword.is_some() || self.rerun.is_some()
    }

    /// Whether the test `id` is selected.
    fn keeps(&self, id: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str())))
            && self.pattern.as_ref().is_none_or(|p| p.is_match(id))
            && self.rerun.as_ref().is_none_or(|ids| ids.contains(id))
    }

    /// Keeps the selected records of `records`, in their order; fails when tests were
    /// there to select and none is, since a CI job whose filter has a typo must not go
    /// green having run nothing.
    pub(crate) fn apply(&self, records: &mut Vec<TestRecord>) -> Result<()> {
        if !self.is_active() {
            return Ok(());
        }
        let discovered = records.len();
        records.retain(|r| self.keeps(&r.id));
        if records.is_empty() {
            return Err(self.nothing_selected(discovered));
        }
        Ok(())
    }

    /// The error of a selection that kept none of the `discovered` tests.
    fn nothing_selected(&self, discovered: usize) -> anyhow::Error {
        let mut criteria = Vec::new();
        if !self.filters.is_empty() {
            let quoted: Vec<String> = self
                .filters
                .iter()
                .map(|f| format!("`{}`", ellipsize(f, 200)))
                .collect();
            criteria.push(format!(
                "an ID containing {}",
                quoted.join(if quoted.len() == 2 { " or " } else { ", or " })
            ));
        }
        if let Some(keyword) = &self.keyword {
            criteria.push(format!("`-k {}`", ellipsize(keyword, 200)));
        }
        if let Some(ids) = &self.rerun {
            criteria.push(format!(
                "among the {} that did not pass last time (`--rerun-failed`)",
                plural(ids.len(), "test")
            ));
        }
        anyhow!(
            "no tests match {} ({} discovered)\n(hint: `offload collect` lists the test IDs; a \
             filter keeps the tests whose ID contains it)",
            criteria.join(" and "),
            plural(discovered, "test")
        )
    }
}

/// The IDs whose final verdict in the merged report at `path` (the last run's) was
/// failed, errored or not run, in report order. Flaky tests passed in the end and are
/// not among them. No report is an error that says how to get one.
pub(crate) fn previous_unfinished(path: &Path, junit_enabled: bool) -> Result<Vec<String>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let hint = if junit_enabled {
                "run `offload run` first; `--rerun-failed` reruns what its report says failed"
            } else {
                "`[report] junit = false` turns the report off: set it to true, run `offload \
                 run`, then rerun"
            };
            return Err(anyhow!(
                "`--rerun-failed`: there is no report of a previous run at `{}`\n(hint: {hint})",
                path.display()
            ));
        }
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "`--rerun-failed`: cannot read the previous report `{}`",
                    path.display()
                )
            });
        }
    };
    let suites = junit::parse(&String::from_utf8_lossy(&bytes)).with_context(|| {
        format!(
            "`--rerun-failed`: cannot read the previous report `{}` (hint: run `offload run` \
             without `--rerun-failed` to write a new one)",
            path.display()
        )
    })?;
    let mut seen = FxHashSet::default();
    Ok(suites
        .into_iter()
        .flat_map(|suite| suite.cases)
        .filter(|case| {
            matches!(
                Verdict::of_report_case(case),
                Verdict::Failed | Verdict::Errored | Verdict::NotRun
            )
        })
        .map(|case| case.name)
        .filter(|id| seen.insert(id.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(selection: &Selection, all: &[&str]) -> Vec<String> {
        all.iter()
            .filter(|id| selection.keeps(id))
            .map(|id| (*id).to_owned())
            .collect()
    }

    const ALL: [&str; 4] = [
        "tests/test_a.py::test_one",
        "tests/test_a.py::test_two",
        "tests/test_b.py::test_one[x]",
        "crate tests::slow_one",
    ];

    #[test]
    fn filters_are_substrings_and_any_one_selects() {
        let s = Selection::new(
            vec!["test_b".into(), "::test_two".into()],
            None,
            false,
            None,
        )
        .unwrap();
        assert_eq!(
            ids(&s, &ALL),
            ["tests/test_a.py::test_two", "tests/test_b.py::test_one[x]"]
        );
        // An exact ID is a substring of itself; regex characters are literal here.
        let s = Selection::new(vec!["test_one[x]".into()], None, false, None).unwrap();
        assert_eq!(ids(&s, &ALL), ["tests/test_b.py::test_one[x]"]);
        assert!(
            !Selection::new(vec![], None, false, None)
                .unwrap()
                .is_active()
        );
    }

    #[test]
    fn k_is_a_regex_unless_the_framework_applied_it() {
        let s = Selection::new(vec![], Some("one$|slow"), false, None).unwrap();
        assert_eq!(
            ids(&s, &ALL),
            ["tests/test_a.py::test_one", "crate tests::slow_one"]
        );
        let s = Selection::new(vec![], Some("not slow"), true, None).unwrap();
        assert!(s.is_active());
        assert_eq!(ids(&s, &ALL).len(), 4);
        let err = Selection::new(vec![], Some("test_(a"), false, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid `-k test_(a`:") && err.contains("regular expression"),
            "{err}"
        );
    }

    #[test]
    fn criteria_intersect() {
        let rerun = vec![
            "tests/test_a.py::test_one".into(),
            "crate tests::slow_one".into(),
        ];
        let s = Selection::new(vec!["test_a".into()], Some("one"), false, Some(rerun)).unwrap();
        assert_eq!(ids(&s, &ALL), ["tests/test_a.py::test_one"]);
    }

    fn record(id: &str) -> TestRecord {
        TestRecord::of(id, "g")
    }

    #[test]
    fn selecting_nothing_is_an_error_that_names_the_criteria() {
        let mut records: Vec<TestRecord> = ALL.iter().map(|id| record(id)).collect();
        let s = Selection::new(
            vec!["nope".into(), "nada".into()],
            Some("x"),
            true,
            Some(vec![]),
        )
        .unwrap();
        let err = s.apply(&mut records).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "no tests match an ID containing `nope` or `nada` and `-k x` and among the \
                 0 tests that did not pass last time (`--rerun-failed`) (4 tests discovered)"
            ) && err.contains("offload collect"),
            "{err}"
        );
        let mut records: Vec<TestRecord> = ALL.iter().map(|id| record(id)).collect();
        let s = Selection::new(vec!["test_a".into()], None, false, None).unwrap();
        s.apply(&mut records).unwrap();
        assert_eq!(records.len(), 2);
        // Without any criterion an empty discovery is not this error.
        Selection::default().apply(&mut Vec::new()).unwrap();
    }

    #[test]
    fn the_previous_report_gives_failed_errored_and_not_run_tests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        let err = previous_unfinished(&path, true).unwrap_err().to_string();
        assert!(
            err.contains("no report of a previous run") && err.contains("offload run"),
            "{err}"
        );
        let err = previous_unfinished(&path, false).unwrap_err().to_string();
        assert!(err.contains("junit = false"), "{err}");
        std::fs::write(
            &path,
            r#"<testsuites><testsuite name="g">
              <testcase name="pass"/>
              <testcase name="fail"><failure message="m"/></testcase>
              <testcase name="flaky"><flakyFailure message="m"/></testcase>
              <testcase name="error"><error message="m"/></testcase>
              <testcase name="skip"><skipped/></testcase>
              <testcase name="notrun"><error type="offload.NotRun" message="not run: x"/></testcase>
            </testsuite><testsuite name="h"><testcase name="fail"><failure/></testcase>
            </testsuite></testsuites>"#,
        )
        .unwrap();
        assert_eq!(
            previous_unfinished(&path, true).unwrap(),
            ["fail", "error", "notrun"]
        );
        std::fs::write(&path, "<testsuites><testsuite>").unwrap();
        let err = format!("{:#}", previous_unfinished(&path, true).unwrap_err());
        assert!(
            err.contains("cannot read the previous report") && err.contains("malformed"),
            "{err}"
        );
    }
}
