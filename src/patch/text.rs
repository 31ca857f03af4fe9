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
            let down = (hint + 1..=max_start).map(Some);
            let up = (0..hint).rev().map(Some);
            let interleaved = down
                .chain(std::iter::repeat(None))
                .zip(up.chain(std::iter::repeat(None)))
                .take(max_start)
                .flat_map(|(d, u)| [d, u])
                .flatten();
            std::iter::once(hint)
                .chain(interleaved)
                .find(|&at| matches_at(at))
        }
    }
}
