//! JUnit XML: a lenient parser for batch result files and the merged-report writer.

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

// LEAD-STUB: replaced by the report branch.
/// Parses JUnit XML.
pub fn parse(_xml: &str) -> anyhow::Result<Vec<TestSuite>> {
    anyhow::bail!("not implemented")
}
