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
//!
//! The model ([`TestSuite`], [`TestCase`], ...) is in `model.rs`, the reader in
//! `parse.rs`, the writer in `write.rs`.

mod model;
mod parse;
mod write;

pub(crate) use model::*;
pub(crate) use parse::{MAX_DURATION_SECS, parse, read_durations};
pub(crate) use write::{RunInfo, hostname, write_merged};
#[cfg(test)]
pub(crate) use write::{push_timestamp, render_merged};

#[cfg(test)]
mod tests;
