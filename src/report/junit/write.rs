//! The merged report's writer ([`write_merged`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};

use super::model::*;
use crate::framework::Framework;
use crate::report::verdict::{Attempt, TestResult, Verdict};

/// What the merged report says besides the tests' results.
pub(crate) struct RunInfo<'a> {
    /// When the run started: each `<testsuite>`'s `timestamp`.
    pub started: SystemTime,
    /// The machine Offload ran on: each `<testsuite>`'s `hostname` (see [`hostname`]).
    pub hostname: &'a str,
    /// The run's framework: the `classname` and `file` of tests whose result does not
    /// carry them (`None`: the group name, and no `file`).
    pub framework: Option<&'a dyn Framework>,
    /// `<property>` names and values written in each `<testsuite>`'s `<properties>`
    /// (which part of a partitioned run the report is, say). With properties and no
    /// tests, the report holds one empty `<testsuite name="offload">` to carry them.
    pub properties: &'a [(&'a str, String)],
}

/// Writes the merged report of a run to `path` through a temporary file in the same
/// directory that is renamed in once complete (the old report is removed just before),
/// creating parent directories. No reader ever sees a partly written report.
///
/// Layout: `<testsuites name="offload" tests failures errors skipped time>` holding one
/// `<testsuite name tests failures errors skipped time timestamp hostname>` per group
/// (in order of first appearance in `results`), each test once, in the order given, as
/// `<testcase name="<ID>" classname [file] time>`:
///
/// * `name` is the test ID as discovered (what `offload logs --test` and the durations
///   reader match on).
/// * `classname` is the one the runner wrote for the deciding attempt (see
///   [`TestResult::final_attempt`]); for a test whose result has none (not run, timed
///   out, decided by the exit code) the one the framework gives the ID
///   ([`Framework::junit_classname`]); failing that, the group name.
/// * `file` is the runner's when it wrote one, else the framework's
///   ([`Framework::source_file`]); absent when neither knows.
/// * Passed: no outcome child. Flaky: a `<flakyFailure>` (`<flakyError>` for an errored
///   attempt) per failed attempt.
/// * Failed: `<failure message type>body</failure>` from the final failed attempt, then a
///   `<rerunFailure>` / `<rerunError>` per earlier failed attempt.
/// * Errored: `<error message type>body</error>` from the final errored attempt, then
///   rerun elements as for a failed test.
/// * Skipped: `<skipped message type>body</skipped>`.
/// * Not run: `<error type="offload.NotRun" message="not run: <reason>">`.
/// * Rerun elements hold `<stackTrace>`, `<system-out>` and `<system-err>` children (the
///   surefire layout CI dashboards read); the final attempt's output follows as the
///   testcase's `<system-out>` / `<system-err>`.
///
/// With [`RunInfo::properties`], each `<testsuite>` starts with `<properties>` holding a
/// `<property name value/>` per entry.
///
/// Counts are per unique test: `failures` counts failed tests, `errors` errored tests and
/// tests not run.
///
/// Times are test time, in seconds with three decimals: a testcase's is its deciding
/// attempt's, a suite's the sum of its testcases' and the root's the sum of the suites',
/// each sum taken over the written (rounded) values, so that a reader that adds them up
/// finds the same. Tests run in parallel, so the root's time is usually more than the
/// run's wall time, which the summary prints. `timestamp` is the start of the run in
/// UTC (`2024-05-01T10:00:00+00:00`).
pub(crate) fn write_merged(path: &Path, results: &[TestResult], run: &RunInfo<'_>) -> Result<()> {
    let xml = render_merged(results, run);
    write_atomically(path, xml.as_bytes())
        .with_context(|| format!("cannot write the junit report `{}`", path.display()))
}

