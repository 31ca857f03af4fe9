//! Git binary patches: the payload of a `GIT binary patch` block.
//!
//! A block is a `literal N` or `delta N` line followed by base85 lines (each prefixed by a
//! length letter) and a blank line; the decoded bytes are zlib-compressed, and inflate to
//! exactly `N` bytes. A `literal` is the whole new content; a `delta` is git's copy/insert
//! delta against the old content. This module decodes and applies one block; finding the
//! blocks in a patch is the parser's job ([`super::parse`]), and checking them against the
//! tree is the applier's ([`super::apply`]).

use std::io::Read;

use anyhow::{Context, Result, bail, ensure};

/// How the bytes of a [`BinaryPatch`] produce the new content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryKind {
    /// The inflated bytes are the new content.
    Literal,
    /// The inflated bytes are a git delta against the old content.
    Delta,
}

/// One decoded (base85-decoded and inflated) forward block of a `GIT binary patch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BinaryPatch {
    /// Literal or delta.
    pub(super) kind: BinaryKind,
    /// The inflated payload: the content (literal) or the delta instructions.
    pub(super) data: Vec<u8>,
}

impl BinaryPatch {
    /// Decodes a block from its header values and its base85 lines (without newlines).
    ///
    /// `size` is the `N` of `literal N` / `delta N`, the inflated length.
    pub(super) fn decode(kind: BinaryKind, size: usize, lines: &[&[u8]]) -> Result<Self> {
        let mut deflated = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            decode_base85_line(line, &mut deflated)
                .with_context(|| format!("bad base85 line {} of the binary block", i + 1))?;
        }
        let mut data = Vec::with_capacity(size);
        // Read one byte more than announced so an overlong stream is caught.
        flate2::read::ZlibDecoder::new(deflated.as_slice())
            .take(size as u64 + 1)
            .read_to_end(&mut data)
            .context("the binary block is not valid zlib data")?;
        ensure!(
            data.len() == size,
            "the binary block inflates to {} bytes, but its header says {size}",
            data.len()
        );
        Ok(Self { kind, data })
    }

    /// The new content, given the old content.
    pub(super) fn apply(&self, old: &[u8]) -> Result<Vec<u8>> {
        match self.kind {
            BinaryKind::Literal => Ok(self.data.clone()),
            BinaryKind::Delta => apply_delta(old, &self.data),
        }
    }
}

/// Git's base85 alphabet (not Ascii85's): digits, upper, lower, then punctuation.
const BASE85: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

