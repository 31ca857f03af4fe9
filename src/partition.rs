//! Sharding a run across CI jobs: `offload run --partition K/N` keeps the K-th of N
//! parts of the selected tests, so that N jobs together run every test exactly once.
//!
//! Every job computes the parts itself, from what it discovered and the durations it
//! knows, so the parts depend on nothing else: not on the order discovery listed the
//! tests in, not on the machine, not on Rust's randomized hashing. Two modes:
//!
//! * **Balanced** (`K/N`, or `count:K/N`, nextest's spelling): longest-processing-time
//!   first over the N parts. Tests sorted longest first (equal durations by ID), each
//!   placed in the least-loaded part (equal loads: the lowest part). Durations are
//!   estimated as the scheduler does ([`scheduler::estimate`]): a known one plus the
//!   per-test overhead, an unknown test its group's mean. With nothing known every test
//!   weighs the same, which deals the tests out round-robin in ID order. The jobs must
//!   see the same discovery and the same durations.
//! * **Hash** (`hash:K/N`): a test is in part `h(ID) mod N + 1`, `h` a fixed 64-bit hash
//!   of the ID's UTF-8 bytes ([`stable_hash`]). A test's part depends on its ID alone,
//!   so suites whose discovery differs between machines (tests that exist only on some
//!   platforms, say) still run each test they share once; the parts are balanced only
//!   in count, and only on average.
//!
//! `K` counts from 1, like nextest's `--partition count:K/N`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::framework::TestRecord;
use crate::scheduler::{self, Item};

/// How the tests are dealt into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Balanced by expected duration (LPT over the parts).
    Balanced,
    /// By a stable hash of the test ID.
    Hash,
}

/// One part of a partitioned run: the `k`-th (from 1) of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    /// How tests are dealt into parts.
    pub(crate) mode: Mode,
    /// This part, from 1 to `n`.
    pub(crate) k: usize,
    /// The number of parts, at least 1.
    pub(crate) n: usize,
}

/// The forms a `--partition` value may take, for messages.
pub(crate) const FORMS: &str = "K/N (balanced by duration; `count:K/N` is the same) or hash:K/N, \
     with 1 <= K <= N, e.g. `2/4`";

impl FromStr for Partition {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{why}; expected {FORMS}");
        let (mode, rest) = match value.split_once(':') {
            None => (Mode::Balanced, value),
            Some(("count", rest)) => (Mode::Balanced, rest),
            Some(("hash", rest)) => (Mode::Hash, rest),
            Some((other, _)) => {
                return Err(bad(&format!(
                    "unknown partition mode `{other}` (modes: `count`, `hash`)"
                )));
            }
        };
        let Some((k, n)) = rest.split_once('/') else {
            return Err(bad("no `/` between K and N"));
        };
        let number = |s: &str, what: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(&format!("{what} `{s}` is not a whole number")))
        };
        let (k, n) = (number(k, "K")?, number(n, "N")?);
        if n == 0 {
            return Err(bad("N is the number of parts and must be at least 1"));
        }
        if k == 0 {
            return Err(bad("K counts from 1"));
        }
        if k > n {
            return Err(bad(&format!(
                "part {k} does not exist when there are {n} parts"
            )));
        }
        Ok(Self { mode, k, n })
    }
}

impl fmt::Display for Partition {
    /// `K/N` or `hash:K/N`: what the report records and `--partition` accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            Mode::Balanced => write!(f, "{}/{}", self.k, self.n),
            Mode::Hash => write!(f, "hash:{}/{}", self.k, self.n),
        }
    }
}

impl Partition {
    /// Keeps the tests of this part in `records` (in their order) and returns how many
    /// tests the whole plan had. `known` holds the known durations in seconds by ID.
    pub(crate) fn retain(
        &self,
        records: &mut Vec<TestRecord>,
        known: &FxHashMap<String, f64>,
    ) -> usize {
        let total = records.len();
        let parts = assign(records, known, self.mode, self.n);
        let mut part = parts.into_iter();
        records.retain(|_| part.next() == Some(self.k - 1));
        total
    }
}

