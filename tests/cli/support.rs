//! Helpers shared by the black-box tests: temporary projects and running the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A temporary project directory, removed when dropped.
pub struct Project {
    dir: tempfile::TempDir,
    /// `XDG_CACHE_HOME` of its runs (see [`Self::offload`]).
    cache: tempfile::TempDir,
}

impl Project {
    /// An empty project.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("offload-test-")
                .tempdir()
                .expect("temp dir"),
            cache: tempfile::Builder::new()
                .prefix("offload-test-cache-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// The project root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` (creating parent directories) and returns the full path.
    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Writes `Cargo.toml` for a crate `name` (edition 2021) that is a workspace of its
    /// own, so cargo never looks for one above the temporary directory.
    pub fn manifest(&self, name: &str) -> PathBuf {
        self.file(
            "Cargo.toml",
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
            ),
        )
    }

    /// An `offload` command whose working directory is the project root.
    pub fn offload(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_offload"));
        cmd.current_dir(self.dir.path());
        cmd.env_remove("CI");
        // When this suite itself runs under nextest (or under Offload's cargo framework),
        // nextest exports its profile; a nested `cargo nextest` must not inherit it.
        cmd.env_remove("NEXTEST_PROFILE");
        // A crate built by the test gets its own target directory: under a shared
        // `CARGO_TARGET_DIR` two temporary crates of the same name would reuse each
        // other's binaries.
        cmd.env("CARGO_TARGET_DIR", self.dir.path().join("target"));
        cmd.env_remove("CARGO_BUILD_TARGET_DIR");
        // Likewise an outer Offload's variables (`OFFLOAD_ROOT`, ...) stay outside.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OFFLOAD_") {
                cmd.env_remove(name);
            }
        }
        // Bundled scripts go to a cache of this project's own. The shared one is
        // rewritten by any Offload of another version on the machine, and pytest
        // discovery traces the plugin's directory: a rewrite between two runs would
        // (rightly) discard the cached discovery a test expects to be reused.
        cmd.env("XDG_CACHE_HOME", self.cache.path());
        cmd.env("NO_COLOR", "1");
        cmd
    }

    /// Like [`Self::offload`], with the test virtualenv (see [`python_bin_dir`]) first on
    /// `PATH`, so `python -m pytest` works. Builds the virtualenv on first use.
    pub fn offload_with_python(&self) -> Command {
        let mut cmd = self.offload();
        cmd.env("PATH", path_with(&python_bin_dir()));
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// Writes `offload.toml` with a local provider, the given `[framework]` body (without
    /// the table header) and the given extra tables (groups etc.).
    pub fn config(&self, framework: &str, rest: &str) -> PathBuf {
        self.file(
            "offload.toml",
            &format!(
                "[offload]\nmax_parallel = 2\nsandbox_project_root = \".\"\n\n\
                 [provider]\ntype = \"local\"\n\n[framework]\n{framework}\n\n{rest}\n"
            ),
        )
    }
}

/// The `[provider]` section of sandboxes made by `@local_sandbox.sh`.
pub const LOCAL_SANDBOXES: &str = r#"[provider]
type = "default"
prepare_command = "@local_sandbox.sh prepare"
create_command = "@local_sandbox.sh create {image_id}"
exec_command = "@local_sandbox.sh exec {sandbox_id} {command}"
download_command = "@local_sandbox.sh download {sandbox_id} {paths}"
destroy_command = "@local_sandbox.sh destroy {sandbox_id}"
"#;

/// `PATH` with `dir` in front.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_owned()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries without separators")
}

/// Installs the system packages some tests drive (openssh-server, rsync, tmux) when
/// they are missing, once per test process, through `scripts/setup-system-deps` (as
/// [`python_bin_dir`] builds its virtualenv), so a fresh machine needs nothing by hand.
pub fn install_system_deps() {
    static SETUP: OnceLock<()> = OnceLock::new();
    SETUP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-system-deps");
        let status = Command::new(&script)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`{}` could not install the system packages the tests need",
            script.display()
        );
    });
}

/// The cargo target directory the tests were built into (`.../target`).
pub fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_offload"));
    // `<target>/<profile>/offload`
    exe.parent()
        .and_then(Path::parent)
        .expect("the offload binary lives in <target>/<profile>/")
        .to_owned()
}

/// The `bin` directory of a virtualenv holding pytest, pytest-xdist and junitparser (a
/// JUnit consumer to read reports with), under `<target>/test-venv`, built on first use
/// (see [`build_venv`]).
pub fn python_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_venv("test-venv", &["pytest", "pytest-xdist", "junitparser"]))
        .clone()
}

/// The `bin` directory of a virtualenv holding the pinned `modal`, `click` and `mypy` of
/// `tests/modal/requirements.txt`, under `<target>/modal-venv`, built on first use (see
/// [`build_venv`]). Rebuilt when the requirements change.
pub fn modal_venv_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let requirements =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modal/requirements.txt");
        let requirements = requirements
            .to_str()
            .expect("UTF-8 path of requirements.txt");
        build_venv("modal-venv", &["-r", requirements])
    })
    .clone()
}

