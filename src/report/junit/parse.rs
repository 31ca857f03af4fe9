//! The lenient JUnit reader ([`parse`]) and the fast duration scan of a previous report
//! ([`read_durations`]).

use std::borrow::Cow;
use std::path::Path;

use anyhow::{Context, Result, bail};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, BytesText, Event};
use rustc_hash::FxHashMap;

use super::model::*;

/// Parses a JUnit XML document into its test suites, in document order.
///
/// Lenient about content (unknown elements and attributes are ignored, a missing or
/// unparsable `time` is 0, an undefined entity is kept as written, a testcase outside any
/// suite goes into a suite named ""), strict about structure: malformed XML, a truncated
/// file or a document without any element is an error naming the line and column.
pub(crate) fn parse(xml: &str) -> Result<Vec<TestSuite>> {
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
pub(crate) const MAX_DURATION_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// For every testcase `name` in the JUnit file at `path`, the largest `time` seen.
///
/// Durations are only a scheduling hint, so a missing file gives an empty map, and so does
/// an unreadable one (with a debug log). A `time` that is not a number from 0 to
/// [`MAX_DURATION_SECS`] (`1e20`, `-1`, `NaN`, `inf`) leaves its test's duration unknown,
/// with one warning naming the file.
pub(crate) fn read_durations(path: &Path) -> FxHashMap<String, f64> {
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
pub(super) fn scan_testcases(xml: &str, mut found: impl FnMut(Cow<'_, str>, Option<&str>)) -> bool {
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
    Properties(usize),
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
                let [name, timestamp] = attrs(e, [b"name", b"timestamp"])?;
                self.suites.push(TestSuite {
                    name: name.map(Cow::into_owned).unwrap_or_default(),
                    timestamp: timestamp.map(Cow::into_owned),
                    ..TestSuite::default()
                });
                Role::Suite(self.suites.len() - 1)
            }
            (Some(Role::Suite(suite)), b"properties") => Role::Properties(suite),
            (Some(Role::Properties(suite)), b"property") => {
                let [name, value] = attrs(e, [b"name", b"value"])?;
                if let Some(name) = name {
                    self.suites[suite].properties.push((
                        name.into_owned(),
                        value.map(Cow::into_owned).unwrap_or_default(),
                    ));
                }
                Role::Other
            }
            (None | Some(Role::Suite(_) | Role::Other), b"testcase") if self.case.is_none() => {
                let suite = self.enclosing_suite();
                let [name, classname, file, time] =
                    attrs(e, [b"name", b"classname", b"file", b"time"])?;
                let case = TestCase {
                    name: name.map(Cow::into_owned).unwrap_or_default(),
                    classname: classname.map(Cow::into_owned),
                    file: file.map(Cow::into_owned),
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
            Role::Suite(_) | Role::Properties(_) | Role::Case | Role::Other => None,
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
