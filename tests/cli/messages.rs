//! What Offload says is true and said once: counts with the right noun, one warning per
//! cause.

use crate::support::{self, Project};

#[test]
fn collect_counts_one_group_in_the_singular() {
    let p = Project::new();
    p.config(
        "type = \"default\"\ndiscover_command = \"printf 'a\\\\nb\\\\n' {filters}\"\n\
         run_command = \"true {tests}\"\ntest_id_format = \"{name}\"",
        "[groups.all]\n",
    );
    let run = support::run(p.offload().arg("collect"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("Discovered 2 tests across 1 group:\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_git_remote_is_reported_once() {
    let p = Project::new();
    p.file(
        "offload.toml",
        "[offload]\nsandbox_project_root = \".\"\n\n\
         [provider]\ntype = \"default\"\nprepare_command = \"echo im-x\"\nthin_diff = true\n\
         create_command = \"echo sb\"\nexec_command = \"sh -c {command}\"\n\
         destroy_command = \"true\"\n\n\
         [framework]\ntype = \"default\"\ndiscover_command = \"echo t {filters}\"\n\
         run_command = \"true {tests}\"\ntest_id_format = \"{name}\"\n\n\
         [groups.all]\n",
    );
    support::init_repo(p.path());
    support::commit_all(p.path(), "init");
    let run = support::run(p.offload().arg("run"));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.matches("no git remote `origin`").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let p = Project::new();
    let run = support::run(p.offload().arg("--version"));
    assert_eq!(run.code, 0, "{}", run.show());
    let line = run.stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("offload {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line `{line}`"));
    let (commit, date) = rest.split_once(' ').expect("`<commit> <date>`");
    // This test runs from the checkout the binary was built from.
    let head = support::git(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--short", "HEAD"],
    );
    assert_eq!(commit, head, "{line}");
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&parts)
                .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit())),
        "date `{date}` is not YYYY-MM-DD"
    );
    let year: u32 = parts[0].parse().unwrap();
    assert!((2025..2200).contains(&year), "{line}");
}

#[test]
fn run_help_says_what_no_cache_skips() {
    let p = Project::new();
    let run = support::run(p.offload().args(["run", "--help"]));
    assert_eq!(run.code, 0, "{}", run.show());
    let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let no_cache = help
        .split_once("--no-cache")
        .map(|(_, rest)| rest)
        .expect("--no-cache in the help");
    for what in [
        "image cache (git notes, or `.offload-image-cache` outside a git repository)",
        "neither read nor written",
        "discovery cache",
    ] {
        assert!(no_cache.contains(what), "no `{what}` in {help}");
    }
}
