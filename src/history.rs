//! The durations history: how long each test takes, kept in a file of the repository so
//! that a CI run, which never has the previous run's report, still schedules by duration.
//!
//! The file (`[history] path`, default [`DEFAULT_PATH`]) is text, one test a line, sorted
//! by group and test ID, after a line that names the format and its version:
//!
//! ```text
//! {"format":"offload-durations","version":1}
//! ["all","tests/test_a.py::test_slow",4.012,10]
//! ["all","tests/test_a.py::test_quick",0.003,7]
//! ```
//!
//! Each entry is `[group, test ID, smoothed seconds, runs]`: the duration is a running
//! average of the runs it is based on (at most [`MAX_RUNS`] count, so older runs fade).
//! A line changes only when a run's time is more than [`CHANGE_SHARE`] away from the
//! recorded one, or while the test has fewer than [`MAX_RUNS`] runs: a suite that did not
//! change gives no diff, which keeps commits and merges small.
//!
//! Recording ([`record`]) happens only on request, under an exclusive lock on the
//! history's directory (no lock file is left for anyone to commit): the history is read again under the lock, this run's times are
//! folded in, entries of tests that no longer exist are dropped, and the result is
//! written to a temporary file renamed over the old one. Two runs recording at once
//! therefore both land, and a reader never sees half a file. A file this version cannot
//! read (malformed, truncated, or written by a newer version) is never written over.
//!
//! [`merge`] is the three-way merge a git merge driver needs (`offload history merge`):
//! entries changed on one side only take that side; changed on both, their runs-weighted
//! mean; removed on one side and unchanged on the other, removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::report::junit::MAX_DURATION_SECS;

/// The history file when `[history] path` is not set, relative to where `offload` runs.
pub(crate) const DEFAULT_PATH: &str = ".offload/durations";

/// The format this version writes and reads.
const VERSION: u64 = 1;

/// The name in the first line.
const FORMAT: &str = "offload-durations";

/// Runs an entry's average is based on at most: beyond that, a new run weighs
/// `1 / MAX_RUNS`, so a test that got slower is caught up with in a few runs.
pub(crate) const MAX_RUNS: u32 = 10;

/// How far (as a share of the recorded duration) a run's time must be from the recorded
/// one to move it, once the entry has [`MAX_RUNS`] runs. Below it, the line stays as it is.
pub(crate) const CHANGE_SHARE: f64 = 0.2;

/// Differences below this many seconds never move a recorded duration: they are noise
/// for scheduling, and a trivial test's time is mostly noise.
const NOISE_SECS: f64 = 0.005;

/// One test's recorded duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    /// The smoothed duration, in seconds (written with millisecond precision).
    pub(crate) secs: f64,
    /// How many runs it is based on, at most [`MAX_RUNS`].
    pub(crate) runs: u32,
}

/// The entries of a history file, by group and test ID.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct History {
    entries: BTreeMap<(String, String), Entry>,
}

/// A test's time in this run: its group, its ID, seconds.
pub(crate) type Sample<'a> = (&'a str, &'a str, f64);

/// Whether the test of a group and ID still exists (see [`History::prune`]).
pub(crate) type Exists<'a> = &'a dyn Fn(&str, &str) -> bool;

impl History {
    /// The recorded duration of `id` in `group`.
    pub(crate) fn get(&self, group: &str, id: &str) -> Option<Entry> {
        // The key is owned: a lookup by borrowed parts would need a second map layer.
        self.entries
            .get(&(group.to_owned(), id.to_owned()))
            .copied()
    }

