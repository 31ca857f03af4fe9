//! Git blob ids (SHA-1 of `blob <len>\0<content>`), to check binary sections against
//! the full ids on their `index` line, as `git apply` does. Not security-relevant here,
//! only a guard against patching the wrong base.

use sha1::{Digest, Sha1};

/// The git blob id of `data`, as 40 lowercase hex digits.
pub(super) fn blob_id(data: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", data.len()).as_bytes());
    hasher.update(data);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_match_git() {
        // `git hash-object` of the empty file, "hi\n", and the 4 bytes "\0\x01hi".
        assert_eq!(blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        assert_eq!(blob_id(b"hi\n"), "45b983be36b73c0788dc9cbcb76cbb80fc7bb057");
        assert_eq!(
            blob_id(b"\0\x01hi"),
            "75c3e4d580506d774a97fc6c1e36ad34ceb494e6"
        );
        // Multi-block input (padding across the 64-byte boundary).
        assert_eq!(
            blob_id(&[b'a'; 1000]),
            "a50be72b20f0e3f078d252e8e56b11b4bec67509"
        );
    }
}
