//! The JUnit model: test suites, test cases and their outcomes, as read from a result
//! file and as the merged report is written from.

/// The `type` of the synthesized error of an attempt that produced no result (see
/// `crate::report::verdict`).
pub(crate) const NOT_RUN_KIND: &str = "offload.NotRun";

/// One `<testsuite>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TestSuite {
    /// `name` attribute.
    pub(crate) name: String,
    /// Its test cases, in document order.
    pub(crate) cases: Vec<TestCase>,
    /// `timestamp` attribute, as written.
    pub(crate) timestamp: Option<String>,
    /// The `name` and `value` of each `<property>` in its `<properties>`, in order.
    pub(crate) properties: Vec<(String, String)>,
}

/// One `<testcase>` as read from a result file.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TestCase {
    /// `name` attribute.
    pub(crate) name: String,
    /// `classname` attribute, if present.
    pub classname: Option<String>,
    /// `file` attribute (the test's source file), if present.
    pub file: Option<String>,
    /// `time` attribute in seconds (0 when missing).
    pub(crate) time: f64,
    /// What happened.
    pub(crate) outcome: CaseOutcome,
    /// `<system-out>` text.
    pub(crate) system_out: Option<String>,
    /// `<system-err>` text.
    pub(crate) system_err: Option<String>,
    /// Earlier failed attempts recorded in the case (`<flakyFailure>`, `<rerunFailure>`,
    /// ...), in document order. Empty in the files of test runners we drive.
    pub(crate) reruns: Vec<Rerun>,
}

/// The outcome of one test case.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum CaseOutcome {
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
    pub(crate) fn detail(&self) -> Option<&Detail> {
        match self {
            Self::Passed => None,
            Self::Failed(d) | Self::Error(d) | Self::Skipped(d) => Some(d),
        }
    }

    /// Whether this is a failure or an error.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self, Self::Failed(_) | Self::Error(_))
    }

    /// Whether this is the synthesized error of a test that produced no result
    /// (see [`super::verdict`]).
    pub(crate) fn is_not_run(&self) -> bool {
        matches!(self, Self::Error(d) if d.kind.as_deref() == Some(NOT_RUN_KIND))
    }

    /// When a testcase holds several outcome children, the highest rank wins.
    pub(super) fn rank(&self) -> u8 {
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
pub(crate) struct Detail {
    /// `message` attribute.
    pub(crate) message: Option<String>,
    /// `type` attribute.
    pub(crate) kind: Option<String>,
    /// Text content (CDATA included).
    pub(crate) body: String,
}

/// An earlier failed attempt recorded inside a testcase.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rerun {
    /// Which element it was.
    pub(crate) kind: RerunKind,
    /// `message` and `type` attributes; the body is the `<stackTrace>` child, or the
    /// element's own text when there is none.
    pub(crate) detail: Detail,
    /// Its `<system-out>` child.
    pub(crate) system_out: Option<String>,
    /// Its `<system-err>` child.
    pub(crate) system_err: Option<String>,
}

/// The four surefire rerun elements: a flaky test's failed attempts, and a failed test's
/// earlier failed attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum RerunKind {
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
    pub(super) fn element(self) -> &'static str {
        match self {
            Self::FlakyFailure => "flakyFailure",
            Self::FlakyError => "flakyError",
            Self::RerunFailure => "rerunFailure",
            Self::RerunError => "rerunError",
        }
    }

    /// Whether this records a failed attempt of a test that finally passed.
    pub(crate) fn is_flaky(self) -> bool {
        matches!(self, Self::FlakyFailure | Self::FlakyError)
    }

    pub(super) fn from_element(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"flakyFailure" => Self::FlakyFailure,
            b"flakyError" => Self::FlakyError,
            b"rerunFailure" => Self::RerunFailure,
            b"rerunError" => Self::RerunError,
            _ => return None,
        })
    }
}
