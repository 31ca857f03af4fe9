//! `offload validate` and `offload init` against config files in a temporary project.

use crate::support::{self, Project, run};

const VALID: &str = r#"
[offload]
max_parallel = 10
test_timeout_secs = 900

[provider]
type = "local"

[framework]
type = "pytest"

[groups.unit]
retry_count = 2
filters = "-m 'not slow'"

[groups.slow]
filters = "-m slow"
"#;

fn validate(project: &Project) -> crate::support::Run {
    run(project.offload().arg("validate"))
}

#[test]
fn validate_prints_the_summary_of_a_valid_config() {
    let p = Project::new();
    p.file("offload.toml", VALID);
    let out = validate(&p);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "Configuration is valid!\n\
         \n\
         Settings:\n  \
         Max parallel: 10\n  \
         Test timeout: 900s\n  \
         Provider: local\n  \
         Framework: pytest\n  \
         Output: test-results/junit.xml\n\
         \n\
         Groups:\n  \
         unit: retry_count = 2, filters = \"-m 'not slow'\"\n  \
         slow: retry_count = 0, filters = \"-m slow\"\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn validate_reads_the_c_path_and_shows_the_init_cmd() {
    let p = Project::new();
    let text = VALID
        .replace(
            "[offload]",
            "[offload]\nsandbox_project_root = \"/app\"\nsandbox_init_cmd = \"uv sync\"",
        )
        .replace("type = \"local\"", "type = \"modal\"")
        .replace("type = \"pytest\"", "type = \"nextest\"");
    p.file("conf/other.toml", &text);
    let out = run(p.offload().args(["validate", "-c", "conf/other.toml"]));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains(
            "  Provider: modal\n  Framework: cargo\n  Sandbox init cmd: uv sync\n  Output: \
             test-results/junit.xml\n"
        ),
        "{}",
        out.stdout
    );
}

