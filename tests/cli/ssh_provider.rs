//! `offload run` through the `default` provider and the bundled SSH backend
//! (`@ssh_sandbox.sh`) against real `sshd` instances on 127.0.0.1: each its own "host"
//! (its own port and its own remote directory), with a throwaway host key and a client
//! key made by the test. The tests install sshd and rsync on first use when they are
//! missing (`scripts/setup-system-deps`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Junit, Project, assert_dead_soon};

const SSHD: &str = "/usr/sbin/sshd";

/// Installs sshd and rsync on first use when they are missing (`scripts/setup-system-deps`,
/// as the Python tests build their virtualenv), and fails the test (never skips it) when
/// they are still missing.
fn require_system_deps() {
    support::install_system_deps();
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: the SSH tests need openssh-server (run `scripts/setup-system-deps`)"
    );
    for tool in ["rsync", "ssh", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is missing: the SSH tests need it (run `scripts/setup-system-deps`)"
        );
    }
}

/// One sshd on 127.0.0.1, killed when dropped.
struct Host {
    port: u16,
    /// Its remote directory (`OFFLOAD_SSH_HOME` in its sessions).
    home: PathBuf,
    child: Option<Child>,
}

impl Host {
    /// The entry for `OFFLOAD_SSH_HOSTS`.
    fn entry(&self, slots: u32) -> String {
        format!("root@127.0.0.1:{}/{slots}", self.port)
    }

