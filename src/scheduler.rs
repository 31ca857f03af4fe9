//! Batching: cuts the tests of a run into batches, longest first when durations are known.
//!
//! The scheduler is pure: it takes test indices with expected durations and returns
//! batches of indices. It never holds the same test twice in one batch, never builds a
//! batch whose IDs would overflow a command line, and never builds more batches than
//! needed to keep every sandbox busy. Retries are not scheduled here: the orchestrator
//! re-queues failed tests as they fail.
//!
//! With durations (from the previous report) it uses LPT: tests sorted longest first,
//! each placed in the least-loaded batch. Unknown tests weigh their group's mean, or
//! one second when the group has no known test, so with nothing known LPT degrades to
//! round-robin in discovery order.

use std::collections::HashMap;
use std::time::Duration;

/// Upper bound on the bytes of test IDs in one batch. A batch command often travels as a
/// single argument (`sh -c`, a remote exec), and Linux caps one argument at 128 KiB.
pub const MAX_BATCH_ID_BYTES: usize = 64 * 1024;

/// Duration assumed for a test of a group with no known duration at all.
pub const UNKNOWN_DURATION: Duration = Duration::from_secs(1);

/// One test to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// Its ID (only its length matters here).
    pub id: &'a str,
    /// Its group (unknown durations take the group's mean).
    pub group: &'a str,
    /// Whether it runs in a batch of its own.
    pub individual: bool,
}

/// A planned batch: indices into the item list, and its expected duration.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBatch {
    /// Indices of the items, in the order they were placed.
    pub items: Vec<usize>,
    /// Sum of the expected durations.
    pub load: Duration,
}

