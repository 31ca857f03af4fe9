//! `offload run` on a real terminal: tmux runs it on a pseudo-terminal, and the tests
//! read the screen as a person would, while the run goes on and after it ends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, Project};

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a 150x40 window.
    fn start(command: &str) -> Self {
        crate::support::install_system_deps();
        let socket = format!("offload-test-{}-{}", std::process::id(), unique());
        let tmux = Self { socket };
        let out = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "run",
                "-x",
                "150",
                "-y",
                "40",
                command,
            ])
            .output()
            .expect("tmux must be installed to run the terminal tests");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]);
        cmd
    }

    /// What the window shows, with the lines that scrolled off it.
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-S", "-200", "-t", "run"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`; returns the screen.
    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let mut screen = String::new();
        support::wait_until(&format!("`{text}` on the screen"), limit, || {
            screen = self.screen();
            screen.contains(text)
        });
        screen
    }

    fn keys(&self, keys: &str) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "run", keys])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// One batch: a quick pass, a quick failure, then a test that waits for the file
/// `release` (at most a minute).
fn project() -> Project {
    let p = Project::new();
    p.file(
        "tests/test_t.py",
        r#"
import pathlib, time

def test_a_quick():
    pass

def test_b_fails():
    assert 1 == 2, "one is not two"

def test_c_waits():
    for _ in range(600):
        if pathlib.Path("release").exists():
            return
        time.sleep(0.1)
"#,
    );
    p.file(
        "offload.toml",
        "[offload]\nmax_parallel = 1\nsandbox_project_root = \".\"\n\n\
         [provider]\ntype = \"local\"\n\n[framework]\ntype = \"pytest\"\n\
         paths = [\"tests\"]\ncommand = \"python -m pytest\"\n\n[groups.all]\nretry_count = 0\n",
    );
    p
}

/// The shell command that runs `offload run` in `dir` with a clean environment and
/// then says how it exited.
fn run_line(dir: &Path) -> String {
    let path = support::path_with(&support::python_bin_dir());
    format!(
        "cd '{}' && env -i HOME=\"$HOME\" TERM=xterm-256color PATH='{}' \
         PYTHONDONTWRITEBYTECODE=1 '{}' run; echo EXIT=$?; sleep 600",
        dir.display(),
        path.to_string_lossy(),
        env!("CARGO_BIN_EXE_offload"),
    )
}

/// A line of the progress bar: `[00:00:03] [####>---] 2/3 ...`.
fn bar_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains("] [") && l.contains("failed,"))
        .collect()
}

#[test]
fn a_failure_is_named_while_its_batch_runs_and_summed_up_at_the_end() {
    let p = project();
    let tmux = Tmux::start(&run_line(p.path()));
    // The batch is still running (test_c waits): the failure is already on the screen.
    let during = tmux.wait_for("FAIL [", Duration::from_secs(90));
    assert!(!p.path().join("release").exists());
    let fail = during
        .lines()
        .find(|l| l.trim_start().starts_with("FAIL ["))
        .unwrap_or_default();
    assert!(fail.ends_with("tests/test_t.py::test_b_fails"), "{during}");
    let bar = tmux.wait_for("running: test_c_waits", Duration::from_secs(30));
    assert!(
        bar_lines(&bar).iter().any(|l| l.contains(" 2/3 ")),
        "the bar counts the finished tests of the running batch:\n{bar}"
    );

    std::fs::write(p.path().join("release"), "").unwrap();
    let end = tmux.wait_for("EXIT=", Duration::from_secs(60));
    assert!(end.contains("EXIT=1"), "{end}");
    assert!(
        end.contains("FAIL  tests/test_t.py::test_b_fails - AssertionError: one is not two"),
        "{end}"
    );
    assert!(end.contains("Why: offload logs --failures"), "{end}");
    assert_eq!(bar_lines(&end), Vec::<&str>::new(), "{end}");
}

#[test]
fn ctrl_c_leaves_no_bar_behind() {
    let p = project();
    let tmux = Tmux::start(&run_line(p.path()));
    tmux.wait_for("running: test_c_waits", Duration::from_secs(90));
    tmux.keys("C-c");
    let end = tmux.wait_for("EXIT=", Duration::from_secs(60));
    assert!(end.contains("EXIT=130"), "{end}");
    assert!(end.contains("stopped by SIGINT"), "{end}");
    assert_eq!(bar_lines(&end), Vec::<&str>::new(), "{end}");
    // The quick test had passed before the interrupt: it is not "not run".
    let report = support::Junit::of(&p);
    assert_eq!(report.case("tests/test_t.py::test_a_quick").outcome, "");
}
