//! `.dockerignore` patterns, matched the way Docker matches them.
//!
//! [`DockerIgnore`] is read from the repository root (the build context) and used by
//! every step that decides what reaches an image: the tree export, the working-tree
//! snapshot and the thin diff. One matcher for all three means a path is either in the
//! image or not, whichever way it gets there.
//!
//! Semantics (Docker's): patterns are relative to the context root (a leading `/` is
//! dropped, so `foo` matches only the top-level `foo`); `*` and `?` do not cross `/`,
//! `**` matches any number of directories, `[...]` is a character class and `\`
//! escapes; a pattern that matches a directory excludes everything below it; a pattern
//! starting with `!` re-includes; the last matching pattern wins. `#` lines are
//! comments. This module reads one file and matches strings; it walks no trees.

use std::path::Path;

use anyhow::{Context, Result};

/// The name of the file, at the root of the build context.
pub const FILE_NAME: &str = ".dockerignore";

/// The parsed patterns of one `.dockerignore` file (empty when there is none).
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    segments: Vec<String>,
}

impl DockerIgnore {
    /// Reads `<root>/.dockerignore`; a missing file means nothing is ignored.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read `{}`", path.display())),
        }
    }

    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let segments: Vec<String> = pattern
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect();
            if segments.is_empty() {
                continue;
            }
            rules.push(Rule { negated, segments });
        }
        Self { rules }
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the repository-relative path `rel` (`/`-separated) is excluded.
    pub fn is_ignored(&self, rel: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut ignored = false;
        for rule in &self.rules {
            // A rule matching the path or one of its parent directories applies.
            let hit = (1..=parts.len()).any(|k| match_segments(&rule.segments, &parts[..k]));
            if hit {
                ignored = !rule.negated;
            }
        }
        ignored
    }
}

fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                glob_segment(first.as_bytes(), name.as_bytes()) && match_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

/// Matches one path segment against one pattern segment (`*`, `?`, `[...]`, `\`).
fn glob_segment(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| glob_segment(&pattern[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && glob_segment(&pattern[1..], &name[1..]),
        Some(b'[') => match (class_match(&pattern[1..], name.first().copied()), name) {
            (Some((true, len)), [_, rest @ ..]) => glob_segment(&pattern[1 + len..], rest),
            (Some(_), _) => false,
            // An unclosed `[` is a literal character.
            (None, [b'[', rest @ ..]) => glob_segment(&pattern[1..], rest),
            (None, _) => false,
        },
        Some(b'\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && glob_segment(&pattern[2..], &name[1..])
        }
        Some(c) => name.first() == Some(c) && glob_segment(&pattern[1..], &name[1..]),
    }
}

/// Matches a character class body (after `[`) against `c`; returns whether it matched
/// and how many pattern bytes the class used (including `]`), or `None` if unclosed.
fn class_match(body: &[u8], c: Option<u8>) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = matches!(body.first(), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < body.len() {
        let b = body[i];
        if b == b']' && !first {
            let hit = c.is_some() && matched != negated;
            return Some((hit, i + 1));
        }
        first = false;
        let (lo, step) = if b == b'\\' && i + 1 < body.len() {
            (body[i + 1], 2)
        } else {
            (b, 1)
        };
        i += step;
        if i + 1 < body.len() && body[i] == b'-' && body[i + 1] != b']' {
            let hi = body[i + 1];
            i += 2;
            if c.is_some_and(|c| lo <= c && c <= hi) {
                matched = true;
            }
        } else if c == Some(lo) {
            matched = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &str, path: &str) -> bool {
        DockerIgnore::parse(patterns).is_ignored(path)
    }

    #[test]
    fn patterns_match_like_docker() {
        let cases: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foo/bar.txt", true),
            ("foo", "sub/foo", false),
            ("/foo", "foo/x", true),
            ("./foo/", "foo/x", true),
            ("*.log", "debug.log", true),
            ("*.log", "sub/debug.log", false),
            ("**/*.log", "sub/deep/debug.log", true),
            ("**/*.log", "debug.log", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b/c", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("[ab].txt", "b.txt", true),
            ("[!ab].txt", "b.txt", false),
            ("[a-c].txt", "c.txt", true),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("# comment\n\n.venv", ".venv/bin/python", true),
            (".venv", "src/.venv", false),
            ("target\n!target/keep", "target/keep", false),
            ("target\n!target/keep", "target/other", true),
            ("!x\nx", "x", true),
            ("a*", "abc/d", true),
            ("*", "anything/at/all", true),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(ignored(patterns, path), *want, "{patterns:?} vs {path:?}");
        }
    }

    #[test]
    fn missing_file_ignores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ig = DockerIgnore::load(dir.path()).unwrap();
        assert!(ig.is_empty());
        assert!(!ig.is_ignored("anything"));
    }
}