/// The part (from 0) of each record among `n` parts.
pub(crate) fn assign(
    records: &[TestRecord],
    known: &FxHashMap<String, f64>,
    mode: Mode,
    n: usize,
) -> Vec<usize> {
    let n = n.max(1);
    match mode {
        Mode::Hash => records
            .iter()
            // `n` fits in a u64 and the remainder is below `n`: both casts are exact.
            .map(|r| (stable_hash(&r.id) % n as u64) as usize)
            .collect(),
        Mode::Balanced => balanced(records, known, n),
    }
}

/// LPT over `n` parts (see the module docs).
fn balanced(records: &[TestRecord], known: &FxHashMap<String, f64>, n: usize) -> Vec<usize> {
    // Sorted by ID first: the estimate's group means are sums of floats, whose last bits
    // depend on the order they are added in, and equal durations are placed in ID order.
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&records[a], &records[b]);
        a.id.cmp(&b.id).then_with(|| a.group.cmp(&b.group))
    });
    let items: Vec<Item<'_>> = order
        .iter()
        .map(|&i| Item {
            id: &records[i].id,
            group: &records[i].group,
            individual: false,
            locality: None,
        })
        .collect();
    let durations = scheduler::estimate(&items, known).durations;
    let mut longest_first: Vec<usize> = (0..items.len()).collect();
    // Stable: equal durations stay in ID order.
    longest_first.sort_by_key(|&i| Reverse(durations[i]));
    // Parts beyond the number of tests stay empty: no need to hold them (N may be huge).
    let slots = n.min(records.len());
    let mut loads: BinaryHeap<Reverse<(Duration, usize)>> =
        (0..slots).map(|p| Reverse((Duration::ZERO, p))).collect();
    let mut parts = vec![0; records.len()];
    for i in longest_first {
        let Some(Reverse((load, part))) = loads.pop() else {
            break;
        };
        parts[order[i]] = part;
        loads.push(Reverse((load.saturating_add(durations[i]), part)));
    }
    parts
}