/// The text [`write_merged`] writes.
pub(crate) fn render_merged(results: &[TestResult], run: &RunInfo<'_>) -> String {
    let mut groups: Vec<(&str, Vec<&TestResult>)> = Vec::new();
    for result in results {
        match groups.iter_mut().find(|(g, _)| *g == result.group) {
            Some((_, members)) => members.push(result),
            None => groups.push((&result.group, vec![result])),
        }
    }
    if groups.is_empty() && !run.properties.is_empty() {
        groups.push(("offload", Vec::new()));
    }
    let suite_millis: Vec<u128> = groups
        .iter()
        .map(|(_, members)| {
            members
                .iter()
                .fold(0u128, |sum, r| sum.saturating_add(case_millis(r)))
        })
        .collect();
    let total_millis = suite_millis
        .iter()
        .fold(0u128, |sum, m| sum.saturating_add(*m));
    let mut suite_attrs = String::from(" timestamp=\"");
    push_timestamp(&mut suite_attrs, run.started);
    suite_attrs.push_str("\" hostname=\"");
    escape_attr(run.hostname, &mut suite_attrs);
    suite_attrs.push_str("\">\n");
    if !run.properties.is_empty() {
        suite_attrs.push_str("    <properties>\n");
        for (name, value) in run.properties {
            suite_attrs.push_str("      <property name=\"");
            escape_attr(name, &mut suite_attrs);
            suite_attrs.push_str("\" value=\"");
            escape_attr(value, &mut suite_attrs);
            suite_attrs.push_str("\"/>\n");
        }
        suite_attrs.push_str("    </properties>\n");
    }

    let mut out = String::with_capacity(256 + results.len() * 160);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<testsuites name=\"offload\"");
    push_counts(&mut out, results.iter());
    out.push_str(" time=\"");
    push_millis(&mut out, total_millis);
    out.push_str("\">\n");
    for ((group, members), millis) in groups.iter().zip(suite_millis) {
        out.push_str("  <testsuite name=\"");
        escape_attr(group, &mut out);
        out.push('"');
        push_counts(&mut out, members.iter().copied());
        out.push_str(" time=\"");
        push_millis(&mut out, millis);
        out.push('"');
        out.push_str(&suite_attrs);
        for result in members {
            push_testcase(&mut out, result, run.framework);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// The name of this machine, for the report's `hostname`; `localhost` when the system
/// does not tell (the JUnit schema requires the attribute).
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// Writes `at` as an ISO 8601 UTC date and time to the second (times before 1970 as
/// 1970-01-01).
pub(crate) fn push_timestamp(out: &mut String, at: SystemTime) {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = crate::date::civil_from_days(secs / 86_400);
    let time = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        time / 3600,
        time % 3600 / 60,
        time % 60
    );
}

fn push_counts<'a>(out: &mut String, results: impl Iterator<Item = &'a TestResult>) {
    let (mut tests, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
    for r in results {
        tests += 1;
        match r.verdict {
            Verdict::Failed => failures += 1,
            Verdict::Errored | Verdict::NotRun => errors += 1,
            Verdict::Skipped => skipped += 1,
            Verdict::Passed | Verdict::Flaky => {}
        }
    }
    let _ = write!(
        out,
        " tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\""
    );
}

/// The deciding attempt's time in milliseconds, as it is written.
fn case_millis(result: &TestResult) -> u128 {
    result.final_attempt().map_or(0, |a| millis(a.case.time))
}

/// The outcome element of `result`'s testcase (`failure`, `error` or `skipped`) with
/// its detail, from the deciding attempt's `case`; `None` for a pass.
fn final_outcome(result: &TestResult, case: Option<&TestCase>) -> Option<(&'static str, Detail)> {
    let detail = || {
        case.and_then(|c| c.outcome.detail())
            .cloned()
            .unwrap_or_default()
    };
    match result.verdict {
        Verdict::Passed | Verdict::Flaky => None,
        Verdict::Skipped => Some(("skipped", detail())),
        Verdict::Failed => {
            let mut d = detail();
            // The verdict is "failed" even if its last attempt produced no result.
            if d.kind.as_deref() == Some(NOT_RUN_KIND) {
                d.kind = None;
                d.message = Some(not_run_message(d.message.as_deref()));
            }
            Some(("failure", d))
        }
        Verdict::Errored => Some(("error", detail())),
        Verdict::NotRun => {
            let d = detail();
            let reason = if case.is_some_and(|c| c.outcome.is_not_run()) {
                d.message.as_deref()
            } else {
                None
            };
            Some((
                "error",
                Detail {
                    message: Some(not_run_message(reason)),
                    kind: Some(NOT_RUN_KIND.to_owned()),
                    body: d.body,
                },
            ))
        }
    }
}

fn push_testcase(out: &mut String, result: &TestResult, framework: Option<&dyn Framework>) {
    let last = result.final_attempt();
    let case = last.map(|a| &a.case);
    out.push_str("    <testcase name=\"");
    escape_attr(&result.id, out);
    out.push_str("\" classname=\"");
    match case.and_then(|c| c.classname.as_deref()) {
        Some(classname) => escape_attr(classname, out),
        None => match framework.and_then(|f| f.junit_classname(&result.id)) {
            Some(classname) => escape_attr(&classname, out),
            None => escape_attr(&result.group, out),
        },
    }
    out.push('"');
    let file = case
        .and_then(|c| c.file.as_deref())
        .or_else(|| framework.and_then(|f| f.source_file(&result.id)));
    if let Some(file) = file {
        out.push_str(" file=\"");
        escape_attr(file, out);
        out.push('"');
    }
    out.push_str(" time=\"");
    push_millis(out, case_millis(result));
    out.push('"');

    let outcome = final_outcome(result, case);
    let earlier: Vec<&Attempt> = result.earlier_failures().collect();
    let system_out = case.and_then(|c| c.system_out.as_deref());
    let system_err = case.and_then(|c| c.system_err.as_deref());
    if outcome.is_none() && earlier.is_empty() && system_out.is_none() && system_err.is_none() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    if let Some((element, d)) = &outcome {
        out.push_str("      ");
        push_detail_element(out, element, d);
        out.push('\n');
    }
    let flaky = matches!(
        result.verdict,
        Verdict::Passed | Verdict::Flaky | Verdict::Skipped
    );
    for attempt in earlier {
        let errored = matches!(attempt.case.outcome, CaseOutcome::Error(_));
        let kind = match (flaky, errored) {
            (true, false) => RerunKind::FlakyFailure,
            (true, true) => RerunKind::FlakyError,
            (false, false) => RerunKind::RerunFailure,
            (false, true) => RerunKind::RerunError,
        };
        out.push_str("      ");
        push_rerun(out, kind, &attempt.case);
        out.push('\n');
    }
    if let Some(text) = system_out {
        out.push_str("      ");
        push_text_element(out, "system-out", text);
        out.push('\n');
    }
    if let Some(text) = system_err {
        out.push_str("      ");
        push_text_element(out, "system-err", text);
        out.push('\n');
    }
    out.push_str("    </testcase>\n");
}

/// `secs` in whole milliseconds, rounded as `{:.3}` would (saturating; wide enough for
/// any time a runner may write, `1e20` say, to be written back as it was). Formatting
/// floats is most of the time spent rendering a large report, so the common case goes
/// through integer arithmetic. Below 10^8 ms the product is exact to 10^-8, so only
/// values within 10^-6 of a rounding tie (where the two roundings could differ) and
/// larger ones need the exact path.
pub(super) fn millis(secs: f64) -> u128 {
    let millis = secs * 1000.0;
    let near_tie = (millis.fract() - 0.5).abs() < 1e-6;
    if (0.0..1e8).contains(&millis) && !near_tie {
        return millis.round() as u128;
    }
    if secs.is_nan() || secs < 0.0 {
        return 0;
    }
    let text = format!("{secs:.3}");
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    whole
        .parse::<u128>()
        .ok()
        .and_then(|whole| whole.checked_mul(1000))
        .and_then(|m| m.checked_add(frac.parse().unwrap_or(0)))
        .unwrap_or(u128::MAX)
}

/// Writes a number of milliseconds as seconds with three decimals.
pub(super) fn push_millis(out: &mut String, millis: u128) {
    let _ = write!(out, "{}.{:03}", millis / 1000, millis % 1000);
}

fn not_run_message(reason: Option<&str>) -> String {
    match reason.map(str::trim) {
        Some(reason) if !reason.is_empty() => format!("not run: {reason}"),
        _ => "not run".to_owned(),
    }
}

fn push_detail_attrs(out: &mut String, element: &str, d: &Detail) {
    out.push('<');
    out.push_str(element);
    if let Some(message) = &d.message {
        out.push_str(" message=\"");
        escape_attr(message, out);
        out.push('"');
    }
    if let Some(kind) = &d.kind {
        out.push_str(" type=\"");
        escape_attr(kind, out);
        out.push('"');
    }
}

fn push_detail_element(out: &mut String, element: &str, d: &Detail) {
    push_detail_attrs(out, element, d);
    if d.body.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        escape_text(&d.body, out);
        let _ = write!(out, "</{element}>");
    }
}

