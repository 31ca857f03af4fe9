//! Batching: cuts the tests of a run into batches, longest first when durations are known.
//!
//! The scheduler is pure: it takes tests with their expected durations and returns
//! batches of indices. It never holds the same test twice in one batch and never builds
//! more batches than there are tests. A batch may hold any number of tests: its
//! selection travels in a file, not on a command line (see
//! [`BatchCommand`](crate::framework::BatchCommand)). Retries are not scheduled here: the orchestrator re-queues failed
//! tests as they fail (see [`split_retries`]).
//!
//! Two regimes, because a batch costs a start-up (a process, a pytest collection, a
//! remote exec) that only pays off when the batch holds enough work:
//!
//! * **Durations known** (the previous report): LPT. Tests sorted longest first, each
//!   placed in the least-loaded of `parallel` batches, so each sandbox pays one start-up
//!   and the batches end together. Only tests that are long next to a batch's fair share
//!   are placed that way; the many short ones then top the batches up to the fair share
//!   in discovery order, so neighbours (tests of one pytest file, of one test binary)
//!   stay together and a batch loads fewer files — pytest collects a whole file for any
//!   one of its tests.
//! * **Nothing known** (a first run): round-robin in discovery order, which keeps
//!   neighbouring tests (often equally slow) apart. What is dealt out is not single
//!   tests but short stretches of neighbours that share a locality (one pytest file):
//!   a batch then loads a few files, not every file of the suite, and each batch still
//!   gets [`STRETCHES_PER_BATCH`] stretches from all over it. Twice as many batches as
//!   sandboxes when there are enough tests, so an idle sandbox picks up the next queued
//!   batch, which evens out the imbalance no estimate could prevent — at the price of
//!   one more start-up per sandbox. Sandboxes with CPUs of their own (remote ones) pay
//!   it always. Local sandboxes share this machine's CPUs, where every start-up
//!   competes with the tests, so they pay it only when it can buy balance: when each
//!   gets few tests ([`FEW_TESTS_PER_SANDBOX`]; the sum of many unknown durations
//!   strays less from its expectation than the sum of a few), and when there are at
//!   most [`SANDBOXES_PER_CPU_FOR_SPLIT`] sandboxes per CPU. Equal batches end
//!   together, so their second wave of start-ups lands at once: with many sandboxes
//!   per CPU that wave alone takes longer than the imbalance it could even out.
//!
//! Unknown tests among known ones weigh their group's mean, or [`UNKNOWN_DURATION`].
//! A known duration is what the report says plus [`PER_TEST_OVERHEAD`]: reports time a
//! test's own body, not the runner's work around it (collecting, reporting, a process
//! per test for nextest), and round a trivial test to zero. Without it a suite of
//! trivial tests looks like no work at all and one test that happens to report a few
//! milliseconds outweighs the rest.

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::report::junit::MAX_DURATION_SECS;

/// Duration assumed for a test of a group with no known duration at all.
const UNKNOWN_DURATION: Duration = Duration::from_secs(1);

/// Added to every known duration: the runner's own work per test, which no report
/// times (see the module docs).
const PER_TEST_OVERHEAD: Duration = Duration::from_millis(2);

/// With nothing known, batches per sandbox, when each batch still gets at least
/// [`MIN_TESTS_PER_SPLIT_BATCH`] tests.
const UNKNOWN_BATCHES_PER_SANDBOX: usize = 2;
const MIN_TESTS_PER_SPLIT_BATCH: usize = 4;

/// With nothing known, sandboxes that share this machine's CPUs get the finer split
/// only up to this many tests each.
const FEW_TESTS_PER_SANDBOX: usize = 32;

/// With nothing known, sandboxes that share this machine's CPUs get the finer split
/// only while there are at most this many of them per CPU.
const SANDBOXES_PER_CPU_FOR_SPLIT: usize = 2;

/// Whose CPUs the sandboxes run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cpus {
    /// Their own (remote sandboxes).
    Own,
    /// This machine's, this many of them (local sandboxes).
    Shared(usize),
}

