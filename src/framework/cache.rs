//! A cache of discovery results, reused while nothing that could change them changed.
//!
//! Collecting a pytest suite costs about a millisecond per test: for a suite of short
//! tests it is most of what running it costs, and `offload run` would pay it twice
//! (once to discover, once in the batches); `cargo nextest list` first checks the build.
//!
//! The invariant: a run never executes a test list other than what `offload collect`
//! would print at that moment. [`DiscoveryCache`] keeps the test IDs each group
//! discovered under a fingerprint of everything discovery can see:
//!
//! * every file of the project (path, size, modification time; `.git`, build and cache
//!   directories aside) and the installed packages of any virtualenv inside it;
//! * the whole environment, less a few variables that change between shells and steer
//!   no test tool ([`VOLATILE_ENV`]);
//! * for a framework that traces its discovery (pytest, through a bundled plugin; see
//!   `Framework::trace_discovery`), every file and directory outside the project that
//!   discovery read: the interpreter, its standard library and site-packages, plugins
//!   installed anywhere, data files a `conftest.py` reads. They are kept per entry and
//!   checked (size and modification time) before the entry is reused.
//!
//! Any change discards the entry. Only frameworks whose discovery is a function of those
//! inputs opt in (see `Framework::discovery_is_cacheable`); a traced discovery whose
//! trace did not arrive is not cached. `offload run --no-cache` bypasses the cache, and
//! `offload collect` never uses it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Discovered;

/// Projects with more files than this are not fingerprinted (too slow to be worth it).
const MAX_FINGERPRINT_FILES: usize = 50_000;

/// Directory names never walked for the fingerprint: version control, build output and
/// caches that tools rewrite on every run.
const SKIPPED_DIRS: &[&str] = &[
    ".git",
    ".hg",
    "target",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
];

/// Environment variables left out of the fingerprint: they differ between two shells of
/// the same session (or between `-v` and not) and no test tool reads them. Every other
/// variable counts, since a `conftest.py` may read any of them.
const VOLATILE_ENV: &[&str] = &[
    "_",
    "OLDPWD",
    "SHLVL",
    "PS1",
    "PS2",
    "PROMPT_COMMAND",
    "TERM_SESSION_ID",
    "TMUX_PANE",
    "WINDOWID",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "XDG_SESSION_ID",
    "RUST_LOG",
];

/// Traced paths under these prefixes are not inputs: kernel interfaces and devices.
const UNTRACKED_PREFIXES: &[&str] = &["/proc/", "/sys/", "/dev/"];

const VERSION: u32 = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    fingerprint: String,
    groups: BTreeMap<String, CachedGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedGroup {
    ids: Vec<String>,
    #[serde(default)]
    ignored: Vec<String>,
    warning: Option<String>,
    /// The traced inputs outside the project, as they were after discovery.
    inputs: Vec<Input>,
}

/// One path discovery read, and what it looked like: a file's size and modification
/// time, a directory's modification time (it changes when an entry is added or
/// removed), or `None` for a path that did not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Input {
    path: PathBuf,
    state: Option<(u64, i128)>,
}

impl Input {
    fn read(path: PathBuf) -> Self {
        let state = std::fs::metadata(&path).ok().map(|meta| {
            let len = if meta.is_dir() { 0 } else { meta.len() };
            (len, mtime(&meta))
        });
        Self { path, state }
    }

    fn unchanged(&self) -> bool {
        Self::read(self.path.clone()).state == self.state
    }
}