fn push_rerun(out: &mut String, kind: RerunKind, case: &TestCase) {
    let mut d = case.outcome.detail().cloned().unwrap_or_default();
    if d.kind.as_deref() == Some(NOT_RUN_KIND) {
        d.message = Some(not_run_message(d.message.as_deref()));
    }
    let element = kind.element();
    push_detail_attrs(out, element, &d);
    if d.body.is_empty() && case.system_out.is_none() && case.system_err.is_none() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if !d.body.is_empty() {
        push_text_element(out, "stackTrace", &d.body);
    }
    if let Some(text) = &case.system_out {
        push_text_element(out, "system-out", text);
    }
    if let Some(text) = &case.system_err {
        push_text_element(out, "system-err", text);
    }
    let _ = write!(out, "</{element}>");
}

fn push_text_element(out: &mut String, element: &str, text: &str) {
    let _ = write!(out, "<{element}>");
    escape_text(text, out);
    let _ = write!(out, "</{element}>");
}

/// Whether XML 1.0 allows `c` in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text content. `\r` becomes `&#13;` because XML readers turn a literal
/// `\r\n` into `\n`. Terminal colour sequences (`ESC [ ... m` and the like) are dropped;
/// any other character XML forbids becomes U+FFFD.
fn escape_text(text: &str, out: &mut String) {
    escape(text, out, false);
}

