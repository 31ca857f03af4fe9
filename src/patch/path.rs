//! Paths inside a patch: git's C-style quoting and the [`RepoPath`] type.
//!
//! Git writes a path with special bytes (control characters, `"`, `\`, and by default
//! bytes ≥ 0x80) between double quotes with C escapes and three-digit octal bytes; this
//! module undoes that. A [`RepoPath`] is a path relative to the project root that cannot
//! leave it lexically (no absolute path, no `..`, no `.git`); whether it leaves the root
//! through a symbolic link is checked against the tree by [`super::apply`].

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// A `/`-separated path relative to the project root, checked to stay inside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct RepoPath(Vec<u8>);

impl RepoPath {
    /// Checks `bytes` (a path as written in the patch, prefix already stripped).
    ///
    /// Refuses empty paths, absolute paths, empty, `.` and `..` components, `.git`
    /// components (git's own data is never patched) and NUL bytes.
    pub(super) fn new(bytes: &[u8]) -> Result<Self> {
        let shown = String::from_utf8_lossy(bytes);
        if bytes.is_empty() {
            bail!("empty path");
        }
        if bytes.starts_with(b"/") {
            bail!("path `{shown}` is absolute and would leave the project root");
        }
        if bytes.contains(&0) {
            bail!("path `{}` contains a NUL byte", shown.escape_debug());
        }
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" | b"." => bail!("path `{shown}` has an empty or `.` component"),
                b".." => {
                    bail!("path `{shown}` has a `..` component and would leave the project root")
                }
                c if c.eq_ignore_ascii_case(b".git") => {
                    bail!("path `{shown}` points into `.git`, which a patch may not touch")
                }
                _ => {}
            }
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The raw bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a relative [`PathBuf`].
    pub(super) fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(&self.0))
    }

    /// The proper ancestors, outermost first (`a`, `a/b` for `a/b/c`).
    pub(super) fn ancestors(&self) -> Vec<RepoPath> {
        self.0
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| RepoPath(self.0[..i].to_vec()))
            .collect()
    }

    /// Whether `self` lies strictly under `dir`.
    #[cfg(test)]
    fn is_under(&self, dir: &RepoPath) -> bool {
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Undoes git's C-style quoting of a path that starts with `"`.
///
/// Returns the unquoted bytes and the rest of the input after the closing quote.
pub(super) fn unquote(input: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let body = input
        .strip_prefix(b"\"")
        .context("a quoted path must start with `\"`")?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        match c {
            b'"' => return Ok((out, &body[i..])),
            b'\\' => {
                let e = *body.get(i).context("quoted path ends inside an escape")?;
                i += 1;
                let byte = match e {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'3' => {
                        let digits = body
                            .get(i - 1..i + 2)
                            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
                            .context(
                                "quoted path has a bad octal escape (expected three digits)",
                            )?;
                        i += 2;
                        digits.iter().fold(0u8, |acc, d| (acc << 3) | (d - b'0'))
                    }
                    other => bail!("quoted path has an unknown escape `\\{}`", other as char),
                };
                out.push(byte);
            }
            _ => out.push(c),
        }
    }
    bail!("quoted path has no closing `\"`")
}

/// Reads a path that is either quoted (anything after the closing quote is returned as
/// the rest) or plain (up to the first TAB, which git appends after names with spaces
/// on `---`/`+++` lines, or the end).
pub(super) fn read_name(input: &[u8]) -> Result<Vec<u8>> {
    if input.starts_with(b"\"") {
        Ok(unquote(input)?.0)
    } else {
        let end = input
            .iter()
            .position(|&b| b == b'\t')
            .unwrap_or(input.len());
        Ok(input[..end].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_handles_c_escapes_and_octal_utf8() {
        let (name, rest) = unquote(br#""a/x\tb\"c\\d\n" tail"#).unwrap();
        assert_eq!(name, b"a/x\tb\"c\\d\n");
        assert_eq!(rest, b" tail");
        // git writes "é" (0xc3 0xa9) as \303\251 unless core.quotepath is off.
        let (name, _) = unquote(br#""a/caf\303\251.txt""#).unwrap();
        assert_eq!(String::from_utf8(name).unwrap(), "a/café.txt");
        let (name, _) = unquote(br#""\a\b\v\f\r\001""#).unwrap();
        assert_eq!(name, [7, 8, 11, 12, 13, 1]);
    }

    #[test]
    fn unquote_rejects_broken_quoting() {
        assert!(unquote(b"\"abc").is_err(), "no closing quote");
        assert!(unquote(b"\"ab\\").is_err(), "ends in escape");
        assert!(unquote(b"\"\\q\"").is_err(), "unknown escape");
        assert!(unquote(b"\"\\38\"").is_err(), "bad octal");
        assert!(unquote(b"abc").is_err(), "not quoted");
    }

    #[test]
    fn read_name_stops_at_tab_for_plain_names() {
        assert_eq!(read_name(b"a/with space\t").unwrap(), b"a/with space");
        assert_eq!(read_name(b"a/plain").unwrap(), b"a/plain");
        assert_eq!(read_name(b"\"a/q\\tx\"\t").unwrap(), b"a/q\tx");
    }

    #[test]
    fn repo_path_refuses_paths_leaving_the_root() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a/..",
            b"",
            b"a//b",
            b"./a",
            b".git/hooks/pre-commit",
            b"sub/.GIT/config",
            b"a\0b",
        ] {
            assert!(
                RepoPath::new(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = RepoPath::new(b"dir with space/..x/caf\xc3\xa9").unwrap();
        assert_eq!(ok.to_string(), "dir with space/..x/café");
    }

    #[test]
    fn ancestors_and_is_under() {
        let p = RepoPath::new(b"a/b/c").unwrap();
        let names: Vec<String> = p.ancestors().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a", "a/b"]);
        assert!(p.is_under(&RepoPath::new(b"a").unwrap()));
        assert!(!p.is_under(&RepoPath::new(b"a/b/c").unwrap()));
        assert!(
            !RepoPath::new(b"ab/c")
                .unwrap()
                .is_under(&RepoPath::new(b"a").unwrap())
        );
    }
}
