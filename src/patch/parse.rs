//! Parsing git's patch format (`git diff --binary`) into [`FilePatch`]es.
//!
//! A patch is a series of file sections, each opening with `diff --git a/X b/Y`, then
//! extended header lines (modes, renames, copies, `index`, `---`/`+++`), then either text
//! hunks, a `GIT binary patch` block, a `Binary files … differ` marker, or nothing (pure
//! mode change, pure rename, empty file). Text before the first section and between
//! sections (mail headers, a `-- ` signature, a `diff --git` line with no header line
//! after it) is skipped, as `git apply` does; hunks end by their line counts. Where git
//! would skip damage inside a section and apply the rest, this parser refuses the patch:
//! hunk lines beyond a hunk's counts, a section that changes nothing, a patch cut off
//! inside a line. Paths are taken `-p1` style (the `a/`, `b/` prefix dropped) and checked
//! with [`RepoPath::new`]. This module reads only; it never touches the tree.

use anyhow::{Context, Result, bail, ensure};

use super::binary::{BinaryKind, BinaryPatch};
use super::path::{RepoPath, read_name, unquote};

/// What a file section does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    /// Creates `new_path`.
    Create,
    /// Deletes `old_path`.
    Delete,
    /// Changes `old_path` (= `new_path`) in place: content and/or mode.
    Modify,
    /// Moves `old_path` to `new_path`, maybe changing it.
    Rename,
    /// Copies `old_path` to `new_path`, maybe changing the copy.
    Copy,
}

/// A git file mode as written in a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileMode {
    /// `100644`: a regular file.
    Regular,
    /// `100755`: an executable file.
    Executable,
    /// `120000`: a symbolic link; the content is the link target.
    Symlink,
    /// `160000`: a submodule commit; not applied.
    Gitlink,
}

impl FileMode {
    fn parse(text: &[u8]) -> Result<Self> {
        Ok(match text {
            b"100644" | b"100664" => Self::Regular,
            b"100755" => Self::Executable,
            b"120000" => Self::Symlink,
            b"160000" => Self::Gitlink,
            other => bail!("unknown file mode `{}`", String::from_utf8_lossy(other)),
        })
    }
}

/// One text hunk: where it says it applies, and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hunk {
    /// The `@@ -a,b +c,d @@` part of the header line, for messages.
    pub(super) header: String,
    /// The `a` of `-a,b`: the first line of the old file the hunk covers (1-based; `0`
    /// for a hunk that adds to an empty file).
    pub(super) old_start: usize,
    /// The `c` of `+c,d`: where the hunk's result starts in the new file (1-based).
    pub(super) new_start: usize,
    /// The body lines, in order. At least one adds or removes a line.
    pub(super) lines: Vec<HunkLine>,
}

/// What a hunk line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineKind {
    /// ` `: in both the old and the new file.
    Context,
    /// `-`: only in the old file.
    Delete,
    /// `+`: only in the new file.
    Insert,
}

/// One body line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HunkLine {
    /// What the line does.
    pub(super) kind: LineKind,
    /// The line without its marker, with its `\n` unless a `\ No newline at end of file`
    /// line follows it in the patch.
    pub(super) text: Vec<u8>,
}

/// The content change of a file section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Content {
    /// No content change (mode change, pure rename, empty new or deleted file).
    None,
    /// Text hunks, in order.
    Text(Vec<Hunk>),
    /// The forward block of a `GIT binary patch`.
    Binary(BinaryPatch),
    /// `Binary files … differ`: the patch has no data to apply.
    BinaryWithoutData,
}

/// One file section of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilePatch {
    /// What the section does.
    pub(super) operation: Operation,
    /// The source path (`None` for [`Operation::Create`]).
    pub(super) old_path: Option<RepoPath>,
    /// The target path (`None` for [`Operation::Delete`]).
    pub(super) new_path: Option<RepoPath>,
    /// The mode before, when the patch says (`old mode`, `deleted file mode`, `index`).
    pub(super) old_mode: Option<FileMode>,
    /// The mode after, when the patch says (`new mode`, `new file mode`); `None` keeps the
    /// mode the file has.
    pub(super) new_mode: Option<FileMode>,
    /// The content change.
    pub(super) content: Content,
    /// The full (40-hex) blob ids of the `index` line, before and after, when present.
    pub(super) index_ids: Option<(String, String)>,
    /// 1-based line of the `diff --git` header in the patch file.
    pub(super) line: usize,
}

