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

use anyhow::{Context, Result, bail};

/// The name of the file, at the root of the build context.
const FILE_NAME: &str = ".dockerignore";

/// The parsed patterns of one `.dockerignore` file (empty when there is none).
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    segments: Vec<Segment>,
}

/// One `/`-separated part of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`: any number of directories, none included.
    AnyDirs,
    /// A glob matching exactly one path segment.
    Glob(Vec<Token>),
}

/// One element of a segment glob. Every token but [`Token::Star`] matches one byte.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A literal byte.
    Byte(u8),
    /// `?`
    AnyByte,
    /// `*`
    Star,
    /// `[...]`: inclusive byte ranges, matched or (negated) not matched.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Self::Byte(c) => *c == b,
            Self::AnyByte => true,
            Self::Star => false,
            Self::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
        }
    }
}

impl DockerIgnore {
    /// Reads `<root>/.dockerignore`; a missing file means nothing is ignored.
    pub(crate) fn load(root: &Path) -> Result<Self> {
        let path = root.join(FILE_NAME);
        // A fifo (or a directory) there would block the read, or fail it obscurely.
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            bail!(
                "`{}` is not a regular file; make it one (a list of patterns) or remove it",
                path.display()
            );
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read `{}`", path.display())),
        }
    }

    /// Parses the text of a `.dockerignore` file.
    pub(crate) fn parse(text: &str) -> Self {
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
            let segments: Vec<Segment> = pattern
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(Segment::parse)
                .collect();
            if segments.is_empty() {
                continue;
            }
            rules.push(Rule { negated, segments });
        }
        Self { rules }
    }

    /// Excludes the root-relative path `rel` (`/`-separated) with everything under it,
    /// whatever the patterns say: what Offload writes itself (its output directory)
    /// never belongs in an image.
    pub(crate) fn exclude(&mut self, rel: &str) {
        let segments: Vec<Segment> = rel
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(Segment::literal)
            .collect();
        if !segments.is_empty() {
            self.rules.push(Rule {
                negated: false,
                segments,
            });
        }
    }

    /// Whether there are no patterns at all.
    pub(super) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the repository-relative path `rel` (`/`-separated) is excluded.
    ///
    /// Takes time proportional to (pattern length × path length) per rule, whatever the
    /// pattern: no backtracking search, so a pattern like `*a*a*a*a*b` or
    /// `**/**/**/**/z` cannot stall a tree walk.
    pub(super) fn is_ignored(&self, rel: &str) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let parts: Vec<&[u8]> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
            .collect();
        let mut ignored = false;
        for rule in &self.rules {
            // A rule matching the path or one of its parent directories applies.
            if rule.matches_a_prefix(&parts) {
                ignored = !rule.negated;
            }
        }
        ignored
    }
}

impl Rule {
    /// Whether the rule matches `parts[..k]` for some `k` in `1..=parts.len()`.
    ///
    /// Dynamic programming over (pattern segment, path segment): `reach[j]` says whether
    /// the segments seen so far match exactly `parts[..j]`.
    fn matches_a_prefix(&self, parts: &[&[u8]]) -> bool {
        let mut reach = vec![false; parts.len() + 1];
        reach[0] = true;
        for segment in &self.segments {
            match segment {
                Segment::AnyDirs => {
                    // `**` extends every reached prefix by any number of segments.
                    let mut seen = false;
                    for r in &mut reach {
                        seen |= *r;
                        *r = seen;
                    }
                }
                Segment::Glob(tokens) => {
                    for j in (0..parts.len()).rev() {
                        reach[j + 1] = reach[j] && glob_segment(tokens, parts[j]);
                    }
                    reach[0] = false;
                }
            }
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[1..].contains(&true)
    }
}

impl Segment {
    /// A segment matching exactly `text`.
    fn literal(text: &str) -> Self {
        Self::Glob(text.bytes().map(Token::Byte).collect())
    }

    /// Parses one pattern segment: `*`, `?`, `[...]` (`!` or `^` negates, `a-z` ranges,
    /// `\` escapes) and `\x` for a literal `x`; an unclosed `[` is a literal `[`.
    fn parse(text: &str) -> Self {
        if text == "**" {
            return Self::AnyDirs;
        }
        let bytes = text.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let (token, used) = match bytes[i] {
                b'*' => (Token::Star, 1),
                b'?' => (Token::AnyByte, 1),
                b'[' => match parse_class(&bytes[i + 1..]) {
                    Some((token, used)) => (token, 1 + used),
                    None => (Token::Byte(b'['), 1),
                },
                b'\\' if i + 1 < bytes.len() => (Token::Byte(bytes[i + 1]), 2),
                b => (Token::Byte(b), 1),
            };
            // `**` inside a segment matches what one `*` matches.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
            i += used;
        }
        Self::Glob(tokens)
    }
}

