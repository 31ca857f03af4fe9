//! Results: JUnit XML parsing and writing, the run summary, and `offload logs`.
//!
//! [`junit`] reads the result files of batches and writes the merged report;
//! [`summary`] prints the `Test Results:` block; [`logs`] selects and formats what
//! `offload logs` shows; [`merge`] joins the reports of the parts of a partitioned run;
//! [`verdict`] holds the per-test outcome model the orchestrator
//! produces and everything here consumes.

pub(crate) mod junit;
pub(crate) mod logs;
pub(crate) mod merge;
pub(crate) mod output_dir;
pub(crate) mod summary;
pub(crate) mod verdict;