/// Asserts that `validate` fails with `want` in its `Configuration error:` message.
fn assert_invalid(text: &str, want: &[&str]) {
    let p = Project::new();
    p.file("offload.toml", text);
    let out = validate(&p);
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("Configuration error: invalid config file `offload.toml`"),
        "{}",
        out.stderr
    );
    for want in want {
        assert!(
            out.stderr.contains(want),
            "want {want:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn validate_shows_line_and_column_of_a_syntax_error() {
    assert_invalid(
        &VALID.replace("max_parallel = 10", "max_parallel = 10 10"),
        &[
            "`offload.toml` at line 3, column 19: ",
            "3 | max_parallel = 10 10",
        ],
    );
}

#[test]
fn validate_shows_line_and_column_of_a_type_error() {
    assert_invalid(
        &VALID.replace("retry_count = 2", "retry_count = \"two\""),
        &["at line 13, column 15: invalid type: string \"two\", expected a non-negative integer"],
    );
}

#[test]
fn validate_names_a_missing_section() {
    assert_invalid(
        &VALID.replace("[framework]\ntype = \"pytest\"", ""),
        &["missing `[framework]` table (hint: add `[framework]` with `type = \"pytest\"`"],
    );
}

#[test]
fn validate_lists_the_provider_types() {
    assert_invalid(
        &VALID.replace("type = \"local\"", "type = \"docker\""),
        &[
            "at line 7, column 8: unknown provider type `docker`; expected one of `local`, \
             `default`, `modal`",
        ],
    );
}

#[test]
fn validate_names_a_missing_variable_and_its_field() {
    let p = Project::new();
    p.file(
        "offload.toml",
        &VALID.replace(
            "type = \"local\"",
            "type = \"local\"\n[provider.env]\nAPI_TOKEN = \"${OFFLOAD_TEST_TOKEN}\"",
        ),
    );
    let out = run(p.offload().arg("validate").env_remove("OFFLOAD_TEST_TOKEN"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "environment variable `OFFLOAD_TEST_TOKEN` is not set (used in \
             `provider.env.API_TOKEN`); set it or write `${OFFLOAD_TEST_TOKEN:-default}`"
        ),
        "{}",
        out.stderr
    );
    let out = run(p
        .offload()
        .arg("validate")
        .env("OFFLOAD_TEST_TOKEN", "s3cret"));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn validate_reports_a_broken_rule() {
    assert_invalid(
        &VALID.replace("max_parallel = 10", "max_parallel = 0"),
        &["`offload.max_parallel` is 0; it must be at least 1"],
    );
}

#[test]
fn validate_warns_about_unknown_keys_on_stderr() {
    let p = Project::new();
    p.file(
        "offload.toml",
        &VALID.replace("retry_count = 2", "retry_count = 2\nretry_cont = 3"),
    );
    let out = validate(&p);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("Configuration is valid!\n"));
    assert!(!out.stdout.contains("retry_cont"));
    assert!(
        out.stderr
            .contains("unknown key `retry_cont` in `[groups.unit]` (did you mean `retry_count`?)"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_without_a_file_hints_at_init() {
    let p = Project::new();
    let out = validate(&p);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "Configuration error: config file `offload.toml` not found (hint: run `offload init`"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn init_writes_configs_that_validate_accepts() {
    let p = Project::new();
    for provider in ["local", "default", "modal"] {
        for framework in ["pytest", "cargo", "nextest", "default"] {
            let name = format!("{provider}-{framework}.toml");
            let out = run(p
                .offload()
                .args(["init", "-p", provider, "-f", framework, "-c", &name]));
            assert_eq!(out.code, 0, "{name}: {}", out.stderr);
            // The starter scripts of the default framework are written once.
            let scripts = if framework == "default" && provider == "local" {
                "Created scripts/list-tests.sh (a starter: replace it with your own)\n\
                 Created scripts/run-tests.sh (a starter: replace it with your own)\n"
            } else {
                ""
            };
            assert_eq!(
                out.stdout,
                format!(
                    "Created {name}\n{scripts}\nEdit the configuration as needed, then run:\n  \
                     offload run -c {name}\n"
                )
            );
            let out = run(p.offload().args(["validate", "-c", &name]));
            assert_eq!(out.code, 0, "{name}: {}", out.stderr);
            assert_eq!(out.stderr, "", "{name} warns");
            assert!(
                out.stdout.contains(&format!("  Provider: {provider}\n")),
                "{}",
                out.stdout
            );
        }
    }
}

#[test]
fn init_defaults_to_local_pytest_in_offload_toml() {
    let p = Project::new();
    let out = run(p.offload().arg("init"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "Created offload.toml\n\nEdit the configuration as needed, then run:\n  offload run\n"
    );
    let text = std::fs::read_to_string(p.path().join("offload.toml")).unwrap();
    assert!(text.contains("type = \"local\""));
    assert!(text.contains("command = \"python -m pytest\""));
    assert!(text.contains("paths = [\"tests\"]"));
    // Local sandboxes share this machine: one per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        text.contains(&format!("\nmax_parallel = {cpus}\n")),
        "{text}"
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let p = Project::new();
    let path = p.file("offload.toml", "# mine\n");
    let out = run(p.offload().arg("init"));
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("`offload.toml` already exists; pass `--force` to overwrite it"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");

    let out = run(p.offload().args(["init", "--force", "-f", "cargo"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("type = \"cargo\"")
    );
}

#[test]
fn usage_errors_exit_1() {
    let p = Project::new();
    for args in [
        &["validate", "--bogus"][..],
        &["init", "-p", "docker"],
        &["init", "-f", "vitest"],
        &["no-such-command"],
    ] {
        let out = run(p.offload().args(args));
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
    }
    assert!(!p.path().join("offload.toml").exists());
}

#[test]
fn init_for_the_default_framework_runs_as_generated() {
    let p = Project::new();
    let init = support::run(p.offload().args(["init", "-f", "default"]));
    assert_eq!(init.code, 0, "{}\n{}", init.stdout, init.stderr);
    assert!(
        init.stdout.contains("scripts/run-tests.sh"),
        "{}",
        init.stdout
    );

    // No tests yet: nothing selected is a warning, not a failure.
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    p.file("tests/test_ok.sh", "echo fine\n");
    p.file("tests/test_bad.sh", "echo 'not <fine>'; exit 3\n");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("Total:   2"), "{}", run.stdout);
    assert!(run.stdout.contains("Failed:  1"), "{}", run.stdout);
    let logs = support::run(p.offload().args(["logs", "--failures"]));
    assert!(
        logs.stdout.contains("=== tests/test_bad.sh [FAILED] ===")
            && logs.stdout.contains("not <fine>"),
        "{}",
        logs.stdout
    );

    // A second init keeps the user's scripts.
    std::fs::write(p.path().join("scripts/run-tests.sh"), "mine").unwrap();
    let again = support::run(
        p.offload()
            .args(["init", "-f", "default", "-c", "other.toml"]),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(p.path().join("scripts/run-tests.sh")).unwrap(),
        "mine"
    );
}

#[test]
fn validate_and_run_name_every_setting_without_effect() {
    let p = Project::new();
    p.file(
        "offload.toml",
        "[offload]\nsandbox_init_cmd = \"make\"\nimpatiently_requeue_batches = true\n\
         sandbox_project_root = \".\"\n[provider]\ntype = \"default\"\n\
         create_command = \"echo sb\"\nexec_command = \"sh -c {command}\"\n\
         destroy_command = \"true\"\n\
         [framework]\ntype = \"default\"\ndiscover_command = \"echo t {filters}\"\n\
         run_command = \"true {tests}\"\ntest_id_format = \"{name}\"\n\
         [groups.all]\n[report]\ndownload_globs = [\"*.log\"]\n\
         [history]\nreservoir_size = 3\n",
    );
    let fields = [
        "`sandbox_init_cmd` in `[offload]` has no effect",
        "`impatiently_requeue_batches` in `[offload]` is ignored",
        "`download_globs` in `[report]` is ignored",
        "`reservoir_size` in `[history]` is ignored",
    ];
    let validate = run(p.offload().arg("validate"));
    assert_eq!(validate.code, 0, "{}", validate.stderr);
    for field in fields {
        assert_eq!(
            validate.stderr.matches(field).count(),
            1,
            "{field} once in: {}",
            validate.stderr
        );
    }
    let run = run(p.offload().args(["run", "--copy-dir", "a:b"]));
    for field in fields {
        assert_eq!(
            run.stderr.matches(field).count(),
            1,
            "{field}: {}",
            run.stderr
        );
    }
    assert!(
        run.stderr
            .contains("--copy-dir has no effect: no image is built without a `prepare_command`"),
        "{}",
        run.stderr
    );
}