    /// Kills the sshd (new connections are refused; sessions already open go on).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Takes the host down as a machine that dies would: sshd and every session it
    /// serves are killed at once (the connections drop), and new connections are
    /// refused. Processes detached from the sessions are the caller's to kill.
    fn die(&mut self) {
        let Some(child) = &self.child else { return };
        let sessions = descendants(child.id() as i32);
        self.stop();
        for pid in sessions {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// The sandbox directories on this host, with the process-group records beside them
    /// (`sandbox-XXXXXX.pgids`).
    fn sandboxes(&self) -> Vec<String> {
        std::fs::read_dir(&self.home)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("sandbox-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A pool of sshd "hosts" sharing a host key, a client key and an ssh config file.
struct Hosts {
    dir: tempfile::TempDir,
    hosts: Vec<Host>,
}

impl Hosts {
    fn start(n: usize) -> Self {
        Self::start_with(n, |_, _| String::new())
    }

    /// Like [`Self::start`], with sshd configuration lines for host `i` (given the
    /// pool's directory) put first: sshd takes the first value of a keyword.
    fn start_with(n: usize, extra: impl Fn(usize, &Path) -> String) -> Self {
        require_system_deps();
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("offload-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for key in ["hostkey", "userkey"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen failed");
        }
        std::fs::copy(d.join("userkey.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
                 UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                d.join("userkey").display()
            ),
        )
        .unwrap();
        let hosts = (0..n).map(|i| start_sshd(d, i, &extra(i, d))).collect();
        Self { dir, hosts }
    }

    /// `OFFLOAD_SSH_OPTIONS` for the client.
    fn options(&self) -> String {
        format!("-F {}", self.dir.path().join("ssh_config").display())
    }

    /// `OFFLOAD_SSH_HOSTS` with `slots` each.
    fn list(&self, slots: u32) -> String {
        let entries: Vec<String> = self.hosts.iter().map(|h| h.entry(slots)).collect();
        entries.join(" ")
    }

    /// Sandbox directories left on any host.
    fn sandboxes(&self) -> Vec<String> {
        self.hosts.iter().flat_map(Host::sandboxes).collect()
    }
}

/// The processes below `root` (children, their children...), from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after `)`.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Starts sshd number `i` in `dir`, retrying on another port when the one picked was
/// taken meanwhile.
fn start_sshd(dir: &Path, i: usize, extra: &str) -> Host {
    let home = dir.join(format!("host{i}"));
    std::fs::create_dir_all(&home).unwrap();
    for _attempt in 0..5 {
        let port = free_port();
        let config = dir.join(format!("sshd-{i}.conf"));
        std::fs::write(
            &config,
            format!(
                "{extra}Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd-{i}.pid\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 MaxStartups 100\nMaxSessions 100\nSetEnv OFFLOAD_SSH_HOME={home}\n",
                d = dir.display(),
                home = home.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(dir.join(format!("sshd-{i}.log")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Host {
                    port,
                    home,
                    child: Some(child),
                };
            }
            if child.try_wait().expect("poll sshd").is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let log = std::fs::read_to_string(dir.join(format!("sshd-{i}.log"))).unwrap_or_default();
    panic!("sshd {i} did not start:\n{log}");
}

/// The `[provider]` table of the SSH backend.
const PROVIDER: &str = r#"[provider]
type = "default"
prepare_command = "@ssh_sandbox.sh prepare"
create_command = "@ssh_sandbox.sh create {image_id}"
exec_command = "@ssh_sandbox.sh exec {sandbox_id} {command}"
download_command = "@ssh_sandbox.sh download {sandbox_id} {paths}"
destroy_command = "@ssh_sandbox.sh destroy {sandbox_id}"
timeout_secs = 120
"#;

/// A project and the hosts it runs on.
struct Setup {
    project: Project,
    hosts: Hosts,
    /// Slot records of the script (`OFFLOAD_SSH_STATE_DIR`).
    state: tempfile::TempDir,
    /// Scratch space the tests write to (pid files, where they ran).
    scratch: tempfile::TempDir,
    /// `OFFLOAD_SSH_HOSTS`.
    list: String,
}

impl Setup {
    fn new(hosts: Hosts, slots: u32) -> Self {
        let tmp = || tempfile::tempdir().expect("temp dir");
        let list = hosts.list(slots);
        let s = Self {
            project: Project::new(),
            hosts,
            state: tmp(),
            scratch: tmp(),
            list,
        };
        std::fs::create_dir_all(s.scratch.path().join("pids")).unwrap();
        std::fs::create_dir_all(s.scratch.path().join("where")).unwrap();
        s
    }

    /// `offload` in the project, pointed at the hosts.
    fn offload(&self) -> Command {
        let mut cmd = self.project.offload_with_python();
        cmd.env("OFFLOAD_SSH_HOSTS", &self.list)
            .env("OFFLOAD_SSH_OPTIONS", self.hosts.options())
            .env("OFFLOAD_SSH_STATE_DIR", self.state.path())
            .env("OFFLOAD_SSH_CONNECT_TIMEOUT", "5");
        cmd
    }

    /// Writes `offload.toml`: `[offload]` with `offload`, the provider table (local or
    /// SSH), `[provider.env]` and the framework and groups in `rest`.
    fn config(&self, ssh: bool, offload: &str, rest: &str) {
        let provider = if ssh {
            PROVIDER.to_owned()
        } else {
            "[provider]\ntype = \"local\"\n".to_owned()
        };
        self.project.file(
            "offload.toml",
            &format!(
                "[offload]\nsandbox_project_root = \".\"\ntest_timeout_secs = 120\n{offload}\n\n\
                 {provider}\n[provider.env]\nPIDS = \"{pids}\"\nWHERE = \"{where_}\"\n\n{rest}\n",
                pids = self.scratch.path().join("pids").display(),
                where_ = self.scratch.path().join("where").display(),
            ),
        );
    }

    fn pids(&self) -> Vec<i32> {
        support::read_pids(&self.scratch.path().join("pids"))
    }

    /// The directories the tests recorded they ran in.
    fn places(&self) -> Vec<String> {
        std::fs::read_dir(self.scratch.path().join("where"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }

    /// Slot records still held.
    fn claimed_slots(&self) -> usize {
        let slots = self.state.path().join("slots");
        std::fs::read_dir(slots)
            .map(|hosts| {
                hosts
                    .flatten()
                    .map(|h| std::fs::read_dir(h.path()).map_or(0, |s| s.count()))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Asserts that `count` places were recorded, each a sandbox directory on a host.
    fn assert_ran_on_the_hosts(&self, count: usize, run: &support::Run) {
        let places = self.places();
        assert_eq!(places.len(), count, "{places:?}");
        for place in &places {
            let on_a_host = self
                .hosts
                .hosts
                .iter()
                .any(|h| place.starts_with(&format!("{}/sandbox-", h.home.display())));
            assert!(on_a_host, "ran in {place}\n{}", run.show());
        }
    }

    /// Asserts that no sandbox directory, slot or test process is left.
    fn assert_clean(&self) {
        for pid in self.pids() {
            assert_dead_soon(pid);
        }
        assert_eq!(
            self.hosts.sandboxes(),
            Vec::<String>::new(),
            "sandboxes left"
        );
        assert_eq!(self.claimed_slots(), 0, "slots left claimed");
    }
}

/// A pytest suite: passes, a failure, an error, a skip, parametrized IDs with spaces,
/// and a test per module recording where it ran.
fn write_pytest_suite(project: &Project) {
    for m in 0..4 {
        project.file(
            &format!("tests/test_m{m}.py"),
            &format!(
                r#"import os, pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup breaks")

@pytest.mark.parametrize("n", range(5))
def test_passes(n):
    assert n >= 0

def test_fails():
    assert "m{m}" == "other"

def test_errors(broken):
    pass

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.parametrize("text", ["a b", "x [y]"])
def test_param(text):
    assert open("data.txt").read() == "project data\n"

def test_where():
    with open(os.path.join(os.environ["WHERE"], "m{m}"), "w") as f:
        f.write(os.getcwd())
"#
            ),
        );
    }
    project.file("data.txt", "project data\n");
}

/// The pytest framework, with the test virtualenv's python named by its path: the
/// hosts' sessions have sshd's own `PATH`.
fn pytest_framework() -> String {
    format!(
        "[framework]\ntype = \"pytest\"\npaths = [\"tests\"]\ncommand = \"{} -m pytest\"\n\n\
         [groups.all]\nretry_count = 0\n",
        support::python_bin_dir().join("python").display()
    )
}

#[test]
fn a_pytest_suite_across_ssh_hosts_gives_the_results_of_a_local_run() {
    let s = Setup::new(Hosts::start(3), 2);
    write_pytest_suite(&s.project);
    s.project.file("data.txt", "committed, then changed\n");
    s.project.file(".gitignore", "test-results/\n");
    support::init_repo(s.project.path());
    support::commit_all(s.project.path(), "suite");
    // Uncommitted changes must reach the hosts too.
    s.project.file("data.txt", "project data\n");
    s.project
        .file("tests/test_new.py", "def test_uncommitted():\n    pass\n");

    s.config(false, "max_parallel = 6", &pytest_framework());
    let local = support::run(s.offload().arg("run"));
    assert_eq!(local.code, 1, "{}", local.show());
    let expected = Junit::of(&s.project).outcomes();
    assert_eq!(expected.len(), 4 * 11 + 1, "{expected:#?}");

    for entry in std::fs::read_dir(s.scratch.path().join("where")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    s.config(true, "max_parallel = 6", &pytest_framework());
    let remote = support::run(s.offload().arg("run"));
    assert_eq!(remote.code, 1, "{}", remote.show());
    assert_eq!(
        Junit::of(&s.project).outcomes(),
        expected,
        "{}",
        remote.show()
    );
    remote.assert_summary("Passed: 33");

    // The tests ran in sandbox directories on the hosts, not in the project.
    s.assert_ran_on_the_hosts(4, &remote);
    s.assert_clean();

    // A second run sends nothing: the hosts have the image already.
    let again = support::run(s.offload().arg("run"));
    assert_eq!(again.code, 1, "{}", again.show());
    assert!(
        again.stderr.contains("is there already"),
        "{}",
        again.show()
    );
    assert!(
        !again.stderr.contains("sending the project"),
        "{}",
        again.show()
    );
    assert_eq!(Junit::of(&s.project).outcomes(), expected);
    s.assert_clean();
}

/// A runner for the default framework: `sh runner.sh RESULT ID...`. `pass-*` passes,
/// `hang-*` writes its pid to `$PIDS/<id>` and sleeps, `doom-*` does so only the first
/// time, `iso-*` checks that its sandbox
/// holds only its own run's files. Each records where it ran in `$WHERE/<id>`.
const RUNNER: &str = r#"result=$1; shift
cases=""
for id; do
  pwd > "$WHERE/$id"
  out=""
  case $id in
  hang-*) echo $$ > "$PIDS/$id"; sleep 300 ;;
  doom-*)
    # The first time, wait for the test to take the host down.
    [ -e "$PIDS/../$id.doomed" ] || { : > "$PIDS/../$id.doomed"; echo $$ > "$PIDS/$id"; sleep 300; } ;;
  iso-*)
    echo "$id" > shared.txt
    [ -f "$(cat run.txt).only" ] || out='<failure message="own file missing">x</failure>'
    [ "$(ls *.only | wc -l)" = 1 ] || out='<failure message="foreign file">x</failure>'
    sleep 1
    [ "$(cat shared.txt)" = "$id" ] || out='<failure message="shared.txt overwritten">x</failure>' ;;
  esac
  cases="$cases<testcase name=\"$id\">$out</testcase>"
done
printf '<?xml version="1.0"?><testsuite name="r">%s</testsuite>' "$cases" > "$result"
"#;

/// A project running `tests` through [`RUNNER`].
fn scripted(s: &Setup, tests: &[String], max_parallel: usize) {
    s.project.file("runner.sh", RUNNER);
    s.project.file("tests.txt", &(tests.join("\n") + "\n"));
    s.config(
        true,
        &format!("max_parallel = {max_parallel}"),
        r#"[framework]
type = "default"
discover_command = "grep -v '^$' tests.txt {filters}"
run_command = "sh runner.sh {result_file} {tests}"
test_id_format = "{name}"

[groups.all]
retry_count = 0
"#,
    );
}

#[test]
fn a_host_that_refuses_connections_only_reduces_parallelism() {
    let mut hosts = Hosts::start(2);
    let refused = free_port();
    let mut s = Setup::new(hosts_take(&mut hosts), 1);
    s.list = format!("{} root@127.0.0.1:{refused}/2", s.list);
    let tests: Vec<String> = (0..6).map(|i| format!("pass-{i}")).collect();
    scripted(&s, &tests, 4);
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary("Passed: 6");
    // The message names the host and the fix.
    let host = format!("root@127.0.0.1:{refused}");
    assert!(
        run.stderr.contains(&format!("cannot reach host {host}")),
        "{}",
        run.show()
    );
    assert!(
        run.stderr.contains("check that sshd runs there"),
        "{}",
        run.show()
    );
    // Every test ran on one of the two working hosts.
    let places = s.places();
    assert_eq!(places.len(), 6);
    for place in &places {
        assert!(
            s.hosts
                .hosts
                .iter()
                .any(|h| place.starts_with(&h.home.display().to_string())),
            "{place}"
        );
    }
    s.assert_clean();
}

#[test]
fn a_host_that_dies_mid_batch_turns_its_batch_into_a_run_elsewhere_with_no_test_lost() {
    let mut s = Setup::new(Hosts::start(2), 1);
    let mut tests: Vec<String> = (0..5).map(|i| format!("pass-{i}")).collect();
    tests.push("doom-0".to_owned());
    scripted(&s, &tests, 2);
    let child = support::spawn_piped(s.offload().arg("run"));
    let where_ = s.scratch.path().join("where/doom-0");
    support::wait_until(
        "the doomed test to start on a host",
        Duration::from_secs(90),
        || s.pids().len() == 1 && where_.exists(),
    );
    let place = std::fs::read_to_string(&where_).unwrap();
    let doomed = s
        .hosts
        .hosts
        .iter()
        .position(|h| place.starts_with(&h.home.display().to_string()))
        .unwrap_or_else(|| panic!("{place} is on no host"));
    s.hosts.hosts[doomed].die();
    for pid in s.pids() {
        // SAFETY: plain kill(2) of the test's process group, detached from the session.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let run = support::wait_bounded(child, Duration::from_secs(120), "offload");
    // No retries are configured, and none was needed: every test passed.
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary("Passed: 6");
    let host = s.hosts.hosts[doomed].entry(1);
    let host = host.trim_end_matches("/1");
    assert!(run.stderr.contains("was lost"), "{}", run.show());
    // The batch's log says which host went down.
    let logs = s.project.path().join("test-results/logs");
    let said = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .any(|log| log.contains(&format!("lost host {host}")));
    assert!(
        said,
        "no batch log in {} names the lost host",
        logs.display()
    );
    // The doomed test's batch ran again on the other host.
    let again = std::fs::read_to_string(&where_).unwrap();
    let other = &s.hosts.hosts[1 - doomed].home;
    assert!(again.starts_with(&other.display().to_string()), "{again}");
    let passed: Vec<(String, String)> = tests.iter().map(|t| (t.clone(), String::new())).collect();
    let mut passed = passed;
    passed.sort();
    // One result each, no failure child (a passed case has no outcome element).
    assert_eq!(Junit::of(&s.project).outcomes(), passed);
    // Nothing is left on the host that lived, and no slot stays claimed.
    assert_eq!(s.hosts.hosts[1 - doomed].sandboxes(), Vec::<String>::new());
    assert_eq!(s.claimed_slots(), 0, "slots left claimed");
}

/// Moves the hosts out of `hosts` (for building a [`Setup`] from a pool the test changes).
fn hosts_take(hosts: &mut Hosts) -> Hosts {
    Hosts {
        dir: std::mem::replace(&mut hosts.dir, tempfile::tempdir().unwrap()),
        hosts: std::mem::take(&mut hosts.hosts),
    }
}

#[test]
fn ctrl_c_leaves_no_sandbox_and_no_process_on_any_host() {
    let s = Setup::new(Hosts::start(2), 2);
    let tests: Vec<String> = (0..3).map(|i| format!("hang-{i}")).collect();
    scripted(&s, &tests, 3);
    let child = support::spawn_piped(s.offload().arg("run"));
    support::wait_until(
        "the hanging tests to start on the hosts",
        Duration::from_secs(90),
        || s.pids().len() >= 3,
    );
    let dirs = s.hosts.sandboxes();
    assert_eq!(
        dirs.iter().filter(|d| !d.contains('.')).count(),
        3,
        "{dirs:?}"
    );
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = support::wait_bounded(child, Duration::from_secs(90), "offload after SIGINT");
    assert_eq!(run.code, 130, "{}", run.show());
    run.assert_summary("Not Run: 3");
    s.assert_clean();
}

#[test]
fn concurrent_runs_on_the_same_hosts_do_not_see_each_others_files() {
    let hosts = Hosts::start(2);
    let a = Setup::new(hosts, 3);
    // The second run shares the hosts, their directories and the slot records.
    let b = Setup {
        project: Project::new(),
        hosts: Hosts {
            dir: tempfile::tempdir().unwrap(),
            hosts: Vec::new(),
        },
        state: tempfile::tempdir().unwrap(),
        scratch: tempfile::tempdir().unwrap(),
        list: a.list.clone(),
    };
    std::fs::create_dir_all(b.scratch.path().join("pids")).unwrap();
    std::fs::create_dir_all(b.scratch.path().join("where")).unwrap();
    for (setup, name) in [(&a, "a"), (&b, "b")] {
        let tests: Vec<String> = (0..4).map(|i| format!("iso-{name}{i}")).collect();
        scripted(setup, &tests, 3);
        setup.project.file("run.txt", &format!("{name}\n"));
        setup.project.file(&format!("{name}.only"), "");
    }
    let cmd = |s: &Setup| {
        let mut cmd = s.offload();
        cmd.env("OFFLOAD_SSH_OPTIONS", a.hosts.options())
            .env("OFFLOAD_SSH_STATE_DIR", a.state.path())
            .arg("run");
        cmd
    };
    let run_a = support::spawn_piped(&mut cmd(&a));
    let run_b = support::spawn_piped(&mut cmd(&b));
    let run_a = support::wait_bounded(run_a, Duration::from_secs(120), "run a");
    let run_b = support::wait_bounded(run_b, Duration::from_secs(120), "run b");
    for run in [&run_a, &run_b] {
        assert_eq!(run.code, 0, "{}", run.show());
        run.assert_summary("Passed: 4");
    }
    // They overlapped on the hosts: both used sandboxes there.
    let mut dirs: Vec<String> = a.places();
    dirs.extend(b.places());
    assert!(dirs.iter().all(|d| d.contains("/sandbox-")), "{dirs:?}");
    a.assert_clean();
}

#[test]
fn the_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/offload-ssh.toml");
    let project = Project::new();
    let run = support::run(project.offload().arg("-c").arg(&example).arg("validate"));
    assert_eq!(run.code, 0, "{}", run.show());
    assert!(!run.stderr.contains("warning"), "{}", run.show());
}

/// A tiny tmpfs mounted on a directory (a host with a full disk), unmounted when dropped.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a 64 KiB tmpfs on {} (this test needs root, as in .ci/run)",
            dir.display()
        );
        Self(dir.to_owned())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// sshd lines for a host whose sessions run with a `PATH` that has everything of
/// `/usr/bin` but rsync.
fn without_rsync(dir: &Path) -> String {
    let bin = dir.join("bin-without-rsync");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir("/usr/bin").unwrap().flatten() {
        if entry.file_name() != "rsync" {
            let _ = std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name()));
        }
    }
    let wrapper = dir.join("without-rsync.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nPATH={}\nexport PATH\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            bin.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("ForceCommand {}\n", wrapper.display())
}

#[test]
fn broken_hosts_are_named_with_the_fix_and_the_run_goes_on_with_the_others() {
    // Host 0 works; host 1 does not know our key; host 2 has no rsync; host 3 has a
    // full disk; and one more entry has no sshd at all.
    let hosts = Hosts::start_with(4, |i, dir| match i {
        1 => format!("AuthorizedKeysFile {}/nobody_keys\n", dir.display()),
        2 => without_rsync(dir),
        _ => String::new(),
    });
    let refused = free_port();
    let mut s = Setup::new(hosts, 2);
    // Declared after the hosts: unmounted before their directories are removed.
    let full = TinyDisk::mount(&s.hosts.hosts[3].home);
    s.list = format!("{} root@127.0.0.1:{refused}/2", s.list);
    let tests: Vec<String> = (0..4).map(|i| format!("pass-{i}")).collect();
    scripted(&s, &tests, 2);
    // More than the tiny disk holds.
    s.project.file("big.txt", &"x".repeat(256 * 1024));
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 0, "{}", run.show());
    run.assert_summary("Passed: 4");
    let entry = |i: usize| s.hosts.hosts[i].entry(2);
    for (host, message, fix) in [
        (entry(1), "refuses our key", "add your public key"),
        (entry(2), "has no rsync", "install rsync there"),
        (entry(3), "is out of disk space", "free space there"),
        (
            format!("root@127.0.0.1:{refused}/2"),
            "cannot reach host",
            "check that sshd runs there",
        ),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&host) && l.contains(message))
            .unwrap_or_else(|| panic!("no `{message}` for {host}\n{}", run.show()));
        assert!(line.contains(fix), "{line}");
    }
    // Everything ran on the working host.
    for place in s.places() {
        assert!(
            place.starts_with(&s.hosts.hosts[0].home.display().to_string()),
            "{place}"
        );
    }
    s.assert_clean();
    drop(full);
}

#[test]
fn cargo_tests_on_ssh_hosts_run_one_archive_without_cargo_there() {
    let s = Setup::new(Hosts::start(2), 1);
    s.project.manifest("sshx");
    let tests: String = (0..6)
        .map(|i| {
            format!(
                "#[test] fn t{i}() {{ let dir = std::env::var(\"WHERE\").unwrap(); \
                 std::fs::write(format!(\"{{dir}}/t{i}\"), \
                 std::env::current_dir().unwrap().display().to_string()).unwrap(); \
                 assert!({i} != 3, \"three fails\"); }}\n"
            )
        })
        .collect();
    s.project.file("tests/where.rs", &tests);
    s.project.file(".gitignore", "/target\n/test-results\n");
    support::init_repo(s.project.path());
    // A `cargo` on the hosts' PATH that records its calls and fails.
    let shims = s.scratch.path().join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let calls = s.scratch.path().join("cargo-calls.log");
    std::fs::write(
        shims.join("cargo"),
        format!("#!/bin/sh\necho \"$*\" >> '{}'\nexit 97\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        shims.join("cargo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    s.config(
        true,
        "max_parallel = 2",
        &format!(
            "PATH = \"{}:/usr/local/bin:/usr/bin:/bin\"\n\n\
             [framework]\ntype = \"cargo\"\n\n[groups.all]\nretry_count = 0\n",
            shims.display()
        ),
    );
    let run = support::run(s.offload().arg("run"));
    assert_eq!(run.code, 1, "{}", run.show());
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap_or_default(),
        "",
        "{}",
        run.show()
    );
    let report = Junit::of(&s.project).outcomes();
    let failed: Vec<&str> = report
        .iter()
        .filter(|(_, outcome)| !outcome.is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!((report.len(), failed), (6, vec!["sshx::where t3"]));
    s.assert_ran_on_the_hosts(6, &run);
    s.assert_clean();
}