    /// How many tests it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Reads the history at `path`; an empty one when there is no file.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| {
                format!(
                    "durations history `{}` cannot be read; fix it or remove it (the next \
                     `offload run --record-history` writes a new one)",
                    path.display()
                )
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err)
                .with_context(|| format!("cannot read durations history `{}`", path.display())),
        }
    }

    /// Parses the text of a history file. Errors name the line.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            // An empty file: nothing recorded yet.
            return Ok(Self::default());
        };
        check_header(header)?;
        if !text.ends_with('\n') {
            bail!("the file is truncated (its last line has no end)");
        }
        let mut entries = BTreeMap::new();
        for (index, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let (group, id, entry) = parse_line(line)
                .with_context(|| format!("line {}: `{}`", index + 1, shorten(line)))?;
            entries.insert((group, id), entry);
        }
        Ok(Self { entries })
    }

    /// The text of the file: the format line, then one entry a line, sorted.
    pub(crate) fn render(&self) -> String {
        let mut out = format!("{{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}\n");
        for ((group, id), entry) in &self.entries {
            // serde_json quotes any string faithfully (control characters escaped), and a
            // tuple of strings cannot fail to encode.
            let group = serde_json::to_string(group).unwrap_or_default();
            let id = serde_json::to_string(id).unwrap_or_default();
            let _ = writeln!(out, "[{group},{id},{:.3},{}]", entry.secs, entry.runs);
        }
        out
    }

    /// Folds this run's times into the entries (see the module docs for when a recorded
    /// duration moves). Times that are not seconds from 0 to [`MAX_DURATION_SECS`] are
    /// left out.
    pub(crate) fn record(&mut self, samples: &[Sample<'_>]) {
        for &(group, id, secs) in samples {
            if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
                continue;
            }
            let key = (group.to_owned(), id.to_owned());
            let next = match self.entries.get(&key) {
                None => Entry {
                    secs: rounded(secs),
                    runs: 1,
                },
                Some(&old) => updated(old, secs),
            };
            self.entries.insert(key, next);
        }
    }

    /// Drops the entries of tests that no longer exist: those `exists(group, id)` denies.
    pub(crate) fn prune(&mut self, exists: Exists<'_>) {
        self.entries.retain(|(group, id), _| exists(group, id));
    }
}

/// `old` after a run that took `secs`.
fn updated(old: Entry, secs: f64) -> Entry {
    let runs = (old.runs + 1).min(MAX_RUNS);
    let off = (secs - old.secs).abs();
    let settled = old.runs >= MAX_RUNS;
    if off < NOISE_SECS || (settled && off <= CHANGE_SHARE * old.secs) {
        return Entry {
            secs: old.secs,
            runs,
        };
    }
    // A running mean while it has few runs, then an exponential average of weight
    // 1 / MAX_RUNS.
    let weight = 1.0 / f64::from(runs);
    Entry {
        secs: rounded(old.secs + (secs - old.secs) * weight),
        runs,
    }
}

/// `secs` as written: milliseconds.
fn rounded(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

fn check_header(line: &str) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Header {
        format: String,
        version: u64,
    }
    let header: Header = serde_json::from_str(line).map_err(|_| {
        anyhow::anyhow!(
            "line 1 is `{}`, not a durations history's first line \
             (`{{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}`)",
            shorten(line)
        )
    })?;
    if header.format != FORMAT {
        bail!(
            "line 1 names the format `{}`, not `{FORMAT}`",
            shorten(&header.format)
        );
    }
    if header.version > VERSION {
        bail!(
            "it was written by a newer Offload (format version {}; this one reads version \
             {VERSION}); upgrade Offload",
            header.version
        );
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<(String, String, Entry)> {
    let (group, id, secs, runs): (String, String, f64, u32) = serde_json::from_str(line)
        .map_err(|err| anyhow::anyhow!("not `[group, test ID, seconds, runs]`: {err}"))?;
    if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        bail!("{secs} is not a number of seconds from 0 to {MAX_DURATION_SECS}");
    }
    if runs == 0 {
        bail!("an entry based on 0 runs");
    }
    Ok((
        group,
        id,
        Entry {
            secs,
            runs: runs.min(MAX_RUNS),
        },
    ))
}

fn shorten(line: &str) -> std::borrow::Cow<'_, str> {
    crate::output::ellipsize(line, 80)
}

/// The three-way merge of histories (`base` their common ancestor), as a git merge
/// driver makes it: see the module docs.
pub(crate) fn merge(base: &History, ours: &History, theirs: &History) -> History {
    let keys: BTreeSet<&(String, String)> =
        ours.entries.keys().chain(theirs.entries.keys()).collect();
    let mut entries = BTreeMap::new();
    for key in keys {
        let (o, a, b) = (
            base.entries.get(key),
            ours.entries.get(key),
            theirs.entries.get(key),
        );
        let merged = if a == b || b == o {
            a.copied()
        } else if a == o {
            b.copied()
        } else {
            match (a, b) {
                (Some(a), Some(b)) => Some(weighted(*a, *b)),
                // Changed on one side, removed on the other: the next recording prunes
                // it if the test is really gone.
                (Some(x), None) | (None, Some(x)) => Some(*x),
                (None, None) => None,
            }
        };
        if let Some(entry) = merged {
            entries.insert(key.clone(), entry);
        }
    }
    History { entries }
}

