//! JUnit XML: a lenient parser for batch result files and the merged-report writer.
//!
//! [`parse`] reads what pytest, cargo-nextest and other runners write, and reads back our
//! own merged report: `<testsuite>` elements wherever they are, their `<testcase>`s with
//! `<failure>`, `<error>` and `<skipped>` (self-closing or not, CDATA kept, entities
//! decoded), per-test `<system-out>` / `<system-err>`, and the surefire rerun elements
//! (`<flakyFailure>`, `<flakyError>`, `<rerunFailure>`, `<rerunError>`). Malformed XML is
//! an error that says where; it never yields a partial result.
//!
//! [`write_merged`] writes the report of a whole run: one `<testcase>` per test with its
//! final verdict (see its docs for the layout). [`read_durations`] reads test times back
//! for the scheduler. Deciding verdicts is not done here (see [`super::verdict`]).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, BytesText, Event};
use rustc_hash::FxHashMap;

use super::verdict::{Attempt, NOT_RUN_KIND, TestResult, Verdict};

/// One `<testsuite>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSuite {
    /// `name` attribute.
    pub name: String,
    /// Its test cases, in document order.
    pub cases: Vec<TestCase>,
}

/// One `<testcase>` as read from a result file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestCase {
    /// `name` attribute.
    pub name: String,
    /// `classname` attribute, if present.
    pub classname: Option<String>,
    /// `time` attribute in seconds (0 when missing).
    pub time: f64,
    /// What happened.
    pub outcome: CaseOutcome,
    /// `<system-out>` text.
    pub system_out: Option<String>,
    /// `<system-err>` text.
    pub system_err: Option<String>,
    /// Earlier failed attempts recorded in the case (`<flakyFailure>`, `<rerunFailure>`,
    /// ...), in document order. Empty in the files of test runners we drive.
    pub reruns: Vec<Rerun>,
}

/// The outcome of one test case.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CaseOutcome {
    /// No failure, error or skipped child.
    #[default]
    Passed,
    /// A `<failure>` child.
    Failed(Detail),
    /// An `<error>` child.
    Error(Detail),
    /// A `<skipped>` child.
    Skipped(Detail),
}

impl CaseOutcome {
    /// The detail of a failure, error or skip; `None` for a pass.
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            Self::Passed => None,
            Self::Failed(d) | Self::Error(d) | Self::Skipped(d) => Some(d),
        }
    }

    /// Whether this is a failure or an error.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failed(_) | Self::Error(_))
    }

    /// Whether this is the synthesized error of a test that produced no result
    /// (see [`super::verdict`]).
    pub fn is_not_run(&self) -> bool {
        matches!(self, Self::Error(d) if d.kind.as_deref() == Some(NOT_RUN_KIND))
    }

    /// When a testcase holds several outcome children, the highest rank wins.
    fn rank(&self) -> u8 {
        match self {
            Self::Passed => 0,
            Self::Skipped(_) => 1,
            Self::Error(_) => 2,
            Self::Failed(_) => 3,
        }
    }
}

/// The message and body of a `<failure>`, `<error>` or `<skipped>` element.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// `message` attribute.
    pub message: Option<String>,
    /// `type` attribute.
    pub kind: Option<String>,
    /// Text content (CDATA included).
    pub body: String,
}

/// An earlier failed attempt recorded inside a testcase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rerun {
    /// Which element it was.
    pub kind: RerunKind,
    /// `message` and `type` attributes; the body is the `<stackTrace>` child, or the
    /// element's own text when there is none.
    pub detail: Detail,
    /// Its `<system-out>` child.
    pub system_out: Option<String>,
    /// Its `<system-err>` child.
    pub system_err: Option<String>,
}

/// The four surefire rerun elements: a flaky test's failed attempts, and a failed test's
/// earlier failed attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RerunKind {
    /// `<flakyFailure>`: a failed attempt of a test that passed later.
    #[default]
    FlakyFailure,
    /// `<flakyError>`: an errored attempt of a test that passed later.
    FlakyError,
    /// `<rerunFailure>`: an earlier failed attempt of a test that failed.
    RerunFailure,
    /// `<rerunError>`: an earlier errored attempt of a test that failed.
    RerunError,
}