/// Parses a character class body (after `[`); returns the class and how many bytes it
/// used (including `]`), or `None` if it is never closed.
fn parse_class(body: &[u8]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = matches!(body.first(), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < body.len() {
        let b = body[i];
        if b == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let (lo, step) = if b == b'\\' && i + 1 < body.len() {
            (body[i + 1], 2)
        } else {
            (b, 1)
        };
        i += step;
        if i + 1 < body.len() && body[i] == b'-' && body[i + 1] != b']' {
            ranges.push((lo, body[i + 1]));
            i += 2;
        } else {
            ranges.push((lo, lo));
        }
    }
    None
}

/// Matches one path segment against one segment glob.
///
/// Every token but `*` consumes one byte, so the classic greedy scan with a single
/// backtrack point (the last `*` seen) is exact and takes at most
/// (tokens × bytes) steps.
fn glob_segment(tokens: &[Token], name: &[u8]) -> bool {
    let (mut t, mut n) = (0, 0);
    // After the last `*`: the token index following it and the name index it resumes at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t + 1, n));
                t += 1;
                continue;
            }
            Some(token) if token.matches(name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more byte, or fail without one.
        match star {
            Some((after, at)) => {
                t = after;
                n = at + 1;
                star = Some((after, at + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|t| *t == Token::Star)
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
    fn pathological_patterns_match_in_linear_time() {
        // Before: a backtracking matcher took 10 s for 36 `a`s and never finished 64.
        let name = "a".repeat(64);
        let deep = vec!["d"; 30].join("/") + "/y";
        let ig = DockerIgnore::parse("*a*a*a*a*a*a*a*a*a*a*b\n**/**/**/**/**/**/**/**/**/**/z");
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert!(!ig.is_ignored(&name));
            assert!(!ig.is_ignored(&deep));
        }
        assert!(ignored("*a*a*a*a*a*a*a*a*a*a*b", &(name.clone() + "b")));
        assert!(ignored("**/**/**/**/**/**/**/**/**/**/y", &deep));
        // 200 matches; linear time is well under a millisecond each, even on a loaded
        // machine in a debug build.
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    }

    /// The straightforward backtracking matcher the linear one replaced, kept as the
    /// reference for what the patterns mean.
    fn reference_segments(pattern: &[&str], path: &[&str]) -> bool {
        match pattern.split_first() {
            None => path.is_empty(),
            Some((&"**", rest)) => {
                (0..=path.len()).any(|skip| reference_segments(rest, &path[skip..]))
            }
            Some((first, rest)) => match path.split_first() {
                Some((name, path_rest)) => {
                    reference_glob(first.as_bytes(), name.as_bytes())
                        && reference_segments(rest, path_rest)
                }
                None => false,
            },
        }
    }

    fn reference_glob(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.first() {
            None => name.is_empty(),
            Some(b'*') => (0..=name.len()).any(|i| reference_glob(&pattern[1..], &name[i..])),
            Some(b'?') => !name.is_empty() && reference_glob(&pattern[1..], &name[1..]),
            Some(b'[') => match (parse_class(&pattern[1..]), name) {
                (Some((class, len)), [c, rest @ ..]) => {
                    class.matches(*c) && reference_glob(&pattern[1 + len..], rest)
                }
                (Some(_), []) => false,
                (None, [b'[', rest @ ..]) => reference_glob(&pattern[1..], rest),
                (None, _) => false,
            },
            Some(b'\\') if pattern.len() > 1 => {
                name.first() == Some(&pattern[1]) && reference_glob(&pattern[2..], &name[1..])
            }
            Some(c) => name.first() == Some(c) && reference_glob(&pattern[1..], &name[1..]),
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn the_linear_matcher_agrees_with_backtracking(
            pattern in "(\\*\\*|[ab*?/!\\\\\\[\\]^-]){0,12}",
            path in "[ab/*\\[\\]-]{0,10}",
        ) {
            let want = {
                let negated = pattern.starts_with('!');
                let body = pattern.strip_prefix('!').unwrap_or(&pattern).trim();
                let segs: Vec<&str> = body.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
                let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                let hit = !segs.is_empty()
                    && !body.starts_with('#')
                    && (1..=parts.len()).any(|k| reference_segments(&segs, &parts[..k]));
                hit && !negated
            };
            proptest::prop_assert_eq!(ignored(&pattern, &path), want, "{:?} vs {:?}", pattern, path);
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