/// The inputs named in the trace file at `trace` (one path a line), less the paths
/// inside `root` (the project fingerprint covers them), inside `own` (Offload's own
/// scripts, which the trace plugin is one of: any Offload on the machine may rewrite
/// them, and they select nothing at discovery), in caches of tools, and in kernel
/// interfaces. `None` when the trace file cannot be read: the discovery did not trace
/// (the plugin did not load), so its result must not be cached.
pub(super) fn traced_inputs(trace: &Path, root: &Path, own: &Path) -> Option<Vec<Input>> {
    let text = std::fs::read(trace).ok()?;
    let text = String::from_utf8_lossy(&text);
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    let own = std::fs::canonicalize(own).unwrap_or_else(|_| own.to_owned());
    let mut paths: Vec<PathBuf> = text
        .lines()
        .filter(|line| line.starts_with('/'))
        .filter(|line| !UNTRACKED_PREFIXES.iter().any(|p| line.starts_with(p)))
        .map(PathBuf::from)
        .filter(|path| !path.starts_with(&root) && !path.starts_with(&own))
        .filter(|path| {
            !path
                .components()
                .any(|c| SKIPPED_DIRS.iter().any(|s| c.as_os_str() == *s))
        })
        .collect();
    paths.sort();
    paths.dedup();
    Some(paths.into_iter().map(Input::read).collect())
}

/// Discovery results of the previous run, valid for the current fingerprint.
#[derive(Debug)]
pub(crate) struct DiscoveryCache {
    path: PathBuf,
    stored: Stored,
    dirty: bool,
}

impl DiscoveryCache {
    /// The discovery cache in `{output_dir}/cache/`, fingerprinting the project at `cwd`
    /// without the files Offload itself writes: the run's reports and logs, and the
    /// durations history at `history` (rewritten by every run that records it).
    pub(crate) fn in_output_dir(
        cwd: &Path,
        report: &crate::config::ReportConfig,
        history: &Path,
    ) -> Option<Self> {
        let out = &report.output_dir;
        let skip = vec![
            out.join("logs"),
            out.join("junit-parts"),
            out.join("cache"),
            out.join(&report.junit_file),
            history.to_owned(),
            // The image cache of a project outside git, rewritten by every build.
            PathBuf::from(crate::image::CACHE_FILE_NAME),
        ];
        Self::open(out.join("cache").join("discovery.json"), cwd, &skip)
    }

    /// Opens the cache file at `path` for the project at `root`, ignoring the files
    /// and directories in `skip` (relative to `root`: what Offload itself writes, the
    /// cache file included) in the fingerprint. Entries stored under another
    /// fingerprint are dropped. `None` when the project is too large to fingerprint.
    pub(crate) fn open(path: PathBuf, root: &Path, skip: &[PathBuf]) -> Option<Self> {
        let fingerprint = fingerprint(root, skip)?;
        let stored = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|s| s.version == VERSION && s.fingerprint == fingerprint)
            .unwrap_or_else(|| Stored {
                version: VERSION,
                fingerprint,
                groups: BTreeMap::new(),
            });
        Some(Self {
            path,
            stored,
            dirty: false,
        })
    }

    /// The cached result for `key` (a group and its discovery command), if every input
    /// it traced is unchanged.
    pub(super) fn get(&self, key: &str) -> Option<Discovered> {
        let group = self.stored.groups.get(key)?;
        if let Some(changed) = group.inputs.iter().find(|input| !input.unchanged()) {
            tracing::debug!(
                "the cached discovery is stale: `{}` changed",
                changed.path.display()
            );
            return None;
        }
        Some(Discovered {
            ids: group.ids.clone(),
            ignored: group.ignored.clone(),
            warning: group.warning.clone(),
        })
    }

    /// Stores the result for `key`, with the traced `inputs` it depends on besides the
    /// project and the environment.
    pub(super) fn put(&mut self, key: &str, discovered: &Discovered, inputs: Vec<Input>) {
        let group = CachedGroup {
            ids: discovered.ids.clone(),
            ignored: discovered.ignored.clone(),
            warning: discovered.warning.clone(),
            inputs,
        };
        self.stored.groups.insert(key.to_owned(), group);
        self.dirty = true;
    }

    /// Writes the cache back if it changed (atomically: a temporary file, then rename).
    pub(crate) fn save(&self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let bytes =
            serde_json::to_vec(&self.stored).context("cannot encode the discovery cache")?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
        std::io::Write::write_all(&mut tmp, &bytes).context("cannot write the discovery cache")?;
        tmp.persist(&self.path)
            .with_context(|| format!("cannot write `{}`", self.path.display()))?;
        Ok(())
    }
}

