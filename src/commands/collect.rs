//! `offload collect`: discover and list tests.

use std::path::Path;

use anyhow::Result;

/// Discovers the tests of every group and prints them (JSON alone on stdout with `json`).
pub async fn run(config: &Path, json: bool) -> Result<i32> {
    let _ = (config, json);
    anyhow::bail!("`offload collect` is not implemented yet")
}

// LEAD-STUB: replaced by the framework branch.
/// Prints the per-group listing.
pub fn print_listing<'a>(
    records: &[crate::framework::TestRecord],
    groups: impl Iterator<Item = &'a str>,
) {
    let _ = (records, groups.count());
}