/// Two entries recorded apart, as one: their runs-weighted mean.
fn weighted(a: Entry, b: Entry) -> Entry {
    let total = f64::from(a.runs) + f64::from(b.runs);
    Entry {
        secs: rounded((a.secs * f64::from(a.runs) + b.secs * f64::from(b.runs)) / total),
        runs: a.runs.max(b.runs),
    }
}

/// Records this run's `samples` into the history at `path`, under the lock (see the
/// module docs), and returns how many tests it then holds. With `exists`, entries of
/// tests that no longer exist are dropped.
pub(crate) fn record(
    path: &Path,
    samples: &[Sample<'_>],
    exists: Option<Exists<'_>>,
) -> Result<usize> {
    let dir = directory_of(path);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    let _lock = Lock::take(dir)?;
    let mut history = History::read(path)?;
    history.record(samples);
    if let Some(exists) = exists {
        history.prune(exists);
    }
    write_atomically(path, &history.render())?;
    Ok(history.len())
}

/// Writes `text` to `path` through a temporary file in the same directory, renamed over
/// it once complete.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = directory_of(path);
    let mut temp = tempfile::Builder::new()
        .prefix(".offload-durations.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write `{}`", temp.path().display()))?;
    temp.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("cannot replace `{}`", path.display()))?;
    Ok(())
}

/// The directory the file at `path` is in.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock (`flock`) on a directory, released when dropped (closing
/// it releases the lock, also when the process dies).
struct Lock {
    _dir: std::fs::File,
}