/// Builds (once) the virtualenv `<target>/<name>` with `pip install <pip_args>` and returns
/// its `bin` directory. nextest runs every test in its own process, so builders take a
/// file lock, build in a temporary directory, write a marker last and rename the directory
/// into place; whoever comes later finds the marker. The marker records the pip arguments
/// (and the content of any `-r` file), so a changed list rebuilds the venv. A failing
/// `pip install` (PyPI unreachable, say) fails the test with pip's output above it.
fn build_venv(name: &str, pip_args: &[&str]) -> PathBuf {
    let target = target_dir();
    let venv = target.join(name);
    let marker = venv.join(".offload-complete");
    let mut stamp = pip_args.join(" ");
    for pair in pip_args.windows(2) {
        if pair[0] == "-r" {
            stamp.push('\n');
            stamp.push_str(&std::fs::read_to_string(pair[1]).expect("read the requirements file"));
        }
    }
    let is_current = || std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp);
    if is_current() {
        return venv.join("bin");
    }
    std::fs::create_dir_all(&target).expect("create target dir");
    let lock_path = target.join(format!("{name}.lock"));
    let lock = std::fs::File::create(&lock_path).expect("create venv lock");
    // SAFETY: flock on a file descriptor we own; the lock dies with the process.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "cannot lock {}", lock_path.display());
    if is_current() {
        return venv.join("bin");
    }
    let tmp = target.join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .status()
        .expect("run python3 -m venv");
    assert!(status.success(), "python3 -m venv {} failed", tmp.display());
    let status = Command::new(tmp.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(pip_args)
        .status()
        .expect("run pip install");
    assert!(
        status.success(),
        "`pip install {}` into {} failed (is PyPI reachable?)",
        pip_args.join(" "),
        tmp.display()
    );
    std::fs::write(tmp.join(".offload-complete"), &stamp).expect("write venv marker");
    if venv.exists() {
        // Incomplete or outdated (an interrupted build, changed requirements): move it away.
        let trash = target.join(format!("{name}.trash-{}", std::process::id()));
        std::fs::rename(&venv, &trash).expect("move the old venv away");
        let _ = std::fs::remove_dir_all(&trash);
    }
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another builder won the race (possible without the lock, e.g. on NFS).
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(is_current(), "{} exists but is incomplete", venv.display());
    }
    venv.join("bin")
}

/// The output of a finished `offload` command, with helpers for assertions.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout, lossy UTF-8.
    pub stdout: String,
    /// stderr, lossy UTF-8.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Starts `cmd` with stdout and stderr piped, for a test that signals or times it while
/// it runs.
pub fn spawn_piped(cmd: &mut Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the command under test")
}

/// Collects `child` (started by [`spawn_piped`]) once it exits; past `limit` kills it
/// and fails the test naming `what`. Output is read while waiting, so a child writing
/// more than a pipe holds still gets to exit.
pub fn wait_bounded(child: std::process::Child, limit: std::time::Duration, what: &str) -> Run {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver outlives this thread unless the test already failed.
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the command under test").into(),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which the waiting thread has not reaped
            // (it has not sent its output).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out: Run = rx
                .recv()
                .expect("the waiting thread reports")
                .expect("wait for the killed command")
                .into();
            panic!("{what}: still running after {limit:?}\n{}", out.show());
        }
    }
}

/// The pids the scripted tests wrote, one file each, into `dir` (none when it does
/// not exist).
pub fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("spawn offload").into()
}

/// One `<testcase>` of a JUnit report, as the assertions of these tests need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JunitCase {
    /// `name`.
    pub name: String,
    /// `classname`.
    pub classname: String,
    /// `time`, as written.
    pub time: String,
    /// The outcome child: `failure`, `error` or `skipped`; empty for a pass.
    pub outcome: String,
    /// The outcome child's `type` attribute.
    pub kind: String,
    /// The outcome child's `message` attribute.
    pub message: String,
    /// The outcome child's text (the stack trace or failure output).
    pub body: String,
    /// The rerun children (`flakyFailure`, `rerunError`, ...), in order.
    pub reruns: Vec<String>,
    /// `name` of the enclosing `<testsuite>`.
    pub suite: String,
}

/// A JUnit report parsed with a real XML reader: the counts of the root element
/// (`tests`, `failures`, `errors`, `skipped`) and every testcase in document order.
#[derive(Debug, Clone, Default)]
pub struct Junit {
    /// Attributes of `<testsuites>` (or the root `<testsuite>`).
    pub root: std::collections::BTreeMap<String, String>,
    /// The testcases.
    pub cases: Vec<JunitCase>,
}

