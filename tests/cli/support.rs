//! Helpers shared by the black-box tests: temporary projects and running the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary project directory, removed when dropped.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// An empty project.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("offload-test-")
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

    /// An `offload` command whose working directory is the project root.
    pub fn offload(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_offload"));
        cmd.current_dir(self.dir.path());
        cmd.env_remove("CI");
        cmd.env("NO_COLOR", "1");
        cmd
    }
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

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("spawn offload").into()
}
