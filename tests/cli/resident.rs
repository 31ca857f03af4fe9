//! The resident pytest worker, with real pytest: it imports the tests once per sandbox
//! (once per run for the local provider), runs every batch in a fresh child with a
//! fresh session, gives the results one pytest per batch gives, says once why it is
//! not used, and leaves no process behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{self, Junit, Project};

/// A project whose modules record, in the scratch directory, every import (`imports`:
/// module and pid), every session set-up (`sessions`: pid) and every test's pid
/// (`pids/<test>`), with passes, a failure, a skip, a setup error and a test that starts
/// threads and registers an atexit handler.
struct Suite {
    project: Project,
    scratch: tempfile::TempDir,
}

impl Suite {
    fn new(modules: usize) -> Self {
        let s = Self {
            project: Project::new(),
            scratch: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::create_dir_all(s.scratch.path().join("pids")).unwrap();
        s.project.file(
            "tests/conftest.py",
            r#"import os, pytest

@pytest.fixture(scope="session")
def session_mark():
    with open(os.path.join(os.environ["SCRATCH"], "sessions"), "a") as f:
        f.write("%d\n" % os.getpid())
"#,
        );
        for m in 0..modules {
            s.project.file(
                &format!("tests/test_m{m}.py"),
                &format!(
                    r#"import os, pytest

SCRATCH = os.environ["SCRATCH"]
# Discovery's imports are not the batches' concern: batches (and the worker that
# serves them) are told about their tests, discovery is not.
if os.environ.get("OFFLOAD_TESTS_FILE"):
    with open(os.path.join(SCRATCH, "imports"), "a") as f:
        f.write("m{m} %d\n" % os.getpid())

# Module state a test changes: each batch must start from the state after import.
STATE = []

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def _mark(name):
    with open(os.path.join(SCRATCH, "pids", name), "a") as f:
        f.write("%d\n" % os.getpid())

def test_pristine(session_mark):
    _mark("m{m}-pristine")
    assert STATE == []
    STATE.append(1)

@pytest.mark.parametrize("n", [1, 2])
def test_param(n, session_mark):
    assert os.environ.get("OFFLOAD_TESTS_FILE")

def test_fails():
    assert 1 + 1 == 3

def test_skips():
    pytest.skip("not here")

def test_setup_error(broken):
    pass

def test_threads_and_atexit():
    # What a child may do that a process in its interpreter's shutdown may not; and
    # what must still happen when the batch's pytest ends, in Python's order: threads
    # that are not daemons end, then the atexit handlers run (`atexit`: pid, and
    # whether the thread had ended).
    import atexit, concurrent.futures, threading, time
    late = []
    def _late():
        time.sleep(0.3)
        late.append(1)
    def _at_exit():
        with open(os.path.join(SCRATCH, "atexit"), "a") as f:
            f.write("%d %s\n" % (os.getpid(), "after-thread" if late else "before-thread"))
    atexit.register(_at_exit)
    threading.Thread(target=_late).start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(lambda: 2).result() == 2
"#
                ),
            );
        }
        s
    }

    /// Writes `offload.toml`: local provider, `max_parallel`, pytest (a command with an
    /// argument of its own after `pytest`, as many have) with `framework`
    /// lines added, `retry_count` and `[offload]` lines.
    fn config(&self, max_parallel: usize, framework: &str, offload: &str) {
        self.project.file(
            "offload.toml",
            &format!(
                "[offload]\nmax_parallel = {max_parallel}\nsandbox_project_root = \".\"\n{offload}\n\n\
                 [provider]\ntype = \"local\"\n\n\
                 [framework]\ntype = \"pytest\"\npaths = [\"tests\"]\n\
                 command = \"python -m pytest -p no:cacheprovider\"\n{framework}\n\n\
                 [groups.all]\nretry_count = 0\n",
            ),
        );
    }

    /// `offload run` in the project, `SCRATCH` in its environment.
    fn offload(&self) -> std::process::Command {
        let mut cmd = self.project.offload_with_python();
        cmd.arg("run").env("SCRATCH", self.scratch.path());
        cmd
    }

    /// Runs the suite with one pytest per batch (`max_parallel` sandboxes, every run
    /// fails: each module holds a failing test); the run and its outcomes, the reference
    /// the worker's runs must give.
    fn plain_run(&self, max_parallel: usize) -> (support::Run, Vec<(String, String)>) {
        self.config(max_parallel, "resident_worker = false", "");
        let plain = self.run(&[]);
        assert_eq!(plain.code, 1, "{}", plain.show());
        let expected = Junit::of(&self.project).outcomes();
        (plain, expected)
    }

    fn run(&self, args: &[&str]) -> support::Run {
        support::run(self.offload().args(args))
    }

    /// The lines of a scratch file (empty when it does not exist), then empties it.
    fn take(&self, name: &str) -> Vec<String> {
        let path = self.scratch.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines().map(str::to_owned).collect()
    }

    /// The lines of a scratch file (empty when it does not exist), left as it is.
    fn lines(&self, name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.scratch.path().join(name)).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// The pids recorded by test `name` (one line per attempt).
    fn pids_of(&self, name: &str) -> Vec<i32> {
        let path = self.scratch.path().join("pids").join(name);
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Makes the module at `rel` start a thread named `poller` when it is imported.
    fn start_a_thread_in(&self, rel: &str) {
        let path = self.project.path().join(rel);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(
            "import threading, time\n\
             threading.Thread(target=time.sleep, args=(300,), name='poller', daemon=True).start()\n",
        );
        std::fs::write(&path, text).unwrap();
    }

    fn batches(&self) -> usize {
        logs(self.project.path())
    }
}

/// The number of batch logs of the last run.
fn logs(project: &Path) -> usize {
    std::fs::read_dir(project.join("test-results/logs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The pids in `imports` lines (`module pid`).
fn import_pids(lines: &[String]) -> Vec<i32> {
    let mut pids: Vec<i32> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Waits (briefly: the run waits for its worker to end before it exits) until `pid`
/// is gone.
fn assert_gone(pid: i32, what: &str) {
    support::wait_until(what, Duration::from_secs(3), || !support::pid_alive(pid));
}

#[test]
fn the_worker_imports_once_and_gives_the_results_of_one_pytest_per_batch() {
    let s = Suite::new(4);
    // One sandbox, two batches (neighbouring tests together: each holds two of the
    // modules). The first starts the worker, which imports and collects its modules;
    // each batch then runs in a child of it.
    let (plain, expected) = s.plain_run(1);
    assert_eq!(expected.len(), 4 * 7, "{expected:#?}");
    let plain_batches = s.batches();
    assert_eq!(plain_batches, 2, "{}", plain.show());
    // One pytest per batch: each imports the modules of its own tests, in the process
    // that holds its session.
    let plain_imports = s.take("imports");
    let mut plain_sessions = s.take("sessions");
    plain_sessions.sort();
    let plain_pids: Vec<String> = import_pids(&plain_imports)
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(plain_pids, plain_sessions, "{plain_imports:?}");
    assert!(!plain.stderr.contains("resident"), "{}", plain.show());

    assert_eq!(s.take("atexit").len(), 4, "one per test that registers one");
    s.config(1, "", "");
    // A run that discovers starts the worker beside discovery (see
    // `a_first_run_imports_the_test_modules_while_discovery_runs`); here the discovery
    // is cached, and the first batch starts the worker.
    assert_eq!(s.run(&[]).code, 1);
    s.take("imports");
    s.take("sessions");
    s.take("atexit");
    // Without the first run's times, the same plan: two batches.
    std::fs::remove_file(s.project.path().join("test-results/junit.xml")).unwrap();
    let resident = s.run(&[]);
    assert_eq!(resident.code, 1, "{}", resident.show());
    assert_eq!(
        Junit::of(&s.project).outcomes(),
        expected,
        "{}",
        resident.show()
    );
    assert!(!resident.stderr.contains("resident"), "{}", resident.show());
    let imports = s.take("imports");
    // Each module once: the first batch's by the worker, which holds no session.
    let mut modules: Vec<&str> = imports
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    modules.sort_unstable();
    assert_eq!(
        modules,
        ["m0", "m1", "m2", "m3"],
        "{imports:?} {}",
        resident.show()
    );
    let worker = import_pids(&imports[..1])[0];
    // A session per batch, each in a child of its own, never in the worker.
    let sessions = s.take("sessions");
    assert_eq!(s.batches(), 2, "{}", resident.show());
    // Each child ran its tests' atexit handlers once their thread had ended, as
    // one pytest per batch does.
    let mut at_exit = s.take("atexit");
    at_exit.sort();
    assert_eq!(at_exit.len(), 4, "{at_exit:?}");
    assert!(
        at_exit.iter().all(|l| l.ends_with(" after-thread")),
        "{at_exit:?}"
    );
    let mut exit_pids: Vec<String> = at_exit
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    exit_pids.dedup();
    let mut session_set = sessions.clone();
    session_set.sort();
    assert_eq!(exit_pids, session_set, "{at_exit:?} {sessions:?}");
    let mut session_pids = sessions.clone();
    session_pids.sort();
    session_pids.dedup();
    assert_eq!(session_pids.len(), 2, "{sessions:?}");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(!sessions.contains(&worker.to_string()), "{sessions:?}");
    // Nothing outlives the run.
    assert_gone(worker, "the resident worker to end with the run");
}

#[test]
fn a_retried_test_runs_in_a_fresh_child() {
    let s = Suite::new(1);
    s.project.file(
        "tests/test_flaky.py",
        r#"import os

def test_flaky():
    path = os.path.join(os.environ["SCRATCH"], "pids", "flaky")
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write("%d\n" % os.getpid())
    assert not first, "fails the first time"
"#,
    );
    s.project.file(
        "offload.toml",
        "[offload]\nmax_parallel = 2\nsandbox_project_root = \".\"\n\n\
         [provider]\ntype = \"local\"\n\n\
         [framework]\ntype = \"pytest\"\npaths = [\"tests/test_flaky.py\"]\n\
         command = \"python -m pytest\"\n\n[groups.all]\nretry_count = 2\n",
    );
    let run = s.run(&[]);
    assert_eq!(run.code, 2, "{}", run.show());
    let pids = s.pids_of("flaky");
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_ne!(pids[0], pids[1], "the retry ran in the child that failed");
    let worker = import_pids(&s.take("imports"));
    assert!(
        worker.is_empty(),
        "only test_flaky.py is collected: {worker:?}"
    );
}

#[test]
fn when_the_worker_cannot_be_used_batches_run_plainly_and_the_run_says_why_once() {
    // A conftest that leaves a thread running after collection: forking is not safe.
    let s = Suite::new(3);
    s.start_a_thread_in("tests/conftest.py");
    s.config(3, "", "");
    let run = s.run(&[]);
    assert_eq!(run.code, 1, "{}", run.show());
    let said = run.stderr.matches("threads running (poller)").count();
    assert_eq!(said, 1, "{}", run.show());
    assert_eq!(Junit::of(&s.project).outcomes().len(), 3 * 7);
    // Every batch imported its own modules, each in a pytest of its own (the worker
    // stopped before it imported any).
    let imports = s.take("imports");
    let mut modules: Vec<&str> = imports
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    modules.sort_unstable();
    modules.dedup();
    assert_eq!(modules, ["m0", "m1", "m2"], "{imports:?}");
    assert_eq!(import_pids(&imports).len(), s.batches(), "{imports:?}");

    // A command that is not pytest: said once, before anything runs.
    let s = Suite::new(2);
    s.project
        .file("run-tests.sh", "exec python -m pytest \"$@\"\n");
    s.config(2, "", "");
    let toml = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    s.project.file(
        "offload.toml",
        &toml.replace(
            "command = \"python -m pytest -p no:cacheprovider\"",
            "command = \"sh run-tests.sh\"",
        ),
    );
    let run = s.run(&[]);
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(
        run.stderr
            .matches("does not look like pytest, so the resident worker")
            .count(),
        1,
        "{}",
        run.show()
    );
    assert_eq!(Junit::of(&s.project).outcomes().len(), 2 * 7);
}

#[test]
fn batches_that_start_together_do_not_wait_for_the_workers_imports() {
    // Two sandboxes, two batches, each of a module that takes 1.5 s to import. The
    // batch that starts the worker has its module imported by the worker; the other
    // batch, which queued behind the start-up, is forked at once and imports its own
    // module meanwhile: the two imports overlap.
    let s = Suite::new(0);
    for m in ["a", "b"] {
        s.project.file(
            &format!("tests/test_slow_{m}.py"),
            &format!(
                r#"import os, time

SCRATCH = os.environ["SCRATCH"]
if os.environ.get("OFFLOAD_TESTS_FILE"):
    began = time.time()
    time.sleep(1.5)
    with open(os.path.join(SCRATCH, "imports"), "a") as f:
        f.write("{m} %d %f %f\n" % (os.getpid(), began, time.time()))

def test_{m}(session_mark):
    pass
"#
            ),
        );
    }
    s.config(2, "", "");
    // The first run discovers, and the worker starts (and imports) while it does; the
    // second finds the discovery cached, and the batches start the worker.
    let run = s.run(&[]);
    assert_eq!(run.code, 0, "{}", run.show());
    s.take("imports");
    s.take("sessions");
    let run = s.run(&["-v"]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(
        run.stderr.contains("reusing the previous discovery"),
        "{}",
        run.show()
    );
    assert_eq!(s.batches(), 2, "{}", run.show());
    let imports = s.take("imports");
    assert_eq!(imports.len(), 2, "{imports:?}");
    let times: Vec<(f64, f64)> = imports
        .iter()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[2].parse().unwrap(), w[3].parse().unwrap())
        })
        .collect();
    let latest_start = times[0].0.max(times[1].0);
    let earliest_end = times[0].1.min(times[1].1);
    assert!(
        latest_start < earliest_end,
        "one import waited for the other: {imports:?}"
    );
    // One of them in the worker, which holds no session; the sessions are the
    // batches' children.
    let sessions = s.take("sessions");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let in_worker = import_pids(&imports)
        .into_iter()
        .filter(|pid| !sessions.contains(&pid.to_string()))
        .count();
    assert_eq!(in_worker, 1, "{imports:?} {sessions:?}");
}

#[test]
fn a_test_module_that_starts_a_thread_at_import_turns_the_worker_off_with_correct_results() {
    // Whatever batch starts the worker, the worker's import of its modules leaves a
    // thread running: that batch and the later ones run as plain pytest.
    let s = Suite::new(4);
    for m in 0..4 {
        s.start_a_thread_in(&format!("tests/test_m{m}.py"));
    }
    let (_, expected) = s.plain_run(1);
    s.take("imports");
    s.config(1, "", "");
    std::fs::remove_file(s.project.path().join("test-results/junit.xml")).unwrap();
    let run = s.run(&[]);
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(Junit::of(&s.project).outcomes(), expected, "{}", run.show());
    assert_eq!(
        run.stderr.matches("threads running (poller").count(),
        1,
        "{}",
        run.show()
    );
    // The worker imported the first batch's modules before it stopped; each batch
    // then imported its own in a pytest of its own.
    let imports = s.take("imports");
    assert_eq!(import_pids(&imports).len(), 1 + s.batches(), "{imports:?}");
}

/// Two modules whose import takes a second, in discovery and in batches alike; each
/// import writes `who pid began ended` (who: `batch` when a batch's tests file is set,
/// else `discovery`) to `imports`.
fn slow_to_import(s: &Suite, seconds: f64) {
    for m in ["a", "b"] {
        s.project.file(
            &format!("tests/test_slow_{m}.py"),
            &format!(
                r#"import os, time

began = time.time()
with open(os.path.join(os.environ["SCRATCH"], "began"), "a") as f:
    f.write("began %d\n" % os.getpid())
time.sleep({seconds})
who = "batch" if os.environ.get("OFFLOAD_TESTS_FILE") else "discovery"
with open(os.path.join(os.environ["SCRATCH"], "imports"), "a") as f:
    f.write("%s %d %f %f\n" % (who, os.getpid(), began, time.time()))

def test_{m}(session_mark):
    pass
"#
            ),
        );
    }
}

#[test]
fn a_first_run_imports_the_test_modules_while_discovery_runs() {
    let s = Suite::new(0);
    slow_to_import(&s, 1.0);
    s.config(2, "", "");
    let run = s.run(&[]);
    assert_eq!(run.code, 0, "{}", run.show());
    assert_eq!(Junit::of(&s.project).outcomes().len(), 2, "{}", run.show());
    let imports = s.take("imports");
    let of = |who: &str| -> Vec<Vec<String>> {
        imports
            .iter()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|w| w[0] == who)
            .collect()
    };
    let (discovery, batches) = (of("discovery"), of("batch"));
    assert_eq!(discovery.len(), 2, "{imports:?}");
    // Both modules imported once for the batches, by one process: the worker, which
    // the warm-up started beside discovery. Its first import began before
    // discovery's last one ended.
    assert_eq!(batches.len(), 2, "{imports:?}");
    assert_eq!(batches[0][1], batches[1][1], "{imports:?}");
    let worker_began: f64 = batches[0][2].parse().unwrap();
    let discovery_ended: f64 = discovery[1][3].parse().unwrap();
    assert!(
        worker_began < discovery_ended,
        "the worker waited for discovery: {imports:?}"
    );
    // The sessions are the batches' own, in children of the worker.
    let sessions = s.take("sessions");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(!sessions.contains(&batches[0][1]), "{sessions:?}");
    assert_gone(
        batches[0][1].parse().unwrap(),
        "the worker to end with the run",
    );
}

#[test]
fn ctrl_c_while_discovery_runs_leaves_no_worker() {
    let s = Suite::new(0);
    slow_to_import(&s, 300.0);
    s.config(2, "", "");
    let child = support::spawn_piped(&mut s.offload());
    // Discovery and the worker both import the first module.
    support::wait_until("two imports to start", Duration::from_secs(60), || {
        import_pids(&s.lines("began")).len() == 2
    });
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = support::wait_bounded(child, Duration::from_secs(60), "offload after SIGINT");
    assert_eq!(run.code, 130, "{}", run.show());
    let pids = import_pids(&s.take("began"));
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert_gone(pid, "discovery and the worker to end with the run");
    }
}

/// Runs the Python program `check` with the directory of Offload's scripts and a fresh
/// empty directory as its arguments; it must print `ok`. A worker it started there
/// (under `shared/`) is told to end.
fn python_check(check: &str) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let project = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::python_bin_dir().join("python"))
        .arg("-c")
        .arg(check)
        .arg(&scripts)
        .arg(project.path())
        .output()
        .expect("run python");
    let shared = std::fs::read_dir(project.path().join("shared"))
        .into_iter()
        .flatten();
    for pid_file in shared
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
    {
        let pid = std::fs::read_to_string(pid_file.path()).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: plain kill(2) on the worker this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A project with one test that records its pid and hangs, beside quick ones.
fn hanging(timeout_secs: u32) -> Suite {
    let s = Suite::new(2);
    s.project.file(
        "tests/test_hang.py",
        r#"import os, time

def test_hangs():
    with open(os.path.join(os.environ["SCRATCH"], "pids", "hang"), "a") as f:
        f.write("%d\n" % os.getpid())
    time.sleep(300)
"#,
    );
    // One sandbox: every batch after the first goes through its worker.
    s.config(1, "", &format!("test_timeout_secs = {timeout_secs}"));
    s
}

#[test]
fn ctrl_c_leaves_neither_the_worker_nor_a_child() {
    let s = hanging(300);
    let child = support::spawn_piped(&mut s.offload());
    support::wait_until("the hanging test to start", Duration::from_secs(60), || {
        !s.pids_of("hang").is_empty()
    });
    let worker = import_pids(&s.take("imports"));
    assert_eq!(worker.len(), 1, "{worker:?}");
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = support::wait_bounded(child, Duration::from_secs(60), "offload after SIGINT");
    assert_eq!(run.code, 130, "{}", run.show());
    for pid in s.pids_of("hang") {
        assert_gone(pid, "the hanging test's child to be killed");
    }
    assert_gone(worker[0], "the worker to end with the run");
}

#[test]
fn a_timed_out_batch_kills_its_child_and_the_worker_serves_on() {
    let s = hanging(5);
    let run = s.run(&[]);
    assert_eq!(run.code, 1, "{}", run.show());
    let junit = Junit::of(&s.project);
    let hang = junit.case("tests/test_hang.py::test_hangs");
    assert_eq!(hang.outcome, "failure", "{}", run.show());
    for pid in s.pids_of("hang") {
        assert_gone(pid, "the timed-out test's child to be killed");
    }
    // The other tests ran through the one worker and have their results.
    assert_eq!(junit.cases.len(), 2 * 7 + 1, "{}", run.show());
    let workers = import_pids(&s.take("imports"));
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_gone(workers[0], "the worker to end with the run");
}

#[test]
fn batches_reach_the_worker_through_a_command_driven_provider() {
    let s = Suite::new(4);
    let (_, expected) = s.plain_run(2);
    s.take("imports");

    // Each sandbox a private copy of the project, reached only through exec_command.
    let home = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(s.project.path().join("offload.toml")).unwrap();
    let provider = "[provider]\ntype = \"default\"\n\
         prepare_command = \"@local_sandbox.sh prepare\"\n\
         create_command = \"@local_sandbox.sh create {image_id}\"\n\
         exec_command = \"@local_sandbox.sh exec {sandbox_id} {command}\"\n\
         download_command = \"@local_sandbox.sh download {sandbox_id} {paths}\"\n\
         destroy_command = \"@local_sandbox.sh destroy {sandbox_id}\"\n";
    let toml = toml
        .replace("[provider]\ntype = \"local\"\n", provider)
        .replace("max_parallel = 2", "max_parallel = 3")
        .replace("resident_worker = false", "");
    s.project.file("offload.toml", &toml);
    let run = support::run(s.offload().env("OFFLOAD_SANDBOX_HOME", home.path()));
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(Junit::of(&s.project).outcomes(), expected, "{}", run.show());
    let imports = s.take("imports");
    let sessions = s.take("sessions");
    // The importing processes that hold no session are the workers: one per sandbox
    // at most. No process imports a module twice.
    let workers: Vec<i32> = import_pids(&imports)
        .into_iter()
        .filter(|pid| !sessions.contains(&pid.to_string()))
        .collect();
    assert!(
        !workers.is_empty() && workers.len() <= 3,
        "{imports:?} {sessions:?}"
    );
    let mut distinct = imports.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), imports.len(), "{imports:?}");
    for pid in workers {
        assert_gone(pid, "each sandbox's worker to end with its sandbox");
    }
    let left: Vec<PathBuf> = std::fs::read_dir(home.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().contains("sandbox-")),
        "{left:?}"
    );
}

