//! `offload collect` against real pytest, real cargo-nextest and shell discovery, and
//! real batch runs whose JUnit output must map back to the discovered IDs exactly.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use offload::config::{CargoConfig, FrameworkConfig, PytestConfig};
use offload::framework::{self, BatchPaths, Framework};
use offload::process::{CapturedOutput, CommandSpec, ExitOutcome};

use crate::support::{Junit, Project, path_with, python_bin_dir, run};

const PYTEST_FILE: &str = r#"import pytest

@pytest.mark.parametrize("x", ["a b", "c", "x::y", "p/q", "é", "it's"])
def test_p(x):
    assert x != "c"

class TestK:
    def test_m(self):
        pass

    class TestInner:
        def test_n(self):
            pass

def test_ünï():
    pass

@pytest.mark.slow
def test_slow():
    pass
"#;

const PYTEST_IDS: [&str; 10] = [
    "tests/test_a.py::test_p[a b]",
    "tests/test_a.py::test_p[c]",
    "tests/test_a.py::test_p[x::y]",
    "tests/test_a.py::test_p[p/q]",
    "tests/test_a.py::test_p[\\xe9]",
    "tests/test_a.py::test_p[it's]",
    "tests/test_a.py::TestK::test_m",
    "tests/test_a.py::TestK::TestInner::test_n",
    "tests/test_a.py::test_ünï",
    "tests/test_a.py::test_slow",
];

fn pytest_project(groups: &str) -> Project {
    let p = Project::new();
    p.file("pytest.ini", "[pytest]\nmarkers =\n    slow: slow tests\n");
    p.file("tests/test_a.py", PYTEST_FILE);
    p.config("type = \"pytest\"\npaths = [\"tests\"]", groups);
    p
}

#[test]
fn pytest_ids_are_kept_whole() {
    let p = pytest_project("[groups.all]\nretry_count = 1\n");
    let r = run(p.offload_with_python().arg("collect"));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let mut expected = String::from("Discovered 10 tests across 1 group:\n\nGroup 'all':\n");
    for id in PYTEST_IDS {
        expected.push_str(&format!("  {id}\n"));
    }
    assert_eq!(r.stdout, expected);
}

#[test]
fn pytest_groups_with_different_filters_in_json() {
    let p = pytest_project(
        "[groups.unit]\nfilters = \"-m 'not slow' -k 'TestK or test_p'\"\n\n\
         [groups.slow]\nfilters = \"-m slow\"\nretry_count = 3\nschedule_individual = true\n",
    );
    let r = run(p
        .offload_with_python()
        .args(["collect", "--format", "json"]));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    // Nothing but the JSON document on stdout.
    let records: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).expect("JSON alone");
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&PYTEST_IDS[..8], &PYTEST_IDS[9..]].concat());
    let slow = records.last().unwrap();
    assert_eq!(
        slow,
        &serde_json::json!({
            "id": "tests/test_a.py::test_slow", "name": "test_slow", "file": null,
            "retry_count": 3, "group": "slow", "schedule_individual": true,
            // Nothing run yet: no duration known.
            "duration": null, "duration_source": null
        })
    );
    assert_eq!(records[2]["name"], "test_p[x::y]");
    assert_eq!(records[2]["group"], "unit");
    assert_eq!(records[2]["retry_count"], 0);
    // Keys in the documented order.
    let first_line = r.stdout.lines().nth(2).unwrap();
    assert_eq!(
        first_line.trim(),
        "\"id\": \"tests/test_a.py::test_p[a b]\","
    );
}

#[test]
fn pytest_empty_group_is_a_warning() {
    let p = pytest_project(
        "[groups.none]\nfilters = \"-k no_such_test\"\n\n[groups.slow]\nfilters = \"-m slow\"\n",
    );
    let r = run(p.offload_with_python().arg("collect"));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        "Discovered 1 test across 2 groups:\n\nGroup 'slow':\n  tests/test_a.py::test_slow\n"
    );
    assert!(
        r.stderr.contains("group `none` selected no tests"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("no tests collected (10 deselected)"),
        "{}",
        r.stderr
    );
}

