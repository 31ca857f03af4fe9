//! Bundled scripts and `@name.ext` references to them.
//!
//! The scripts of the repository's `scripts/` directory are compiled into the binary
//! ([`SCRIPTS`]). A shell command of the `default` or `modal` provider may name one as
//! `@name.ext` (an `@` at the start of the command or after whitespace); [`expand`]
//! extracts every bundled script once per process into a per-user cache directory
//! ([`cache_dir`]) and replaces each reference with the absolute path of the extracted
//! file. A file is rewritten only when its content changed, so a running script is
//! never replaced under another Offload process, and it is made executable (0755).
//!
//! This module does not run anything; the providers do.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use regex::Regex;

/// A script compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Script {
    /// Its file name, as written after `@`.
    name: &'static str,
    /// Its content.
    pub(crate) contents: &'static [u8],
}

/// Every bundled script. Adding one is one line here (and the file in `scripts/`).
const SCRIPTS: &[Script] = &[
    Script {
        name: "local_sandbox.sh",
        contents: include_bytes!("../scripts/local_sandbox.sh"),
    },
    Script {
        name: "ssh_sandbox.sh",
        contents: include_bytes!("../scripts/ssh_sandbox.sh"),
    },
    Script {
        name: "modal_sandbox.py",
        contents: include_bytes!("../scripts/modal_sandbox.py"),
    },
    PYTEST_PLUGIN,
    PYTEST_WORKER,
    PYTEST_CLIENT,
];

/// The pytest plugin that selects a batch's tests (see `crate::framework::pytest`).
pub(crate) const PYTEST_PLUGIN: Script = Script {
    name: "offload_pytest_plugin.py",
    contents: include_bytes!("../scripts/offload_pytest_plugin.py"),
};

/// The resident pytest worker (see `crate::framework::pytest`).
pub(crate) const PYTEST_WORKER: Script = Script {
    name: "offload_pytest_worker.py",
    contents: include_bytes!("../scripts/offload_pytest_worker.py"),
};

/// The resident pytest worker's client, which every batch runs, and the protocol the
/// worker shares with it.
pub(crate) const PYTEST_CLIENT: Script = Script {
    name: "offload_pytest_client.py",
    contents: include_bytes!("../scripts/offload_pytest_client.py"),
};

/// `@name.ext` at the start of a command or after whitespace.
fn reference_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        // A valid literal pattern: compiling it cannot fail.
        Regex::new(r"(?:^|\s)@([\w-]+\.\w+)").unwrap_or_else(|err| panic!("bad regex: {err}"))
    })
}

/// One `@name.ext` reference in a command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// Byte offset of the `@`.
    start: usize,
    /// Byte offset just past the name.
    end: usize,
    /// The script name (without the `@`).
    name: String,
}

/// Every `@name.ext` reference in `command`, in order.
fn references(command: &str) -> Vec<Reference> {
    reference_pattern()
        .captures_iter(command)
        .filter_map(|caps| caps.get(1))
        .map(|name| Reference {
            // The `@` is the byte just before the name.
            start: name.start() - 1,
            end: name.end(),
            name: name.as_str().to_owned(),
        })
        .collect()
}

/// The bundled script called `name`, if there is one.
fn find(name: &str) -> Option<&'static Script> {
    SCRIPTS.iter().find(|s| s.name == name)
}

/// Replaces every `@name.ext` in `command` with the path of the extracted script
/// (shell-quoted when needed), extracting the scripts into [`cache_dir`] the first
/// time a command holds a reference. A command without references is returned as is.
pub(crate) fn expand(command: &str) -> Result<String> {
    if references(command).is_empty() {
        return Ok(command.to_owned());
    }
    check_names(command)?;
    expand_in(command, extracted_dir()?)
}

/// The directory holding every bundled script, extracting them into [`cache_dir`] on
/// the first call of the process.
pub(crate) fn extracted_dir() -> Result<&'static Path> {
    static EXTRACTED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    EXTRACTED
        .get_or_init(|| {
            let dir = cache_dir();
            extract_all(&dir)
                .map(|()| dir)
                .map_err(|err| format!("{err:#}"))
        })
        .as_deref()
        .map_err(|err| anyhow::anyhow!("{err}"))
}

/// Like [`expand`], with the scripts taken to be extracted in `dir` already.
fn expand_in(command: &str, dir: &Path) -> Result<String> {
    check_names(command)?;
    let mut out = String::with_capacity(command.len());
    let mut last = 0;
    for reference in references(command) {
        out.push_str(&command[last..reference.start]);
        let path = dir.join(&reference.name);
        out.push_str(&crate::process::quote(&path.to_string_lossy()));
        last = reference.end;
    }
    out.push_str(&command[last..]);
    Ok(out)
}

