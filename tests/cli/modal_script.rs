//! The bundled `scripts/modal_sandbox.py`, checked without a Modal account: its CLI
//! (`--help`, argument errors, the missing-credentials hint), its use of the Modal SDK
//! (mypy in strict mode against the real, pinned `modal` package from PyPI) and its
//! behaviour against a stand-in `modal` package that runs "sandboxes" as local
//! directories.
//!
//! The pinned packages live in a virtualenv under `<target>/modal-venv`, built once from
//! `tests/modal/requirements.txt`; without PyPI these tests fail (they never skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Project, Run};

/// The script under test.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/modal_sandbox.py")
}

/// `tests/modal/<name>`.
fn modal_test_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/modal")
        .join(name)
}

/// A `python` of the modal virtualenv with a clean environment: no Modal credentials,
/// `HOME` pointing at `home` (an empty directory unless a test puts something there),
/// no bytecode written next to the script.
fn python(home: &Path) -> Command {
    let mut cmd = Command::new(support::modal_venv_bin_dir().join("python"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MODAL_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HOME", home)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null());
    cmd
}

/// `python modal_sandbox.py <args>` where `import modal` fails loudly: proves that a
/// command neither imports the SDK nor, therefore, contacts Modal.
fn script_without_modal(p: &Project, args: &[&str]) -> Run {
    p.file(
        "poison/modal/__init__.py",
        "raise ImportError('modal must not be imported here')\n",
    );
    run_with_timeout(
        python(p.path())
            .env("PYTHONPATH", p.path().join("poison"))
            .arg(script())
            .args(args)
            .current_dir(p.path()),
        Duration::from_secs(60),
    )
}

/// Runs `cmd`, killing it (and failing the test) if it outlives `limit`.
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let start = Instant::now();
    while child.try_wait().expect("poll python").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap python");
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
        .wait_with_output()
        .expect("collect python output")
        .into()
}

#[test]
fn help_lists_every_command_and_option_without_importing_modal() {
    let p = Project::new();
    let top = script_without_modal(&p, &["--help"]);
    assert_eq!(top.code, 0, "{}", top.stderr);
    for command in [
        "prepare",
        "create",
        "exec",
        "download",
        "destroy",
        "destroy-many",
    ] {
        assert!(
            top.stdout.contains(command),
            "`{command}` missing:\n{}",
            top.stdout
        );
    }
    let expected: &[(&str, &[&str])] = &[
        (
            "prepare",
            &[
                "DOCKERFILE",
                "--include-cwd",
                "--copy-dir",
                "--sandbox-init-cmd",
                "--context-dir",
                "--sandbox-project-root",
                "/app",
                "--from-base-image",
                "--patch-file",
                "--post-patch-cmd",
            ],
        ),
        (
            "create",
            &[
                "IMAGE_ID",
                "--cpu",
                "--memory-gb",
                "--env",
                "--timeout",
                "--experimental-options",
            ],
        ),
        ("exec", &["SANDBOX_ID", "COMMAND"]),
        ("download", &["SANDBOX_ID", "REMOTE:LOCAL"]),
        ("destroy", &["SANDBOX_ID"]),
        ("destroy-many", &["SANDBOX_IDS", "stdin"]),
    ];
    for (command, options) in expected {
        let help = script_without_modal(&p, &[command, "--help"]);
        assert_eq!(help.code, 0, "{command} --help: {}", help.stderr);
        for option in *options {
            assert!(
                help.stdout.contains(option),
                "`{command} --help` does not mention `{option}`:\n{}",
                help.stdout
            );
        }
    }
}

#[test]
fn argument_errors_are_clear_and_never_reach_modal() {
    let p = Project::new();
    p.file("change.patch", "");
    p.file("src/lib.py", "");
    let cases: &[(&[&str], &str)] = &[
        (&["create"], "Missing argument 'IMAGE_ID'"),
        (
            &["prepare", "--copy-dir=src"],
            "not of the form LOCAL:REMOTE",
        ),
        (
            &["prepare", "--copy-dir=missing:/app/missing"],
            "local directory `missing`",
        ),
        (
            &["prepare", "--patch-file=change.patch"],
            "`--patch-file` needs `--from-base-image`",
        ),
        (
            &["prepare", "--post-patch-cmd=make"],
            "`--post-patch-cmd` needs `--from-base-image`",
        ),
        (
            &["prepare", "--from-base-image=im-1", "--include-cwd"],
            "cannot be combined with `--include-cwd`",
        ),
        (
            &["prepare", "--sandbox-project-root=app"],
            "must be an absolute path",
        ),
        (
            &["prepare", "no/such/Dockerfile"],
            "Dockerfile `no/such/Dockerfile` not found",
        ),
        (
            &["create", "im-1", "--env", "NOEQUALS"],
            "not of the form KEY=VALUE",
        ),
        (
            &["create", "im-1", "--experimental-options", "{oops"],
            "is not valid JSON",
        ),
        (
            &["create", "im-1", "--experimental-options", "[1]"],
            "is not a JSON object",
        ),
        (&["create", "im-1", "--cpu", "0"], "--cpu"),
        (&["exec", "sb-1"], "Missing argument 'COMMAND'"),
        (&["download", "sb-1"], "Missing argument"),
        (
            &["download", "sb-1", "/remote-only"],
            "not of the form REMOTE:LOCAL",
        ),
        (&["download", "sb-1", ":local"], "empty remote path"),
        (&["download", "sb-1", "/r:"], "empty local path"),
        (&["destroy"], "Missing argument 'SANDBOX_ID'"),
        (&["no-such-command"], "No such command"),
    ];
    for (args, message) in cases {
        let out = script_without_modal(&p, args);
        assert_ne!(out.code, 0, "{args:?} succeeded:\n{}", out.stdout);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected `{message}` in:\n{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("must not be imported"),
            "{args:?} imported modal:\n{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} wrote to stdout:\n{}",
            out.stdout
        );
    }
}

#[test]
fn without_credentials_every_command_fails_fast_with_the_login_hint() {
    let p = Project::new();
    let commands: &[&[&str]] = &[
        &["create", "im-x"],
        &["prepare"],
        &["prepare", "--from-base-image=im-x"],
        &["exec", "sb-x", "true"],
        &["download", "sb-x", "/r:l"],
        &["destroy", "sb-x"],
        &["destroy-many", "sb-x", "sb-y"],
    ];
    for args in commands {
        let start = Instant::now();
        let out = run_with_timeout(
            python(p.path())
                .arg(script())
                .args(*args)
                .current_dir(p.path()),
            Duration::from_secs(30),
        );
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no Modal credentials found")
                && out.stderr.contains("`modal token new`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn credentials_the_sdk_rejects_give_the_login_hint() {
    // A token ID without its secret passes the script's own check; the real SDK then
    // refuses to authenticate (locally, without the network) and the script must turn
    // that into the same hint.
    let p = Project::new();
    for args in [&["create", "im-x"][..], &["destroy-many", "sb-x", "sb-y"]] {
        let out = run_with_timeout(
            python(p.path())
                .env("MODAL_TOKEN_ID", "ak-not-a-real-token")
                .arg(script())
                .args(args)
                .current_dir(p.path()),
            Duration::from_secs(30),
        );
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("Modal rejected the credentials")
                && out.stderr.contains("`modal token new`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("Traceback"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// `mypy --config-file tests/modal/mypy.ini <file>` with a private cache.
fn mypy(p: &Project, file: &Path) -> Run {
    support::run(
        python(p.path())
            .args(["-m", "mypy", "--config-file"])
            .arg(modal_test_file("mypy.ini"))
            .arg("--cache-dir")
            .arg(p.path().join("mypy-cache"))
            .arg(file),
    )
}

#[test]
fn the_script_type_checks_strictly_against_the_real_modal_sdk() {
    let p = Project::new();
    let out = mypy(&p, &script());
    assert_eq!(out.code, 0, "mypy:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Success"), "{}", out.stdout);
}

#[test]
fn the_type_check_catches_a_misused_sdk_call() {
    // The check must be able to fail: the same script with a misspelt keyword of
    // `Sandbox.create` and a method the SDK does not have.
    let p = Project::new();
    let source = std::fs::read_to_string(script()).unwrap();
    assert!(source.contains("workdir=workdir,") && source.contains("sandbox.terminate.aio()"));
    let broken = source
        .replace("workdir=workdir,", "work_dir=workdir,")
        .replace("sandbox.terminate.aio()", "sandbox.kill.aio()");
    let file = p.file("broken_modal_sandbox.py", &broken);
    let out = mypy(&p, &file);
    assert_ne!(out.code, 0, "mypy accepted:\n{}", out.stdout);
    assert!(out.stdout.contains("\"work_dir\""), "{}", out.stdout);
    assert!(
        out.stdout.contains("has no attribute \"kill\""),
        "{}",
        out.stdout
    );
}

/// The `name==version` pin of `package` in `text`.
fn pin<'a>(text: &'a str, package: &str) -> Option<&'a str> {
    let needle = format!("{package}==");
    text.lines()
        .map(|l| {
            l.trim()
                .trim_matches(|c| c == '#' || c == ' ' || c == '"' || c == ',')
        })
        .find_map(|l| l.strip_prefix(needle.as_str()))
}

#[test]
fn the_script_header_lets_uv_install_what_the_type_check_used() {
    let source = std::fs::read_to_string(script()).unwrap();
    let header: Vec<&str> = source
        .lines()
        .skip_while(|l| *l != "# /// script")
        .take_while(|l| *l != "# ///")
        .collect();
    assert!(!header.is_empty(), "no PEP 723 `# /// script` block");
    let header = header.join("\n");
    assert!(header.contains("requires-python = \">=3.10\""), "{header}");
    assert!(header.contains("\"click"), "{header}");
    let requirements = std::fs::read_to_string(modal_test_file("requirements.txt")).unwrap();
    let script_pin = pin(&header, "modal").expect("the script pins `modal==X`");
    assert_eq!(
        Some(script_pin),
        pin(&requirements, "modal"),
        "tests/modal/requirements.txt must pin the same modal as the script"
    );
}