/// Escapes an attribute value. Newlines, tabs and carriage returns are written as
/// character references so that a multi-line message survives a round trip (readers
/// turn literal ones into spaces).
pub(super) fn escape_attr(text: &str, out: &mut String) {
    escape(text, out, true);
}

fn escape(text: &str, out: &mut String, in_attr: bool) {
    // Most text (every test ID, say) needs nothing replaced.
    if !text
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | 0..=0x1f | 0x7f..))
    {
        out.push_str(text);
        return;
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\'' if in_attr => out.push_str("&apos;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\t' if in_attr => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            '\u{1b}' if chars.peek() == Some(&'[') => {
                // A CSI sequence: ESC [ parameters intermediates final-byte.
                chars.next();
                while chars
                    .next_if(|c| ('\u{30}'..='\u{3f}').contains(c))
                    .is_some()
                {}
                while chars
                    .next_if(|c| ('\u{20}'..='\u{2f}').contains(c))
                    .is_some()
                {}
                chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
            }
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory `{}`", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".offload-junit-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    tmp.write_all(bytes)
        .context("cannot write the temporary file")?;
    // Temporary files are private (0600); a report is meant to be read by others too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    // Renaming over an existing file makes ext4 write the new one to disk before the
    // rename returns (its `auto_da_alloc` safeguard), several milliseconds for a large
    // report. Removing the old report first avoids that; readers still never see a
    // partly written one.
    let _ = std::fs::remove_file(path);
    tmp.persist(path)
        .map_err(|e| e.error)
        .context("cannot move the temporary file in place")?;
    Ok(())
}