#[test]
fn pytest_collection_errors_fail_with_pytest_message() {
    let p = pytest_project("[groups.unit]\n");
    p.file("tests/test_syntax.py", "def test_y(:\n    pass\n");
    p.file("tests/test_import.py", "import no_such_module_offload\n");
    let r = run(p
        .offload_with_python()
        .args(["collect", "--format", "json"]));
    assert_eq!(r.code, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("discovery failed for group `unit`: `python -m pytest --collect-only -q --assert plain tests` exited with code 2:"), "{}", r.stderr);
    assert!(
        r.stderr.contains("ERROR collecting tests/test_syntax.py"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("SyntaxError"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("No module named 'no_such_module_offload'"),
        "{}",
        r.stderr
    );
}

#[test]
fn pytest_bad_filters_are_an_error() {
    let p = pytest_project("[groups.unit]\nfilters = \"-k 'oops\"\n");
    let r = run(p.offload_with_python().arg("collect"));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("groups.unit.filters") && r.stderr.contains("close every quote"),
        "{}",
        r.stderr
    );
}

/// Discovery imports the test modules without rewriting their assertions (most of what
/// a collection costs); the batches rewrite them, so a failing `assert` still reports
/// its operands, with the resident worker and without.
#[test]
fn discovery_imports_plainly_and_batches_rewrite_assertions() {
    let p = Project::new();
    let scratch = tempfile::tempdir().expect("temp dir");
    // pytest puts `@py_builtins` into a module whose assertions it rewrote.
    p.file(
        "tests/test_a.py",
        r#"import os

who = "batch" if os.environ.get("OFFLOAD_TESTS_FILE") else "discovery"
how = "rewritten" if "@py_builtins" in globals() else "plain"
with open(os.path.join(os.environ["SCRATCH"], "imports"), "a") as f:
    f.write("%s %s\n" % (who, how))

def two():
    return 2

def test_passes():
    pass

def test_fails():
    assert two() == 3
"#,
    );
    for worker in ["true", "false"] {
        p.config(
            &format!(
                "type = \"pytest\"\npaths = [\"tests\"]\n\
                 command = \"python -m pytest -p no:cacheprovider\"\nresident_worker = {worker}"
            ),
            "[groups.all]\nretry_count = 0\n",
        );
        let imports = scratch.path().join("imports");
        let _ = std::fs::remove_file(&imports);
        let r = run(p
            .offload_with_python()
            .args(["run", "--no-cache"])
            .env("SCRATCH", scratch.path()));
        assert_eq!(r.code, 1, "{}", r.show());
        let mut seen: Vec<String> = std::fs::read_to_string(&imports)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen,
            ["batch rewritten", "discovery plain"],
            "resident_worker = {worker}"
        );
        let failed = Junit::of(&p).case("tests/test_a.py::test_fails").clone();
        assert!(
            failed.body.contains("where 2 = two()"),
            "resident_worker = {worker}: {failed:#?}"
        );
    }
}
// --- cargo-nextest ---------------------------------------------------------------

/// The project's own nextest config: its `retries` must show up in Offload's batches.
const NEXTEST_TOML: &str = "[profile.default]\nretries = 1\n";

fn nextest_crate(p: &Project) {
    p.manifest("nxdemo");
    p.file(
        "src/lib.rs",
        "pub fn add(a: i32, b: i32) -> i32 { a + b }\n\
         #[cfg(test)]\nmod tests {\n\
         #[test] fn passes() { assert_eq!(super::add(1, 2), 3); }\n\
         #[test] fn fails() { assert_eq!(super::add(1, 2), 4); }\n\
         #[test] #[ignore] fn ignored_one() {}\n}\n",
    );
    p.file(
        "tests/integ.rs",
        "#[test] fn integ_ok() {}\n#[test] fn another() {}\n",
    );
    // The project's own nextest config must keep applying inside Offload's batches.
    p.file(".config/nextest.toml", NEXTEST_TOML);
}

/// A command for nested cargo runs: no inherited nextest state (the project's own
/// target directory comes from [`Project::offload`]).
fn clean_cargo_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NEXTEST") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn cargo_nextest_list_and_include_ignored() {
    let p = Project::new();
    nextest_crate(&p);
    p.config(
        "type = \"cargo\"",
        "[groups.all]\n\n[groups.integ]\nfilters = \"-E 'kind(test)'\"\n",
    );
    let r = run(clean_cargo_env(&mut p.offload()).arg("collect"));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        "Discovered 6 tests across 2 groups:\n\n\
         Group 'all':\n  nxdemo tests::fails\n  nxdemo tests::passes\n  nxdemo::integ another\n  nxdemo::integ integ_ok\n\n\
         Group 'integ':\n  nxdemo::integ another\n  nxdemo::integ integ_ok\n"
    );

    p.config(
        "type = \"nextest\"\ninclude_ignored = true",
        "[groups.all]\n",
    );
    let r = run(clean_cargo_env(&mut p.offload()).args(["collect", "-f", "json"]));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let records: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).expect("JSON alone");
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "nxdemo tests::fails",
            "nxdemo tests::ignored_one",
            "nxdemo tests::passes",
            "nxdemo::integ another",
            "nxdemo::integ integ_ok"
        ]
    );
}

