//! Runs discovery for every group, concurrently, and collects [`TestRecord`]s.
//!
//! One discovery command per `[groups.NAME]`, run locally through
//! [`crate::process::capture`], at most `max_concurrency` at once. The framework
//! builds each command and parses its output; this module only runs them, reports
//! empty groups as warnings and names the group in errors.

use std::collections::HashSet;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;

use std::sync::Mutex;

use super::cache::DiscoveryCache;
use super::{Discovered, Framework, TestRecord};
use crate::config::GroupConfig;
use crate::process;

/// Discovers the tests of every group (at most `max_concurrency` at once; 0 = CPUs).
/// Records come out in group order, then discovery order.
///
/// The first failing group (in group order) fails the whole discovery with
/// `discovery failed for group `NAME`: ...` and the tool's own output. An empty group
/// is a warning, not an error.
pub(crate) async fn discover(
    framework: &dyn Framework,
    groups: &IndexMap<String, GroupConfig>,
    max_concurrency: usize,
) -> Result<Vec<TestRecord>> {
    discover_with_cache(framework, groups, max_concurrency, None, &|| {}).await
}

/// Like [`discover`], answering from `cache` where it holds a group's result and
/// storing what it had to run (the caller saves the cache). `running` is called each
/// time a discovery command starts, that is when the cache did not answer.
pub(crate) async fn discover_with_cache(
    framework: &dyn Framework,
    groups: &IndexMap<String, GroupConfig>,
    max_concurrency: usize,
    cache: Option<&Mutex<DiscoveryCache>>,
    running: &(dyn Fn() + Sync),
) -> Result<Vec<TestRecord>> {
    let limit = match max_concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // `buffered` keeps at most `limit` discoveries running and yields them in group
    // order; on the first error the rest are dropped, which kills their children.
    let per_group: Vec<Vec<TestRecord>> = futures::stream::iter(groups)
        .map(|(name, group)| async move {
            let discovered = discover_group(framework, name, group, cache, running)
                .await
                .with_context(|| format!("discovery failed for group `{name}`"))?;
            if let Some(warning) = &discovered.warning {
                if discovered.ids.is_empty() {
                    tracing::warn!("group `{name}` selected no tests: {warning}");
                } else {
                    tracing::warn!("group `{name}`: {warning}");
                }
            } else if discovered.ids.is_empty() {
                tracing::warn!("group `{name}` selected no tests");
            }
            let ignored = discovered.ignored.into_iter().map(|id| (id, true));
            Ok::<_, anyhow::Error>(
                discovered
                    .ids
                    .into_iter()
                    .map(|id| (id, false))
                    .chain(ignored)
                    .map(|(id, ignored)| TestRecord {
                        id,
                        group: name.clone(),
                        retry_count: group.retry_count,
                        schedule_individual: group.schedule_individual,
                        ignored,
                    })
                    .collect(),
            )
        })
        .buffered(limit.max(1))
        .try_collect()
        .await?;
    let mut per_group = per_group.into_iter();
    let mut records = per_group.next().unwrap_or_default();
    for more in per_group {
        records.extend(more);
    }
    Ok(records)
}

/// The cache, even if a panicking holder poisoned it (its data stays consistent).
fn lock(cache: &Mutex<DiscoveryCache>) -> std::sync::MutexGuard<'_, DiscoveryCache> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one group's discovery command (unless the cache has its result) and parses
/// its output.
async fn discover_group(
    framework: &dyn Framework,
    name: &str,
    group: &GroupConfig,
    cache: Option<&Mutex<DiscoveryCache>>,
    running: &(dyn Fn() + Sync),
) -> Result<Discovered> {
    let command = framework.discover_command(&group.filters)?;
    let key = format!("{name}\u{1f}{}", command.display());
    let Some(cache) = cache else {
        return run_discovery(framework, &command, running).await;
    };
    if let Some(hit) = lock(cache).get(&key) {
        tracing::info!("group `{name}`: reusing the previous discovery (nothing changed since)");
        return Ok(hit);
    }
    let trace_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let trace = trace_dir.path().join("trace");
    let mut traced = command.clone();
    let (discovered, inputs) = match framework.trace_discovery(&mut traced, &trace) {
        Ok(false) => (
            run_discovery(framework, &command, running).await?,
            Vec::new(),
        ),
        Ok(true) => {
            let discovered = run_discovery(framework, &traced, running).await?;
            let root = std::env::current_dir().context("cannot read the current directory")?;
            let own = crate::bundled::cache_dir();
            let Some(inputs) = super::cache::traced_inputs(&trace, &root, &own) else {
                tracing::info!(
                    "group `{name}`: discovery left no trace of what it read (is `command` \
                     pytest?), so its result is not cached"
                );
                return Ok(discovered);
            };
            (discovered, inputs)
        }
        Err(err) => {
            tracing::info!("group `{name}`: discovery is not cached: {err:#}");
            return run_discovery(framework, &command, running).await;
        }
    };
    lock(cache).put(&key, &discovered, inputs);
    Ok(discovered)
}