impl RerunKind {
    /// The element name.
    pub fn element(self) -> &'static str {
        match self {
            Self::FlakyFailure => "flakyFailure",
            Self::FlakyError => "flakyError",
            Self::RerunFailure => "rerunFailure",
            Self::RerunError => "rerunError",
        }
    }

    /// Whether this records a failed attempt of a test that finally passed.
    pub fn is_flaky(self) -> bool {
        matches!(self, Self::FlakyFailure | Self::FlakyError)
    }

    fn from_element(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"flakyFailure" => Self::FlakyFailure,
            b"flakyError" => Self::FlakyError,
            b"rerunFailure" => Self::RerunFailure,
            b"rerunError" => Self::RerunError,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Parses a JUnit XML document into its test suites, in document order.
///
/// Lenient about content (unknown elements and attributes are ignored, a missing or
/// unparsable `time` is 0, an undefined entity is kept as written, a testcase outside any
/// suite goes into a suite named ""), strict about structure: malformed XML, a truncated
/// file or a document without any element is an error naming the line and column.
pub fn parse(xml: &str) -> Result<Vec<TestSuite>> {
    let mut reader = Reader::from_str(xml);
    let mut parser = Parser::default();
    let mut seen_element = false;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(err) => {
                let at = Position::of(xml, reader.error_position());
                bail!("malformed junit xml at {at}: {err}");
            }
        };
        let at = reader.buffer_position();
        match event {
            Event::Start(e) => {
                seen_element = true;
                parser.start(&e, at).map_err(|err| located(xml, at, err))?;
            }
            Event::Empty(e) => {
                seen_element = true;
                parser.start(&e, at).map_err(|err| located(xml, at, err))?;
                parser.end();
            }
            Event::End(_) => parser.end(),
            Event::Text(t) => parser.text(&unescape_lenient(&t)),
            Event::CData(c) => parser.text(&String::from_utf8_lossy(&c.into_inner())),
            Event::Eof => break,
            // Declarations, comments, processing instructions and doctypes carry nothing.
            _ => {}
        }
    }
    if let Some(open) = parser.frames.last() {
        bail!(
            "malformed junit xml: the file ends before `<{}>` (opened at {}) is closed; \
             was the test runner stopped while writing it?",
            tag_name_before(xml, open.at),
            Position::of(xml, open.at)
        );
    }
    if !seen_element {
        bail!("malformed junit xml: no element found (is the file empty?)");
    }
    Ok(parser.suites)
}

/// The name of the start tag that ends at byte `end` of `xml` (`<` cannot occur
/// unescaped inside a tag, so the last one before `end` opens it).
fn tag_name_before(xml: &str, end: u64) -> &str {
    let end = usize::try_from(end).unwrap_or(usize::MAX).min(xml.len());
    let start = xml[..end].rfind('<').map_or(end, |i| i + 1);
    let tag = &xml[start..end];
    tag.split(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .next()
        .unwrap_or("")
}

/// The longest test time, in seconds, taken as a real duration (a week). A report is
/// user input: a larger, negative or non-numeric `time` means nothing for scheduling.
pub const MAX_DURATION_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// For every testcase `name` in the JUnit file at `path`, the largest `time` seen.
///
/// Durations are only a scheduling hint, so a missing file gives an empty map, and so does
/// an unreadable one (with a debug log). A `time` that is not a number from 0 to
/// [`MAX_DURATION_SECS`] (`1e20`, `-1`, `NaN`, `inf`) leaves its test's duration unknown,
/// with one warning naming the file.
pub fn read_durations(path: &Path) -> FxHashMap<String, f64> {
    let mut durations = FxHashMap::default();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!("no test durations from `{}`: {err}", path.display());
            }
            return durations;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    // How many times were out of range, and the first of them.
    let mut rejected: (usize, Option<(String, String)>) = (0, None);
    let complete = scan_testcases(&text, |name, time| {
        let time = match time {
            None => 0.0,
            Some(raw) => match parse_time(raw).filter(|t| *t <= MAX_DURATION_SECS) {
                Some(t) => t,
                None => {
                    rejected.0 += 1;
                    if rejected.1.is_none() {
                        rejected.1 = Some((name.into_owned(), raw.to_owned()));
                    }
                    return;
                }
            },
        };
        match durations.get_mut(name.as_ref()) {
            Some(slot) => *slot = f64::max(*slot, time),
            None => {
                durations.insert(name.into_owned(), time);
            }
        }
    });
    if let (n, Some((name, raw))) = rejected {
        tracing::warn!(
            "previous report `{}`: {n} testcase time{} not seconds from 0 to {MAX_DURATION_SECS} \
             (e.g. `time=\"{}\"` of `{}`); those tests count as of unknown duration for scheduling",
            path.display(),
            if n == 1 { " is" } else { "s are" },
            crate::output::ellipsize(&raw, 40),
            crate::output::ellipsize(&name, 200),
        );
    }
    if !complete {
        tracing::debug!(
            "test durations from `{}` end at a malformed `<testcase>`",
            path.display()
        );
    }
    durations
}

