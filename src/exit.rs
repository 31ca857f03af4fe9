//! The process exit codes, in one table.
//!
//! Every path that ends the process maps to one of these; no other code is ever used.
//! A command-line usage error is [`FAILURE`], never 2, because scripts read 2 as
//! "passed, some flaky".

/// Every test passed (or there was nothing to run).
pub(crate) const SUCCESS: i32 = 0;
/// Tests failed or were not run, or an error stopped the command.
pub(crate) const FAILURE: i32 = 1;
/// Every test passed, but some only after a retry.
pub(crate) const FLAKY: i32 = 2;
/// The run was stopped by SIGINT (128 + 2).
pub(crate) const INTERRUPTED: i32 = 130;
/// The run was stopped by SIGTERM (128 + 15).
pub(crate) const TERMINATED: i32 = 143;