/// A hash of the project's files and the relevant environment, or `None` when the
/// project has more than [`MAX_FINGERPRINT_FILES`] files.
fn fingerprint(root: &Path, skip: &[PathBuf]) -> Option<String> {
    let skip: Vec<PathBuf> = skip.iter().map(|p| root.join(p)).collect();
    let mut entries: Vec<(PathBuf, u64, i128)> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        if dir.join("pyvenv.cfg").is_file() {
            // A virtualenv: its installed packages matter (pytest plugins), not its files.
            for lib in ["lib", "lib64"] {
                if let Ok(pythons) = std::fs::read_dir(dir.join(lib)) {
                    for python in pythons.flatten() {
                        let site = python.path().join("site-packages");
                        if let Ok(meta) = std::fs::metadata(&site) {
                            entries.push((site, 0, mtime(&meta)));
                        }
                    }
                }
            }
            continue;
        }
        for entry in read.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if skip.contains(&path) {
                continue;
            }
            if kind.is_dir() {
                let name = entry.file_name();
                if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                    stack.push(path);
                }
            } else if let Ok(meta) = entry.metadata() {
                entries.push((path, meta.len(), mtime(&meta)));
                if entries.len() > MAX_FINGERPRINT_FILES {
                    return None;
                }
            }
        }
    }
    entries.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut hasher);
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| !VOLATILE_ENV.contains(&k.as_str()))
        .collect();
    env.sort();
    env.hash(&mut hasher);
    Some(format!("{:016x}-{}", hasher.finish(), entries.len()))
}