impl Lock {
    fn take(dir: &Path) -> Result<Self> {
        let file = std::fs::File::open(dir)
            .with_context(|| format!("cannot open `{}` to lock it", dir.display()))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if status == 0 {
                return Ok(Self { _dir: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("cannot lock `{}`", dir.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(lines: &[(&str, &str, f64, u32)]) -> History {
        History {
            entries: lines
                .iter()
                .map(|&(g, id, secs, runs)| ((g.to_owned(), id.to_owned()), Entry { secs, runs }))
                .collect(),
        }
    }

    #[test]
    fn render_is_sorted_one_test_a_line_and_reads_back() {
        let mut h = History::default();
        h.record(&[
            ("b", "z", 1.0),
            ("a", "tests/t.py::test[a b\tc]", 0.25),
            ("a", "m \"quoted\"", 3.0),
        ]);
        let text = h.render();
        assert_eq!(
            text,
            "{\"format\":\"offload-durations\",\"version\":1}\n\
             [\"a\",\"m \\\"quoted\\\"\",3.000,1]\n\
             [\"a\",\"tests/t.py::test[a b\\tc]\",0.250,1]\n\
             [\"b\",\"z\",1.000,1]\n"
        );
        assert_eq!(History::parse(&text).unwrap(), h);
        assert_eq!(History::parse("").unwrap(), History::default());
    }

    #[test]
    fn a_steady_suite_stops_changing_its_lines() {
        let mut h = History::default();
        let mut texts = Vec::new();
        for run in 0..30 {
            // ±10% noise around 1 s.
            let secs = if run % 2 == 0 { 0.9 } else { 1.1 };
            h.record(&[("all", "t", secs)]);
            texts.push(h.render());
        }
        let entry = h.get("all", "t").unwrap();
        assert_eq!(entry.runs, MAX_RUNS);
        assert!((entry.secs - 1.0).abs() < 0.1, "{entry:?}");
        // Once settled, no run changes the file.
        assert!(texts[MAX_RUNS as usize..].windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_test_that_got_slower_is_caught_up_with() {
        let mut h = history(&[("all", "t", 1.0, MAX_RUNS)]);
        for _ in 0..15 {
            h.record(&[("all", "t", 3.0)]);
        }
        let secs = h.get("all", "t").unwrap().secs;
        // It moves until a run is within CHANGE_SHARE of it.
        assert!(secs >= 3.0 / (1.0 + CHANGE_SHARE) - 0.01, "{secs}");
    }

    #[test]
    fn out_of_range_times_are_not_recorded() {
        let mut h = History::default();
        h.record(&[
            ("a", "nan", f64::NAN),
            ("a", "neg", -1.0),
            ("a", "huge", 1e20),
        ]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn prune_keeps_the_tests_that_exist() {
        let mut h = history(&[
            ("a", "kept", 1.0, 1),
            ("a", "gone", 1.0, 1),
            ("old-group", "x", 1.0, 1),
        ]);
        let live = BTreeSet::from([("a", "kept"), ("a", "new")]);
        h.prune(&|g, id| live.contains(&(g, id)));
        assert_eq!(h, history(&[("a", "kept", 1.0, 1)]));
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let header = "{\"format\":\"offload-durations\",\"version\":1}\n";
        let err = |text: &str| format!("{:#}", History::parse(text).unwrap_err());
        assert!(
            err("junk\n").contains("line 1 is `junk`"),
            "{}",
            err("junk\n")
        );
        assert!(err(&format!("{header}[\"a\",\"t\",1.0,3]")).contains("truncated"));
        let e = err(&format!("{header}[\"a\",\"t\",1.0,3]\n[\"a\",\"u\",1\n"));
        assert!(
            e.contains("line 3") && e.contains("[group, test ID, seconds, runs]"),
            "{e}"
        );
        let e = err(&format!("{header}[\"a\",\"t\",-1,3]\n"));
        assert!(e.contains("line 2") && e.contains("seconds from 0"), "{e}");
        let e = err("{\"format\":\"offload-durations\",\"version\":7}\n");
        assert!(
            e.contains("newer Offload") && e.contains("version 7"),
            "{e}"
        );
        let e = err("{\"format\":\"something-else\",\"version\":1}\n");
        assert!(e.contains("something-else"), "{e}");
    }

    #[test]
    fn merge_takes_each_side_s_changes() {
        let base = history(&[
            ("a", "same", 1.0, 5),
            ("a", "ours-changed", 1.0, 5),
            ("a", "theirs-changed", 1.0, 5),
            ("a", "both-changed", 1.0, 4),
            ("a", "theirs-removed", 1.0, 5),
            ("a", "removed-but-changed", 1.0, 5),
        ]);
        let ours = history(&[
            ("a", "same", 1.0, 5),
            ("a", "ours-changed", 2.0, 6),
            ("a", "theirs-changed", 1.0, 5),
            ("a", "both-changed", 2.0, 5),
            ("a", "theirs-removed", 1.0, 5),
            ("a", "ours-new", 0.5, 1),
        ]);
        let theirs = history(&[
            ("a", "same", 1.0, 5),
            ("a", "ours-changed", 1.0, 5),
            ("a", "theirs-changed", 3.0, 6),
            ("a", "both-changed", 4.0, 5),
            ("a", "removed-but-changed", 9.0, 6),
            ("a", "theirs-new", 0.25, 1),
        ]);
        let merged = merge(&base, &ours, &theirs);
        assert_eq!(
            merged,
            history(&[
                ("a", "same", 1.0, 5),
                ("a", "ours-changed", 2.0, 6),
                ("a", "theirs-changed", 3.0, 6),
                ("a", "both-changed", 3.0, 5),
                ("a", "removed-but-changed", 9.0, 6),
                ("a", "ours-new", 0.5, 1),
                ("a", "theirs-new", 0.25, 1),
            ])
        );
        // The merge is symmetric.
        assert_eq!(merge(&base, &theirs, &ours), merged);
    }

    #[test]
    fn concurrent_recordings_both_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/durations");
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let id = format!("t{n}");
                    record(&path, &[("all", &id, 1.0)], None).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let h = History::read(&path).unwrap();
        assert_eq!(h.len(), 8, "{}", h.render());
    }

    #[test]
    fn a_file_that_cannot_be_read_is_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("durations");
        let newer = "{\"format\":\"offload-durations\",\"version\":2}\n[\"a\",\"t\",1,1,\"x\"]\n";
        std::fs::write(&path, newer).unwrap();
        let err = record(&path, &[("a", "t", 1.0)], None).unwrap_err();
        assert!(format!("{err:#}").contains("newer Offload"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), newer);
    }
}