impl Junit {
    /// Parses `xml`; panics (failing the test) on malformed XML.
    pub fn parse(xml: &str) -> Self {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut report = Junit::default();
        let mut suite = String::new();
        // Inside the outcome child of the last testcase: its text is the body.
        let mut in_outcome = false;
        let attrs = |e: &quick_xml::events::BytesStart<'_>| {
            e.attributes()
                .map(|a| {
                    let a = a.expect("well-formed attribute");
                    let value = a.unescape_value().expect("attribute value").into_owned();
                    (String::from_utf8_lossy(a.key.as_ref()).into_owned(), value)
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        loop {
            match reader.read_event().expect("well-formed JUnit XML") {
                Event::Eof => break,
                Event::Text(text) if in_outcome => {
                    let text = text.unescape().expect("well-formed text");
                    let case = report.cases.last_mut().expect("outcome inside a testcase");
                    case.body.push_str(&text);
                }
                Event::CData(text) if in_outcome => {
                    let case = report.cases.last_mut().expect("outcome inside a testcase");
                    case.body.push_str(&String::from_utf8_lossy(&text));
                }
                Event::End(e) => {
                    if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") {
                        in_outcome = false;
                    }
                }
                ref event @ (Event::Start(ref e) | Event::Empty(ref e)) => {
                    let is_start = matches!(event, Event::Start(_));
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    let mut a = attrs(e);
                    let get = |a: &mut std::collections::BTreeMap<String, String>, k: &str| {
                        a.remove(k).unwrap_or_default()
                    };
                    match name.as_str() {
                        "testsuites" | "testsuite" if report.root.is_empty() => {
                            if name == "testsuite" {
                                suite = a.get("name").cloned().unwrap_or_default();
                            }
                            report.root = a;
                        }
                        "testsuite" => suite = get(&mut a, "name"),
                        "testcase" => report.cases.push(JunitCase {
                            name: get(&mut a, "name"),
                            classname: get(&mut a, "classname"),
                            time: get(&mut a, "time"),
                            suite: suite.clone(),
                            ..JunitCase::default()
                        }),
                        "failure" | "error" | "skipped" => {
                            let case = report.cases.last_mut().expect("outcome inside a testcase");
                            case.outcome = name;
                            case.kind = get(&mut a, "type");
                            case.message = get(&mut a, "message");
                            in_outcome = is_start;
                        }
                        "flakyFailure" | "flakyError" | "rerunFailure" | "rerunError" => {
                            let case = report.cases.last_mut().expect("rerun inside a testcase");
                            case.reruns.push(name);
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        report
    }

    /// Reads and parses the merged report of `project` (`test-results/junit.xml`).
    pub fn of(project: &Project) -> Self {
        let path = project.path().join("test-results/junit.xml");
        Self::parse(&std::fs::read_to_string(&path).expect("the merged report junit.xml"))
    }

    /// The testcases named `name` (a test appears once in the merged report).
    pub fn cases_named(&self, name: &str) -> Vec<&JunitCase> {
        self.cases.iter().filter(|c| c.name == name).collect()
    }

    /// The testcase named `name`; panics when there is none.
    pub fn case(&self, name: &str) -> &JunitCase {
        self.cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no testcase `{name}` in {:#?}", self.cases))
    }

    /// (name, outcome) of every case, sorted: what two runs of a suite compare.
    pub fn outcomes(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .cases
            .iter()
            .map(|c| (c.name.clone(), c.outcome.clone()))
            .collect();
        all.sort();
        all
    }

    /// The root attribute `key` as a number (0 when absent).
    pub fn count(&self, key: &str) -> usize {
        self.root
            .get(key)
            .map_or(0, |v| v.parse().expect("a count"))
    }
}

/// Runs `git args` in `dir` (C locale), fails the test if it fails, and returns its
/// trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes `dir` a git repository on branch `main` with a committer identity.
pub fn init_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.email", "test@example.com"]);
    git(dir, &["config", "user.name", "Test"]);
    git(dir, &["config", "commit.gpgsign", "false"]);
}

/// Commits everything in `dir` and returns the new `HEAD`.
pub fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

impl Run {
    /// The exit code and both streams, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts a summary line such as `Passed: 4` (the summary pads labels).
    pub fn assert_summary(&self, line: &str) {
        let words: Vec<&str> = self.stdout.split_whitespace().collect();
        assert!(
            words.join(" ").contains(line),
            "no `{line}` in\n{}",
            self.show()
        );
    }
}

/// Whether `pid` runs (a zombie or a dead process does not count).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        }
    }
}

/// Fails the test unless `pid` is gone within 30 s. A killed process dies a moment
/// after the signal, later still on a loaded machine; the processes this guards against
/// sleep for minutes.
pub fn assert_dead_soon(pid: i32) {
    wait_until(
        &format!("process {pid} to die"),
        std::time::Duration::from_secs(30),
        || !pid_alive(pid),
    );
}

/// Polls `done` until it holds; fails the test naming `what` once `limit` passed. For
/// waiting on an event another process causes (a pid file, a directory), with a limit
/// far above what a loaded machine needs.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
