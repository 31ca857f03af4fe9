//! `.offload-image-cache`: the image cache of a project that is not in a git repository.
//!
//! The user manual says the image id is cached in `.offload-image-cache` at the project
//! root and that deleting the file forces a fresh image build. Git notes are the cache
//! wherever there is a commit to hang them on; this file is the cache where there is no
//! git repository at all:
//!
//! - it is read and written only when the project is not inside a git repository (in
//!   a repository, even an empty one, it is neither read nor written: notes are the
//!   cache, and an empty repository builds without caching);
//! - its first line is the image id; a second line records a fingerprint of the build
//!   context (the `.dockerignore`-filtered project tree). A run whose fingerprint
//!   matches reuses the image; any change to the tree means a fresh build, after
//!   which the file is rewritten. A file without a fingerprint line (written by hand or
//!   by an older tool) never matches, so it cannot make a run use a stale image;
//! - deleting it forces a fresh build; `--no-cache` neither reads nor writes it.

use std::path::Path;

use anyhow::{Context, Result};

/// The file name, at the project root.
pub(crate) const FILE_NAME: &str = ".offload-image-cache";

const FINGERPRINT_PREFIX: &str = "# offload build-context fingerprint: ";

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CacheFile {
    /// The cached image id.
    pub(super) image_id: String,
    /// The fingerprint of the build context it was built from, if recorded.
    pub(super) fingerprint: Option<String>,
}

/// Reads `<root>/.offload-image-cache`; `Ok(None)` when absent or empty.
pub(super) fn read(root: &Path) -> Result<Option<CacheFile>> {
    let path = root.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read `{}`", path.display()));
        }
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(image_id) = lines.next().filter(|l| !l.starts_with('#')) else {
        return Ok(None);
    };
    let fingerprint = lines
        .find_map(|l| l.strip_prefix(FINGERPRINT_PREFIX.trim_end()))
        .map(|f| f.trim().to_owned());
    Ok(Some(CacheFile {
        image_id: image_id.to_owned(),
        fingerprint,
    }))
}

/// Writes `<root>/.offload-image-cache` for `image_id` built from a context with
/// `fingerprint`.
pub(super) fn write(root: &Path, image_id: &str, fingerprint: &str) -> Result<()> {
    let path = root.join(FILE_NAME);
    let text = format!("{image_id}\n{FINGERPRINT_PREFIX}{fingerprint}\n");
    std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_legacy_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), "im-1", "abc").unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(CacheFile {
                image_id: "im-1".into(),
                fingerprint: Some("abc".into())
            })
        );
        // The seeds' legacy form: just an image id.
        std::fs::write(dir.path().join(FILE_NAME), "im-iG70foAmbaBR90NmKecC07\n").unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(CacheFile {
                image_id: "im-iG70foAmbaBR90NmKecC07".into(),
                fingerprint: None
            })
        );
        std::fs::write(dir.path().join(FILE_NAME), "\n").unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