#[test]
fn cargo_build_failure_shows_cargo_output() {
    let p = Project::new();
    nextest_crate(&p);
    p.file("src/lib.rs", "pub fn broken( {}\n");
    p.config("type = \"cargo\"", "[groups.all]\n");
    let r = run(clean_cargo_env(&mut p.offload()).arg("collect"));
    assert_eq!(r.code, 1, "stdout: {}", r.stdout);
    assert!(r.stderr.contains("discovery failed for group `all`: `cargo nextest list --message-format json --run-ignored all` exited with code"), "{}", r.stderr);
    assert!(r.stderr.contains("error"), "{}", r.stderr);
}

// --- default framework ---------------------------------------------------------------

fn default_project(discover: &str, groups: &str) -> Project {
    let p = Project::new();
    p.file(
        "list.sh",
        "echo '# a comment'\necho\necho '  alpha  '\necho 'beta one'\necho \"filters=[$*]\"\n",
    );
    p.config(
        &format!(
            "type = \"default\"\ndiscover_command = {}\nrun_command = \"true {{tests}}\"\n\
             test_id_format = \"{{name}}\"\nworking_dir = \".\"",
            toml_string(discover)
        ),
        groups,
    );
    p
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn default_framework_lines_comments_and_filters() {
    let p = default_project(
        "sh list.sh {filters}",
        "[groups.a]\nfilters = \"--fast 'x y'\"\n\n[groups.b]\n",
    );
    let r = run(p.offload().arg("collect"));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        "Discovered 6 tests across 2 groups:\n\n\
         Group 'a':\n  alpha\n  beta one\n  filters=[--fast x y]\n\n\
         Group 'b':\n  alpha\n  beta one\n  filters=[]\n"
    );
}

#[test]
fn default_framework_failure_shows_stderr() {
    let p = default_project(
        "echo partial; echo 'lister exploded' >&2; exit 3 {filters}",
        "[groups.g]\n",
    );
    let r = run(p.offload().arg("collect"));
    assert_eq!(r.code, 1, "stdout: {}", r.stdout);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("discovery failed for group `g`: `sh -c 'echo partial; echo '\\''lister exploded'\\'' >&2; exit 3 '` exited with code 3:\nlister exploded"),
        "{}",
        r.stderr
    );
}

