//! The discovery cache never runs a stale test list: whatever collection could see (the
//! environment, files outside the project, plugins installed anywhere) invalidates it,
//! so `offload run` always runs what `offload collect` would print at that moment.

use std::path::Path;

use crate::support::{self, Project, Run};

/// A pytest project whose test list depends on `NCASES` and on the number in the file
/// `data` (outside the project).
fn project(data: &Path) -> Project {
    let p = Project::new();
    p.file(
        "tests/test_cases.py",
        &format!(
            r#"
import os, pytest
N = int(os.environ.get("NCASES", "2"))
M = int(open({data:?}).read())

@pytest.mark.parametrize("i", range(N))
def test_env(i):
    pass

@pytest.mark.parametrize("i", range(M))
def test_data(i):
    pass
"#,
            data = data.display().to_string()
        ),
    );
    p.config(
        "type = \"pytest\"\npaths = [\"tests\"]\ncommand = \"python -m pytest\"",
        "[groups.all]\n",
    );
    p
}

/// A [`project`] whose data file (holding 1) is in a temporary directory, returned to
/// keep it alive.
fn project_with_data() -> (tempfile::TempDir, std::path::PathBuf, Project) {
    let outside = tempfile::tempdir().unwrap();
    let data = outside.path().join("cases.txt");
    std::fs::write(&data, "1").unwrap();
    let p = project(&data);
    (outside, data, p)
}

fn run(p: &Project, env: &[(&str, &str)]) -> Run {
    let mut cmd = p.offload_with_python();
    cmd.args(["-v", "run"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = support::run(&mut cmd);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    run
}

fn reused(run: &Run) -> bool {
    run.stderr.contains("reusing the previous discovery")
}

fn total(run: &Run) -> usize {
    run.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total in {}", run.stdout))
}

#[test]
fn an_environment_variable_read_by_collection_is_seen() {
    let (_outside, _data, p) = project_with_data();
    assert_eq!(total(&run(&p, &[("NCASES", "2")])), 3);
    let again = run(&p, &[("NCASES", "2")]);
    assert!(reused(&again), "{}", again.stderr);
    assert_eq!(total(&again), 3);
    let changed = run(&p, &[("NCASES", "5")]);
    assert!(!reused(&changed), "{}", changed.stderr);
    assert_eq!(total(&changed), 6);
}

#[test]
fn recording_the_durations_history_keeps_the_discovery() {
    let (_outside, _data, p) = project_with_data();
    let history = p.path().join(".offload/durations");
    let record = || {
        let run = support::run(
            p.offload_with_python()
                .args(["-v", "run", "--record-history"]),
        );
        assert_eq!(run.code, 0, "{}", run.show());
        run
    };
    record();
    assert!(history.is_file(), "no history written");
    // The history a run writes (and the next one rewrites, or a checkout removes) is
    // Offload's own file: discovery never reads it.
    let again = record();
    assert!(reused(&again), "{}", again.stderr);
    std::fs::remove_file(&history).unwrap();
    let without = run(&p, &[]);
    assert!(reused(&without), "{}", without.stderr);
    // A file of the project still counts.
    p.file("tests/notes.txt", "x");
    assert!(!reused(&run(&p, &[])));
}

#[test]
fn a_data_file_outside_the_project_is_seen() {
    let (_outside, data, p) = project_with_data();
    assert_eq!(total(&run(&p, &[])), 3);
    let again = run(&p, &[]);
    assert!(reused(&again), "{}", again.stderr);
    std::fs::write(&data, "4").unwrap();
    let changed = run(&p, &[]);
    assert!(!reused(&changed), "{}", changed.stderr);
    assert_eq!(total(&changed), 6);
}

#[test]
fn a_plugin_installed_outside_the_project_is_seen() {
    let (outside, _data, p) = project_with_data();
    let site = outside.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let python_path = site.to_str().unwrap();
    assert_eq!(total(&run(&p, &[("PYTHONPATH", python_path)])), 3);
    assert!(reused(&run(&p, &[("PYTHONPATH", python_path)])));

    // Install a plugin (an entry point in the directory on PYTHONPATH) that deselects the
    // `test_env` cases.
    let dist = site.join("dropper-1.0.dist-info");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: dropper\nVersion: 1.0\n",
    )
    .unwrap();
    std::fs::write(
        dist.join("entry_points.txt"),
        "[pytest11]\ndropper = dropper\n",
    )
    .unwrap();
    std::fs::write(
        site.join("dropper.py"),
        "def pytest_collection_modifyitems(items):\n    \
         items[:] = [i for i in items if 'env' not in i.name]\n",
    )
    .unwrap();
    let changed = run(&p, &[("PYTHONPATH", python_path)]);
    assert!(!reused(&changed), "{}", changed.stderr);
    assert_eq!(total(&changed), 1);
}