impl FilePatch {
    /// The path to name in messages: the target, or the source for a deletion.
    pub(super) fn display_path(&self) -> &RepoPath {
        match (&self.new_path, &self.old_path) {
            (Some(p), _) | (None, Some(p)) => p,
            // The parser never builds a section without a path.
            (None, None) => unreachable!("a file section always has a path"),
        }
    }
}

/// Parses a whole patch. Empty (or whitespace-only) input is an empty patch.
pub(crate) fn parse_patch(input: &[u8]) -> Result<Vec<FilePatch>> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let lines = split_lines(input);
    let mut files = Vec::new();
    let mut first_stray = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let is_section = line.starts_with(b"diff --git ");
        if is_section && !lines.get(i + 1).is_some_and(|l| is_extended_header(l)) {
            // No header line follows (the patch ends, the next section starts, a hunk or
            // a binary block without its header): like `git apply`, take the line as
            // stray text, not as a section of its own.
            first_stray.get_or_insert(i + 1);
            i += 1;
        } else if is_section {
            let (file, next) = parse_section(&lines, i).with_context(|| {
                let hint = match input.ends_with(b"\n") {
                    true => "",
                    false => " (the patch does not end with a newline: is it truncated?)",
                };
                format!("bad file section at line {}{hint}", i + 1)
            })?;
            // A section that reads the last line needs it whole: without its newline the
            // patch was cut off, and the rest of that line is lost. Only the `\ No newline`
            // marker may end a patch unterminated (as in `git apply`).
            let last = lines.len();
            ensure!(
                next < last || input.ends_with(b"\n") || lines[last - 1].starts_with(b"\\"),
                "the patch ends in the middle of line {last} (is it truncated?)"
            );
            files.push(file);
            i = next;
        } else if files.is_empty() && line.starts_with(b"@@ ") {
            bail!(
                "not a git patch: line {} is a hunk without a `diff --git` header (hint: plain unified diffs are not supported; generate the patch with `git diff --binary`)",
                i + 1
            );
        } else if line.starts_with(b"@@ ") || (line.starts_with(b"--- ") && !files.is_empty()) {
            bail!(
                "line {}: a hunk or file header outside a `diff --git` section (is the patch truncated or edited?)",
                i + 1
            );
        } else {
            i += 1;
        }
    }
    if let (true, Some(n)) = (files.is_empty(), first_stray) {
        bail!(
            "not a git patch: the `diff --git` line at line {n} is followed by no header line such as `index` or `new file mode` (hint: generate the patch with `git diff --binary`)"
        );
    }
    if files.is_empty() {
        bail!(
            "not a git patch: no `diff --git` line found (hint: generate it with `git diff --binary`)"
        );
    }
    Ok(files)
}

/// Whether `line` is one of the lines that may follow `diff --git` in a section header.
fn is_extended_header(line: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 15] = [
        b"old mode ",
        b"new mode ",
        b"deleted file mode ",
        b"new file mode ",
        b"rename from ",
        b"rename to ",
        b"rename old ",
        b"rename new ",
        b"copy from ",
        b"copy to ",
        b"similarity index ",
        b"dissimilarity index ",
        b"index ",
        b"--- ",
        b"+++ ",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p))
}

/// Lines without their `\n` (a `\r` before it is kept: it is content).
fn split_lines(input: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if input.ends_with(b"\n") {
        lines.pop();
    }
    lines
}

/// Everything the header lines of one section say, before deciding the operation.
#[derive(Default)]
struct Header {
    git_old: Option<Vec<u8>>,
    git_new: Option<Vec<u8>>,
    minus: Option<Option<Vec<u8>>>,
    plus: Option<Option<Vec<u8>>>,
    old_mode: Option<FileMode>,
    new_mode: Option<FileMode>,
    index_ids: Option<(String, String)>,
    is_new: bool,
    is_deleted: bool,
    rename_from: Option<Vec<u8>>,
    rename_to: Option<Vec<u8>>,
    copy_from: Option<Vec<u8>>,
    copy_to: Option<Vec<u8>>,
}

