//! Runs discovery for every group, concurrently, and collects [`TestRecord`]s.

use anyhow::Result;
use indexmap::IndexMap;

use super::{Framework, TestRecord};
use crate::config::GroupConfig;

/// Discovers the tests of every group (at most `max_concurrency` at once; 0 = CPUs).
/// Records come out in group order, then discovery order.
pub async fn discover(
    framework: &dyn Framework,
    groups: &IndexMap<String, GroupConfig>,
    max_concurrency: usize,
) -> Result<Vec<TestRecord>> {
    let _ = (framework, groups, max_concurrency);
    anyhow::bail!("discovery is not implemented yet")
}