/// Expected duration of each item: the known one, else the group mean of known tests,
/// else [`UNKNOWN_DURATION`].
pub fn expected_durations(items: &[Item<'_>], known: &HashMap<String, f64>) -> Vec<Duration> {
    let mut sums: HashMap<&str, (f64, u32)> = HashMap::new();
    for item in items {
        if let Some(secs) = known
            .get(item.id)
            .copied()
            .filter(|s| s.is_finite() && *s >= 0.0)
        {
            let entry = sums.entry(item.group).or_default();
            entry.0 += secs;
            entry.1 += 1;
        }
    }
    items
        .iter()
        .map(|item| {
            match known
                .get(item.id)
                .copied()
                .filter(|s| s.is_finite() && *s >= 0.0)
            {
                Some(secs) => Duration::from_secs_f64(secs),
                None => match sums.get(item.group) {
                    Some(&(sum, n)) if n > 0 => Duration::from_secs_f64(sum / f64::from(n)),
                    _ => UNKNOWN_DURATION,
                },
            }
        })
        .collect()
}

/// Plans the batches for `items` over `parallel` sandboxes.
///
/// Individual items each get a batch; the others are spread over `parallel` batches
/// (fewer when there are fewer items) by LPT. A batch that would exceed
/// [`MAX_BATCH_ID_BYTES`] makes room for another. Batches come out longest first, so
/// the longest work starts first.
pub fn plan(items: &[Item<'_>], durations: &[Duration], parallel: usize) -> Vec<PlannedBatch> {
    debug_assert_eq!(items.len(), durations.len());
    let parallel = parallel.max(1);
    let mut batches: Vec<PlannedBatch> = Vec::new();
    let mut normal: Vec<usize> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.individual {
            batches.push(PlannedBatch {
                items: vec![i],
                load: durations[i],
            });
        } else {
            normal.push(i);
        }
    }

    // Stable sort: equal durations keep discovery order, so with nothing known the
    // placement below is round-robin.
    normal.sort_by_key(|&i| std::cmp::Reverse(durations[i]));
    let slots = parallel.min(normal.len());
    let mut lpt: Vec<(PlannedBatch, usize)> = (0..slots)
        .map(|_| {
            (
                PlannedBatch {
                    items: Vec::new(),
                    load: Duration::ZERO,
                },
                0,
            )
        })
        .collect();
    for i in normal {
        let len = items[i].id.len() + 1;
        let target = lpt
            .iter()
            .enumerate()
            .filter(|(_, (b, bytes))| b.items.is_empty() || bytes + len <= MAX_BATCH_ID_BYTES)
            .min_by_key(|(idx, (b, _))| (b.load, *idx))
            .map(|(idx, _)| idx);
        let target = match target {
            Some(t) => t,
            None => {
                lpt.push((
                    PlannedBatch {
                        items: Vec::new(),
                        load: Duration::ZERO,
                    },
                    0,
                ));
                lpt.len() - 1
            }
        };
        let (batch, bytes) = &mut lpt[target];
        batch.items.push(i);
        batch.load += durations[i];
        *bytes += len;
    }
    batches.extend(
        lpt.into_iter()
            .map(|(b, _)| b)
            .filter(|b| !b.items.is_empty()),
    );
    batches.sort_by_key(|b| std::cmp::Reverse(b.load));
    batches
}

/// Splits `tests` (indices of tests to retry) into at most `parts` batches of similar
/// expected duration, respecting [`MAX_BATCH_ID_BYTES`].
pub fn split_retries(
    tests: &[usize],
    items: &[Item<'_>],
    durations: &[Duration],
    parts: usize,
) -> Vec<PlannedBatch> {
    let sub_items: Vec<Item<'_>> = tests
        .iter()
        .map(|&i| Item {
            individual: false,
            ..items[i].clone()
        })
        .collect();
    let sub_durations: Vec<Duration> = tests.iter().map(|&i| durations[i]).collect();
    plan(&sub_items, &sub_durations, parts)
        .into_iter()
        .map(|b| PlannedBatch {
            items: b.items.into_iter().map(|j| tests[j]).collect(),
            load: b.load,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items<'a>(ids: &[&'a str]) -> Vec<Item<'a>> {
        ids.iter()
            .map(|id| Item {
                id,
                group: "g",
                individual: false,
            })
            .collect()
    }

    fn ids<'a>(items: &[Item<'a>], batches: &[PlannedBatch]) -> Vec<Vec<&'a str>> {
        batches
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id).collect())
            .collect()
    }

    #[test]
    fn unknown_durations_give_round_robin_in_discovery_order() {
        let items = items(&["a", "b", "c", "d", "e"]);
        let d = expected_durations(&items, &HashMap::new());
        let batches = plan(&items, &d, 2);
        assert_eq!(
            ids(&items, &batches),
            vec![vec!["a", "c", "e"], vec!["b", "d"]]
        );
    }

    #[test]
    fn lpt_puts_the_longest_tests_apart() {
        let items = items(&["fast", "medium", "slow"]);
        let known: HashMap<String, f64> = [("slow", 10.0), ("medium", 5.0), ("fast", 1.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let d = expected_durations(&items, &known);
        let batches = plan(&items, &d, 2);
        assert_eq!(
            ids(&items, &batches),
            vec![vec!["slow"], vec!["medium", "fast"]]
        );
        assert_eq!(batches[0].load, Duration::from_secs(10));
    }

    #[test]
    fn skewed_suite_is_balanced_near_the_lower_bound() {
        // 2 x 4 s, 10 x 1 s, 48 x 0.1 s over 4 sandboxes: lower bound max(4, 22.8/4) = 5.7 s.
        let names: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        let items: Vec<Item<'_>> = names
            .iter()
            .map(|n| Item {
                id: n,
                group: "g",
                individual: false,
            })
            .collect();
        let known: HashMap<String, f64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.clone(),
                    if i < 2 {
                        4.0
                    } else if i < 12 {
                        1.0
                    } else {
                        0.1
                    },
                )
            })
            .collect();
        let d = expected_durations(&items, &known);
        let batches = plan(&items, &d, 4);
        assert_eq!(batches.len(), 4);
        let max = batches.iter().map(|b| b.load).max().unwrap();
        assert!(
            max <= Duration::from_secs_f64(5.7 * 1.05),
            "max load {max:?}"
        );
    }

    #[test]
    fn unknown_tests_take_their_group_mean() {
        let items = vec![
            Item {
                id: "a",
                group: "slow",
                individual: false,
            },
            Item {
                id: "b",
                group: "slow",
                individual: false,
            },
            Item {
                id: "new",
                group: "slow",
                individual: false,
            },
            Item {
                id: "other",
                group: "fast",
                individual: false,
            },
        ];
        let known: HashMap<String, f64> = [("a", 2.0), ("b", 4.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let d = expected_durations(&items, &known);
        assert_eq!(d[2], Duration::from_secs(3));
        assert_eq!(d[3], UNKNOWN_DURATION);
    }

    #[test]
    fn never_more_batches_than_tests_and_individual_tests_alone() {
        let mut items = items(&["a", "b"]);
        items.push(Item {
            id: "solo",
            group: "g",
            individual: true,
        });
        let d = expected_durations(&items, &HashMap::new());
        let batches = plan(&items, &d, 8);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().any(|b| b.items == vec![2]));
        assert!(plan(&[], &[], 4).is_empty());
    }

    #[test]
    fn batches_stay_under_the_argument_limit() {
        let long: Vec<String> = (0..200).map(|i| format!("{i:0>1000}")).collect();
        let items: Vec<Item<'_>> = long
            .iter()
            .map(|n| Item {
                id: n,
                group: "g",
                individual: false,
            })
            .collect();
        let d = expected_durations(&items, &HashMap::new());
        let batches = plan(&items, &d, 1);
        assert!(batches.len() >= 4, "{} batches", batches.len());
        for b in &batches {
            let bytes: usize = b.items.iter().map(|&i| items[i].id.len() + 1).sum();
            assert!(bytes <= MAX_BATCH_ID_BYTES);
        }
        let total: usize = batches.iter().map(|b| b.items.len()).sum();
        assert_eq!(total, 200);
    }

    #[test]
    fn retries_are_split_over_free_sandboxes() {
        let items = items(&["a", "b", "c", "d"]);
        let d = expected_durations(&items, &HashMap::new());
        let batches = split_retries(&[1, 3], &items, &d, 4);
        assert_eq!(ids(&items, &batches), vec![vec!["b"], vec!["d"]]);
    }
}
