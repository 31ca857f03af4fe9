//! Bad input must not panic, hang or go green without a report: out-of-range times in a
//! previous report, huge timeouts, a report that cannot be written, pathological
//! `.dockerignore` patterns, signals in the middle of long work, and messages about
//! huge values, each as a user would meet it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, Junit, Project, Run, run};

/// A `default` framework whose batches write a result file giving every test the
/// `time` held in `time.txt`.
fn timed_project(time: &str) -> Project {
    let p = Project::new();
    p.file(
        "write-result.sh",
        "out=$1; shift; t=$(cat time.txt)\n\
         { echo '<testsuite name=\"s\">'; for id in \"$@\"; do\n\
           echo \"<testcase name=\\\"$id\\\" time=\\\"$t\\\"/>\"; done; echo '</testsuite>'; } > \"$out\"\n",
    );
    p.file("time.txt", time);
    p.config(
        "type = \"default\"\n\
         discover_command = \"printf 'a\\\\nb\\\\nc\\\\n' {filters}\"\n\
         run_command = \"sh write-result.sh {result_file} {tests}\"\n\
         test_id_format = \"{name}\"",
        "[groups.all]\nretry_count = 0\n",
    );
    p
}

fn assert_no_panic(run: &Run) {
    assert_ne!(run.code, 101, "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// A `time="1e20"` in a batch's result file is copied into the
/// merged report; the next run read it for scheduling and panicked, and so did every
/// run after it. Negative, NaN and infinite times need the same care.
#[test]
fn out_of_range_times_in_the_previous_report_do_not_stop_the_run() {
    let p = timed_project("1e20");
    let first = run(p.offload().arg("run"));
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let report = p.path().join("test-results/junit.xml");
    let merged = Junit::of(&p);
    assert!(!merged.cases.is_empty(), "{merged:#?}");
    for case in &merged.cases {
        assert_eq!(case.time.parse::<f64>(), Ok(1e20), "{case:#?}");
    }

    p.file("time.txt", "0.5");
    let second = run(p.offload().arg("run"));
    assert_no_panic(&second);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(
        second.stderr.contains("test-results/junit.xml")
            && second.stderr.contains("unknown duration"),
        "the warning names the file:\n{}",
        second.stderr
    );

    for time in ["1.8e19", "-1", "NaN", "inf", "-inf", "1e400"] {
        let cases: String = ["a", "b", "c"]
            .iter()
            .map(|id| format!(r#"<testcase name="{id}" time="{time}"/>"#))
            .collect();
        std::fs::write(
            &report,
            format!("<testsuites><testsuite>{cases}</testsuite></testsuites>"),
        )
        .unwrap();
        let again = run(p.offload().arg("run"));
        assert_no_panic(&again);
        assert_eq!(
            again.code, 0,
            "time={time}\n{}\n{}",
            again.stdout, again.stderr
        );
        let merged = Junit::of(&p);
        assert_eq!(merged.cases.len(), 3, "time={time}\n{merged:#?}");
    }
}

/// `test_timeout_secs = 9223372036854775807` passed `validate`, then
/// a worker panicked adding it to an `Instant`; `[provider] timeout_secs` too.
#[test]
fn timeouts_beyond_a_year_are_refused() {
    let p = timed_project("0.1");
    let config = std::fs::read_to_string(p.path().join("offload.toml")).unwrap();
    p.file(
        "offload.toml",
        &config.replace(
            "[offload]\n",
            "[offload]\ntest_timeout_secs = 9223372036854775807\n",
        ),
    );
    for cmd in ["validate", "run"] {
        let out = run(p.offload().arg(cmd));
        assert_no_panic(&out);
        assert_eq!(out.code, 1, "{cmd}\n{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("`offload.test_timeout_secs` is 9223372036854775807")
                && out.stderr.contains("at most 31536000"),
            "{cmd}: {}",
            out.stderr
        );
    }
    // A year is still accepted.
    p.file(
        "offload.toml",
        &config.replace("[offload]\n", "[offload]\ntest_timeout_secs = 31536000\n"),
    );
    let out = run(p.offload().arg("run"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let remote = Project::new();
    remote.file(
        "offload.toml",
        "[offload]\nsandbox_project_root = \".\"\n\n[provider]\ntype = \"default\"\n\
         create_command = \"echo sb\"\nexec_command = \"sh -c {command}\"\n\
         destroy_command = \"true\"\ntimeout_secs = 9223372036854775807\n\n\
         [framework]\ntype = \"default\"\ndiscover_command = \"echo a {filters}\"\n\
         run_command = \"true {tests}\"\ntest_id_format = \"{name}\"\n\n[groups.all]\n",
    );
    let out = run(remote.offload().arg("validate"));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("`provider.timeout_secs` is 9223372036854775807"),
        "{}",
        out.stderr
    );
}

/// With `junit.xml` a directory (or `junit_file = "\u0000"`), the
/// run logged the error with its prefix doubled, printed "All tests passed!" and
/// exited 0: a CI job went green without the report its dashboard reads.
#[test]
fn a_report_that_cannot_be_written_fails_the_run() {
    let p = timed_project("0.1");
    std::fs::create_dir_all(p.path().join("test-results/junit.xml/inside")).unwrap();
    let out = run(p.offload().arg("run"));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stderr.matches("cannot write the").count(),
        1,
        "one message, prefix not doubled:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("test-results/junit.xml") && out.stderr.contains("Is a directory"),
        "{}",
        out.stderr
    );
    // The directory in the way is left alone.
    assert!(p.path().join("test-results/junit.xml/inside").is_dir());

    // Without a report asked for, the same run passes.
    let config = std::fs::read_to_string(p.path().join("offload.toml")).unwrap();
    p.file(
        "offload.toml",
        &format!("{config}\n[report]\njunit = false\n"),
    );
    let out = run(p.offload().arg("run"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // A name no file can have is refused before anything runs.
    p.file(
        "offload.toml",
        &format!("{config}\n[report]\njunit_file = \"\\u0000\"\n"),
    );
    for cmd in ["validate", "run"] {
        let out = run(p.offload().arg(cmd));
        assert_eq!(out.code, 1, "{cmd}\n{}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("`report.junit_file`"), "{}", out.stderr);
        assert!(!out.stdout.contains("Test Results"), "{}", out.stdout);
    }
}

/// A project built through the `default` provider, whose prepare command lists the
/// build context into `context.txt`.
fn image_project() -> Project {
    let p = Project::new();
    // The context comes as `$OFFLOAD_CONTEXT_DIR` or as a `--context-dir=` argument.
    p.file(
        "list-context.sh",
        r#"dir="${OFFLOAD_CONTEXT_DIR:-}"
for a in "$@"; do case "$a" in --context-dir=*) dir="${a#--context-dir=}";; esac; done
ls -a "$dir" > context.txt
echo image
"#,
    );
    p.file(
        "offload.toml",
        r#"[offload]
max_parallel = 1
sandbox_project_root = "."

[provider]
type = "default"
prepare_command = "sh list-context.sh"
create_command = "echo sandbox"
exec_command = "sh -c {command}"
destroy_command = "true"

[framework]
type = "default"
discover_command = "echo a {filters}"
run_command = "true {tests}"
test_id_format = "{name}"

[groups.all]
retry_count = 0
"#,
    );
    p
}

/// `*a*a*a*a*a*a*a*a*a*a*b` against a file named with 64 `a`s never
/// finished, nor did `**/**/…/z` against a deep tree.
#[test]
fn pathological_dockerignore_patterns_match_in_bounded_time() {
    let p = image_project();
    p.file(
        ".dockerignore",
        "*a*a*a*a*a*a*a*a*a*a*b\n**/**/**/**/**/**/**/**/**/**/z\n",
    );
    let many_a = "a".repeat(64);
    p.file(&many_a, "kept");
    p.file(&format!("{many_a}b"), "ignored");
    let deep = vec!["d"; 30].join("/");
    p.file(&format!("{deep}/y"), "kept");
    p.file(&format!("{deep}/z"), "ignored");
    let child = support::spawn_piped(p.offload().arg("run"));
    let out = support::wait_bounded(child, Duration::from_secs(30), "offload run");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let context = std::fs::read_to_string(p.path().join("context.txt")).unwrap();
    let names: Vec<&str> = context.lines().collect();
    assert!(names.contains(&many_a.as_str()), "{names:?}");
    assert!(!names.contains(&format!("{many_a}b").as_str()), "{names:?}");
    assert!(names.contains(&"d"), "{names:?}");
}

/// How long `offload run` may take to stop after SIGTERM while a 60 s command runs:
/// generous for a loaded machine, and still half of what waiting for it would take.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Sends SIGTERM to `offload run` once a process of its wrote its pid to `pid_file`,
/// and checks that the run stops with 143 within [`STOP_LIMIT`], that process gone.
fn sigterm_stops_promptly(p: &Project, pid_file: &Path) {
    let child = support::spawn_piped(p.offload().arg("run"));
    let read_pid = || {
        std::fs::read_to_string(pid_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    support::wait_until(
        &format!("a pid in {}", pid_file.display()),
        Duration::from_secs(60),
        || read_pid().is_some(),
    );
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = support::wait_bounded(child, Duration::from_secs(90), "offload run after SIGTERM");
    let took = sent.elapsed();
    assert!(took < STOP_LIMIT, "took {took:?} to stop\n{}", out.stderr);
    assert_eq!(out.code, 143, "{}\n{}", out.stdout, out.stderr);
    support::assert_dead_soon(read_pid().unwrap());
}

/// SIGTERM during the image export (here a git smudge filter that
/// takes a minute) was not acted on until the export finished.
#[test]
fn sigterm_stops_a_run_in_the_middle_of_the_image_export() {
    let p = image_project();
    // A prepare that opts into thin diffs builds its base image from the exported commit,
    // which runs the smudge filter below.
    let config = std::fs::read_to_string(p.path().join("offload.toml")).unwrap();
    p.file(
        "offload.toml",
        &config.replace(
            "prepare_command = \"sh list-context.sh\"",
            "prepare_command = \"sh list-context.sh\"\nthin_diff = true",
        ),
    );
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(p.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", p.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "."]);
    p.file(".gitattributes", "*.slow filter=slow\n");
    p.file("x.slow", "data\n");
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "init",
    ]);
    let pid_file = p.path().join("smudge.pid");
    git(&["config", "filter.slow.clean", "cat"]);
    git(&[
        "config",
        "filter.slow.smudge",
        &format!("echo $$ > '{}'; exec sleep 60", pid_file.display()),
    ]);
    sigterm_stops_promptly(&p, &pid_file);
}

/// And during discovery (`$$$$` is the shell's `$$` once the config's
/// `$$` escape is read).
#[test]
fn sigterm_stops_a_run_during_discovery() {
    let p = Project::new();
    let pid_file = p.path().join("discover.pid");
    p.config(
        &format!(
            "type = \"default\"\n\
             discover_command = \"echo $$$$ > '{}'; exec sleep 60 {{filters}}\"\n\
             run_command = \"true {{tests}}\"\ntest_id_format = \"{{name}}\"",
            pid_file.display()
        ),
        "[groups.all]\n",
    );
    sigterm_stops_promptly(&p, &pid_file);
}

/// And while a large previous report is still being read for its
/// durations (a minute for 300 MB in a debug build), which the run used to wait for.
#[test]
fn sigterm_does_not_wait_for_the_previous_report() {
    let p = Project::new();
    p.config(
        "type = \"default\"\n\
         discover_command = \"touch discovered; printf 'a\\\\nb\\\\n' {filters}\"\n\
         run_command = \"sleep 60; true {tests}\"\ntest_id_format = \"{name}\"",
        "[groups.all]\n",
    );
    let mut xml = String::with_capacity(64 << 20);
    xml.push_str("<testsuites><testsuite>\n");
    for i in 0..1_200_000 {
        xml.push_str(&format!(
            "<testcase name=\"t{i}\" classname=\"c\" time=\"0.5\"/>\n"
        ));
    }
    xml.push_str("</testsuite></testsuites>\n");
    p.file("test-results/junit.xml", &xml);
    drop(xml);

    let child = support::spawn_piped(p.offload().arg("run"));
    support::wait_until("discovery", Duration::from_secs(60), || {
        p.path().join("discovered").exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = support::wait_bounded(child, Duration::from_secs(90), "offload run after SIGTERM");
    let took = sent.elapsed();
    // Reading this report takes about 14 s in a debug build on an idle machine, and
    // longer on a loaded one, where a prompt stop still takes well under a second.
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to stop\n{}",
        out.stderr
    );
    assert_eq!(out.code, 143, "{}\n{}", out.stdout, out.stderr);
}

/// An error quoted the offending value whole (100 kB of it), said
/// "a integer", and `record_history = true` did not list the valid values.
#[test]
fn messages_cut_long_values_and_name_valid_ones() {
    let p = Project::new();
    p.config(
        "type = \"default\"\ndiscover_command = \"echo a {filters}\"\n\
         run_command = \"true {tests}\"\ntest_id_format = \"${HUGE}\"",
        "[groups.all]\n",
    );
    let out = run(p.offload().arg("validate").env("HUGE", "x".repeat(100_000)));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("`framework.test_id_format`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains('…'), "{}", out.stderr);
    assert!(
        out.stderr.len() < 2_000,
        "{} bytes of stderr",
        out.stderr.len()
    );

    p.file("offload.toml", "offload = 3\n");
    let out = run(p.offload().arg("validate"));
    assert!(out.stderr.contains("not an integer"), "{}", out.stderr);
    p.file("offload.toml", "[offload]\n[provider]\ntype = \"local\"\n[framework]\ntype = \"pytest\"\n[groups]\nall = []\n");
    let out = run(p.offload().arg("validate"));
    assert!(out.stderr.contains("is an array"), "{}", out.stderr);

    p.config(
        "type = \"pytest\"",
        "[groups.all]\n\n[history]\nrecord_history = true\n",
    );
    let out = run(p.offload().arg("validate"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("always") && out.stderr.contains("flag"),
        "{}",
        out.stderr
    );
}