/// Fails, naming the bundled scripts, when `command` refers to one that does not exist.
fn check_names(command: &str) -> Result<()> {
    for reference in references(command) {
        if find(&reference.name).is_none() {
            let known: Vec<String> = SCRIPTS.iter().map(|s| format!("`@{}`", s.name)).collect();
            bail!(
                "unknown bundled script `@{}` in `{command}` (bundled scripts: {}; hint: a word starting with `@` after a space names a bundled script, quote it to pass it literally)",
                reference.name,
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// Where scripts are extracted: `$XDG_CACHE_HOME/offload/scripts`, else
/// `$HOME/.cache/offload/scripts`, else `offload-<uid>/scripts` in the temporary
/// directory.
pub(crate) fn cache_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return xdg.join("offload").join("scripts");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".cache").join("offload").join("scripts");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir()
        .join(format!("offload-{uid}"))
        .join("scripts")
}

/// Writes every bundled script into `dir` (created if missing) with mode 0755. A file
/// whose content is already right is left untouched; others are replaced atomically.
fn extract_all(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the script cache directory `{}` (hint: set XDG_CACHE_HOME to a writable directory)",
            dir.display()
        )
    })?;
    for script in SCRIPTS {
        let path = dir.join(script.name);
        let current = std::fs::read(&path).ok();
        if current.as_deref() != Some(script.contents) {
            // Write beside it, then rename: a script being run by another process keeps
            // its old inode, and nobody ever sees half a file.
            let mut tmp = tempfile::Builder::new()
                .prefix(".offload-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot write into `{}`", dir.display()))?;
            std::io::Write::write_all(&mut tmp, script.contents)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            tmp.persist(&path)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?
            .permissions()
            .mode();
        if mode & 0o7777 != 0o755 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make `{}` executable", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(command: &str) -> Vec<String> {
        references(command).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn references_need_a_word_start() {
        assert_eq!(names("@local_sandbox.sh create x"), ["local_sandbox.sh"]);
        assert_eq!(names("uv run @modal_sandbox.py exec"), ["modal_sandbox.py"]);
        assert_eq!(names("a\t@x-y.sh b @z.py"), ["x-y.sh", "z.py"]);
        assert_eq!(names("mail user@example.com"), Vec::<String>::new());
        assert_eq!(names("cat /a/@b.c"), Vec::<String>::new());
        assert_eq!(names("echo @noext"), Vec::<String>::new());
        // One dot only: the rest stays after the path.
        assert_eq!(names("@a.b.c"), ["a.b"]);
        let r = &references("run  @local_sandbox.sh;")[0];
        assert_eq!((r.start, r.end), (5, 22));
    }

    #[test]
    fn expansion_replaces_every_reference_and_quotes_the_path() {
        let dir = Path::new("/cache dir");
        let out = expand_in(
            "@local_sandbox.sh exec x; echo @local_sandbox.sh me@local_sandbox.sh",
            dir,
        )
        .unwrap();
        assert_eq!(
            out,
            "'/cache dir/local_sandbox.sh' exec x; echo '/cache dir/local_sandbox.sh' me@local_sandbox.sh"
        );
        assert_eq!(
            expand_in("sh @local_sandbox.sh", Path::new("/c")).unwrap(),
            "sh /c/local_sandbox.sh"
        );
        assert_eq!(expand("no references here").unwrap(), "no references here");
    }

    #[test]
    fn an_unknown_script_is_an_error_listing_the_bundled_ones() {
        let err = expand_in("uv run @nope.py create", Path::new("/c")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("`@nope.py`"), "{msg}");
        assert!(msg.contains("`@local_sandbox.sh`"), "{msg}");
        assert!(expand("@nope.py").is_err());
    }

    #[test]
    fn extraction_writes_executable_files_and_rewrites_only_changed_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/scripts");
        extract_all(&dir).unwrap();
        let path = dir.join("local_sandbox.sh");
        assert_eq!(std::fs::read(&path).unwrap(), SCRIPTS[0].contents);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        // Unchanged content: the very same file stays (same inode).
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&path).unwrap().ino();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        extract_all(&dir).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.ino(), inode);
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);

        // Changed content: replaced.
        std::fs::write(&path, "stale").unwrap();
        extract_all(&dir).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), SCRIPTS[0].contents);
        // No temporary files left behind.
        let entries = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(entries, SCRIPTS.len());
    }

    #[test]
    fn the_registry_has_unique_names_and_real_content() {
        for (i, s) in SCRIPTS.iter().enumerate() {
            assert!(!s.contents.is_empty(), "{}", s.name);
            assert!(SCRIPTS[i + 1..].iter().all(|o| o.name != s.name));
            assert_eq!(names(&format!("@{}", s.name)), [s.name]);
        }
    }
}
