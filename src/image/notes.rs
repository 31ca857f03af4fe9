//! The image cache: git notes on base commits under [`NOTES_REF`].
//!
//! One note per base commit holds a JSON object keyed by config key (the config path,
//! repository-relative, see [`config_key`]); each value is `{"image_id": "..."}`:
//!
//! ```json
//! {
//!   "offload.toml": { "image_id": "im-abc123" },
//!   "ci/offload-gpu.toml": { "image_id": "im-def456" }
//! }
//! ```
//!
//! Writes read the note first and replace only their own key ([`merge_entry`]), so two
//! configs never overwrite each other; other keys (and fields we do not know) are kept
//! byte-for-byte as JSON values. A note that is not valid JSON is reported and treated
//! as empty, and the next write repairs it.
//!
//! Sharing ([`fetch`], [`push`]) is best effort: each returns a [`SyncOutcome`] and
//! never fails the caller. Offload never adds or changes a remote or any git config:
//! fetch writes only the notes ref (fast-forward, or adopting the remote's notes when
//! the two histories diverged), and push is never forced, so a concurrent writer's
//! notes are never overwritten (a rejected push is a warning; the image is simply
//! cached again by the next run). Losing an entry only ever costs one rebuild.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use super::git::Git;

/// The notes ref holding the cache.
pub(super) const NOTES_REF: &str = "refs/notes/offload-images";