/// Runs `command` and parses its output.
async fn run_discovery(
    framework: &dyn Framework,
    command: &process::CommandSpec,
    running: &(dyn Fn() + Sync),
) -> Result<Discovered> {
    tracing::debug!("discovering with `{}`", command.display());
    running();
    // Discovery has no timeout: collecting a large suite may legitimately take long.
    let output = process::capture(command, None).await?;
    framework.parse_discovery(command, &output)
}

/// Keeps the first record of each ID: a test selected by two groups runs once, in the
/// first group (with the larger retry count of the two).
pub(crate) fn dedupe(mut records: Vec<TestRecord>) -> Vec<TestRecord> {
    // (first record, later record with the same ID), found without copying any ID.
    let mut first: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
    first.reserve(records.len());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match first.entry(&record.id) {
            std::collections::hash_map::Entry::Occupied(e) => repeats.push((*e.get(), i)),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    drop(first);
    if repeats.is_empty() {
        return records;
    }
    let mut warned: HashSet<(&str, &str)> = HashSet::new();
    let mut drop_at = vec![false; records.len()];
    for &(i, later) in &repeats {
        let (kept, again) = (&records[i], &records[later]);
        if warned.insert((&kept.group, &again.group)) {
            tracing::warn!(
                "groups `{}` and `{}` select the same tests (e.g. `{}`); each runs once, in group `{}`",
                kept.group,
                again.group,
                again.id,
                kept.group
            );
        }
        drop_at[later] = true;
    }
    for (i, later) in repeats {
        records[i].retry_count = records[i].retry_count.max(records[later].retry_count);
    }
    records
        .into_iter()
        .zip(drop_at)
        .filter_map(|(record, dropped)| (!dropped).then_some(record))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_in_two_groups_runs_once() {
        let rec = |id: &str, group: &str, retry_count| TestRecord {
            id: id.to_owned(),
            group: group.to_owned(),
            retry_count,
            schedule_individual: false,
            ignored: false,
        };
        let out = dedupe(vec![
            rec("a", "g1", 0),
            rec("b", "g1", 0),
            rec("a", "g2", 3),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].group, "g1");
        assert_eq!(out[0].retry_count, 3);
    }
    use crate::framework::DefaultFrameworkConfig;
    use crate::framework::default::DefaultFramework;

    fn shell_framework(discover: &str) -> DefaultFramework {
        DefaultFramework::new(&DefaultFrameworkConfig {
            discover_command: discover.to_owned(),
            run_command: "true".to_owned(),
            result_file: None,
            working_dir: None,
            test_id_format: "{name}".to_owned(),
        })
    }

    fn group(filters: &str, retry_count: u32, schedule_individual: bool) -> GroupConfig {
        GroupConfig {
            retry_count,
            filters: filters.to_owned(),
            schedule_individual,
        }
    }

    #[tokio::test]
    async fn records_follow_group_order_and_carry_group_settings() {
        // The first group finishes last; order must still be group order.
        let fw = shell_framework("sleep {filters}; echo a{filters}; echo b{filters}");
        let mut groups = IndexMap::new();
        groups.insert("slow".to_owned(), group("0.3", 2, true));
        groups.insert("fast".to_owned(), group("0", 0, false));
        groups.insert("none".to_owned(), group("0; exit 0 #", 1, false));
        let records = discover(&fw, &groups, 0).await.unwrap();
        let got: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.group.as_str(),
                    r.retry_count,
                    r.schedule_individual,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a0.3", "slow", 2, true),
                ("b0.3", "slow", 2, true),
                ("a0", "fast", 0, false),
                ("b0", "fast", 0, false),
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_group_names_itself() {
        let fw = shell_framework("echo fine; [ -z '{filters}' ] || { echo oops >&2; exit 2; }");
        let mut groups = IndexMap::new();
        groups.insert("ok".to_owned(), group("", 0, false));
        groups.insert("unit".to_owned(), group("x", 0, false));
        let err = discover(&fw, &groups, 1).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("discovery failed for group `unit`: `sh -c ")
                && msg.contains("exited with code 2:\noops"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let fw = shell_framework("x");
        let mut spec = fw.discover_command("").unwrap();
        spec.program = "definitely-not-a-program-offload".to_owned();
        let err = process::capture(&spec, None).await.unwrap_err().to_string();
        assert!(
            err.contains("`definitely-not-a-program-offload`") && err.contains("hint"),
            "{err}"
        );
    }
}
