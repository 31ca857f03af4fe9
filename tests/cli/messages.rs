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
