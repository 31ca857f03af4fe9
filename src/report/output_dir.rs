//! The output directory (`[report] output_dir`): Offload's own files in it are
//! replaced at the start of every run, and nothing else there is touched.
//!
//! `logs/batch-N.{running,success,failure,error,cancelled}` hold each batch's output,
//! `junit-parts/batch-N.xml` each batch's result file; the merged report and the
//! discovery cache (`cache/`) sit beside them.

use std::path::Path;

use anyhow::{Context, Result};

/// Creates `{output_dir}/logs` and `{output_dir}/junit-parts` and removes the files a
/// previous run wrote there. Nothing else in the directory is touched.
pub(crate) fn prepare(output_dir: &Path) -> Result<()> {
    for sub in ["logs", "junit-parts"] {
        let dir = output_dir.join(sub);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list `{}`", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if is_ours(sub, &name.to_string_lossy()) {
                let path = entry.path();
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!("cannot remove the old `{}`: {err}", path.display());
                }
            }
        }
    }
    Ok(())
}

/// Whether a file in `{output_dir}/{sub}` is one Offload writes.
fn is_ours(sub: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("batch-") else {
        return false;
    };
    let (number, ext) = rest.split_once('.').unwrap_or((rest, ""));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match sub {
        "logs" => matches!(
            ext,
            "success" | "failure" | "error" | "cancelled" | "running"
        ),
        _ => ext == "xml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offloads_own_files_are_cleaned() {
        assert!(is_ours("logs", "batch-3.failure"));
        assert!(is_ours("logs", "batch-12.running"));
        assert!(is_ours("junit-parts", "batch-0.xml"));
        assert!(!is_ours("logs", "batch-x.failure"));
        assert!(!is_ours("logs", "notes.txt"));
        assert!(!is_ours("logs", "batch-1.txt"));
        assert!(!is_ours("junit-parts", "batch-1.failure"));
    }

    #[test]
    fn a_run_removes_only_its_own_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("batch-0.failure"), "old").unwrap();
        std::fs::write(logs.join("mine.txt"), "keep").unwrap();
        prepare(dir.path()).unwrap();
        assert!(!logs.join("batch-0.failure").exists());
        assert!(logs.join("mine.txt").exists());
        assert!(dir.path().join("junit-parts").is_dir());
    }
}