/// With nothing known, the number of separate stretches of the suite a batch gets at
/// least (when there are enough tests): one slow stretch then weighs a fraction of a
/// batch.
const STRETCHES_PER_BATCH: usize = 16;

/// With durations known, a test longer than this share of a batch's fair load is
/// placed by LPT; shorter ones fill the batches in discovery order.
const SMALL_TEST_SHARE: f64 = 0.1;

/// One test to schedule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item<'a> {
    /// Its ID.
    pub(crate) id: &'a str,
    /// Its group (unknown durations take the group's mean).
    pub(crate) group: &'a str,
    /// Whether it runs in a batch of its own.
    pub(crate) individual: bool,
    /// What a batch loads whole for any one of its tests (see
    /// [`Framework::locality`](crate::framework::Framework::locality)).
    pub(crate) locality: Option<&'a str>,
}

/// A planned batch: indices into the item list, and its expected duration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedBatch {
    /// Indices of the items, in the order they were placed.
    pub(crate) items: Vec<usize>,
    /// Sum of the expected durations.
    pub(crate) load: Duration,
}

/// Expected durations of the items, and whether any was known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Estimates {
    /// Per item: the known duration plus [`PER_TEST_OVERHEAD`], else the group mean of
    /// those, else [`UNKNOWN_DURATION`].
    pub(crate) durations: Vec<Duration>,
    /// Whether at least one item had a known duration.
    pub(crate) any_known: bool,
}

