//! Applying text hunks to a file's content the way `git apply` does.
//!
//! [`apply_hunks`] applies the hunks of one file section in order. Each hunk must match
//! exactly (no fuzz) and is searched for from the line its header names, nearest first,
//! one line further down, then one up, and so on, never over lines an earlier hunk of
//! the same section wrote. Like `git apply`, a hunk is anchored when its header says so:
//! one whose old range starts at line 0 or 1 matches only at the start of the file, and
//! one without trailing context lines matches only at its end. This module works on
//! bytes in memory; it neither reads nor writes files.

use anyhow::{Result, bail};

use super::parse::{Hunk, LineKind};

/// One line of the file being patched: its bytes (with the `\n`, except maybe the last
/// line), and whether a hunk of this section wrote it.
struct ImageLine<'a> {
    text: &'a [u8],
    is_patched: bool,
}

/// Applies `hunks` to `old`; an error names the first hunk that does not match.
pub(super) fn apply_hunks(old: &[u8], hunks: &[Hunk]) -> Result<Vec<u8>> {
    let mut image: Vec<ImageLine> = old
        .split_inclusive(|&b| b == b'\n')
        .map(|text| ImageLine {
            text,
            is_patched: false,
        })
        .collect();
    for (n, hunk) in hunks.iter().enumerate() {
        let side = |skip: LineKind| {
            hunk.lines
                .iter()
                .filter(move |l| l.kind != skip)
                .map(|l| l.text.as_slice())
        };
        let preimage: Vec<&[u8]> = side(LineKind::Insert).collect();
        let Some(at) = find_position(&image, hunk, &preimage) else {
            bail!("hunk {} ({}): context does not match", n + 1, hunk.header);
        };
        let postimage = side(LineKind::Delete).map(|text| ImageLine {
            text,
            is_patched: true,
        });
        image.splice(at..at + preimage.len(), postimage);
    }
    Ok(image.iter().flat_map(|l| l.text).copied().collect())
}

/// Where `preimage` (the hunk's context and removed lines) sits in `image`, if anywhere.
fn find_position(image: &[ImageLine], hunk: &Hunk, preimage: &[&[u8]]) -> Option<usize> {
    let matches_at = |at: usize| {
        image.get(at..at + preimage.len()).is_some_and(|lines| {
            lines
                .iter()
                .zip(preimage)
                .all(|(line, want)| !line.is_patched && line.text == *want)
        })
    };
    let max_start = image.len().checked_sub(preimage.len())?;
    let at_start = hunk.old_start <= 1;
    let at_end = hunk
        .lines
        .last()
        .is_some_and(|l| l.kind != LineKind::Context);
    match (at_start, at_end) {
        (true, true) => (max_start == 0 && matches_at(0)).then_some(0),
        (true, false) => matches_at(0).then_some(0),
        (false, true) => matches_at(max_start).then_some(max_start),
        (false, false) => {
            // Where the header says the hunk starts, counted in the file as patched so
            // far; then alternately one line further down and one line up.
            let hint = hunk.new_start.saturating_sub(1).min(max_start);
            let around = (1..=max_start).flat_map(|d| {
                [
                    Some(hint + d).filter(|&at| at <= max_start),
                    hint.checked_sub(d),
                ]
            });
            std::iter::once(hint)
                .chain(around.flatten())
                .find(|&at| matches_at(at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse::HunkLine;

    /// A hunk from its header numbers and body lines (` a`, `-b`, `+c`).
    fn hunk(old_start: usize, new_start: usize, body: &[&str]) -> Hunk {
        let lines = body
            .iter()
            .map(|line| {
                let kind = match &line[..1] {
                    " " => LineKind::Context,
                    "-" => LineKind::Delete,
                    _ => LineKind::Insert,
                };
                HunkLine {
                    kind,
                    text: format!("{}\n", &line[1..]).into_bytes(),
                }
            })
            .collect();
        Hunk {
            header: format!("@@ -{old_start} +{new_start} @@"),
            old_start,
            new_start,
            lines,
        }
    }

    fn apply(old: &str, hunks: &[Hunk]) -> Result<String> {
        Ok(String::from_utf8(apply_hunks(old.as_bytes(), hunks)?).unwrap())
    }

    #[test]
    fn the_nearest_match_wins_looking_down_before_up() {
        // ` a +N  b` matches at lines 1 and 3; the header hints at line 2.
        let h = hunk(2, 2, &[" a", "+N", " b"]);
        assert_eq!(
            apply("a\nb\na\nb\na\n", &[h]).unwrap(),
            "a\nb\na\nN\nb\na\n"
        );
        let h = hunk(2, 1, &[" a", "+N", " b"]);
        assert_eq!(
            apply("a\nb\na\nb\na\n", &[h]).unwrap(),
            "a\nN\nb\na\nb\na\n"
        );
    }

    #[test]
    fn hunks_at_line_one_or_without_trailing_context_are_anchored() {
        // Starts at line 1: only at the start of the file.
        let h = hunk(1, 1, &[" a", "+N", " b"]);
        assert!(apply("z\na\nb\n", std::slice::from_ref(&h)).is_err());
        assert_eq!(apply("a\nb\nz\n", &[h]).unwrap(), "a\nN\nb\nz\n");
        // No trailing context: only at the end.
        let h = hunk(3, 3, &[" a", " b", "+N"]);
        assert!(apply("a\nb\nz\n", std::slice::from_ref(&h)).is_err());
        assert_eq!(apply("z\na\nb\n", &[h]).unwrap(), "z\na\nb\nN\n");
        // Both: the preimage is the whole file.
        let h = hunk(1, 1, &["-a", "+b"]);
        assert!(apply("a\na\n", std::slice::from_ref(&h)).is_err());
        assert_eq!(apply("a\n", &[h]).unwrap(), "b\n");
    }

    #[test]
    fn lines_an_earlier_hunk_wrote_do_not_match_again() {
        let first = hunk(2, 2, &[" a", "+N", " q"]);
        let second = hunk(3, 4, &[" q", "+M", " r"]);
        let err = apply("p\na\nq\nr\ns\n", &[first, second]).unwrap_err();
        assert!(
            format!("{err}").starts_with("hunk 2 (@@ -3 +4 @@)"),
            "{err}"
        );
    }
}