/// Calls `found` with the `name` (entities decoded) and raw `time` attributes of every
/// `<testcase>` start tag in `xml` that has a name, in document order. Returns false if
/// it stopped at a tag it could not read.
///
/// A plain scan for the tag rather than an XML parser: the previous report of a large
/// suite is read on every run, and this is several times faster. It cannot tell a tag
/// from the same text inside a comment or CDATA section, which at worst gives a wrong
/// hint.
fn scan_testcases(xml: &str, mut found: impl FnMut(Cow<'_, str>, Option<&str>)) -> bool {
    const TAG: &str = "<testcase";
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let finder = memchr::memmem::Finder::new(TAG);
    let mut rest = xml;
    while let Some(at) = finder.find(rest.as_bytes()) {
        rest = &rest[at + TAG.len()..];
        if !rest.starts_with(|c: char| is_space(c) || c == '/' || c == '>') {
            continue; // `<testcases`, say
        }
        let (mut name, mut time) = (None, None);
        loop {
            rest = rest.trim_start_matches(is_space);
            if rest.starts_with('>') || rest.starts_with("/>") {
                break;
            }
            let Some(eq) = rest.find('=') else {
                return false;
            };
            let key = rest[..eq].trim_end_matches(is_space);
            rest = rest[eq + 1..].trim_start_matches(is_space);
            let Some(quote) = rest.chars().next().filter(|q| matches!(q, '"' | '\'')) else {
                return false;
            };
            let Some(len) = rest[1..].find(quote) else {
                return false;
            };
            if key.contains(['<', '>']) {
                return false;
            }
            let value = &rest[1..1 + len];
            rest = &rest[len + 2..];
            match key {
                "name" if name.is_none() => name = Some(value),
                "time" if time.is_none() => time = Some(value),
                _ => {}
            }
        }
        if let Some(name) = name {
            let name = if name.contains('&') {
                quick_xml::escape::unescape(name).unwrap_or(Cow::Borrowed(name))
            } else {
                Cow::Borrowed(name)
            };
            found(name, time);
        }
    }
    true
}

/// A line and column (1-based, column in bytes) in a document.
struct Position {
    line: usize,
    column: usize,
}

impl Position {
    fn of(text: &str, offset: u64) -> Self {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Self {
            line,
            column: offset - line_start + 1,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn located(xml: &str, at: u64, err: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("malformed junit xml at {}: {err}", Position::of(xml, at))
}

/// Text with entities resolved; an entity XML does not define (`&nbsp;` from an HTML-minded
/// tool) keeps the text as written rather than losing the whole file.
fn unescape_lenient(text: &BytesText<'_>) -> String {
    match text.unescape() {
        Ok(s) => s.into_owned(),
        Err(_) => String::from_utf8_lossy(text).into_owned(),
    }
}

/// What an open element means to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Suite(usize),
    Case,
    Outcome,
    CaseOut,
    CaseErr,
    Rerun,
    RerunTrace,
    RerunOut,
    RerunErr,
    Other,
}

struct Frame {
    role: Role,
    at: u64,
}

/// The rerun element being read: its detail, plus its own text and `<stackTrace>` text.
struct OpenRerun {
    rerun: Rerun,
    own_text: String,
    stack_trace: Option<String>,
}

#[derive(Default)]
struct Parser {
    suites: Vec<TestSuite>,
    frames: Vec<Frame>,
    /// The suite that holds testcases found outside any `<testsuite>`.
    implicit_suite: Option<usize>,
    /// The open testcase and the suite it goes into.
    case: Option<(usize, TestCase)>,
    outcome: Option<CaseOutcome>,
    rerun: Option<OpenRerun>,
}

impl Parser {
    fn start(&mut self, e: &BytesStart<'_>, at: u64) -> Result<()> {
        let local = e.local_name();
        let name = local.as_ref();
        let parent = self.frames.last().map(|f| f.role);
        let role = match (parent, name) {
            (Some(Role::Case), b"failure" | b"error" | b"skipped") => {
                let [message, kind] = attrs(e, [b"message", b"type"])?;
                let detail = Detail {
                    message: message.map(Cow::into_owned),
                    kind: kind.map(Cow::into_owned),
                    body: String::new(),
                };
                self.outcome = Some(match name {
                    b"failure" => CaseOutcome::Failed(detail),
                    b"error" => CaseOutcome::Error(detail),
                    _ => CaseOutcome::Skipped(detail),
                });
                Role::Outcome
            }
            (Some(Role::Case), b"system-out") => {
                self.case_output(true);
                Role::CaseOut
            }
            (Some(Role::Case), b"system-err") => {
                self.case_output(false);
                Role::CaseErr
            }
            (Some(Role::Case), _) => match RerunKind::from_element(name) {
                Some(kind) => {
                    let [message, detail_kind] = attrs(e, [b"message", b"type"])?;
                    self.rerun = Some(OpenRerun {
                        rerun: Rerun {
                            kind,
                            detail: Detail {
                                message: message.map(Cow::into_owned),
                                kind: detail_kind.map(Cow::into_owned),
                                body: String::new(),
                            },
                            system_out: None,
                            system_err: None,
                        },
                        own_text: String::new(),
                        stack_trace: None,
                    });
                    Role::Rerun
                }
                None => Role::Other,
            },
            (Some(Role::Rerun), b"stackTrace") => {
                if let Some(open) = &mut self.rerun {
                    open.stack_trace.get_or_insert_with(String::new);
                }
                Role::RerunTrace
            }
            (Some(Role::Rerun), b"system-out") => {
                if let Some(open) = &mut self.rerun {
                    open.rerun.system_out.get_or_insert_with(String::new);
                }
                Role::RerunOut
            }
            (Some(Role::Rerun), b"system-err") => {
                if let Some(open) = &mut self.rerun {
                    open.rerun.system_err.get_or_insert_with(String::new);
                }
                Role::RerunErr
            }
            (None | Some(Role::Suite(_) | Role::Other), b"testsuite") if self.case.is_none() => {
                let [name] = attrs(e, [b"name"])?;
                self.suites.push(TestSuite {
                    name: name.map(Cow::into_owned).unwrap_or_default(),
                    cases: Vec::new(),
                });
                Role::Suite(self.suites.len() - 1)
            }
            (None | Some(Role::Suite(_) | Role::Other), b"testcase") if self.case.is_none() => {
                let suite = self.enclosing_suite();
                let [name, classname, time] = attrs(e, [b"name", b"classname", b"time"])?;
                let case = TestCase {
                    name: name.map(Cow::into_owned).unwrap_or_default(),
                    classname: classname.map(Cow::into_owned),
                    time: time.as_deref().and_then(parse_time).unwrap_or(0.0),
                    ..TestCase::default()
                };
                self.case = Some((suite, case));
                Role::Case
            }
            _ => Role::Other,
        };
        self.frames.push(Frame { role, at });
        Ok(())
    }

    fn end(&mut self) {
        let Some(frame) = self.frames.pop() else {
            return;
        };
        match frame.role {
            Role::Case => {
                if let Some((suite, case)) = self.case.take() {
                    self.suites[suite].cases.push(case);
                }
            }
            Role::Outcome => {
                if let (Some(outcome), Some((_, case))) = (self.outcome.take(), &mut self.case) {
                    // pytest writes a `<failure>` and an `<error>` for a test that failed
                    // and then errored in teardown: the failure is what the user needs.
                    if outcome.rank() > case.outcome.rank() {
                        case.outcome = outcome;
                    }
                }
            }
            Role::Rerun => {
                if let (Some(open), Some((_, case))) = (self.rerun.take(), &mut self.case) {
                    let mut rerun = open.rerun;
                    // Pretty-printers put whitespace between the children: not a body.
                    rerun.detail.body = match open.stack_trace {
                        Some(trace) => trace,
                        None if open.own_text.trim().is_empty() => String::new(),
                        None => open.own_text,
                    };
                    case.reruns.push(rerun);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        let Some(role) = self.frames.last().map(|f| f.role) else {
            return;
        };
        let target = match role {
            Role::Outcome => match &mut self.outcome {
                Some(CaseOutcome::Failed(d) | CaseOutcome::Error(d) | CaseOutcome::Skipped(d)) => {
                    Some(&mut d.body)
                }
                _ => None,
            },
            Role::CaseOut => self.case.as_mut().and_then(|(_, c)| c.system_out.as_mut()),
            Role::CaseErr => self.case.as_mut().and_then(|(_, c)| c.system_err.as_mut()),
            Role::Rerun => self.rerun.as_mut().map(|r| &mut r.own_text),
            Role::RerunTrace => self.rerun.as_mut().and_then(|r| r.stack_trace.as_mut()),
            Role::RerunOut => self
                .rerun
                .as_mut()
                .and_then(|r| r.rerun.system_out.as_mut()),
            Role::RerunErr => self
                .rerun
                .as_mut()
                .and_then(|r| r.rerun.system_err.as_mut()),
            Role::Suite(_) | Role::Case | Role::Other => None,
        };
        if let Some(target) = target {
            target.push_str(text);
        }
    }

    fn case_output(&mut self, stdout: bool) {
        if let Some((_, case)) = &mut self.case {
            let slot = if stdout {
                &mut case.system_out
            } else {
                &mut case.system_err
            };
            slot.get_or_insert_with(String::new);
        }
    }

    fn enclosing_suite(&mut self) -> usize {
        if let Some(i) = self.frames.iter().rev().find_map(|f| match f.role {
            Role::Suite(i) => Some(i),
            _ => None,
        }) {
            return i;
        }
        *self.implicit_suite.get_or_insert_with(|| {
            self.suites.push(TestSuite::default());
            self.suites.len() - 1
        })
    }
}

/// The values of the attributes `names` of `e`, read in one pass, borrowed from the
/// document unless they hold an entity to decode.
fn attrs<'e, const N: usize>(
    e: &'e BytesStart<'_>,
    names: [&[u8]; N],
) -> Result<[Option<Cow<'e, str>>; N]> {
    let mut values: [Option<Cow<'e, str>>; N] = std::array::from_fn(|_| None);
    for a in e.attributes() {
        let a = a.with_context(|| {
            format!(
                "bad attribute in `<{}>`",
                String::from_utf8_lossy(e.name().as_ref())
            )
        })?;
        let key = a.key.local_name();
        if let Some(slot) = names.iter().position(|n| *n == key.as_ref()) {
            if values[slot].is_none() {
                values[slot] = Some(match a.unescape_value() {
                    Ok(v) => v,
                    Err(_) => Cow::Owned(String::from_utf8_lossy(&a.value).into_owned()),
                });
            }
        }
    }
    Ok(values)
}

/// A `time` attribute in seconds: `None` unless it is a finite number of 0 or more.
fn parse_time(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
}

// ---------------------------------------------------------------------------------------
// Writing the merged report
// ---------------------------------------------------------------------------------------

/// Writes the merged report of a run to `path` through a temporary file in the same
/// directory that is renamed in once complete (the old report is removed just before),
/// creating parent directories. No reader ever sees a partly written report.
///
/// Layout: `<testsuites name="offload" tests failures errors skipped time>` holding one
/// `<testsuite>` per group (in order of first appearance in `results`), each test once, in
/// the order given, as `<testcase name="<ID>" classname time>`:
///
/// * `classname` is the framework's classname of the final attempt when known, else the
///   group name; `time` is the final attempt's (see [`TestResult::final_attempt`]).
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
/// Counts are per unique test: `failures` counts failed tests, `errors` errored tests and
/// tests not run.
/// The root `time` is `total_time`, a suite's the sum of its tests' times.
pub fn write_merged(path: &Path, results: &[TestResult], total_time: Duration) -> Result<()> {
    let xml = render_merged(results, total_time);
    write_atomically(path, xml.as_bytes())
        .with_context(|| format!("cannot write the junit report `{}`", path.display()))
}

/// The text [`write_merged`] writes.
pub fn render_merged(results: &[TestResult], total_time: Duration) -> String {
    let mut groups: Vec<(&str, Vec<&TestResult>)> = Vec::new();
    for result in results {
        match groups.iter_mut().find(|(g, _)| *g == result.group) {
            Some((_, members)) => members.push(result),
            None => groups.push((&result.group, vec![result])),
        }
    }

    let mut out = String::with_capacity(256 + results.len() * 128);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<testsuites name=\"offload\"");
    push_counts(&mut out, results.iter());
    let _ = writeln!(out, " time=\"{:.3}\">", total_time.as_secs_f64());
    for (group, members) in &groups {
        out.push_str("  <testsuite name=\"");
        escape_attr(group, &mut out);
        out.push('"');
        push_counts(&mut out, members.iter().copied());
        let time: f64 = members.iter().map(|r| case_time(r)).sum();
        let _ = writeln!(out, " time=\"{time:.3}\">");
        for result in members {
            push_testcase(&mut out, result);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
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

fn case_time(result: &TestResult) -> f64 {
    result.final_attempt().map_or(0.0, |a| a.case.time)
}

fn push_testcase(out: &mut String, result: &TestResult) {
    let last = result.final_attempt();
    let case = last.map(|a| &a.case);
    out.push_str("    <testcase name=\"");
    escape_attr(&result.id, out);
    out.push_str("\" classname=\"");
    escape_attr(
        case.and_then(|c| c.classname.as_deref())
            .unwrap_or(&result.group),
        out,
    );
    out.push_str("\" time=\"");
    push_seconds(out, case_time(result));
    out.push('"');

    let detail = || {
        case.and_then(|c| c.outcome.detail())
            .cloned()
            .unwrap_or_default()
    };
    let outcome: Option<(&str, Detail)> = match result.verdict {
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
    };
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

/// Writes `secs` as `{:.3}` would. Formatting floats is most of the time spent rendering
/// a large report, so the common case goes through integer milliseconds. Below 10^8 ms
/// the product is exact to 10^-8, so only values within 10^-6 of a rounding tie (where
/// the two roundings could differ) and larger ones need the exact path.
fn push_seconds(out: &mut String, secs: f64) {
    let millis = secs * 1000.0;
    let near_tie = (millis.fract() - 0.5).abs() < 1e-6;
    if (0.0..1e8).contains(&millis) && !near_tie {
        let millis = millis.round() as u64;
        let _ = write!(out, "{}.{:03}", millis / 1000, millis % 1000);
    } else {
        let _ = write!(out, "{secs:.3}");
    }
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
fn escape_attr(text: &str, out: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let case = only_case(
            r#"<testsuite name="s"><testcase name="a"><skipped/></testcase></testsuite>"#,
        );
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
        let suites =
            parse(r#"<testsuites><testcase name="lonely" time="x"/></testsuites>"#).unwrap();
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
            3.999_999_9,
        ];
        values.extend((0..20_000).map(|i| f64::from(i) * 0.000_37));
        for secs in values {
            let mut out = String::new();
            push_seconds(&mut out, secs);
            assert_eq!(out, format!("{secs:.3}"), "{secs}");
        }
    }

    fn case(outcome: CaseOutcome, time: f64) -> TestCase {
        TestCase {
            name: String::new(),
            classname: None,
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
        let xml = render_merged(&results, Duration::from_millis(6010));
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="offload" tests="3" failures="1" errors="1" skipped="0" time="6.010">
  <testsuite name="unit" tests="2" failures="1" errors="0" skipped="0" time="2.500">
    <testcase name="t::a" classname="tests.test_a" time="0.500"/>
    <testcase name="t::b" classname="unit" time="2.000">
      <failure message="second" type="AssertionError">trace</failure>
      <rerunFailure message="first" type="AssertionError"/>
    </testcase>
  </testsuite>
  <testsuite name="slow" tests="1" failures="0" errors="1" skipped="0" time="0.000">
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
        let xml = render_merged(&results, Duration::ZERO);
        assert!(xml.contains(r#"<testsuites name="offload" tests="2" failures="0" errors="0" skipped="1" time="0.000">"#), "{xml}");
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
        let xml = render_merged(&results, Duration::ZERO);
        assert!(xml.contains(r#"name="id &lt;&amp;&quot;&gt;""#), "{xml}");
        assert!(xml.contains(
            r#"message="line 1&#10;line 2&#9;&quot;q&quot; &apos;a&apos; &lt;b&gt; &amp; &#13;""#
        ), "{xml}");
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
        write_merged(&path, &results, Duration::from_secs(3)).unwrap();
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
        write_merged(&path, &results[..1], Duration::ZERO).unwrap();
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
        let err = write_merged(&blocker.join("junit.xml"), &[], Duration::ZERO).unwrap_err();
        assert!(format!("{err:#}").contains("junit.xml"), "{err:#}");
    }
}