/// A 64-bit hash of `id`'s UTF-8 bytes that is the same on every machine, platform and
/// build: FNV-1a, then the MurmurHash3 finalizer so that the low bits (which `mod N`
/// keeps) depend on every input byte.
pub(crate) fn stable_hash(id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(id: &str, group: &str) -> TestRecord {
        TestRecord::of(id, group)
    }

    fn records(ids: &[&str]) -> Vec<TestRecord> {
        ids.iter().map(|id| record(id, "g")).collect()
    }

    fn known(pairs: &[(&str, f64)]) -> FxHashMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    /// The IDs of each part, in record order.
    fn parts<'a>(records: &'a [TestRecord], assigned: &[usize], n: usize) -> Vec<Vec<&'a str>> {
        let mut parts = vec![Vec::new(); n];
        for (r, &p) in records.iter().zip(assigned) {
            parts[p].push(r.id.as_str());
        }
        parts
    }

    #[test]
    fn values_parse_in_every_form() {
        let p = |s: &str| s.parse::<Partition>();
        let balanced = |k, n| Partition {
            mode: Mode::Balanced,
            k,
            n,
        };
        assert_eq!(p("2/4"), Ok(balanced(2, 4)));
        assert_eq!(p("count:1/1"), Ok(balanced(1, 1)));
        assert_eq!(
            p("hash:3/3"),
            Ok(Partition {
                mode: Mode::Hash,
                k: 3,
                n: 3
            })
        );
        assert_eq!(p("2/4").unwrap().to_string(), "2/4");
        assert_eq!(p("count:2/4").unwrap().to_string(), "2/4");
        assert_eq!(p("hash:1/2").unwrap().to_string(), "hash:1/2");
    }

    #[test]
    fn bad_values_say_what_is_wrong_and_the_valid_form() {
        let cases = [
            ("0/3", "K counts from 1"),
            ("3/2", "part 3 does not exist when there are 2 parts"),
            ("1/0", "N is the number of parts and must be at least 1"),
            ("0/0", "N is the number of parts"),
            ("x/3", "K `x` is not a whole number"),
            ("1/y", "N `y` is not a whole number"),
            ("-1/3", "K `-1` is not a whole number"),
            ("hash:0/2", "K counts from 1"),
            ("foo:1/2", "unknown partition mode `foo`"),
            ("2", "no `/`"),
            ("", "no `/`"),
            ("1/99999999999999999999999", "not a whole number"),
        ];
        for (value, why) in cases {
            let err = value.parse::<Partition>().unwrap_err();
            assert!(err.contains(why), "{value}: {err}");
            assert!(err.contains("expected K/N"), "{value}: {err}");
        }
    }

    #[test]
    fn lpt_balances_known_durations() {
        // The bench's skewed suite: 2 x 4 s, 10 x 1 s, 48 x 0.1 s in 4 parts. Perfect
        // balance is 5.7 s a part; LPT gets within a test of it.
        let ids: Vec<String> = (0..60)
            .map(|i| format!("tests/test_f{}.py::test_{i}", i / 10))
            .collect();
        let durations: Vec<(&str, f64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let d = match i {
                    0..2 => 4.0,
                    2..12 => 1.0,
                    _ => 0.1,
                };
                (id.as_str(), d)
            })
            .collect();
        let recs: Vec<TestRecord> = ids.iter().map(|id| record(id, "g")).collect();
        let known = known(&durations);
        let assigned = assign(&recs, &known, Mode::Balanced, 4);
        let mut loads = [0.0f64; 4];
        for (r, &p) in recs.iter().zip(&assigned) {
            loads[p] += known[&r.id];
        }
        for load in loads {
            assert!((5.5..=5.9).contains(&load), "loads {loads:?}");
        }
        // The two 4 s tests are apart.
        assert_ne!(assigned[0], assigned[1]);
    }

    #[test]
    fn longest_first_then_ties_by_id() {
        let recs = records(&["c", "a", "d", "b", "e"]);
        let known = known(&[("a", 5.0), ("b", 3.0), ("c", 3.0), ("d", 2.0), ("e", 1.0)]);
        let assigned = assign(&recs, &known, Mode::Balanced, 2);
        // a:5 -> 0; b:3 -> 1; c:3 -> 1 (3 < 5); d:2 -> 0 (5 < 6); e:1 -> 1 (6 < 7).
        assert_eq!(
            parts(&recs, &assigned, 2),
            vec![vec!["a", "d"], vec!["c", "b", "e"]]
        );
    }

    #[test]
    fn nothing_known_deals_round_robin_in_id_order() {
        let recs = records(&["e", "d", "c", "b", "a"]);
        let assigned = assign(&recs, &FxHashMap::default(), Mode::Balanced, 2);
        assert_eq!(
            parts(&recs, &assigned, 2),
            vec![vec!["e", "c", "a"], vec!["d", "b"]]
        );
    }

    #[test]
    fn unknown_tests_weigh_their_groups_mean() {
        // `new` is unknown in a group whose mean is 9 s: it comes second, after the 10 s
        // test and before the 8 s one, each into an empty part.
        let recs = vec![
            record("slow1", "slow"),
            record("slow2", "slow"),
            record("new", "slow"),
            record("mid", "other"),
            record("tiny", "other"),
        ];
        let known = known(&[("slow1", 8.0), ("slow2", 10.0), ("mid", 5.0), ("tiny", 0.1)]);
        let assigned = assign(&recs, &known, Mode::Balanced, 3);
        // slow2:10 -> 0, new:9 -> 1, slow1:8 -> 2, mid:5 -> 2 (8 is the least load),
        // tiny -> 1 (9 < 10 < 13).
        assert_eq!(assigned, vec![2, 0, 1, 2, 1]);
    }

    #[test]
    fn more_parts_than_tests_leaves_parts_empty() {
        let recs = records(&["a", "b"]);
        for mode in [Mode::Balanced, Mode::Hash] {
            let assigned = assign(&recs, &FxHashMap::default(), mode, usize::MAX);
            assert_eq!(assigned.len(), 2);
        }
        let assigned = assign(&recs, &FxHashMap::default(), Mode::Balanced, 5);
        assert_eq!(assigned, vec![0, 1]);
        let mut keep = recs.clone();
        let p: Partition = "3/5".parse().unwrap();
        assert_eq!(p.retain(&mut keep, &FxHashMap::default()), 2);
        assert!(keep.is_empty());
    }

    #[test]
    fn the_hash_is_fixed_across_platforms_and_builds() {
        // Pinned values, computed independently (FNV-1a 64 and MurmurHash3's fmix64 in
        // Python): a change here moves tests between the parts of CI jobs that run
        // different Offload versions.
        assert_eq!(stable_hash(""), 0xefd0_1f60_ba99_2926);
        assert_eq!(
            stable_hash("tests/test_a.py::test_one"),
            0x4eb5_1566_5a47_a874
        );
        assert_eq!(
            stable_hash("tests/test_é.py::test[1-ü]"),
            0x1936_a39d_b3fd_0baf
        );
        assert_ne!(stable_hash("a"), stable_hash("b"));
    }

    #[test]
    fn the_hash_spreads_ids_evenly() {
        let ids: Vec<String> = (0..4000)
            .map(|i| format!("tests/test_m{}.py::test_{i}", i / 40))
            .collect();
        let recs: Vec<TestRecord> = ids.iter().map(|id| record(id, "g")).collect();
        let assigned = assign(&recs, &FxHashMap::default(), Mode::Hash, 4);
        let mut counts = [0usize; 4];
        for p in assigned {
            counts[p] += 1;
        }
        for c in counts {
            assert!((900..=1100).contains(&c), "counts {counts:?}");
        }
    }

    /// Records with IDs from `ids` (deduplicated) spread over a few groups, and known
    /// durations for some of them.
    fn suite() -> impl Strategy<Value = (Vec<TestRecord>, FxHashMap<String, f64>)> {
        proptest::collection::btree_map(
            "[a-e]{1,4}",
            (0u8..3, proptest::option::of(0.0f64..20.0)),
            0..40,
        )
        .prop_map(|tests| {
            let mut known = FxHashMap::default();
            let records = tests
                .into_iter()
                .map(|(id, (group, secs))| {
                    if let Some(secs) = secs {
                        known.insert(id.clone(), secs);
                    }
                    record(&id, &format!("g{group}"))
                })
                .collect();
            (records, known)
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(256))]

        #[test]
        fn every_test_is_in_exactly_one_part_whatever_the_order(
            (recs, known) in suite(),
            n in 1usize..8,
            hash in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mode = if hash { Mode::Hash } else { Mode::Balanced };
            let mut seen: FxHashMap<String, usize> = FxHashMap::default();
            for k in 1..=n {
                let mut part = recs.clone();
                let total = Partition { mode, k, n }.retain(&mut part, &known);
                prop_assert_eq!(total, recs.len());
                for r in part {
                    prop_assert!(seen.insert(r.id.clone(), k).is_none(), "{} twice", r.id);
                }
            }
            prop_assert_eq!(seen.len(), recs.len());

            // Another discovery order gives every test the same part.
            let mut shuffled = recs.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let assigned = assign(&shuffled, &known, mode, n);
            for (r, p) in shuffled.iter().zip(assigned) {
                prop_assert_eq!(seen[&r.id], p + 1, "{} moved", r.id);
            }
        }
    }
}