/// Estimates each item's duration from `known` (seconds by ID).
pub(crate) fn estimate(items: &[Item<'_>], known: &FxHashMap<String, f64>) -> Estimates {
    // One lookup per test: at 20 000 tests the hashing is most of the planning time.
    let found: Vec<Option<f64>> = items
        .iter()
        .map(|item| {
            known
                .get(item.id)
                .copied()
                // The known durations come from a file anyone can edit: a time out of
                // range (which `Duration` cannot even hold) counts as unknown.
                .filter(|s| (0.0..=MAX_DURATION_SECS).contains(s))
                .map(|s| s + PER_TEST_OVERHEAD.as_secs_f64())
        })
        .collect();
    let mut sums: FxHashMap<&str, (f64, u32)> = FxHashMap::default();
    for (item, secs) in items.iter().zip(&found) {
        if let Some(secs) = secs {
            let entry = sums.entry(item.group).or_default();
            entry.0 += secs;
            entry.1 += 1;
        }
    }
    let durations = items
        .iter()
        .zip(found)
        .map(|(item, secs)| match secs {
            Some(secs) => Duration::try_from_secs_f64(secs).unwrap_or(UNKNOWN_DURATION),
            None => match sums.get(item.group) {
                Some(&(sum, n)) if n > 0 => {
                    Duration::try_from_secs_f64(sum / f64::from(n)).unwrap_or(UNKNOWN_DURATION)
                }
                _ => UNKNOWN_DURATION,
            },
        })
        .collect();
    Estimates {
        durations,
        any_known: !sums.is_empty(),
    }
}

/// Plans the batches for `items` over `parallel` sandboxes (see the module docs).
/// Batches come out longest first, so the longest work starts first.
///
/// `cpus` says whose CPUs the sandboxes run on, which decides whether the finer split
/// of a first run is worth its start-ups.
pub(crate) fn plan(
    items: &[Item<'_>],
    estimates: &Estimates,
    parallel: usize,
    cpus: Cpus,
) -> Vec<PlannedBatch> {
    let durations = &estimates.durations;
    debug_assert_eq!(items.len(), durations.len());
    // More sandboxes than tests is no use, and a huge `max_parallel` (any `usize` is a
    // valid setting) must not overflow the arithmetic below.
    let parallel = parallel.clamp(1, items.len().max(1));
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
    if estimates.any_known {
        batches.extend(lpt_then_fill(durations, &normal, parallel));
    } else {
        let per_sandbox = normal.len() / parallel;
        let worth_start_ups = match cpus {
            Cpus::Own => true,
            Cpus::Shared(n) => {
                per_sandbox <= FEW_TESTS_PER_SANDBOX
                    && parallel <= n.max(1) * SANDBOXES_PER_CPU_FOR_SPLIT
            }
        };
        let split = per_sandbox >= UNKNOWN_BATCHES_PER_SANDBOX * MIN_TESTS_PER_SPLIT_BATCH
            && worth_start_ups;
        let slots = if split {
            parallel * UNKNOWN_BATCHES_PER_SANDBOX
        } else {
            parallel
        };
        let units = stretches(items, &normal, slots);
        batches.extend(lpt(durations, units, slots));
    }
    batches.sort_by_key(|b| std::cmp::Reverse(b.load));
    batches
}

/// Splits `tests` (indices of tests to retry) into at most `parts` batches of similar
/// expected duration.
pub(crate) fn split_retries(
    tests: &[usize],
    durations: &[Duration],
    parts: usize,
) -> Vec<PlannedBatch> {
    lpt(
        durations,
        tests.iter().map(|&i| vec![i]).collect(),
        parts.max(1),
    )
}

/// Cuts `chosen` (in discovery order) into stretches of neighbours with the same
/// locality, each at most so long that every one of `slots` batches can get
/// [`STRETCHES_PER_BATCH`] of them. A locality longer than that is cut into pieces of
/// near-equal length; a test without locality is a stretch of its own.
fn stretches(items: &[Item<'_>], chosen: &[usize], slots: usize) -> Vec<Vec<usize>> {
    let max_len = chosen
        .len()
        .div_ceil(slots.max(1) * STRETCHES_PER_BATCH)
        .max(1);
    let mut units = Vec::new();
    let mut start = 0;
    while start < chosen.len() {
        let key = items[chosen[start]].locality;
        let end = match key {
            Some(key) => chosen[start..]
                .iter()
                .position(|&i| items[i].locality != Some(key))
                .map_or(chosen.len(), |n| start + n),
            None => start + 1,
        };
        let run = &chosen[start..end];
        let pieces = run.len().div_ceil(max_len);
        let (base, extra) = (run.len() / pieces, run.len() % pieces);
        let mut at = 0;
        for piece in 0..pieces {
            let len = base + usize::from(piece < extra);
            units.push(run[at..at + len].to_vec());
            at += len;
        }
        start = end;
    }
    units
}

/// LPT for the long tests, then the short ones in discovery order, each batch filled
/// to the fair share before the next least-loaded one takes over.
fn lpt_then_fill(durations: &[Duration], chosen: &[usize], slots: usize) -> Vec<PlannedBatch> {
    let slots = slots.min(chosen.len());
    if slots == 0 {
        return Vec::new();
    }
    let total: Duration = chosen.iter().map(|&i| durations[i]).sum();
    let fair = total / slots as u32;
    let threshold = fair.mul_f64(SMALL_TEST_SHARE);
    let (long, short): (Vec<usize>, Vec<usize>) =
        chosen.iter().partition(|&&i| durations[i] > threshold);
    let mut batches: Vec<PlannedBatch> = (0..slots).map(|_| open_batch()).collect();
    place(
        durations,
        &mut batches,
        long.into_iter().map(|i| vec![i]).collect(),
    );
    let mut current: Option<usize> = None;
    for i in short {
        let d = durations[i];
        let keep = current.filter(|&c| batches[c].load + d / 2 <= fair);
        let target = keep.unwrap_or_else(|| least_loaded(&batches));
        current = Some(target);
        let batch = &mut batches[target];
        batch.items.push(i);
        batch.load += d;
    }
    batches.retain(|b| !b.items.is_empty());
    batches
}

/// A batch being filled: no tests yet.
fn open_batch() -> PlannedBatch {
    PlannedBatch {
        items: Vec::new(),
        load: Duration::ZERO,
    }
}

/// The index of the least-loaded batch (the first of equals).
fn least_loaded(batches: &[PlannedBatch]) -> usize {
    batches
        .iter()
        .enumerate()
        .min_by_key(|(idx, b)| (b.load, *idx))
        .map_or(0, |(idx, _)| idx)
}

/// Places each unit, longest first, in the least-loaded batch.
fn place(durations: &[Duration], batches: &mut [PlannedBatch], mut units: Vec<Vec<usize>>) {
    let load_of = |unit: &[usize]| -> Duration { unit.iter().map(|&i| durations[i]).sum() };
    // Stable: equal loads keep discovery order, which makes equal loads round-robin.
    units.sort_by_key(|u| std::cmp::Reverse(load_of(u)));
    for unit in units {
        let batch = &mut batches[least_loaded(batches)];
        batch.load += load_of(&unit);
        batch.items.extend(unit);
    }
}

/// Longest-processing-time-first of `units` into `slots` batches. Equal loads in
/// discovery order make this round-robin.
fn lpt(durations: &[Duration], units: Vec<Vec<usize>>, slots: usize) -> Vec<PlannedBatch> {
    let slots = slots.min(units.len());
    let mut batches: Vec<PlannedBatch> = (0..slots).map(|_| open_batch()).collect();
    place(durations, &mut batches, units);
    batches.retain(|b| !b.items.is_empty());
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A test; an ID with `::` has its file as locality, like pytest's.
    fn item<'a>(id: &'a str) -> Item<'a> {
        Item {
            id,
            group: "g",
            individual: false,
            locality: id.split_once("::").map(|(file, _)| file),
        }
    }

    /// `n` pytest-like IDs `fF.py::tI`, `per_file` to a file.
    fn file_ids(n: usize, per_file: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("f{}.py::t{i}", i / per_file))
            .collect()
    }

    fn file_of<'a>(items: &[Item<'a>], i: usize) -> &'a str {
        items[i].id.split_once("::").map_or("", |(file, _)| file)
    }

    fn items<'a>(ids: &[&'a str]) -> Vec<Item<'a>> {
        ids.iter().map(|id| item(id)).collect()
    }

    fn ids<'a>(items: &[Item<'a>], batches: &[PlannedBatch]) -> Vec<Vec<&'a str>> {
        batches
            .iter()
            .map(|b| b.items.iter().map(|&i| items[i].id).collect())
            .collect()
    }

    fn known(pairs: &[(&str, f64)]) -> FxHashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn nothing_known_gives_round_robin_in_discovery_order() {
        let items = items(&["a", "b", "c", "d", "e"]);
        let est = estimate(&items, &FxHashMap::default());
        assert!(!est.any_known);
        let batches = plan(&items, &est, 2, Cpus::Own);
        assert_eq!(
            ids(&items, &batches),
            vec![vec!["a", "c", "e"], vec!["b", "d"]]
        );
    }

    #[test]
    fn nothing_known_and_many_tests_gives_two_batches_per_sandbox() {
        let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            4,
            Cpus::Own,
        );
        assert_eq!(batches.len(), 8);
        // Neighbours stay apart: t0 and t1 are in different batches.
        let of = |id: &str| {
            batches
                .iter()
                .position(|b| b.items.iter().any(|&i| items[i].id == id))
        };
        assert_ne!(of("t0"), of("t1"));
        // Few tests: one batch per sandbox.
        let batches = plan(
            &items[..20],
            &estimate(&items[..20], &FxHashMap::default()),
            4,
            Cpus::Own,
        );
        assert_eq!(batches.len(), 4);
        // Sandboxes sharing this machine's CPUs: the finer split only for few tests
        // per sandbox.
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            4,
            Cpus::Shared(8),
        );
        assert_eq!(batches.len(), 8);
        let names: Vec<String> = (0..400).map(|i| format!("t{i}")).collect();
        let many: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let batches = plan(
            &many,
            &estimate(&many, &FxHashMap::default()),
            4,
            Cpus::Shared(8),
        );
        assert_eq!(batches.len(), 4);
        let batches = plan(&many, &estimate(&many, &FxHashMap::default()), 4, Cpus::Own);
        assert_eq!(batches.len(), 8);
    }

    #[test]
    fn nothing_known_and_many_sandboxes_per_cpu_gives_one_batch_per_sandbox() {
        // 240 tests over 8 local sandboxes: few tests each, but on 2 CPUs a second wave
        // of 8 start-ups would cost more than any balance it buys.
        let names: Vec<String> = (0..240).map(|i| format!("t{i}")).collect();
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let est = estimate(&items, &FxHashMap::default());
        assert_eq!(plan(&items, &est, 8, Cpus::Shared(2)).len(), 8);
        assert_eq!(plan(&items, &est, 8, Cpus::Shared(4)).len(), 16);
        let fewer = &items[..100];
        let est_fewer = estimate(fewer, &FxHashMap::default());
        assert_eq!(plan(fewer, &est_fewer, 4, Cpus::Shared(2)).len(), 8);
        // A machine that reports no CPU count counts as one CPU.
        assert_eq!(plan(&items, &est, 2, Cpus::Shared(0)).len(), 2);
        assert_eq!(plan(&items, &est, 8, Cpus::Own).len(), 16);
    }

    #[test]
    fn nothing_known_keeps_stretches_of_a_file_together() {
        // 40 files x 50 tests over 2 sandboxes: each batch loads about half the files,
        // not all 40, and still gets stretches from all over the suite.
        let names = file_ids(2000, 50);
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            2,
            Cpus::Shared(8),
        );
        assert_eq!(batches.len(), 2);
        for b in &batches {
            let files: HashSet<&str> = b.items.iter().map(|&i| file_of(&items, i)).collect();
            assert!(files.len() <= 22, "a batch loads {} files", files.len());
            assert_eq!(b.items.len(), 1000);
            assert!(files.contains("f0.py") || files.contains("f1.py"));
            assert!(files.contains("f38.py") || files.contains("f39.py"));
        }
        // Few tests per file: a file is dealt out test by test.
        let names = file_ids(60, 10);
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            4,
            Cpus::Shared(8),
        );
        let of = |id: &str| {
            batches
                .iter()
                .position(|b| b.items.iter().any(|&i| items[i].id == id))
        };
        assert_ne!(of("f0.py::t0"), of("f0.py::t1"));
    }

    #[test]
    fn lpt_puts_the_longest_tests_apart() {
        let items = items(&["fast", "medium", "slow"]);
        let est = estimate(
            &items,
            &known(&[("slow", 10.0), ("medium", 5.0), ("fast", 1.0)]),
        );
        let batches = plan(&items, &est, 2, Cpus::Own);
        assert_eq!(
            ids(&items, &batches),
            vec![vec!["slow"], vec!["medium", "fast"]]
        );
        assert_eq!(batches[0].load, Duration::from_secs(10) + PER_TEST_OVERHEAD);
    }

    #[test]
    fn skewed_suite_is_balanced_near_the_lower_bound() {
        // 2 x 4 s, 10 x 1 s, 48 x 0.1 s over 4 sandboxes: lower bound max(4, 22.8/4) = 5.7 s.
        // Ten tests per file, so the two 4 s tests share a file.
        let names = file_ids(60, 10);
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let durations: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.as_str(),
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
        let batches = plan(&items, &estimate(&items, &known(&durations)), 4, Cpus::Own);
        assert_eq!(batches.len(), 4);
        let max = batches.iter().map(|b| b.load).max().unwrap();
        assert!(
            max <= Duration::from_secs_f64(5.7 * 1.05),
            "max load {max:?}"
        );
    }

    #[test]
    fn tests_of_one_file_stay_together_when_loads_allow() {
        // 4 files x 50 tests of equal, tiny duration over 2 sandboxes: each batch gets
        // two whole files, not a share of every file.
        let names = file_ids(200, 50);
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let durations: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 0.001)).collect();
        let batches = plan(&items, &estimate(&items, &known(&durations)), 2, Cpus::Own);
        assert_eq!(batches.len(), 2);
        for b in &batches {
            let files: HashSet<&str> = b.items.iter().map(|&i| file_of(&items, i)).collect();
            assert_eq!(files.len(), 2, "a batch loads {files:?}");
            assert_eq!(b.items.len(), 100);
        }
    }

    #[test]
    fn trivial_tests_reported_as_zero_still_split_evenly() {
        // pytest reports 0.000 for a trivial test; one that reports 39 ms (the first of
        // a file, say) must not look like all the work there is.
        let names = file_ids(2000, 50);
        let items: Vec<Item<'_>> = names.iter().map(|n| item(n)).collect();
        let durations: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), if i == 1234 { 0.039 } else { 0.0 }))
            .collect();
        let batches = plan(
            &items,
            &estimate(&items, &known(&durations)),
            2,
            Cpus::Shared(8),
        );
        assert_eq!(batches.len(), 2);
        for b in &batches {
            assert!(
                (950..=1050).contains(&b.items.len()),
                "batch sizes {:?}",
                batches.iter().map(|b| b.items.len()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn unknown_tests_take_their_group_mean() {
        let items = vec![
            Item {
                id: "a",
                group: "slow",
                individual: false,
                locality: None,
            },
            Item {
                id: "b",
                group: "slow",
                individual: false,
                locality: None,
            },
            Item {
                id: "new",
                group: "slow",
                individual: false,
                locality: None,
            },
            Item {
                id: "other",
                group: "fast",
                individual: false,
                locality: None,
            },
        ];
        let est = estimate(&items, &known(&[("a", 2.0), ("b", 4.0)]));
        assert!(est.any_known);
        assert_eq!(est.durations[2], Duration::from_secs(3) + PER_TEST_OVERHEAD);
        assert_eq!(est.durations[3], UNKNOWN_DURATION);
    }

    #[test]
    fn out_of_range_durations_count_as_unknown() {
        // Before: `1e20` seconds panicked in `Duration::from_secs_f64`.
        let ids = ["huge", "max", "neg", "nan", "inf", "ok"];
        let items: Vec<Item<'_>> = ids
            .iter()
            .map(|id| Item {
                id,
                group: "g",
                individual: false,
                locality: None,
            })
            .collect();
        let known = known(&[
            ("huge", 1e20),
            ("max", 1.8e19),
            ("neg", -1.0),
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("ok", 2.0),
        ]);
        let est = estimate(&items, &known);
        let ok = Duration::from_secs(2) + PER_TEST_OVERHEAD;
        // The bad ones get the group mean of the good ones.
        assert_eq!(est.durations, vec![ok; ids.len()]);
        let batches = plan(&items, &est, 2, Cpus::Shared(8));
        assert_eq!(
            batches.iter().map(|b| b.items.len()).sum::<usize>(),
            ids.len()
        );
    }

    #[test]
    fn any_parallelism_plans_every_test_once() {
        // Found by fuzzing: `max_parallel = 9223372036854775807` overflowed.
        let items = items(&["a", "b", "c"]);
        let est = estimate(&items, &FxHashMap::default());
        for parallel in [0, 1, 3, usize::MAX / 2, usize::MAX] {
            let batches = plan(&items, &est, parallel, Cpus::Own);
            let mut planned: Vec<usize> = batches.iter().flat_map(|b| b.items.clone()).collect();
            planned.sort_unstable();
            assert_eq!(planned, [0, 1, 2], "parallel = {parallel}");
        }
    }

    #[test]
    fn never_more_batches_than_tests_and_individual_tests_alone() {
        let mut items = items(&["a", "b"]);
        items.push(Item {
            id: "solo",
            group: "g",
            individual: true,
            locality: None,
        });
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            8,
            Cpus::Own,
        );
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().any(|b| b.items == vec![2]));
        assert!(plan(&[], &estimate(&[], &FxHashMap::default()), 4, Cpus::Own).is_empty());
    }

    #[test]
    fn a_batch_holds_any_number_of_bytes_of_ids() {
        let long: Vec<String> = (0..200).map(|i| format!("{i:0>1000}")).collect();
        let items: Vec<Item<'_>> = long.iter().map(|n| item(n)).collect();
        let batches = plan(
            &items,
            &estimate(&items, &FxHashMap::default()),
            1,
            Cpus::Shared(8),
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].items.len(), 200);
    }

    #[test]
    fn retries_are_split_over_free_sandboxes() {
        let items = items(&["a", "b", "c", "d"]);
        let est = estimate(&items, &FxHashMap::default());
        let batches = split_retries(&[1, 3], &est.durations, 4);
        assert_eq!(ids(&items, &batches), vec![vec!["b"], vec!["d"]]);
    }
}