/// The cache key of a config file: the path as given, one leading `./` stripped, and
/// made relative to the repository top level when absolute.
///
/// A relative path is kept as written (so `-c offload.toml` is `offload.toml` from any
/// directory, matching keys written by earlier Offload versions). An absolute path
/// outside the repository is an error.
pub(crate) fn config_key(config: &Path, toplevel: &Path) -> Result<String> {
    let text = config.to_string_lossy();
    let stripped = text.strip_prefix("./").unwrap_or(&text);
    let path = Path::new(stripped);
    if !path.is_absolute() {
        return Ok(stripped.to_owned());
    }
    // Compare canonical forms so `/tmp` vs `/private/tmp`-style symlinks agree; fall
    // back to the lexical path when the file does not exist yet.
    let canonical_root = toplevel
        .canonicalize()
        .unwrap_or_else(|_| toplevel.to_owned());
    let canonical = path.canonicalize().unwrap_or_else(|_| normalize(path));
    match canonical.strip_prefix(&canonical_root) {
        Ok(rel) => Ok(rel.to_string_lossy().replace('\\', "/")),
        Err(_) => bail!(
            "config path `{}` is not inside the repository `{}`, so it cannot key the image \
             cache (hint: keep the config in the repository, or pass `--no-cache`)",
            config.display(),
            toplevel.display()
        ),
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The parsed body of one note.
pub(super) type Note = Map<String, Value>;

/// Parses a note body; not a JSON object is an error.
fn parse_note(text: &str) -> Result<Note> {
    let value: Value = serde_json::from_str(text).context("the note is not valid JSON")?;
    match value {
        Value::Object(map) => Ok(map),
        other => bail!("the note is JSON but not an object (found `{other}`)"),
    }
}

/// The cached image id for `key`: a non-empty string `image_id` field.
pub(crate) fn lookup(note: &Note, key: &str) -> Option<String> {
    note.get(key)?
        .get("image_id")?
        .as_str()
        .filter(|id| !id.trim().is_empty())
        .map(|id| id.trim().to_owned())
}

/// Sets `key` to `{"image_id": image_id}`, keeping every other key unchanged.
fn merge_entry(note: &mut Note, key: &str, image_id: &str) {
    let mut entry = Map::new();
    entry.insert("image_id".to_owned(), Value::String(image_id.to_owned()));
    note.insert(key.to_owned(), Value::Object(entry));
}

/// Reads the note on `sha`; `Ok(None)` when there is none (or no notes ref at all).
///
/// A note that is not a JSON object is logged as a warning and read as no note.
pub(crate) fn read(git: &Git, sha: &str) -> Result<Option<Note>> {
    let out = git.try_run(["notes", "--ref", NOTES_REF, "show", sha])?;
    if !out.success {
        let stderr = out.stderr.to_lowercase();
        if stderr.contains("no note found") || stderr.contains("not a valid ref") {
            return Ok(None);
        }
        bail!(
            "cannot read the image note on `{}`: {}",
            short(sha),
            out.stderr
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_note(&text) {
        Ok(note) => Ok(Some(note)),
        Err(err) => {
            tracing::warn!(
                "ignoring the image note on `{}` ({NOTES_REF}): {err:#}; the next image \
                 build for this commit replaces it",
                short(sha)
            );
            Ok(None)
        }
    }
}

/// Records `image_id` for `key` on `sha`, merged into the existing note.
pub(super) fn write(git: &Git, sha: &str, key: &str, image_id: &str) -> Result<()> {
    let mut note = read(git, sha)?.unwrap_or_default();
    merge_entry(&mut note, key, image_id);
    let mut body =
        serde_json::to_string_pretty(&Value::Object(note)).context("cannot encode the note")?;
    body.push('\n');
    let git = with_identity(git);
    git.run_with_stdin(
        ["notes", "--ref", NOTES_REF, "add", "-f", "-F", "-", sha],
        body.as_bytes(),
    )
    .with_context(|| format!("cannot write the image note on `{}`", short(sha)))?;
    Ok(())
}

/// Notes are commits and need an author; without a configured identity, use a fixed
/// one for these commits only (through the environment; git config is never touched).
fn with_identity(git: &Git) -> Git {
    match git.try_run(["var", "GIT_COMMITTER_IDENT"]) {
        Ok(out) if out.success => git.clone(),
        _ => git
            .with_env("GIT_AUTHOR_NAME", "offload")
            .with_env("GIT_AUTHOR_EMAIL", "offload@localhost")
            .with_env("GIT_COMMITTER_NAME", "offload")
            .with_env("GIT_COMMITTER_EMAIL", "offload@localhost"),
    }
}

/// What a best-effort fetch or push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncOutcome {
    /// Notes were exchanged (or were already up to date).
    Done,
    /// The remote has no notes ref yet (fetch only); nothing to do.
    RemoteHasNoNotes,
    /// No remote of that name is configured; the cache stays local.
    NoRemote,
    /// The exchange failed; the message says why (for a warning).
    Failed(String),
}

fn has_remote(git: &Git, remote: &str) -> bool {
    git.try_run(["remote", "get-url", remote])
        .is_ok_and(|out| out.success)
}

/// Fetches the remote's notes into [`NOTES_REF`].
///
/// Fast-forwards the local ref; when local and remote notes diverged, adopts the
/// remote's (entries only local are lost, costing at most a rebuild) so the next push
/// fast-forwards and the team converges. Never fails.
pub(crate) fn fetch(git: &Git, remote: &str) -> SyncOutcome {
    if !has_remote(git, remote) {
        return SyncOutcome::NoRemote;
    }
    match try_fetch(git, remote) {
        Ok(outcome) => outcome,
        Err(err) => SyncOutcome::Failed(format!("{err:#}")),
    }
}

fn try_fetch(git: &Git, remote: &str) -> Result<SyncOutcome> {
    // Fetch into FETCH_HEAD only: no remote-tracking ref, no configured refspec.
    let out = git.try_run_network(["fetch", "--quiet", "--no-tags", remote, NOTES_REF])?;
    if !out.success {
        let stderr = out.stderr.to_lowercase();
        if stderr.contains("couldn't find remote ref") || stderr.contains("no such ref") {
            return Ok(SyncOutcome::RemoteHasNoNotes);
        }
        bail!("`git fetch {remote} {NOTES_REF}` failed: {}", out.stderr);
    }
    let fetched = git.run_text(["rev-parse", "--verify", "FETCH_HEAD^{commit}"])?;
    let local = git.try_run([
        "rev-parse",
        "--verify",
        "-q",
        &format!("{NOTES_REF}^{{commit}}"),
    ])?;
    let local = local.success.then(|| local.stdout_trimmed());
    let update = match &local {
        None => true,
        Some(local) if *local == fetched => false,
        Some(local) => {
            let remote_is_newer = git
                .try_run(["merge-base", "--is-ancestor", local, &fetched])?
                .success;
            let local_is_newer = git
                .try_run(["merge-base", "--is-ancestor", &fetched, local])?
                .success;
            if !remote_is_newer && !local_is_newer {
                tracing::warn!(
                    "the image notes of `{remote}` and the local ones diverged; using \
                     `{remote}`'s (cache entries only written here are dropped and rebuilt \
                     when needed)"
                );
            }
            !local_is_newer
        }
    };
    if update {
        let mut args = vec!["update-ref", NOTES_REF, &fetched];
        if let Some(local) = &local {
            args.push(local);
        }
        git.run(args)?;
    }
    Ok(SyncOutcome::Done)
}

/// Pushes [`NOTES_REF`] to `remote` (never forced). Never fails.
pub(super) fn push(git: &Git, remote: &str) -> SyncOutcome {
    if !has_remote(git, remote) {
        return SyncOutcome::NoRemote;
    }
    let refspec = format!("{NOTES_REF}:{NOTES_REF}");
    match git.try_run_network(["push", "--quiet", "--no-verify", remote, &refspec]) {
        Ok(out) if out.success => SyncOutcome::Done,
        Ok(out) => SyncOutcome::Failed(format!(
            "`git push {remote} {refspec}` failed: {}",
            out.stderr
        )),
        Err(err) => SyncOutcome::Failed(format!("{err:#}")),
    }
}

/// The first 8 characters of a sha, for messages.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::super::git::testing::{commit, git, init};
    use super::*;

    #[test]
    fn config_keys() {
        let root = Path::new("/home/user/project");
        let cases = [
            ("offload.toml", "offload.toml"),
            ("./offload.toml", "offload.toml"),
            ("./configs/offload.toml", "configs/offload.toml"),
            ("../x.toml", "../x.toml"),
            ("/home/user/project/offload.toml", "offload.toml"),
            ("/home/user/project/./ci/../ci/a.toml", "ci/a.toml"),
        ];
        for (given, want) in cases {
            assert_eq!(config_key(Path::new(given), root).unwrap(), want, "{given}");
        }
        let err = config_key(Path::new("/elsewhere/offload.toml"), root)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`/elsewhere/offload.toml` is not inside"),
            "{err}"
        );
    }

    #[test]
    fn merge_keeps_other_keys_and_unknown_fields() {
        let mut note =
            parse_note(r#"{"a.toml":{"image_id":"im-a","extra":1},"b.toml":{"image_id":"im-b"}}"#)
                .unwrap();
        merge_entry(&mut note, "b.toml", "im-b2");
        merge_entry(&mut note, "c.toml", "im-c");
        assert_eq!(lookup(&note, "a.toml").as_deref(), Some("im-a"));
        assert_eq!(note["a.toml"]["extra"], 1);
        assert_eq!(lookup(&note, "b.toml").as_deref(), Some("im-b2"));
        assert_eq!(lookup(&note, "c.toml").as_deref(), Some("im-c"));
    }

    #[test]
    fn lookup_treats_empty_or_odd_entries_as_missing() {
        let note = parse_note(
            r#"{"empty":{"image_id":""},"num":{"image_id":3},"str":"im-x","ok":{"image_id":" im-1 "}}"#,
        )
        .unwrap();
        assert_eq!(lookup(&note, "empty"), None);
        assert_eq!(lookup(&note, "num"), None);
        assert_eq!(lookup(&note, "str"), None);
        assert_eq!(lookup(&note, "missing"), None);
        assert_eq!(lookup(&note, "ok").as_deref(), Some("im-1"));
        assert!(parse_note("[1]").is_err());
        assert!(parse_note("not json").is_err());
    }

    #[test]
    fn write_read_round_trip_merges_two_configs() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let sha = commit(dir.path(), &[("a", "1")], "one");
        let g = Git::new(dir.path());
        assert!(read(&g, &sha).unwrap().is_none(), "no notes ref yet");
        write(&g, &sha, "offload.toml", "im-1").unwrap();
        write(&g, &sha, "other.toml", "im-2").unwrap();
        let note = read(&g, &sha).unwrap().unwrap();
        assert_eq!(lookup(&note, "offload.toml").as_deref(), Some("im-1"));
        assert_eq!(lookup(&note, "other.toml").as_deref(), Some("im-2"));
        // Git's own view agrees.
        let shown = git(dir.path(), &["notes", "--ref=offload-images", "show", &sha]);
        assert!(shown.contains("\"image_id\": \"im-2\""), "{shown}");
    }

    #[test]
    fn invalid_note_reads_as_none_and_is_repaired_by_write() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let sha = commit(dir.path(), &[("a", "1")], "one");
        git(
            dir.path(),
            &[
                "notes",
                "--ref=offload-images",
                "add",
                "-m",
                "garbage",
                &sha,
            ],
        );
        let g = Git::new(dir.path());
        assert!(read(&g, &sha).unwrap().is_none());
        write(&g, &sha, "offload.toml", "im-1").unwrap();
        let note = read(&g, &sha).unwrap().unwrap();
        assert_eq!(lookup(&note, "offload.toml").as_deref(), Some("im-1"));
    }

    #[test]
    fn fetch_and_push_with_a_bare_remote() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let a = tmp.path().join("a");
        init(&a);
        let sha = commit(&a, &[("f", "1")], "one");
        git(&a, &["remote", "add", "origin", remote.to_str().unwrap()]);
        git(&a, &["push", "-q", "origin", "main"]);
        let ga = Git::new(&a);
        assert_eq!(fetch(&ga, "origin"), SyncOutcome::RemoteHasNoNotes);
        write(&ga, &sha, "offload.toml", "im-a").unwrap();
        assert_eq!(push(&ga, "origin"), SyncOutcome::Done);

        // A second clone sees the note after a fetch and adds its own key.
        let b = tmp.path().join("b");
        git(
            tmp.path(),
            &["clone", "-q", remote.to_str().unwrap(), b.to_str().unwrap()],
        );
        git(&b, &["config", "user.email", "b@example.com"]);
        git(&b, &["config", "user.name", "B"]);
        let gb = Git::new(&b);
        assert!(read(&gb, &sha).unwrap().is_none());
        assert_eq!(fetch(&gb, "origin"), SyncOutcome::Done);
        write(&gb, &sha, "other.toml", "im-b").unwrap();
        assert_eq!(push(&gb, "origin"), SyncOutcome::Done);

        // Back in the first clone: fast-forward, both keys present.
        assert_eq!(fetch(&ga, "origin"), SyncOutcome::Done);
        let note = read(&ga, &sha).unwrap().unwrap();
        assert_eq!(lookup(&note, "offload.toml").as_deref(), Some("im-a"));
        assert_eq!(lookup(&note, "other.toml").as_deref(), Some("im-b"));
        // No remote or config was touched.
        let config = std::fs::read_to_string(a.join(".git/config")).unwrap();
        assert!(!config.contains("notes"), "{config}");
    }

    #[test]
    fn no_remote_is_reported_not_created() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let sha = commit(dir.path(), &[("a", "1")], "one");
        let g = Git::new(dir.path());
        assert_eq!(fetch(&g, "origin"), SyncOutcome::NoRemote);
        write(&g, &sha, "offload.toml", "im-1").unwrap();
        assert_eq!(push(&g, "origin"), SyncOutcome::NoRemote);
        assert_eq!(git(dir.path(), &["remote"]), "");
    }

    #[test]
    fn rejected_push_is_an_outcome_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let remote = tmp.path().join("remote.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let hook = remote.join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\necho no pushes here >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = tmp.path().join("a");
        init(&a);
        let sha = commit(&a, &[("f", "1")], "one");
        git(&a, &["remote", "add", "origin", remote.to_str().unwrap()]);
        let g = Git::new(&a);
        write(&g, &sha, "offload.toml", "im-1").unwrap();
        match push(&g, "origin") {
            SyncOutcome::Failed(msg) => assert!(msg.contains("no pushes here"), "{msg}"),
            other => panic!("expected a failed push, got {other:?}"),
        }
    }
}