fn mtime(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovered(ids: &[&str]) -> Discovered {
        Discovered {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            ignored: Vec::new(),
            warning: None,
        }
    }

    #[test]
    fn a_saved_entry_is_reused_while_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_a.py"), "def test_a(): pass\n").unwrap();
        let path = dir.path().join("out/cache/discovery.json");
        let skip = [PathBuf::from("out")];
        let mut cache = DiscoveryCache::open(path.clone(), dir.path(), &skip).unwrap();
        assert_eq!(cache.get("g"), None);
        cache.put("g", &discovered(&["test_a.py::test_a"]), Vec::new());
        cache.save().unwrap();
        // The cache file itself lives in a skipped directory: reopening still hits.
        let cache = DiscoveryCache::open(path, dir.path(), &skip).unwrap();
        assert_eq!(cache.get("g"), Some(discovered(&["test_a.py::test_a"])));
        assert_eq!(cache.get("other"), None);
    }

    #[test]
    fn any_file_change_discards_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".cache.json");
        let skip = [PathBuf::from(".cache.json")];
        std::fs::write(dir.path().join("test_a.py"), "x").unwrap();
        let mut cache = DiscoveryCache::open(path.clone(), dir.path(), &skip).unwrap();
        cache.put("g", &discovered(&["a"]), Vec::new());
        cache.save().unwrap();
        // Saving did not change the fingerprint; a new file anywhere does.
        assert!(
            DiscoveryCache::open(path.clone(), dir.path(), &skip)
                .unwrap()
                .get("g")
                .is_some()
        );
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/test_b.py"), "y").unwrap();
        let cache = DiscoveryCache::open(path.clone(), dir.path(), &skip).unwrap();
        assert_eq!(cache.get("g"), None);
    }

    #[test]
    fn the_cache_file_itself_and_caches_of_tools_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_a.py"), "x").unwrap();
        let before = fingerprint(dir.path(), &[]).unwrap();
        std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/x.pyc"), "z").unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/index"), "z").unwrap();
        assert_eq!(fingerprint(dir.path(), &[]).unwrap(), before);
        std::fs::write(dir.path().join("conftest.py"), "z").unwrap();
        assert_ne!(fingerprint(dir.path(), &[]).unwrap(), before);
    }

    #[test]
    fn what_offload_writes_in_the_project_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_a.py"), "x").unwrap();
        let report = crate::config::ReportConfig::default();
        let history = Path::new(".offload/durations");
        let mut cache = DiscoveryCache::in_output_dir(dir.path(), &report, history).unwrap();
        let path = cache.path.clone();
        cache.put("g", &discovered(&["a"]), Vec::new());
        cache.save().unwrap();
        // A run's reports, logs, the durations history, and the image cache of a
        // project outside git.
        let out = dir.path().join(&report.output_dir);
        std::fs::create_dir_all(out.join("logs")).unwrap();
        std::fs::write(out.join("logs/batch-0.log"), "x").unwrap();
        std::fs::write(out.join(&report.junit_file), "<x/>").unwrap();
        std::fs::create_dir_all(dir.path().join(".offload")).unwrap();
        std::fs::write(dir.path().join(history), "{}\n").unwrap();
        std::fs::write(dir.path().join(crate::image::CACHE_FILE_NAME), "img\n").unwrap();
        let again = DiscoveryCache::in_output_dir(dir.path(), &report, history).unwrap();
        assert_eq!(again.path, path);
        assert!(
            again.get("g").is_some(),
            "Offload's own files changed the key"
        );
    }

    #[test]
    fn traced_inputs_outside_the_project_decide_reuse() {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let data = outside.path().join("data.txt");
        std::fs::write(&data, "1").unwrap();
        let pycache = outside.path().join("__pycache__");
        std::fs::create_dir(&pycache).unwrap();
        let inside = project.path().join("conftest.py");
        std::fs::write(&inside, "x").unwrap();
        let own = outside.path().join("scripts");
        let trace = outside.path().join("trace");
        let lines = [
            data.display().to_string(),
            own.display().to_string(),
            own.join("offload_pytest_plugin.py").display().to_string(),
            pycache.join("m.pyc").display().to_string(),
            inside.display().to_string(),
            "/proc/self/status".to_owned(),
            "relative/path".to_owned(),
            outside.path().join("gone").display().to_string(),
        ];
        std::fs::write(&trace, lines.join("\n")).unwrap();
        let inputs = traced_inputs(&trace, project.path(), &own).unwrap();
        let paths: Vec<&Path> = inputs.iter().map(|i| i.path.as_path()).collect();
        assert_eq!(
            paths,
            [data.as_path(), outside.path().join("gone").as_path()]
        );
        let no_trace = outside.path().join("no-trace");
        assert!(traced_inputs(&no_trace, project.path(), &own).is_none());

        let path = project.path().join(".cache.json");
        let skip = [PathBuf::from(".cache.json")];
        let mut cache = DiscoveryCache::open(path.clone(), project.path(), &skip).unwrap();
        cache.put("g", &discovered(&["a"]), inputs);
        cache.save().unwrap();
        let reopen = || DiscoveryCache::open(path.clone(), project.path(), &skip).unwrap();
        assert!(reopen().get("g").is_some());
        // A path that did not exist and now does is a change too.
        std::fs::write(outside.path().join("gone"), "").unwrap();
        assert!(reopen().get("g").is_none());
        std::fs::remove_file(outside.path().join("gone")).unwrap();
        assert!(reopen().get("g").is_some());
        std::fs::write(&data, "22").unwrap();
        assert!(reopen().get("g").is_none());
    }

    #[test]
    fn a_corrupt_cache_file_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{ not json").unwrap();
        let cache = DiscoveryCache::open(path, dir.path(), &[PathBuf::from("c.json")]).unwrap();
        assert_eq!(cache.get("g"), None);
    }
}