/// A batch that reaches the worker after the first moments (while it imports its own
/// batch's modules) is forked between two of those imports, not after all of them.
#[test]
fn a_batch_that_arrives_while_the_worker_imports_waits_for_one_module_at_most() {
    let check = r#"
import os, subprocess, sys, time
scripts, root = sys.argv[1], sys.argv[2]
os.chdir(root)
os.makedirs("tests")
for m in range(3):
    with open("tests/test_slow%d.py" % m, "w") as f:
        f.write("import os, time\n"
                "if os.environ.get('OFFLOAD_TESTS_FILE'):\n"
                "    time.sleep(0.8)\n"
                "    open('imported', 'a').write('%f\\n' % time.time())\n"
                "def test_slow():\n    pass\n")
with open("tests/test_fast.py", "w") as f:
    f.write("import time\ndef test_fast():\n    open('ran', 'w').write('%f' % time.time())\n")
env = dict(os.environ, PYTHONPATH=scripts)
os.makedirs("shared")
def client(name, files):
    with open(name + ".ids", "w") as f:
        f.write("".join(p + "::test_" + p.split("test_")[1][:-3].rstrip("0123456789") + "\n" for p in files))
    args = ["-p", "offload_pytest_plugin", "-q", "--junitxml=%s/%s.xml" % (root, name)] + files
    return subprocess.Popen(
        [sys.executable, "-S", os.path.join(scripts, "offload_pytest_client.py"), "shared", "k",
         "3", str(len(files)), sys.executable, "-m", "pytest"] + args,
        env=dict(env, OFFLOAD_TESTS_FILE=os.path.abspath(name + ".ids")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
first = client("a", ["tests/test_slow0.py", "tests/test_slow1.py", "tests/test_slow2.py"])
# Once the worker imports the first module, well after its gathering window.
while not os.path.exists("imported"):
    time.sleep(0.01)
late = client("b", ["tests/test_fast.py"])
assert late.wait(30) == 0 and first.wait(30) == 0
ran = float(open("ran").read())
imported = [float(x) for x in open("imported").read().split()]
assert len(imported) == 3, imported
assert ran < max(imported), ("the late batch waited for every import", ran, imported)
print("ok")
"#;
    python_check(check);
}

/// A warm-up imports the test modules pytest's collection of the paths would import, and
/// no others: not a file whose name is not a test file's, nor one in a directory pytest
/// does not walk into (`norecursedirs`, `--ignore`, a conftest's `collect_ignore`), nor
/// one under a conftest pytest has not loaded yet.
#[test]
fn a_warm_up_imports_what_collection_would() {
    let check = r#"
import os, subprocess, sys, time
scripts, root = sys.argv[1], sys.argv[2]
os.chdir(root)
record = "import os\nopen(os.path.join(%r, 'imported'), 'a').write(__name__ + '\\n')\ndef test_x():\n    pass\n" % root
files = ["tests/test_a.py", "tests/deep/test_d.py", "tests/helper.py", "tests/.hidden/test_h.py",
         "tests/build/test_b.py", "tests/ignored/test_i.py", "tests/skipped/test_k.py",
         "tests/sub/test_s.py"]
for path in files:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(record)
with open("tests/conftest.py", "w") as f:
    f.write("collect_ignore = ['ignored']\n")
with open("tests/sub/conftest.py", "w") as f:
    f.write("\n")
os.makedirs("shared")
open("empty", "w").close()
env = dict(os.environ, PYTHONPATH=scripts, OFFLOAD_TESTS_FILE=os.path.abspath("empty"),
           OFFLOAD_RESIDENT_WARM="1")
args = ["-p", "offload_pytest_plugin", "-q", "--ignore=tests/skipped",
        "--junitxml=%s/warm.xml" % root, "tests"]
warm = subprocess.run(
    [sys.executable, "-S", os.path.join(scripts, "offload_pytest_client.py"), "shared", "k",
     "3", "1", sys.executable, "-m", "pytest"] + args, env=env, timeout=60)
assert warm.returncode == 0, warm.returncode
imported = sorted(open("imported").read().split())
assert imported == ["test_a", "test_d"], imported
print("ok")
"#;
    python_check(check);
}

/// The client reads the worker's "started" and "exit" messages one at a time, also when
/// both arrive in one read (a batch that ends at once), the file descriptors a message
/// carries arrive with it, and a batch's request arrives whole (a value that is not
/// UTF-8 included).
#[test]
fn the_socket_protocol_reads_exactly_one_message_at_a_time() {
    let check = r#"
import os, socket, sys
sys.path.insert(0, sys.argv[1])
import offload_pytest_client as c
import offload_pytest_worker as w
a, b = socket.socketpair()
b.settimeout(10)  # a reader that took both messages at once would wait for ever
c.send(a, ["started", "1"])
c.send(a, ["exit", "3"])
assert c.receive(b) == (["started", "1"], []), "first"
assert c.receive(b) == (["exit", "3"], []), "second"
r, wr = os.pipe()
env = {"HOME": "/h", "EMPTY": "", "ODD": os.fsdecode(b"caf\xe9 \xff"), "LONG": "x" * 200000}
request = c.request_fields(False, ["python", "-m", "pytest"], ["-q", "", "t/a b.py"], 1, env, "/w d")
c.send(a, request, fds=(r, wr, r))
fields, fds = c.receive(b)
assert len(fds) == 3, fds
got = c.request_of(fields)
assert got == {"warm": False, "cwd": "/w d", "targets": 1, "prefix": ["python", "-m", "pytest"],
               "args": ["-q", "", "t/a b.py"], "env": env}, {k: str(v)[:100] for k, v in got.items()}
os.write(fds[1], b"through")
assert os.read(r, 7) == b"through"
warm = c.request_of(c.request_fields(True, ["pytest"], [], 0, {}, "/"))
assert warm["warm"] and warm["args"] == [] and warm["env"] == {}, warm
a.close()
assert c.receive(b) == (None, []), "closed"
# A batch's arguments: its options, without the JUnit file, that file, its targets.
got = w._split_args(["-p", "x", "--junitxml=/r/b.xml", "-q", "t/a.py", "t/b.py"], 2)
assert got == (["-p", "x", "--junitxml=", "-q"], "/r/b.xml", ["t/a.py", "t/b.py"]), got
print("ok")
"#;
    python_check(check);
}

/// The worker the first client starts outlives it, so it must not hold what the client
/// inherited: a pipe a caller waits on for its end (an exec channel) ends with the
/// client, not with the worker.
#[test]
fn the_worker_holds_no_descriptor_its_client_inherited() {
    let check = r#"
import os, select, subprocess, sys
scripts, root = sys.argv[1], sys.argv[2]
os.chdir(root)
os.makedirs("tests")
with open("tests/test_a.py", "w") as f:
    f.write("def test_a():\n    pass\n")
with open("a.ids", "w") as f:
    f.write("tests/test_a.py::test_a\n")
os.makedirs("shared")
r, w = os.pipe()
client = subprocess.Popen(
    [sys.executable, "-S", os.path.join(scripts, "offload_pytest_client.py"), "shared", "k",
     "3", "1", sys.executable, "-m", "pytest", "-p", "offload_pytest_plugin", "-q",
     "--junitxml=%s/a.xml" % root, "tests/test_a.py"],
    env=dict(os.environ, PYTHONPATH=scripts, OFFLOAD_TESTS_FILE=os.path.abspath("a.ids")),
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(w,))
assert client.wait(60) == 0, client.returncode
assert os.path.exists("shared/resident-k.pid"), "no worker started"
os.close(w)
ready, _, _ = select.select([r], [], [], 10)
assert ready and os.read(r, 1) == b"", "the worker holds the client's inherited pipe"
print("ok")
"#;
    python_check(check);
}