/// Parses the section whose `diff --git` line is `lines[start]`; returns it and the index
/// of the first line after it.
fn parse_section(lines: &[&[u8]], start: usize) -> Result<(FilePatch, usize)> {
    let mut h = Header::default();
    let rest = &lines[start][b"diff --git ".len()..];
    (h.git_old, h.git_new) = git_header_names(rest)?;
    let mut content = Content::None;
    let mut i = start + 1;
    while i < lines.len() {
        let line = lines[i];
        let n = i + 1;
        if line.starts_with(b"diff --git ") {
            break;
        } else if let Some(v) = line.strip_prefix(b"old mode ") {
            h.old_mode = Some(FileMode::parse(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"new mode ") {
            h.new_mode = Some(FileMode::parse(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"deleted file mode ") {
            h.is_deleted = true;
            h.old_mode = Some(FileMode::parse(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"new file mode ") {
            h.is_new = true;
            h.new_mode = Some(FileMode::parse(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line
            .strip_prefix(b"rename from ")
            .or_else(|| line.strip_prefix(b"rename old "))
        {
            h.rename_from = Some(header_path(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line
            .strip_prefix(b"rename to ")
            .or_else(|| line.strip_prefix(b"rename new "))
        {
            h.rename_to = Some(header_path(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"copy from ") {
            h.copy_from = Some(header_path(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"copy to ") {
            h.copy_to = Some(header_path(v).with_context(|| format!("line {n}"))?);
        } else if line.starts_with(b"similarity index ")
            || line.starts_with(b"dissimilarity index ")
        {
            // Informational only.
        } else if let Some(v) = line.strip_prefix(b"index ") {
            // `index <old>..<new>[ <mode>]`: the mode, when present, is the old mode (and,
            // as in `git apply`, overrides an `old mode` line above it).
            let (ids, mode) = match v.iter().position(|&b| b == b' ') {
                Some(pos) => (&v[..pos], Some(&v[pos + 1..])),
                None => (v, None),
            };
            if let Some(mode) = mode {
                h.old_mode = Some(FileMode::parse(mode).with_context(|| format!("line {n}"))?);
            }
            h.index_ids = std::str::from_utf8(ids)
                .ok()
                .and_then(|ids| ids.split_once(".."))
                .filter(|(a, b)| [a, b].iter().all(|id| is_full_id(id)))
                .map(|(a, b)| (a.to_string(), b.to_string()));
        } else if let Some(v) = line.strip_prefix(b"--- ") {
            h.minus = Some(dev_null_or_name(v).with_context(|| format!("line {n}"))?);
        } else if let Some(v) = line.strip_prefix(b"+++ ") {
            h.plus = Some(dev_null_or_name(v).with_context(|| format!("line {n}"))?);
        } else if line.starts_with(b"@@ ") {
            let (hunks, next) = parse_hunks(lines, i)?;
            content = Content::Text(hunks);
            i = next;
            break;
        } else if line.starts_with(b"Binary files ") && line.ends_with(b" differ") {
            content = Content::BinaryWithoutData;
            i += 1;
            break;
        } else if line == b"GIT binary patch" {
            let (patch, next) = parse_binary(lines, i + 1)?;
            content = Content::Binary(patch);
            i = next;
            break;
        } else {
            bail!(
                "line {n}: unexpected line in a file header: `{}`",
                String::from_utf8_lossy(line)
            );
        }
        i += 1;
    }
    let file = build_file_patch(h, content, start + 1)?;
    Ok((file, i))
}

/// Decides the operation and paths from the header lines.
fn build_file_patch(h: Header, content: Content, line: usize) -> Result<FilePatch> {
    // As in `git apply`: a section must change something, its content or its metadata.
    let changes_metadata = h.is_new
        || h.is_deleted
        || h.rename_from.is_some()
        || h.copy_from.is_some()
        || matches!((h.old_mode, h.new_mode), (Some(a), Some(b)) if a != b);
    ensure!(
        content != Content::None || changes_metadata,
        "the section changes nothing: no hunk, no binary data, no new, deleted, renamed or copied file, no mode change (is the patch truncated?)"
    );
    // As in `git apply`: a `---`/`+++` name must be the one the header already gave that
    // side (by `rename`/`copy` lines, else by the `diff --git` line).
    let header_old = h.rename_from.as_ref().or(h.copy_from.as_ref());
    let header_new = h.rename_to.as_ref().or(h.copy_to.as_ref());
    for (line, name, header) in [
        ("---", &h.minus, header_old.or(h.git_old.as_ref())),
        ("+++", &h.plus, header_new.or(h.git_new.as_ref())),
    ] {
        if let (Some(Some(name)), Some(header)) = (name, header) {
            ensure!(
                name == header,
                "the `{line}` line names `{}`, but the section header names `{}` (hint: regenerate the patch without hand edits)",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(header)
            );
        }
    }
    let strip_minus = h.minus.clone().flatten();
    let strip_plus = h.plus.clone().flatten();
    let (operation, old, new) = if h.is_new {
        ensure!(
            matches!(h.minus, None | Some(None)),
            "a new file whose `---` line is not `/dev/null`"
        );
        let new = strip_plus
            .or(h.git_new)
            .context("cannot tell the name of the new file")?;
        (Operation::Create, None, Some(new))
    } else if h.is_deleted {
        ensure!(
            matches!(h.plus, None | Some(None)),
            "a deleted file whose `+++` line is not `/dev/null`"
        );
        let old = strip_minus
            .or(h.git_old)
            .context("cannot tell the name of the deleted file")?;
        (Operation::Delete, Some(old), None)
    } else if h.rename_from.is_some() || h.rename_to.is_some() {
        let from = h.rename_from.context("`rename to` without `rename from`")?;
        let to = h.rename_to.context("`rename from` without `rename to`")?;
        (Operation::Rename, Some(from), Some(to))
    } else if h.copy_from.is_some() || h.copy_to.is_some() {
        let from = h.copy_from.context("`copy to` without `copy from`")?;
        let to = h.copy_to.context("`copy from` without `copy to`")?;
        (Operation::Copy, Some(from), Some(to))
    } else {
        ensure!(
            !matches!(h.minus, Some(None)) && !matches!(h.plus, Some(None)),
            "`/dev/null` in a section without `new file mode` or `deleted file mode`"
        );
        // Like `git apply`: the `---`/`+++` pair may be absent (the `diff --git` line
        // names the file), but not half there.
        ensure!(
            h.minus.is_some() == h.plus.is_some(),
            "only one of the `---` and `+++` lines names the file"
        );
        let old = strip_minus.or(h.git_old).context(
            "cannot tell the file name from the `diff --git` line (hint: regenerate the patch without hand edits)",
        )?;
        let new = strip_plus.or(h.git_new).unwrap_or_else(|| old.clone());
        ensure!(
            old == new,
            "the file changes name from `{}` to `{}` without a `rename` header",
            String::from_utf8_lossy(&old),
            String::from_utf8_lossy(&new)
        );
        (Operation::Modify, Some(old), Some(new))
    };
    let old_path = old.as_deref().map(RepoPath::new).transpose()?;
    let new_path = new.as_deref().map(RepoPath::new).transpose()?;
    Ok(FilePatch {
        operation,
        old_path,
        new_path,
        old_mode: if h.is_new { None } else { h.old_mode },
        new_mode: if h.is_deleted { None } else { h.new_mode },
        content,
        index_ids: h.index_ids,
        line,
    })
}

/// Whether `id` is a full SHA-1 object id (`git diff --binary` implies `--full-index`).
fn is_full_id(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Drops the `a/` / `b/` prefix (the first component), like `git apply -p1`.
fn strip_prefix_component(name: &[u8]) -> Result<Vec<u8>> {
    let pos = name.iter().position(|&b| b == b'/').with_context(|| {
        format!(
            "path `{}` has no `a/` or `b/` prefix (hint: do not generate the patch with `--no-prefix`)",
            String::from_utf8_lossy(name)
        )
    })?;
    Ok(name[pos + 1..].to_vec())
}

/// A `---`/`+++` name: `None` for `/dev/null`, else the name without its prefix.
fn dev_null_or_name(v: &[u8]) -> Result<Option<Vec<u8>>> {
    let name = read_name(v)?;
    if name == b"/dev/null" {
        Ok(None)
    } else {
        Ok(Some(strip_prefix_component(&name)?))
    }
}

/// A `rename from`/`copy to`/… path: no prefix, maybe quoted, the rest of the line.
fn header_path(v: &[u8]) -> Result<Vec<u8>> {
    if v.starts_with(b"\"") {
        let (name, rest) = unquote(v)?;
        ensure!(rest.is_empty(), "text after a quoted path");
        Ok(name)
    } else {
        Ok(v.to_vec())
    }
}

/// A raw path from the patch, before [`RepoPath::new`] checks it.
type Name = Vec<u8>;

/// The two names of `diff --git A B`, prefixes stripped. Unquoted names with spaces are
/// ambiguous; they are split where both sides name the same file, and left unknown
/// (`None`) otherwise, for the `---`/`+++` or rename lines to supply.
fn git_header_names(rest: &[u8]) -> Result<(Option<Name>, Option<Name>)> {
    if rest.starts_with(b"\"") {
        let (a, after) = unquote(rest)?;
        let after = after
            .strip_prefix(b" ")
            .context("expected a space after the first name")?;
        let b = if after.starts_with(b"\"") {
            let (b, tail) = unquote(after)?;
            ensure!(tail.is_empty(), "text after the second name");
            b
        } else {
            after.to_vec()
        };
        return Ok((
            Some(strip_prefix_component(&a)?),
            Some(strip_prefix_component(&b)?),
        ));
    }
    if let Some(pos) = rest.windows(2).position(|w| w == b" \"") {
        let (b, tail) = unquote(&rest[pos + 1..])?;
        ensure!(tail.is_empty(), "text after the second name");
        return Ok((
            Some(strip_prefix_component(&rest[..pos])?),
            Some(strip_prefix_component(&b)?),
        ));
    }
    for (pos, _) in rest.iter().enumerate().filter(|&(_, &b)| b == b' ') {
        let (a, b) = (&rest[..pos], &rest[pos + 1..]);
        if let (Ok(a), Ok(b)) = (strip_prefix_component(a), strip_prefix_component(b)) {
            if a == b {
                return Ok((Some(a), Some(b)));
            }
        }
    }
    Ok((None, None))
}

/// Reads hunks starting at `lines[i]`, each sized by its header's counts.
fn parse_hunks(lines: &[&[u8]], mut i: usize) -> Result<(Vec<Hunk>, usize)> {
    let mut hunks = Vec::new();
    while let Some(line) = lines.get(i) {
        if !line.starts_with(b"@@ ") {
            break;
        }
        let header_line = i + 1;
        let (range, header) =
            hunk_header(line).with_context(|| format!("line {header_line}: bad hunk header"))?;
        let (mut old_left, mut new_left) = (range.old_len, range.new_len);
        let mut body: Vec<HunkLine> = Vec::new();
        // Whether the line before is a body line, which a `\ No newline` marker ends.
        let mut after_body = false;
        i += 1;
        // The counts size the hunk; one `\` marker may follow its last line.
        while old_left > 0 || new_left > 0 || (after_body && is_marker(lines.get(i))) {
            let line = lines.get(i).with_context(|| {
                format!("the hunk at line {header_line} ends early (is the patch truncated?)")
            })?;
            let (kind, text) = match line.first() {
                // A bare empty line is a context line whose space was stripped by a mailer.
                None if old_left > 0 && new_left > 0 => (LineKind::Context, &b""[..]),
                Some(b' ') if old_left > 0 && new_left > 0 => (LineKind::Context, &line[1..]),
                Some(b'-') if old_left > 0 => (LineKind::Delete, &line[1..]),
                Some(b'+') if new_left > 0 => (LineKind::Insert, &line[1..]),
                Some(b'\\') => {
                    // Git writes the marker in the user's language; it starts with `\ `.
                    ensure!(
                        line.len() >= 12 && line.starts_with(b"\\ "),
                        "line {}: not a `\\ No newline at end of file` line",
                        i + 1
                    );
                    if let Some(last) = body.last_mut().filter(|_| after_body) {
                        last.text.pop();
                    }
                    after_body = false;
                    i += 1;
                    continue;
                }
                _ => bail!(
                    "line {}: the hunk at line {header_line} does not match its line counts",
                    i + 1
                ),
            };
            match kind {
                LineKind::Context => (old_left, new_left) = (old_left - 1, new_left - 1),
                LineKind::Delete => old_left -= 1,
                LineKind::Insert => new_left -= 1,
            }
            let mut text = text.to_vec();
            text.push(b'\n');
            body.push(HunkLine { kind, text });
            after_body = true;
            i += 1;
        }
        // A hunk-like line right after the hunk means the counts were wrong; a mail
        // signature (`-- `) is the one such line that is expected there.
        if let Some(next) = lines.get(i) {
            let hunk_like = matches!(next.first(), Some(b'+' | b'-' | b' ' | b'\\'));
            ensure!(
                !hunk_like || *next == b"-- ",
                "line {}: the hunk at line {header_line} does not match its line counts",
                i + 1
            );
        }
        ensure!(
            body.iter().any(|l| l.kind != LineKind::Context),
            "line {header_line}: the hunk neither adds nor removes a line"
        );
        hunks.push(Hunk {
            header,
            old_start: range.old_start,
            new_start: range.new_start,
            lines: body,
        });
    }
    Ok((hunks, i))
}

/// Whether `line` is a `\ No newline at end of file` marker (checked when read).
fn is_marker(line: Option<&&[u8]>) -> bool {
    line.is_some_and(|l| l.starts_with(b"\\"))
}

/// The numbers of a hunk header `@@ -old_start,old_len +new_start,new_len @@`.
struct HunkRange {
    old_start: usize,
    old_len: usize,
    new_start: usize,
    new_len: usize,
}

/// Parses `@@ -a[,b] +c[,d] @@…` into its numbers and the `@@ … @@` label.
fn hunk_header(line: &[u8]) -> Result<(HunkRange, String)> {
    let rest = &line[3..];
    let end = rest
        .windows(3)
        .position(|w| w == b" @@")
        .context("no closing `@@`")?;
    let ranges = std::str::from_utf8(&rest[..end]).context("not text")?;
    let (old, new) = ranges.split_once(' ').context("expected two ranges")?;
    let range = |range: &str, sign: char| -> Result<(usize, usize)> {
        let range = range
            .strip_prefix(sign)
            .with_context(|| format!("expected `{sign}`"))?;
        Ok(match range.split_once(',') {
            Some((start, len)) => (start.parse()?, len.parse()?),
            None => (range.parse()?, 1),
        })
    };
    let ((old_start, old_len), (new_start, new_len)) = (range(old, '-')?, range(new, '+')?);
    let numbers = HunkRange {
        old_start,
        old_len,
        new_start,
        new_len,
    };
    Ok((numbers, format!("@@ {ranges} @@")))
}

/// Parses the blocks after `GIT binary patch`: the forward one (kept) and the optional
/// reverse one (skipped). Each is `literal N`/`delta N`, data lines, a blank line.
fn parse_binary(lines: &[&[u8]], start: usize) -> Result<(BinaryPatch, usize)> {
    let (forward, mut i) = parse_binary_block(lines, start)?
        .with_context(|| format!("line {}: expected `literal N` or `delta N`", start + 1))?;
    if let Some((_, next)) = parse_binary_block(lines, i)? {
        i = next;
    }
    Ok((forward, i))
}

fn parse_binary_block(lines: &[&[u8]], start: usize) -> Result<Option<(BinaryPatch, usize)>> {
    let Some(line) = lines.get(start) else {
        return Ok(None);
    };
    let (kind, size) = if let Some(v) = line.strip_prefix(b"literal ") {
        (BinaryKind::Literal, v)
    } else if let Some(v) = line.strip_prefix(b"delta ") {
        (BinaryKind::Delta, v)
    } else {
        return Ok(None);
    };
    let size: usize = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("line {}: bad binary block size", start + 1))?;
    let mut i = start + 1;
    let mut data = Vec::new();
    while let Some(line) = lines.get(i) {
        i += 1;
        if line.is_empty() {
            let patch = BinaryPatch::decode(kind, size, &data)
                .with_context(|| format!("the binary block at line {}", start + 1))?;
            return Ok(Some((patch, i)));
        }
        data.push(*line);
    }
    bail!(
        "the binary block at line {} has no closing blank line (is the patch truncated?)",
        start + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> FilePatch {
        let mut files = parse_patch(text.as_bytes()).unwrap();
        assert_eq!(files.len(), 1);
        files.remove(0)
    }

    fn path(p: &FilePatch, old: bool) -> String {
        let p = if old { &p.old_path } else { &p.new_path };
        p.as_ref().map(ToString::to_string).unwrap_or_default()
    }

    #[test]
    fn modify_with_hunks_and_index_mode() {
        let p = parse_one(
            "diff --git a/src/x.rs b/src/x.rs\nindex 1111111..2222222 100755\n--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n@@ -10 +10 @@ fn f\n-x\n+y\n",
        );
        assert_eq!(p.operation, Operation::Modify);
        assert_eq!(
            (path(&p, true), path(&p, false)),
            ("src/x.rs".into(), "src/x.rs".into())
        );
        assert_eq!((p.old_mode, p.new_mode), (Some(FileMode::Executable), None));
        let Content::Text(hunks) = &p.content else {
            panic!("{:?}", p.content)
        };
        let headers: Vec<&str> = hunks.iter().map(|h| h.header.as_str()).collect();
        assert_eq!(headers, ["@@ -1,2 +1,2 @@", "@@ -10 +10 @@"]);
        assert_eq!(p.line, 1);
    }

    #[test]
    fn create_delete_and_mode_change() {
        let files = parse_patch(
            b"diff --git a/new b/new\nnew file mode 100755\nindex 0000000..e69de29\n\
diff --git a/gone b/gone\ndeleted file mode 120000\nindex 1234567..0000000\n--- a/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-target\n\\ No newline at end of file\n\
diff --git a/m b/m\nold mode 100755\nnew mode 100644\n",
        )
        .unwrap();
        assert_eq!(files[0].operation, Operation::Create);
        assert_eq!(files[0].new_mode, Some(FileMode::Executable));
        assert_eq!(files[0].content, Content::None);
        assert_eq!(files[1].operation, Operation::Delete);
        assert_eq!(files[1].old_mode, Some(FileMode::Symlink));
        assert_eq!(path(&files[1], true), "gone");
        assert_eq!(files[1].line, 4);
        assert_eq!(files[2].operation, Operation::Modify);
        assert_eq!(
            (files[2].old_mode, files[2].new_mode),
            (Some(FileMode::Executable), Some(FileMode::Regular))
        );
    }

    #[test]
    fn rename_and_copy_use_their_own_headers() {
        let files = parse_patch(
            b"diff --git a/old name b/new name\nsimilarity index 100%\nrename from old name\nrename to new name\n\
diff --git a/src b/\"dst\\tq\"\nsimilarity index 90%\ncopy from src\ncopy to \"dst\\tq\"\nindex 1..2 100644\n--- a/src\n+++ \"b/dst\\tq\"\n@@ -1 +1 @@\n-a\n+b\n",
        )
        .unwrap();
        assert_eq!(files[0].operation, Operation::Rename);
        assert_eq!(
            (path(&files[0], true), path(&files[0], false)),
            ("old name".into(), "new name".into())
        );
        assert_eq!(files[1].operation, Operation::Copy);
        assert_eq!(
            (path(&files[1], true), path(&files[1], false)),
            ("src".into(), "dst\tq".into())
        );
    }

    #[test]
    fn names_with_spaces_quotes_and_tabs() {
        // Git appends a TAB to `---`/`+++` names that contain a space.
        let p = parse_one(
            "diff --git a/dir x/f y b/dir x/f y\nindex 1..2 100644\n--- a/dir x/f y\t\n+++ b/dir x/f y\t\n@@ -1 +1 @@\n-a\n+b\n",
        );
        assert_eq!(path(&p, false), "dir x/f y");
        // No ---/+++ lines: the `diff --git` line alone names the file.
        let p = parse_one("diff --git a/a b/c b/a b/c\nold mode 100644\nnew mode 100755\n");
        assert_eq!(path(&p, false), "a b/c");
        let p = parse_one(
            "diff --git \"a/caf\\303\\251 \\\"q\\\"\" \"b/caf\\303\\251 \\\"q\\\"\"\nnew file mode 100644\nindex 0000000..e69de29\n",
        );
        assert_eq!(path(&p, false), "café \"q\"");
    }

    #[test]
    fn binary_blocks_and_markers() {
        let p = parse_one(
            "diff --git a/b b/b\nnew file mode 100644\nindex 0000000000000000000000000000000000000000..75c3e4d580506d774a97fc6c1e36ad34ceb494e6\nGIT binary patch\nliteral 4\nLcmZQz%*X@)0YCuL\n\nliteral 0\nHcmV?d00001\n\n",
        );
        let Content::Binary(b) = &p.content else {
            panic!("{:?}", p.content)
        };
        assert_eq!(
            (b.kind, b.data.as_slice()),
            (BinaryKind::Literal, &b"\0\x01hi"[..])
        );
        let p =
            parse_one("diff --git a/b b/b\nindex 1..2 100644\nBinary files a/b and b/b differ\n");
        assert_eq!(p.content, Content::BinaryWithoutData);
    }

    #[test]
    fn preamble_and_trailing_signature_are_skipped() {
        let files = parse_patch(
            b"From 123 Mon Sep 17 00:00:00 2001\nSubject: x\n---\n f | 2 +-\n\ndiff --git a/f b/f\nindex 1..2 100644\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n-- \n2.47.3\n\n",
        )
        .unwrap();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn empty_input_is_an_empty_patch() {
        assert!(parse_patch(b"").unwrap().is_empty());
        assert!(parse_patch(b"\n \n").unwrap().is_empty());
    }

    #[test]
    fn bad_patches_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("hello world\n", "no `diff --git` line"),
            ("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", "not a git patch"),
            (
                "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n+b\n",
                "ends early",
            ),
            (
                "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n a\n+b\n",
                "line counts",
            ),
            (
                "diff --git a/f b/f\nwhatever\n",
                "followed by no header line",
            ),
            (
                "diff --git a/f b/f\nnew file mode 100644\n--- /dev/null\n+++ b/g\n@@ -0,0 +1 @@\n+a\n",
                "the `+++` line names `g`, but the section header names `f`",
            ),
            (
                "diff --git a/f b/f\nindex 1..2 100644\nwhatever\n",
                "unexpected line",
            ),
            ("diff --git a/../x b/../x\nnew file mode 100644\n", "`..`"),
            (
                "diff --git a//etc/x b//etc/x\nnew file mode 100644\n",
                "absolute",
            ),
            ("diff --git a/f b/f\nold mode 100600\n", "unknown file mode"),
            (
                "diff --git a/f b/g\nindex 1..2\n--- a/f\n+++ b/g\n@@ -1 +1 @@\n-a\n+b\n",
                "without a `rename`",
            ),
            (
                "diff --git a/b b/b\nindex 1..2 100644\nGIT binary patch\nliteral 4\nLcmZQz%*X@)0YCuL\n",
                "no closing blank",
            ),
            (
                "diff --git a/f b/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n",
                "only one of the `---` and `+++` lines",
            ),
            (
                "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n b\n",
                "neither adds nor removes",
            ),
            ("diff --git a/f b/f\nindex 1..2 100644\n", "changes nothing"),
            (
                "diff --git f f\nold mode 100644\nnew mode 100755\n",
                "cannot tell",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_patch(text.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