fn base85_value(c: u8) -> Option<u32> {
    BASE85.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Decodes one line of a binary block: a length letter (`A`–`Z` = 1–26, `a`–`z` = 27–52
/// bytes) and then five base85 characters per four bytes. Appends the bytes to `out`.
fn decode_base85_line(line: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let (&len_char, body) = line.split_first().context("empty line")?;
    let len = match len_char {
        b'A'..=b'Z' => (len_char - b'A') as usize + 1,
        b'a'..=b'z' => (len_char - b'a') as usize + 27,
        _ => bail!("bad length character `{}`", len_char as char),
    };
    let groups = len.div_ceil(4);
    ensure!(
        body.len() == groups * 5,
        "{} base85 characters for {len} bytes, expected {}",
        body.len(),
        groups * 5
    );
    let mut remaining = len;
    for chunk in body.chunks(5) {
        let mut acc: u32 = 0;
        for &c in chunk {
            let digit = base85_value(c)
                .with_context(|| format!("`{}` is not a base85 character", c as char))?;
            acc = acc
                .checked_mul(85)
                .and_then(|a| a.checked_add(digit))
                .context("base85 group overflows 32 bits")?;
        }
        let take = remaining.min(4);
        out.extend_from_slice(&acc.to_be_bytes()[..take]);
        remaining -= take;
    }
    Ok(())
}

/// Reads one little-endian base-128 size of a delta header.
fn read_varint(delta: &[u8], pos: &mut usize) -> Result<usize> {
    let mut value: usize = 0;
    let mut shift = 0u32;
    loop {
        let byte = *delta.get(*pos).context("the delta header is truncated")?;
        *pos += 1;
        ensure!(shift < usize::BITS, "the delta header size is too large");
        value |= ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Applies a git delta (`delta N` payload) to `base`.
///
/// The delta opens with the base size and the result size; then each command byte either
/// copies a range of the base (high bit set; bits 0–3 select offset bytes, bits 4–6 size
/// bytes, size 0 meaning 0x10000) or inserts the next 1–127 literal bytes.
fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
    let mut pos = 0;
    let base_size = read_varint(delta, &mut pos)?;
    let result_size = read_varint(delta, &mut pos)?;
    ensure!(
        base_size == base.len(),
        "the delta expects a {base_size}-byte original, but the file has {} bytes",
        base.len()
    );
    let mut out = Vec::with_capacity(result_size);
    while pos < delta.len() {
        let cmd = delta[pos];
        pos += 1;
        if cmd & 0x80 != 0 {
            let mut offset: usize = 0;
            let mut size: usize = 0;
            for bit in 0..4 {
                if cmd & (1 << bit) != 0 {
                    let byte = *delta
                        .get(pos)
                        .context("a delta copy command is truncated")?;
                    pos += 1;
                    offset |= (byte as usize) << (8 * bit);
                }
            }
            for bit in 0..3 {
                if cmd & (0x10 << bit) != 0 {
                    let byte = *delta
                        .get(pos)
                        .context("a delta copy command is truncated")?;
                    pos += 1;
                    size |= (byte as usize) << (8 * bit);
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let chunk = offset
                .checked_add(size)
                .and_then(|end| base.get(offset..end))
                .with_context(|| {
                    format!("a delta copy ({size} bytes at {offset}) reads past the original")
                })?;
            out.extend_from_slice(chunk);
        } else if cmd != 0 {
            let len = cmd as usize;
            let chunk = delta
                .get(pos..pos + len)
                .context("a delta insert command is truncated")?;
            out.extend_from_slice(chunk);
            pos += len;
        } else {
            bail!("the delta holds the reserved command byte 0");
        }
        ensure!(
            out.len() <= result_size,
            "the delta produces more than the {result_size} bytes it announces"
        );
    }
    ensure!(
        out.len() == result_size,
        "the delta produces {} bytes, but announces {result_size}",
        out.len()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Encodes like git does, to round-trip the decoder.
    fn encode_line(bytes: &[u8]) -> Vec<u8> {
        assert!(!bytes.is_empty() && bytes.len() <= 52);
        let mut line = vec![if bytes.len() <= 26 {
            b'A' + bytes.len() as u8 - 1
        } else {
            b'a' + bytes.len() as u8 - 27
        }];
        for chunk in bytes.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let mut acc = u32::from_be_bytes(word);
            let mut digits = [0u8; 5];
            for d in digits.iter_mut().rev() {
                *d = BASE85[(acc % 85) as usize];
                acc /= 85;
            }
            line.extend_from_slice(&digits);
        }
        line
    }

    #[test]
    fn base85_decodes_known_git_values() {
        // From a real `git diff --binary` of the 4-byte file "\0\x01hi".
        let patch = BinaryPatch::decode(BinaryKind::Literal, 4, &[b"LcmZQz%*X@)0YCuL"]).unwrap();
        assert_eq!(patch.data, b"\0\x01hi");
        // ... and its reverse block, the empty file.
        let patch = BinaryPatch::decode(BinaryKind::Literal, 0, &[b"HcmV?d00001"]).unwrap();
        assert_eq!(patch.data, b"");
    }

    #[test]
    fn base85_round_trips_every_length() {
        let bytes: Vec<u8> = (0..52u8)
            .map(|b| b.wrapping_mul(97).wrapping_add(3))
            .collect();
        for len in 1..=52 {
            let mut out = Vec::new();
            decode_base85_line(&encode_line(&bytes[..len]), &mut out).unwrap();
            assert_eq!(out, &bytes[..len], "length {len}");
        }
        let mut out = Vec::new();
        decode_base85_line(&encode_line(&[0xff; 4]), &mut out).unwrap();
        assert_eq!(out, [0xff; 4]);
    }

    #[test]
    fn base85_rejects_bad_input() {
        let mut out = Vec::new();
        assert!(decode_base85_line(b"", &mut out).is_err());
        assert!(decode_base85_line(b"1abcde", &mut out).is_err());
        assert!(decode_base85_line(b"Babcd", &mut out).is_err(), "short");
        assert!(
            decode_base85_line(b"Aabc\"e", &mut out).is_err(),
            "bad char"
        );
        assert!(decode_base85_line(b"A~~~~~", &mut out).is_err(), "overflow");
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn encode_block(data: &[u8]) -> Vec<Vec<u8>> {
        deflate(data).chunks(52).map(encode_line).collect()
    }

    #[test]
    fn literal_block_decodes_and_checks_its_size() {
        let content: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let lines = encode_block(&content);
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let patch = BinaryPatch::decode(BinaryKind::Literal, 1000, &refs).unwrap();
        assert_eq!(patch.apply(b"ignored").unwrap(), content);
        let err = BinaryPatch::decode(BinaryKind::Literal, 999, &refs).unwrap_err();
        assert!(format!("{err:#}").contains("header says 999"), "{err:#}");
    }

    #[test]
    fn delta_copies_and_inserts() {
        let base = b"0123456789abcdef";
        // base size 16, result size 9; copy 4 bytes at offset 2; insert "XY"; copy 3 at 13.
        let delta = [16, 9, 0x91, 2, 4, 2, b'X', b'Y', 0x91, 13, 3];
        assert_eq!(apply_delta(base, &delta).unwrap(), b"2345XYdef");
    }

    #[test]
    fn delta_copy_size_zero_means_64k_and_varints_span_bytes() {
        let base: Vec<u8> = (0..0x10000u32).map(|i| (i % 251) as u8).collect();
        // 0x10000 = varint [0x80, 0x80, 0x04]; a copy command with no size bytes.
        let delta = [0x80, 0x80, 0x04, 0x80, 0x80, 0x04, 0x80];
        assert_eq!(apply_delta(&base, &delta).unwrap(), base);
    }

    #[test]
    fn delta_rejects_wrong_base_and_bad_commands() {
        let err = apply_delta(b"abc", &[4, 1, 1, b'x']).unwrap_err();
        assert!(err.to_string().contains("4-byte original"), "{err}");
        assert!(apply_delta(b"abc", &[3, 1, 0]).is_err(), "command 0");
        assert!(
            apply_delta(b"abc", &[3, 2, 0x91, 2, 2]).is_err(),
            "copy past end"
        );
        assert!(
            apply_delta(b"abc", &[3, 5, 1, b'x']).is_err(),
            "short result"
        );
        assert!(
            apply_delta(b"abc", &[3, 1, 2, b'x', b'y']).is_err(),
            "long result"
        );
        assert!(
            apply_delta(b"abc", &[3, 1, 3, b'x']).is_err(),
            "truncated insert"
        );
    }
}
