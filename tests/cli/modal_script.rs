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
use std::time::Duration;

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
    support::wait_bounded(support::spawn_piped(cmd), limit, "the script")
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
            &[
                "prepare",
                "--from-base-image=im-1",
                "--sandbox-init-cmd=make",
            ],
            "cannot be combined with `--sandbox-init-cmd`",
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
        // Fast means no attempt to reach Modal, whose timeouts run for minutes; 60 s
        // leaves a loaded machine time to import the SDK.
        let out = run_with_timeout(
            python(p.path())
                .arg(script())
                .args(*args)
                .current_dir(p.path()),
            Duration::from_secs(60),
        );
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no Modal credentials found")
                && out.stderr.contains("`modal token new`"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
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
            Duration::from_secs(60),
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

// ---------------------------------------------------------------------------------------
// Behaviour against a stand-in SDK. mypy (above) checks that every call matches the real
// SDK's signatures; these tests check what the script does with the results: stdout holds
// only the IDs, the build steps and their order, exit codes, streaming, downloads and
// partial failures. The stand-in implements just the calls the script makes, with the
// same names and shapes; a "sandbox" is the directory `$FAKE_MODAL_ROOT/<id>` on this
// machine (its working directory), and remote paths are paths on this machine.

/// `modal/__init__.py` of the stand-in. Every call is appended to `calls.jsonl`.
const FAKE_MODAL: &str = r#"
import asyncio, contextlib, json, os, shutil
from pathlib import Path
from . import exception

ROOT = Path(os.environ["FAKE_MODAL_ROOT"])

def record(*call):
    with open(ROOT / "calls.jsonl", "a") as f:
        f.write(json.dumps(call, default=str) + "\n")

class _Call:
    """A method usable as `f(...)` and as `await f.aio(...)`, like the SDK's."""
    def __init__(self, fn):
        self.aio = fn
    def __call__(self, *args, **kwargs):
        return asyncio.run(self.aio(*args, **kwargs))

class FilePatternMatcher:
    def __init__(self, path):
        self.path = path
    @classmethod
    def from_file(cls, path):
        return cls(str(path))
    def __repr__(self):
        return "ignore-file:" + self.path

@contextlib.contextmanager
def enable_output():
    print("fake modal: output enabled")
    yield

class App:
    def __init__(self, name):
        self.name = name
    async def _lookup(name, create_if_missing=False):
        record("App.lookup", name, create_if_missing)
        return App(name)
    lookup = _Call(_lookup)

class Image:
    def __init__(self, steps):
        self.steps = steps
        self.object_id = None
        self.build = _Call(self._build)
    def _then(self, *step):
        return Image(self.steps + [list(step)])
    @staticmethod
    def debian_slim(python_version=None):
        return Image([["debian_slim", python_version]])
    @staticmethod
    def from_dockerfile(path, context_dir=None):
        return Image([["from_dockerfile", str(path), str(context_dir)]])
    async def _from_id(image_id):
        if "missing" in image_id:
            raise exception.NotFoundError("Image " + image_id + " not found")
        image = Image([["from_id", image_id]])
        image.object_id = image_id  # the SDK hydrates images loaded by ID
        return image
    from_id = _Call(_from_id)
    def pip_install(self, *packages):
        return self._then("pip_install", *packages)
    def workdir(self, path):
        return self._then("workdir", str(path))
    def add_local_dir(self, local_path, remote_path, *, copy=False, ignore=[]):
        return self._then("add_local_dir", str(local_path), remote_path, copy, repr(ignore))
    def add_local_file(self, local_path, remote_path, *, copy=False):
        return self._then("add_local_file", str(local_path), remote_path, copy)
    def run_commands(self, *commands, env=None):
        return self._then("run_commands", list(commands), env)
    async def _build(self, app):
        if "FAIL_BUILD" in json.dumps(self.steps):
            raise exception.RemoteError("Image build failed: a step exited with 1")
        self.object_id = "im-built-%d" % len(self.steps)
        record("Image.build", app.name, self.steps)
        print("fake modal: built", self.object_id)
        return self

class _Stream:
    def __init__(self, reader, text):
        self._reader, self._text = reader, text
        self.read = _Call(self._read)
    async def _read(self):
        data = await self._reader.read()
        return data.decode() if self._text else data
    async def _chunks(self):
        while True:
            chunk = await self._reader.read(4096)
            if not chunk:
                return
            yield chunk.decode() if self._text else chunk
    def __aiter__(self):
        return self._chunks()

class _Process:
    def __init__(self, proc, text):
        self.stdout = _Stream(proc.stdout, text)
        self.stderr = _Stream(proc.stderr, text)
        self.wait = _Call(proc.wait)

class _Info:
    def __init__(self, path):
        self.name, self._path = path.name, path
    def is_dir(self):
        return self._path.is_dir()
    def is_file(self):
        return self._path.is_file()

class _Filesystem:
    def __init__(self):
        self.stat = _Call(self._stat)
        self.list_files = _Call(self._list_files)
        self.copy_to_local = _Call(self._copy_to_local)
    async def _stat(self, remote_path):
        if not Path(remote_path).exists():
            raise exception.SandboxFilesystemNotFoundError(remote_path + ": no such file")
        return _Info(Path(remote_path))
    async def _list_files(self, remote_path):
        return [_Info(p) for p in sorted(Path(remote_path).iterdir())]
    async def _copy_to_local(self, remote_path, local_path):
        shutil.copyfile(remote_path, local_path)

class Sandbox:
    def __init__(self, sandbox_id):
        self.object_id = sandbox_id
        self.dir = ROOT / sandbox_id
        self.filesystem = _Filesystem()
        self.exec = _Call(self._exec)
        self.terminate = _Call(self._terminate)
    async def _create(*args, **kwargs):
        shown = {k: v.name if isinstance(v, App) else v.object_id if isinstance(v, Image) else v
                 for k, v in kwargs.items()}
        record("Sandbox.create", list(args), shown)
        sandbox_id = "sb-%d" % (len(list(ROOT.glob("sb-*"))) + 1)
        (ROOT / sandbox_id).mkdir()
        return Sandbox(sandbox_id)
    create = _Call(_create)
    async def _from_id(sandbox_id):
        if not (ROOT / sandbox_id).is_dir():
            raise exception.NotFoundError("Sandbox " + sandbox_id + " not found")
        return Sandbox(sandbox_id)
    from_id = _Call(_from_id)
    async def _exec(self, *args, text=True):
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=self.dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return _Process(proc, text)
    async def _terminate(self):
        if (self.dir / "refuse").exists():
            raise exception.InvalidError("the service refused to terminate " + self.object_id)
        record("Sandbox.terminate", self.object_id)
        (self.dir / "terminated").touch()
"#;

/// `modal/exception.py` of the stand-in.
const FAKE_MODAL_EXCEPTION: &str = r#"
class Error(Exception): pass
class AuthError(Error): pass
class NotFoundError(Error): pass
class InvalidError(Error): pass
class RemoteError(Error): pass
class SandboxFilesystemError(Error): pass
class SandboxFilesystemNotFoundError(SandboxFilesystemError): pass
"#;

/// A project with the stand-in SDK installed under `fake/` and its state under `state/`.
fn fake_project() -> Project {
    let p = Project::new();
    p.file("fake/modal/__init__.py", FAKE_MODAL);
    p.file("fake/modal/exception.py", FAKE_MODAL_EXCEPTION);
    std::fs::create_dir_all(p.path().join("state")).unwrap();
    p
}

/// `python modal_sandbox.py <args>` in the project, against the stand-in SDK.
fn fake_cmd(p: &Project, args: &[&str]) -> Command {
    let mut cmd = python(p.path());
    cmd.env("PYTHONPATH", p.path().join("fake"))
        .env("FAKE_MODAL_ROOT", p.path().join("state"))
        .env("MODAL_TOKEN_ID", "ak-fake")
        .env("MODAL_TOKEN_SECRET", "as-fake")
        .arg(script())
        .args(args)
        .current_dir(p.path());
    cmd
}

fn fake_run(p: &Project, args: &[&str]) -> Run {
    run_with_timeout(&mut fake_cmd(p, args), Duration::from_secs(60))
}

/// The calls recorded by the stand-in, one JSON array each.
fn calls(p: &Project) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p.path().join("state/calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The recorded calls named `name`.
fn calls_named(p: &Project, name: &str) -> Vec<serde_json::Value> {
    calls(p).into_iter().filter(|c| c[0] == name).collect()
}

#[test]
fn full_prepare_adds_the_context_dir_copy_dirs_and_init_cmd_and_prints_only_the_id() {
    let p = fake_project();
    p.file("export/docker/Dockerfile", "FROM python:3.12-slim\n");
    p.file("export/.dockerignore", "target\n");
    p.file("export/app.py", "");
    p.file("data/x.txt", "");
    let ctx = p.path().join("export");
    let out = fake_run(
        &p,
        &[
            "prepare",
            "docker/Dockerfile",
            "--include-cwd",
            "--copy-dir=data:fixtures",
            "--copy-dir=data:/opt/data",
            "--sandbox-init-cmd=make setup",
            &format!("--context-dir={}", ctx.display()),
            "--sandbox-project-root=/srv/proj",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout, "im-built-5\n",
        "stdout must hold only the image ID"
    );
    assert!(
        out.stderr.contains("fake modal: built im-built-5"),
        "{}",
        out.stderr
    );
    let builds = calls_named(&p, "Image.build");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0][1], "offload-dockerfile-sandbox");
    let ctx = ctx.display().to_string();
    let expected = serde_json::json!([
        ["from_dockerfile", format!("{ctx}/docker/Dockerfile"), ctx],
        [
            "add_local_dir",
            ctx,
            "/srv/proj",
            true,
            format!("ignore-file:{ctx}/.dockerignore")
        ],
        ["add_local_dir", "data", "/srv/proj/fixtures", true, "[]"],
        ["add_local_dir", "data", "/opt/data", true, "[]"],
        ["run_commands", ["make setup"], null],
    ]);
    assert_eq!(builds[0][2], expected);
}

/// What Offload runs: the configured words only, everything else in `OFFLOAD_*`
/// variables (the prepare contract), for both kinds of build.
#[test]
fn prepare_reads_the_offload_variables() {
    let p = fake_project();
    p.file("export/docker/Dockerfile", "FROM python:3.12-slim\n");
    p.file("export/app.py", "");
    p.file("data/x.txt", "");
    p.file("more data/y.txt", "");
    let ctx = p.path().join("export");
    let out = run_with_timeout(
        fake_cmd(&p, &["prepare", "docker/Dockerfile", "--include-cwd"])
            .env("OFFLOAD_CONTEXT_DIR", &ctx)
            .env("OFFLOAD_COPY_DIRS", "data:fixtures\nmore data:/opt/more\n")
            .env("OFFLOAD_SANDBOX_INIT_CMD", "make setup")
            .env("OFFLOAD_SANDBOX_PROJECT_ROOT", "/srv/proj"),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ctx = ctx.display().to_string();
    let expected = serde_json::json!([
        ["from_dockerfile", format!("{ctx}/docker/Dockerfile"), ctx],
        ["add_local_dir", ctx, "/srv/proj", true, "[]"],
        ["add_local_dir", "data", "/srv/proj/fixtures", true, "[]"],
        ["add_local_dir", "more data", "/opt/more", true, "[]"],
        ["run_commands", ["make setup"], null],
    ]);
    assert_eq!(calls_named(&p, "Image.build")[0][2], expected);

    let patch = p.file("change.patch", "diff\n");
    let out = run_with_timeout(
        fake_cmd(&p, &["prepare", "docker/Dockerfile", "--include-cwd"])
            .env("OFFLOAD_BASE_IMAGE", "im-base")
            .env("OFFLOAD_PATCH_FILE", &patch)
            .env("OFFLOAD_POST_PATCH_CMD", "make gen")
            .env("OFFLOAD_SANDBOX_PROJECT_ROOT", "/srv/proj"),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected = serde_json::json!([
        ["from_id", "im-base"],
        ["add_local_file", patch.display().to_string(), "/tmp/offload.patch", true],
        ["run_commands", ["offload apply-diff /tmp/offload.patch --project-root /srv/proj"], null],
        ["run_commands", ["make gen"], {"OFFLOAD_PATCH_FILE": "/tmp/offload.patch"}],
        ["run_commands", ["rm -f /tmp/offload.patch"], null],
    ]);
    assert_eq!(calls_named(&p, "Image.build")[1][2], expected);
}

#[test]
fn full_prepare_without_a_dockerfile_uses_the_default_image_and_nothing_else() {
    let p = fake_project();
    let out = fake_run(&p, &["prepare"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "im-built-3\n");
    let builds = calls_named(&p, "Image.build");
    assert_eq!(builds[0][1], "offload-sandbox");
    assert_eq!(builds[0][2][0][0], "debian_slim");
    assert_eq!(builds[0][2][2], serde_json::json!(["workdir", "/app"]));
    assert_eq!(
        builds[0][2].as_array().unwrap().len(),
        3,
        "{}",
        builds[0][2]
    );
}

#[test]
fn incremental_prepare_applies_the_patch_runs_post_patch_and_removes_the_patch() {
    let p = fake_project();
    let patch = p.file("change.patch", "diff\n");
    let out = fake_run(
        &p,
        &[
            "prepare",
            "--from-base-image=im-base",
            "--sandbox-project-root=/srv/my app",
            &format!("--patch-file={}", patch.display()),
            "--post-patch-cmd=make gen",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "im-built-5\n");
    let builds = calls_named(&p, "Image.build");
    assert_eq!(builds[0][1], "offload-checkpoint-sandbox");
    let expected = serde_json::json!([
        ["from_id", "im-base"],
        ["add_local_file", patch.display().to_string(), "/tmp/offload.patch", true],
        ["run_commands", ["offload apply-diff /tmp/offload.patch --project-root '/srv/my app'"], null],
        ["run_commands", ["make gen"], {"OFFLOAD_PATCH_FILE": "/tmp/offload.patch"}],
        ["run_commands", ["rm -f /tmp/offload.patch"], null],
    ]);
    assert_eq!(builds[0][2], expected);

    // Without a patch, post_patch_cmd runs alone and without OFFLOAD_PATCH_FILE. The
    // configured prepare command's own words (a Dockerfile, --include-cwd) are ignored.
    let out = fake_run(
        &p,
        &[
            "prepare",
            "no/such/Dockerfile",
            "--include-cwd",
            "--from-base-image=im-base",
            "--post-patch-cmd=make gen",
        ],
    );
    assert!(out.stderr.contains("ignoring DOCKERFILE"), "{}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        calls_named(&p, "Image.build")[1][2],
        serde_json::json!([["from_id", "im-base"], ["run_commands", ["make gen"], null]])
    );

    // The run's own files (OFFLOAD_COPY_DIRS, as Offload hands them to an incremental
    // build) go in after the patch, under the project root unless absolute.
    std::fs::create_dir_all(p.path().join("archive")).unwrap();
    let mut cmd = fake_cmd(
        &p,
        &[
            "prepare",
            "--from-base-image=im-base",
            "--sandbox-project-root=/srv/app",
            &format!("--patch-file={}", patch.display()),
        ],
    );
    cmd.env("OFFLOAD_COPY_DIRS", "archive:.offload-archive\n");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        calls_named(&p, "Image.build")[2][2],
        serde_json::json!([
            ["from_id", "im-base"],
            [
                "add_local_file",
                patch.display().to_string(),
                "/tmp/offload.patch",
                true
            ],
            [
                "run_commands",
                ["offload apply-diff /tmp/offload.patch --project-root /srv/app"],
                null
            ],
            [
                "add_local_dir",
                "archive",
                "/srv/app/.offload-archive",
                true,
                "[]"
            ],
            ["run_commands", ["rm -f /tmp/offload.patch"], null],
        ])
    );
}

#[test]
fn a_failed_build_or_a_missing_base_image_exits_1_without_an_id() {
    let p = fake_project();
    let out = fake_run(
        &p,
        &[
            "prepare",
            "--from-base-image=im-base",
            "--post-patch-cmd=FAIL_BUILD",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("failed to build on base image `im-base`")
            && out.stderr.contains("Image build failed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Traceback"), "{}", out.stderr);

    let out = fake_run(&p, &["prepare", "--from-base-image=im-missing"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

#[test]
fn create_passes_resources_env_and_options_and_prints_the_sandbox_id() {
    let p = fake_project();
    let out = fake_run(
        &p,
        &[
            "create",
            "--cpu",
            "0.125",
            "im-7",
            "--memory-gb",
            "1.5",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--timeout",
            "60",
            "--experimental-options",
            r#"{"enable_docker":true}"#,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "sb-1\n");
    let created = calls_named(&p, "Sandbox.create");
    assert_eq!(created.len(), 1);
    let kwargs = &created[0][2];
    assert_eq!(kwargs["app"], "offload-sandbox");
    assert_eq!(kwargs["image"], "im-7");
    assert_eq!(kwargs["cpu"], 0.125);
    assert_eq!(kwargs["memory"], 1536);
    assert_eq!(kwargs["env"], serde_json::json!({"A": "1", "B": "x=y"}));
    assert_eq!(kwargs["timeout"], 60);
    assert_eq!(
        kwargs["experimental_options"],
        serde_json::json!({"enable_docker": true})
    );

    // Defaults: one hour, Modal's own resources, no env.
    let out = fake_run(&p, &["create", "im-7"]);
    assert_eq!(out.stdout, "sb-2\n", "{}", out.stderr);
    let kwargs = &calls_named(&p, "Sandbox.create")[1][2];
    assert_eq!(kwargs["timeout"], 3600);
    assert!(kwargs["cpu"].is_null() && kwargs["memory"].is_null() && kwargs["env"].is_null());

    let out = fake_run(&p, &["create", "im-missing"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("image `im-missing` not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn exec_streams_both_outputs_as_they_come_and_exits_with_the_command_code() {
    let p = fake_project();
    assert_eq!(fake_run(&p, &["create", "im-1"]).stdout, "sb-1\n");
    // The command goes on only once the test has read its first line (or after 60 s,
    // saying so): a first line held back until the end shows as `never-streamed`.
    let go = p.path().join("go");
    let command = format!(
        "echo first; echo oops >&2; i=0; \
         while [ ! -e '{go}' ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; \
         [ -e '{go}' ] || echo never-streamed; echo second; pwd; exit 7",
        go = go.display()
    );
    let mut child = fake_cmd(&p, &["exec", "sb-1", &command])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "first\n");
    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    let sandbox_dir = p.path().join("state/sb-1").canonicalize().unwrap();
    assert_eq!(rest, format!("second\n{}\n", sandbox_dir.display()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    let gone = fake_run(&p, &["exec", "sb-404", "true"]);
    assert_eq!(gone.code, 125, "{}", gone.stderr);
    assert!(gone.stderr.contains("sb-404"), "{}", gone.stderr);
}

#[test]
fn download_copies_files_and_directories_and_reports_missing_ones() {
    let p = fake_project();
    assert_eq!(fake_run(&p, &["create", "im-1"]).stdout, "sb-1\n");
    p.file("state/sb-1/out/junit.xml", "<testsuites/>");
    let arts = p
        .file("state/sb-1/arts/a/b.txt", "artifact")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let out = fake_run(
        &p,
        &[
            "download",
            "sb-1",
            "out/junit.xml:local/deep/junit.xml",
            "/nonexistent/r.xml:local/r.xml",
            &format!("{}:local/arts", arts.display()),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("`/nonexistent/r.xml` does not exist in sandbox `sb-1`"),
        "{}",
        out.stderr
    );
    let read = |rel: &str| std::fs::read_to_string(p.path().join(rel)).unwrap();
    assert_eq!(read("local/deep/junit.xml"), "<testsuites/>");
    assert_eq!(read("local/arts/a/b.txt"), "artifact");
    assert!(!p.path().join("local/r.xml").exists());

    let ok = fake_run(&p, &["download", "sb-1", "out/junit.xml:again.xml"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(read("again.xml"), "<testsuites/>");
}

#[test]
fn destroy_many_terminates_all_it_can_and_names_the_rest() {
    let p = fake_project();
    for _ in 0..3 {
        assert_eq!(fake_run(&p, &["create", "im-1"]).code, 0);
    }
    p.file("state/sb-2/refuse", "");
    let mut child = fake_cmd(&p, &["destroy-many"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"sb-1\nsb-2\n\n  sb-3  \nsb-404",
    )
    .unwrap();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let mut failed: Vec<&str> = out.stdout.lines().collect();
    failed.sort_unstable();
    assert_eq!(failed, ["sb-2", "sb-404"], "{}", out.stderr);
    for id in ["sb-1", "sb-3"] {
        assert!(
            p.path().join("state").join(id).join("terminated").exists(),
            "{id}"
        );
    }
    assert!(
        out.stderr
            .contains("2 of 4 sandbox(es) could not be terminated"),
        "{}",
        out.stderr
    );

    // IDs as arguments; nothing to do is fine.
    let out = fake_run(&p, &["destroy-many", "sb-1", "sb-3"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let out = fake_run(&p, &["destroy-many"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    assert_eq!(fake_run(&p, &["destroy", "sb-1"]).code, 0);
    let out = fake_run(&p, &["destroy", "sb-404"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("terminate sandbox `sb-404`"),
        "{}",
        out.stderr
    );
}