#[test]
fn default_framework_garbage_is_a_clear_error() {
    let p = default_project("printf 'ok\\n\\377\\376bad\\n' {filters}", "[groups.g]\n");
    let r = run(p.offload().arg("collect"));
    assert_eq!(r.code, 1, "stdout: {}", r.stdout);
    assert!(
        r.stderr.contains("printed garbage on line 2") && r.stderr.contains("UTF-8"),
        "{}",
        r.stderr
    );

    let p = default_project("printf 'ok\\nnul\\000here\\n' {filters}", "[groups.g]\n");
    let r = run(p.offload().arg("collect"));
    assert_eq!(r.code, 1, "stdout: {}", r.stdout);
    assert!(
        r.stderr.contains("printed garbage on line 2") && r.stderr.contains("U+0000"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_config_is_an_error() {
    let p = Project::new();
    let r = run(p.offload().arg("collect"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("offload.toml"), "{}", r.stderr);
}

// --- batches run for real: every JUnit testcase maps back to its discovered ID ----

/// Runs `spec` synchronously (the tests need no async runtime for this).
/// The batch command for `tests` writing results to `result`, with its input files
/// written under `dir/batch-inputs` as a sandbox would.
fn batch_in(fw: &dyn Framework, tests: &[String], result: &Path, dir: &Path) -> CommandSpec {
    let inputs = dir.join("batch-inputs");
    let at = |name: &str| inputs.join(name).to_str().unwrap().to_owned();
    let paths = BatchPaths {
        result: result.to_str().unwrap().to_owned(),
        tests_file: at("batch-0.tests"),
        script_file: at("batch-0.sh"),
        support_dir: at("support"),
        shared_dir: at("shared"),
    };
    let batch = fw.batch_command(tests, &paths, false).unwrap();
    for file in &batch.inputs {
        let path = Path::new(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &file.contents).unwrap();
    }
    batch.command
}

fn capture(spec: &CommandSpec, cwd: &Path, path_dir: Option<&Path>) -> CapturedOutput {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd.as_deref().unwrap_or(cwd));
    if let Some(dir) = path_dir {
        cmd.env("PATH", path_with(dir));
    }
    clean_cargo_env(&mut cmd);
    let out = cmd.output().expect("spawn");
    CapturedOutput {
        outcome: ExitOutcome::Exited(out.status.code().unwrap_or(-1)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(name, classname)` of every `<testcase>` in a JUnit file (no classname when empty).
fn junit_testcases(path: &Path) -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Junit::parse(&text)
        .cases
        .into_iter()
        .map(|c| (c.name, Some(c.classname).filter(|c| !c.is_empty())))
        .collect()
}

/// Every testcase maps to exactly one ID, and every ID gets exactly one testcase.
fn assert_results_map_back(fw: &dyn Framework, ids: &[String], cases: &[(String, Option<String>)]) {
    let mut seen = BTreeSet::new();
    for (name, classname) in cases {
        let key = fw.junit_key(name, classname.as_deref());
        let owners: Vec<&String> = ids
            .iter()
            .filter(|id| fw.id_keys(id).contains(&key))
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "testcase {name:?} / {classname:?} (key {key:?}) maps to {owners:?}"
        );
        assert!(
            seen.insert(owners[0].clone()),
            "two testcases for {}",
            owners[0]
        );
    }
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(seen, all);
}

fn pytest_batch_round_trip(with_hook: bool) {
    let p = pytest_project("[groups.all]\n");
    // Same file names in two directories: results must not cross over.
    p.file("tests/sub/test_a.py", "def test_m():\n    pass\n");
    p.file("tests/sub/__init__.py", "");
    p.file("tests/__init__.py", "");
    if with_hook {
        p.file(
            "tests/conftest.py",
            "import pytest\n\n@pytest.fixture(autouse=True)\n\
             def _offload_junit_nodeid(record_xml_attribute, request):\n\
             \x20   record_xml_attribute(\"name\", request.node.nodeid)\n",
        );
    }
    let bin = python_bin_dir();
    let fw = framework::from_config(&FrameworkConfig::Pytest(PytestConfig {
        paths: vec!["tests".into()],
        command: None,
        run_args: None,
        extra_args: Vec::new(),
        python: "python".into(),
        markers: None,
        test_id_format: None,
        resident_worker: false,
    }))
    .unwrap();
    let spec = fw.discover_command("").unwrap();
    let discovered = fw
        .parse_discovery(&spec, &capture(&spec, p.path(), Some(&bin)))
        .unwrap();
    assert_eq!(discovered.ids.len(), 11, "{:?}", discovered.ids);
    let result = p.path().join("results dir/junit 1.xml");
    std::fs::create_dir_all(result.parent().unwrap()).unwrap();
    let spec = batch_in(fw.as_ref(), &discovered.ids, &result, p.path());
    let out = capture(&spec, p.path(), Some(&bin));
    assert_eq!(
        out.outcome,
        ExitOutcome::Exited(1),
        "one test fails: {}",
        out.stdout
    );
    let cases = junit_testcases(&result);
    if with_hook {
        assert!(
            cases.iter().any(|(n, _)| n.contains("::")),
            "hook not active: {cases:?}"
        );
    }
    assert_results_map_back(fw.as_ref(), &discovered.ids, &cases);
}

#[test]
fn pytest_batch_results_map_back_without_hook() {
    pytest_batch_round_trip(false);
}

#[test]
fn pytest_batch_results_map_back_with_conftest_hook() {
    pytest_batch_round_trip(true);
}

#[test]
fn nextest_batch_results_map_back() {
    let p = Project::new();
    nextest_crate(&p);
    let fw = framework::from_config(&FrameworkConfig::Cargo(CargoConfig::default())).unwrap();
    let spec = fw.discover_command("").unwrap();
    let discovered = fw
        .parse_discovery(&spec, &capture(&spec, p.path(), None))
        .unwrap();
    assert_eq!(discovered.ids.len(), 4, "{:?}", discovered.ids);
    // A batch of three of the four tests: exactly those run.
    let batch: Vec<String> = discovered
        .ids
        .iter()
        .filter(|id| !id.ends_with("another"))
        .cloned()
        .collect();
    let result = p.path().join("out dir/batch-0.xml");
    std::fs::create_dir_all(result.parent().unwrap()).unwrap();
    let spec = batch_in(fw.as_ref(), &batch, &result, p.path());
    let out = capture(&spec, p.path(), None);
    assert_ne!(
        out.outcome,
        ExitOutcome::Exited(0),
        "tests::fails fails: {}",
        out.stderr
    );
    let cases = junit_testcases(&result);
    assert_eq!(cases.len(), 3, "{cases:?}");
    assert!(
        cases
            .iter()
            .all(|(_, c)| c.as_deref().is_some_and(|c| c.starts_with("nxdemo")))
    );
    assert_results_map_back(fw.as_ref(), &batch, &cases);
    // The project's config still applies (its retry shows up) and is untouched.
    let report = Junit::parse(&std::fs::read_to_string(&result).unwrap());
    assert!(
        report
            .cases
            .iter()
            .any(|c| c.reruns.iter().any(|r| r == "rerunFailure")),
        "project retries not applied: {report:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join(".config/nextest.toml")).unwrap(),
        NEXTEST_TOML
    );
}
